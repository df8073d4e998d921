"""The four terms of the 1-D GFT objective of THEORY T4, each as per-sample conditional and marginal
gradients of a linear field at the same points.

Target term (law q): the independent coupling (marginal field in closed form, ``GaussianMixturePath``)
and the OT coupling (a :class:`~gftlib.theory.gradients.monotone.MonotoneCoupling`). Pretrained term (law
p_pre): the drift form (points of p^pre_t with the pretrained velocity as target: already the
marginal form) and the coupling form (pairs (x0, Phi_pre(x0)) of the pretrained ODE, a monotone
coupling). Plus a negative control: OT pairs regressed against the independent coupling's field.
float64 on the CPU; t = 0 noise, t = 1 data.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from gftlib.theory.analytic import GaussianMixture, GaussianMixturePath
from gftlib.theory.gradients.linear_field import LinearField, PerSampleGradients, regression_gradients
from gftlib.theory.gradients.monotone import MonotoneCoupling
from gftlib.paths.interpolants import Interpolant
from gftlib.validation import check_finite_number, check_positive_int

__all__ = ["GradientTerms", "combined_gradient_norm"]

_F64 = torch.float64


@dataclass(frozen=True)
class GradientTerms:
    """Everything needed to draw the T4 terms at n fresh samples (see the module docstring).

    ``interpolant``: the conditional (Brownian-bridge) path of the target and coupling-form terms;
    ``target_path``: q's path with the same sigma (the independent coupling's marginal field);
    ``ot``: the OT coupling of N(0, 1) and q; ``pretrained_path``: p_pre's straight-line path (sigma 0,
    the pretrained model); ``pretrained_coupling``: the pretrained ODE's flow map as a coupling.
    """

    field: LinearField
    interpolant: Interpolant
    target: GaussianMixture
    target_path: GaussianMixturePath
    ot: MonotoneCoupling
    pretrained: GaussianMixture
    pretrained_path: GaussianMixturePath
    pretrained_coupling: MonotoneCoupling

    KEYS = ("tgt_independent", "tgt_ot", "control", "pre_drift", "pre_coupling")

    def __post_init__(self) -> None:
        kinds = {"field": LinearField, "interpolant": Interpolant, "target": GaussianMixture,
                 "target_path": GaussianMixturePath, "ot": MonotoneCoupling, "pretrained": GaussianMixture,
                 "pretrained_path": GaussianMixturePath, "pretrained_coupling": MonotoneCoupling}
        for name, kind in kinds.items():
            if not isinstance(getattr(self, name), kind):
                raise TypeError(f"{name} must be a {kind.__name__}, got {type(getattr(self, name)).__name__}")
        for name in ("target", "pretrained"):
            if getattr(self, name).dim != 1:
                raise ValueError(f"{name} must be a 1-D mixture, got dimension {getattr(self, name).dim}")

    def _x0(self, n: int, g: torch.Generator) -> Tensor:
        return torch.randn(n, 1, generator=g, dtype=_F64)

    def _bridge(self, x0: Tensor, x1: Tensor, g: torch.Generator,
                field_of: MonotoneCoupling | GaussianMixturePath) -> PerSampleGradients:
        """Conditional-path gradients at (x0, x1) against the marginal field ``field_of.velocity``."""
        path = self.interpolant.sample(x0, x1, generator=g)
        cond = regression_gradients(self.field, path.xt, path.t, path.target)
        marg = regression_gradients(self.field, path.xt, path.t, field_of.velocity(path.xt, path.t))
        return PerSampleGradients(cond, marg)

    def draw(self, n: int, generator: torch.Generator) -> dict[str, PerSampleGradients]:
        """Per-sample gradients (n, F) of every term in :attr:`KEYS`, each term from its own draw (in the
        order of :attr:`KEYS`, the control sharing the OT draw), all from ``generator``."""
        n = check_positive_int("n", n, minimum=2)
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        g, interp, out = generator, self.interpolant, {}
        x0 = self._x0(n, g)
        out["tgt_independent"] = self._bridge(x0, self.target.sample(n, g), g, self.target_path)
        x0 = self._x0(n, g)
        path = interp.sample(x0, self.ot.map(x0), generator=g)
        cond = regression_gradients(self.field, path.xt, path.t, path.target)
        out["tgt_ot"] = PerSampleGradients(
            cond, regression_gradients(self.field, path.xt, path.t, self.ot.velocity(path.xt, path.t)))
        wrong = self.target_path.velocity(path.xt, path.t)   # the independent coupling's field: biased
        out["control"] = PerSampleGradients(cond, regression_gradients(self.field, path.xt, path.t, wrong))
        x0 = self._x0(n, g)
        t = interp.t_eps + (1 - 2 * interp.t_eps) * torch.rand(n, generator=g, dtype=_F64)
        xt = (1 - t[:, None]) * x0 + t[:, None] * self.pretrained.sample(n, g)
        gd = regression_gradients(self.field, xt, t, self.pretrained_path.velocity(xt, t))
        out["pre_drift"] = PerSampleGradients(gd, gd)
        x0 = self._x0(n, g)
        out["pre_coupling"] = self._bridge(x0, self.pretrained_coupling.map(x0), g, self.pretrained_coupling)
        return out


def combined_gradient_norm(target_mean: Tensor, pretrained_mean: Tensor, beta: float) -> float:
    """|(g_tgt + beta g_pre) / (1 + beta)|: the norm of the GFT objective's gradient from the two terms'
    mean gradients (F,) (the fixed denominator of the relative differences in T4)."""
    if not isinstance(target_mean, Tensor) or not isinstance(pretrained_mean, Tensor):
        raise TypeError("target_mean and pretrained_mean must be tensors (F,)")
    if target_mean.shape != pretrained_mean.shape or target_mean.ndim != 1:
        raise ValueError(f"target_mean and pretrained_mean must have the same shape (F,), got "
                         f"{tuple(target_mean.shape)} and {tuple(pretrained_mean.shape)}")
    b = check_finite_number("beta", beta, minimum=0.0)
    return float(((target_mean + b * pretrained_mean) / (1 + b)).norm())
