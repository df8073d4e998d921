"""Coupling form of the pretrained term: cached pairs (x0, Phi_pre(x0)) of the frozen pretrained sampler."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from gftlib.gft.checks import check_interpolant
from gftlib.gft.pretrained_cache import PretrainedCache, check_cache_settings
from gftlib.gft.tensors import norm64
from gftlib.paths.interpolants import Interpolant, PathSample
from gftlib.solvers import sample_ode, sample_sde
from gftlib.types import VelocityField
from gftlib.validation import check_positive_int, check_tensor

__all__ = ["PretrainedCouplingCache"]


class PretrainedCouplingCache(PretrainedCache):
    """Coupling form of the pretrained term: cached pairs (x0, Phi_pre(x0)).

    ``size`` noise points x0 ~ N(0, I) of shape ``shape`` are pushed through the frozen pretrained
    ODE (:func:`gftlib.solvers.ode.sample_ode` with ``solver_method``/``solver_steps``, under
    ``torch.inference_mode``, in chunks of ``chunk_size``); ``pretrained_field`` must be the
    probability-flow ODE velocity. With ``diffusion = g > 0`` the pairs are (x0, X_1) of the
    pretrained *SDE* (Euler–Maruyama, ``solver_method="euler"``, noise seeded with
    mix(seed, generation, 1)) and ``pretrained_field`` must be its SDE drift for g (probability-flow
    velocity + g^2/2 score), the same field the drift cache needs: a coupling in Pi(p0, p_pre)
    (THEORY T4); integrating that drift as an ODE would give another law. :meth:`batch` draws pairs uniformly with replacement from the
    cache (indices from ``generator``) and returns the PathSample of ``interpolant`` with
    ``diffusion`` (the conditional target is the CFM target on the pretrained coupling pi_pre).
    With ``refresh_every = k`` the cache is regenerated with fresh x0 after every k batches (None:
    never). Memory: 2 * size * prod(shape) floats on ``device``.
    """

    _KIND = "coupling"

    def __init__(
        self,
        pretrained_field: VelocityField,
        shape: Any,
        *,
        size: int,
        interpolant: Interpolant | None = None,
        solver_method: str = "euler",
        solver_steps: int = 32,
        atol: float = 1e-5,
        rtol: float = 1e-5,
        refresh_every: int | None = None,
        device: str | torch.device = "cpu",
        seed: int = 0,
        diffusion: float = 0.0,
        chunk_size: int = 1024,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.interpolant = interpolant = check_interpolant(interpolant)
        super().__init__(check_cache_settings(
            pretrained_field, shape, solver_method=solver_method, solver_steps=solver_steps, atol=atol,
            rtol=rtol, diffusion=diffusion, refresh_every=refresh_every, device=device, seed=seed,
            chunk_size=chunk_size, dtype=dtype, interpolant=interpolant))
        self.size = check_positive_int("size", size)
        self._x0: Tensor | None = None
        self._x1: Tensor | None = None

    def _build(self, generation: int) -> None:
        x0 = self._noise(self.size, generation)
        noise_gen = self._sde_noise(generation)
        outs = []
        with torch.inference_mode():
            for start in range(0, self.size, self.chunk_size):
                xc = x0[start:start + self.chunk_size].to(self.device)
                if self.diffusion > 0:
                    res = sample_sde(self.field, xc, diffusion=self.diffusion, steps=self.solver_steps,
                                     generator=noise_gen)
                else:
                    res = sample_ode(self.field, xc, method=self.solver_method, steps=self.solver_steps,
                                     atol=self.atol, rtol=self.rtol)
                outs.append(res.x)
        self._x0 = x0.to(self.device)
        self._x1 = torch.cat(outs)  # cat outside inference mode: a normal tensor
        # validated once per build; batches drawn from the cache are not re-checked
        check_tensor("the pretrained sampler's output (coupling cache x1)", self._x1)

    def _fingerprint(self) -> tuple[float, ...]:
        return (norm64(self._x1), norm64(self._x1 - self._x0))

    @property
    def pairs(self) -> tuple[Tensor, Tensor]:
        """The current cache (x0, x1), each (size, *shape) (built if needed)."""
        self.prepare()
        return self._x0, self._x1

    def batch(self, batch_size: int, generator: torch.Generator, *,
              target_path: PathSample | None = None) -> PathSample:
        """Random pairs from the cache as a PathSample (t and z from ``generator``)."""
        idx = self._draw_indices(batch_size, generator)
        path = self.interpolant.sample(self._x0[idx], self._x1[idx], generator=generator,
                                       diffusion=self.diffusion, check_values=False)
        self._tick()
        return path

