"""The GFT objective: conditional flow matching on the target plus an optional pretrained term.

An *objective* owns the data order (a resumable :class:`BatchSampler`), draws one batch per call
(noise, times, coupling from the trainer's generator) and returns :class:`~gftlib.losses.LossTerms`
at a temperature ``beta``. Conventions: t = 0 is noise (x0 ~ N(0, I)), t = 1 is data; batches are
``(n, *shape)``.

GFT objective (THEORY.md, conditional form) at temperature beta:

    target term      E_{t, (x0, x1) ~ pi} |b(x_t, t) - u_t(x_t | x0, x1)|^2      (CFM on the target)
    pretrained term  one of
        drift form     E_{t, x ~ p^pre_t} |b(x, t) - b_pre(x, t)|^2               (PretrainedDriftCache)
        coupling form  E_{t, (x0, x1) ~ pi_pre} |b(x_t, t) - u_t(x_t | x0, x1)|^2 (PretrainedCouplingCache)
        naive L2       E_{t, x ~ p^tgt_t} |b(x, t) - b_pre(x, t)|^2               (TargetPathRegularizer)
    total            (target + beta * pretrained) / (1 + beta)   (normalize=True)

The pretrained term is a :class:`PretrainedTerm`: ``batch(batch_size, generator, *, target_path)``
returns a :class:`~gftlib.paths.interpolants.PathSample` (coupling form) or a
:class:`~gftlib.losses.DriftBatch` (drift form, naive regulariser); it is drawn only when beta > 0.

Distributed data parallel (DDP): ``batch_size`` is always the *global* batch. On every rank the
objective draws the same global data indices (its own seeded sampler), the global noise ``x0``
(B, *shape) and global times ``t`` (B,) from the trainer's generator, and keeps the rank's
contiguous slice; pass a generator that is seeded identically on every rank and the union of the
rank batches is exactly the single-process batch (if it is seeded per rank, every rank's batch is
still a correct i.i.d. draw, only no longer a slice of one global batch). The coupling (e.g. exact
OT) is computed per rank on the local slice. Everything drawn after the slice (coupling randomness,
path noise z for sigma > 0, the pretrained term's draws) uses a per-rank generator forked from the
trainer's generator (one 64-bit draw, identical on all ranks, mixed with the rank), so ranks never
share noise. With ``world_size == 1`` no fork is made and the trainer's generator is used directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from gftlib.gft.batch_sampler import BatchSampler
from gftlib.gft.checks import check_diffusion, check_generator, check_interpolant, check_time_weight
from gftlib.gft.tensors import model_device, move_batch, to_device
from gftlib.losses import DriftBatch, LossTerms, gft_loss
from gftlib.paths.couplings import CoupledBatch, ExactOTCoupling, IndependentCoupling, SinkhornCoupling, make_coupling
from gftlib.paths.interpolants import Interpolant, PathSample
from gftlib.rng import fork_generator
from gftlib.validation import check_bool, check_finite_number, check_positive_int, check_tensor

__all__ = ["Objective", "PretrainedTerm", "ObjectiveBatch", "FlowMatchingObjective"]


@runtime_checkable
class Objective(Protocol):
    """Draws one training batch and returns the loss terms at temperature ``beta``."""

    def loss(self, model: nn.Module, beta: float, generator: torch.Generator) -> LossTerms: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def set_rank(self, rank: int, world_size: int) -> None: ...


@runtime_checkable
class PretrainedTerm(Protocol):
    """Source of the pretrained term's batch (drawn only when beta > 0).

    ``batch`` returns a PathSample (coupling form: regress on its ``target`` at ``xt``) or a
    DriftBatch (drift form: regress on the frozen pretrained drift at ``x``). ``target_path`` is the
    current target-term batch (used by the naive regulariser, ignored by the caches).
    """

    def batch(self, batch_size: int, generator: torch.Generator, *,
              target_path: PathSample | None = None) -> PathSample | DriftBatch: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class ObjectiveBatch:
    """One drawn batch: the target term's path and the pretrained term's batch (None if not drawn)."""

    target: PathSample
    pretrained: PathSample | DriftBatch | None



@dataclass(frozen=True)
class _Head:
    """The first draws of a batch (data, noise, times, per-rank generator), before the coupling."""

    x0: Tensor
    x1: Tensor
    t: Tensor
    local: torch.Generator


def _draw_times(u: Tensor, interpolant: Interpolant, dtype: torch.dtype) -> Tensor:
    """Uniform u in [0, 1) -> t uniform on [t_eps, 1 - t_eps] (kept off the ends when sigma > 0),
    exactly as ``Interpolant.sample`` draws t itself."""
    t = (interpolant.t_eps + (1 - 2 * interpolant.t_eps) * u).to(dtype)
    if interpolant.sigma > 0:
        eps = torch.finfo(dtype).eps
        t = t.clamp(eps, 1 - eps)
    return t



def _couple(coupling: Any, x0: Tensor, x1: Tensor, generator: torch.Generator) -> CoupledBatch:
    """``coupling(x0, x1, generator=generator)``. The built-in independent coupling is applied
    without its input value checks (the objective's batches are finite by construction and the
    checks would synchronise a GPU every step); the result is identical."""
    if type(coupling) is IndependentCoupling:
        perm = torch.randperm(x0.shape[0], generator=generator, device=generator.device)
        perm = to_device(perm, x1.device)
        return CoupledBatch(x0=x0, x1=x1[perm], index=perm)
    return coupling(x0, x1, generator=generator)


class FlowMatchingObjective:
    """CFM on target data plus an optional pretrained term: the GFT objective (see module doc).

    ``target_data``: (N, *shape) samples of q (kept where they are; batches are moved to the model's
    device). ``batch_size``: global batch (divisible by the world size under DDP). ``interpolant``:
    the conditional path (default straight line). ``coupling``: a coupling object or a name for
    :func:`gftlib.paths.couplings.make_coupling` ("independent", "ot", "sinkhorn"). ``pretrained``: a
    :class:`PretrainedTerm` or None (then only beta = 0 is allowed). ``diffusion``: g of the target
    term's conditional drift (0: ODE velocity; > 0 needs sigma > 0); a pretrained term with a
    ``diffusion`` attribute must use the same g (THEORY T2). ``time_weight``: w(t) passed to
    :func:`gftlib.losses.gft_loss` for both terms. ``seed``: the data order's seed.
    ``fused_forward``: evaluate both terms in one forward pass (``gft_loss(fused=True)``); set False
    for a network with batch-dependent layers (BatchNorm in training mode).

    Draw order per call (documented so that tests can replay it): data indices (own sampler);
    x0 = randn(B, *shape), then u = rand(B) in float64 from ``generator`` on its device (t = t_eps +
    (1 - 2 t_eps) u); slice to the rank; [fork a per-rank generator if world_size > 1]; coupling;
    path noise z (interpolant); pretrained batch (beta > 0 only).
    """

    def __init__(
        self,
        target_data: Tensor,
        *,
        batch_size: int,
        interpolant: Interpolant | None = None,
        coupling: Any = "independent",
        pretrained: PretrainedTerm | None = None,
        diffusion: float = 0.0,
        time_weight: Callable[[Tensor], Tensor] | None = None,
        normalize: bool = True,
        seed: int = 0,
        fused_forward: bool = True,
    ) -> None:
        check_tensor("target_data", target_data, min_ndim=2)
        if not target_data.is_floating_point():
            raise TypeError(f"target_data must be a floating-point tensor, got dtype {target_data.dtype}")
        self.target_data = target_data
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.sampler = BatchSampler(target_data.shape[0], self.batch_size, seed)
        self.interpolant = interpolant = check_interpolant(interpolant)
        self.coupling = make_coupling(coupling) if isinstance(coupling, str) else coupling
        if not callable(self.coupling):
            raise TypeError(
                f"coupling must be a coupling name or a callable coupling, got {type(coupling).__name__}")
        self._check_pairing_batch(self.batch_size)
        self.diffusion = check_diffusion(diffusion, interpolant)
        if pretrained is not None:
            if not isinstance(pretrained, PretrainedTerm):
                raise TypeError(
                    "pretrained must provide batch(batch_size, generator, *, target_path), state_dict() and "
                    f"load_state_dict(); got {type(pretrained).__name__}"
                )
            g_pre = getattr(pretrained, "diffusion", None)
            if g_pre is not None and float(g_pre) != self.diffusion:
                raise ValueError(
                    f"the pretrained term's diffusion ({float(g_pre):g}) must equal the objective's "
                    f"diffusion ({self.diffusion:g}): both processes must share g (THEORY, T2)"
                )
        self.pretrained = pretrained
        if time_weight is not None:
            check_time_weight(time_weight, interpolant, target_data)
        self.time_weight = time_weight
        self.normalize = bool(normalize)
        self.fused_forward = check_bool("fused_forward", fused_forward)

    # -- DDP
    def set_rank(self, rank: int, world_size: int) -> None:
        self.sampler.set_rank(rank, world_size)
        self._check_pairing_batch(self.batch_size // int(world_size))

    def _check_pairing_batch(self, local_batch: int) -> None:
        """Minibatch OT / Sinkhorn pair points within a batch: each rank needs at least two."""
        if isinstance(self.coupling, (ExactOTCoupling, SinkhornCoupling)) and local_batch < 2:
            raise ValueError(
                f"batch_size must be >= 2 per rank for coupling {type(self.coupling).__name__} "
                f"(minibatch OT pairs points within a batch), got batch_size={local_batch}")

    # -- drawing
    def sample_batch(self, beta: float, generator: torch.Generator, *,
                     device: torch.device | str | None = None) -> ObjectiveBatch:
        """Draw one batch (advances the data order and ``generator``) on ``device`` (default: the
        target data's device)."""
        beta, generator, device = self._check_draw(beta, generator, device)
        head = self._draw_head(generator, device)
        pair = _couple(self.coupling, head.x0, head.x1, head.local)
        return self._finish(head, pair, beta, device)

    # The three stages of sample_batch, also used by gftlib.gft.prefetch.PrefetchingObjective (which
    # draws the next batch's head early and solves its coupling in a background thread).
    def _check_draw(self, beta: Any, generator: Any, device: Any
                    ) -> tuple[float, torch.Generator, torch.device]:
        beta = check_finite_number("beta", beta, minimum=0.0)
        generator = check_generator(generator)
        if beta > 0 and self.pretrained is None:
            raise ValueError(f"beta={beta:g} > 0 needs a pretrained term; this objective has pretrained=None")
        device = self.target_data.device if device is None else torch.device(device)
        return beta, generator, device

    def _draw_head(self, generator: torch.Generator, device: torch.device) -> _Head:
        """Data indices, x0 and t (and the per-rank generator): every draw before the coupling."""
        data = self.target_data
        shape, dtype = tuple(data.shape[1:]), data.dtype
        sampler = self.sampler
        idx = sampler.next_indices()
        x1 = to_device(data[to_device(idx, data.device)], device)
        gdev = generator.device
        x0_all = torch.randn((sampler.batch_size, *shape), generator=generator, device=gdev, dtype=dtype)
        u_all = torch.rand(sampler.batch_size, generator=generator, device=gdev, dtype=torch.float64)
        sl = sampler.local_slice
        x0 = to_device(x0_all[sl], device)
        t = to_device(_draw_times(u_all[sl], self.interpolant, dtype), device)
        local = generator if sampler.world_size == 1 else fork_generator(generator, sampler.rank)
        return _Head(x0=x0, x1=x1, t=t, local=local)

    def _finish(self, head: _Head, pair: CoupledBatch, beta: float, device: torch.device) -> ObjectiveBatch:
        """Path noise and target for the coupled pairs, then the pretrained batch (beta > 0)."""
        # Everything here was produced by the library from validated data: no value checks (each
        # would be a host-device synchronisation on a GPU), shapes are still checked.
        path = self.interpolant.sample(pair.x0, pair.x1, t=head.t, generator=head.local,
                                       diffusion=self.diffusion, check_values=False)
        pre = None
        if beta > 0:
            pre = move_batch(self.pretrained.batch(head.x0.shape[0], head.local, target_path=path), device)
        return ObjectiveBatch(target=path, pretrained=pre)

    def loss(self, model: nn.Module, beta: float, generator: torch.Generator) -> LossTerms:
        """Loss terms of one fresh batch at temperature ``beta`` (see :func:`gftlib.losses.gft_loss`)."""
        batch = self.sample_batch(beta, generator, device=model_device(model, self.target_data.device))
        return gft_loss(model, batch.target, float(beta), batch.pretrained,
                        weight=self.time_weight, normalize=self.normalize, check_values=False,
                        fused=self.fused_forward)

    # -- state
    def state_dict(self) -> dict[str, Any]:
        return {
            "sampler": self.sampler.state_dict(),
            "pretrained": None if self.pretrained is None else self.pretrained.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "sampler" not in state:
            raise ValueError("FlowMatchingObjective state is missing key 'sampler'")
        if state.get("prefetch") is not None:
            raise ValueError(
                "cannot resume: this state was written by gftlib.gft.prefetch.PrefetchingObjective with the next "
                "batch already drawn; resume with PrefetchingObjective(objective) to continue exactly")
        self.sampler.load_state_dict(state["sampler"])
        saved = state.get("pretrained")
        if (saved is None) != (self.pretrained is None):
            raise ValueError(
                "cannot resume: the saved objective "
                + ("had no pretrained term" if saved is None else "had a pretrained term")
                + " but this one " + ("has one" if saved is None else "has none")
            )
        if saved is not None:
            self.pretrained.load_state_dict(saved)

