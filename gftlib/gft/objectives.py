"""Training objectives: the bridge between :mod:`gftlib.losses` and the training loop.

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

import hashlib
import math
import warnings
from dataclasses import dataclass, replace
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn

from gftlib.paths.couplings import CoupledBatch, ExactOTCoupling, IndependentCoupling, SinkhornCoupling, make_coupling
from gftlib.paths.interpolants import Interpolant, PathSample
from gftlib.losses import DriftBatch, LossTerms, gft_loss
from gftlib.solvers.samplers import ODE_METHODS, sample_ode, sample_sde, sde_states_at
from gftlib.types import VelocityField
from gftlib.validation import (
    check_bool,
    check_choice,
    check_finite_number,
    check_positive_int,
    check_tensor,
    resolve_device,
)

__all__ = [
    "Objective",
    "PretrainedTerm",
    "ObjectiveBatch",
    "BatchSampler",
    "FlowMatchingObjective",
    "ReflowObjective",
    "PretrainedCouplingCache",
    "PretrainedDriftCache",
    "TargetPathRegularizer",
]

_SEED_MAX = 2**62


# ----------------------------------------------------------------------------------------- protocols
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


# ----------------------------------------------------------------------------------------- helpers
def _mix_seed(*values: int) -> int:
    """A well-mixed 62-bit seed from integers (numpy SeedSequence)."""
    a, b = np.random.SeedSequence([int(v) for v in values]).generate_state(2, dtype=np.uint32)
    return int((int(a) << 30) ^ int(b)) % _SEED_MAX


def _check_generator(generator: Any) -> torch.Generator:
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return generator


def _check_rank(rank: Any, world_size: Any, batch_size: int) -> tuple[int, int]:
    world_size = check_positive_int("world_size", world_size)
    rank = check_positive_int("rank", rank, minimum=0)
    if rank >= world_size:
        raise ValueError(f"rank must be in [0, world_size) = [0, {world_size}), got rank={rank}")
    if batch_size % world_size:
        raise ValueError(
            f"batch_size (the global batch) must be divisible by world_size, got batch_size={batch_size} "
            f"and world_size={world_size}"
        )
    return rank, world_size


def _fork_generator(generator: torch.Generator, rank: int) -> torch.Generator:
    """Per-rank generator seeded from a hash of ``generator``'s current state (the same on all ranks)
    mixed with the rank. ``get_state`` is host-side (a CUDA generator's state is its seed and offset),
    so forking neither draws from ``generator`` nor synchronises with the device."""
    digest = hashlib.blake2b(generator.get_state().numpy().tobytes(), digest_size=8).digest()
    local = torch.Generator(device=generator.device)
    local.manual_seed(_mix_seed(int.from_bytes(digest, "little"), rank))
    return local


def _to_device(x: Tensor, device: torch.device) -> Tensor:
    """``x`` on ``device``. A CPU -> CUDA copy is staged in pinned memory and does not block the host
    (a plain ``.to("cuda")`` of pageable memory synchronises the stream)."""
    if x.device == device:
        return x
    if x.device.type == "cpu" and device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def _couple(coupling: Any, x0: Tensor, x1: Tensor, generator: torch.Generator) -> CoupledBatch:
    """``coupling(x0, x1, generator=generator)``. The built-in independent coupling is applied
    without its input value checks (the objective's batches are finite by construction and the
    checks would synchronise a GPU every step); the result is identical."""
    if type(coupling) is IndependentCoupling:
        perm = torch.randperm(x0.shape[0], generator=generator, device=generator.device)
        perm = _to_device(perm, x1.device)
        return CoupledBatch(x0=x0, x1=x1[perm], index=perm)
    return coupling(x0, x1, generator=generator)


def _model_device(model: Any, fallback: torch.device) -> torch.device:
    """Device of the model's first parameter or buffer (``fallback`` for parameter-free callables)."""
    if isinstance(model, nn.Module):
        for tensor in model.parameters():
            return tensor.device
        for tensor in model.buffers():
            return tensor.device
    return fallback


def _move(batch: PathSample | DriftBatch, device: torch.device) -> PathSample | DriftBatch:
    """Move every tensor field of a PathSample / DriftBatch to ``device`` (no-op when already there)."""
    fields = {k: v.to(device) for k, v in vars(batch).items() if isinstance(v, Tensor)}
    return replace(batch, **fields)


def _norm64(x: Tensor) -> float:
    """Euclidean norm of all entries, accumulated in float64 (a cache fingerprint; no cancellation)."""
    return float(torch.linalg.vector_norm(x, dtype=torch.float64))


def _field_device(field: Any) -> torch.device | None:
    """Device of a network's parameters (None for parameter-free callables)."""
    if isinstance(field, nn.Module):
        for tensor in field.parameters():
            return tensor.device
    return None


def _check_field(name: str, field: Any) -> VelocityField:
    if not callable(field):
        raise TypeError(f"{name} must be callable as {name}(x, t), got {type(field).__name__}")
    return field


def _check_shape(shape: Any) -> tuple[int, ...]:
    try:
        out = tuple(int(s) for s in shape)
    except TypeError:
        raise TypeError(f"shape must be a tuple of positive ints (one sample's shape), got {shape!r}"
                        ) from None
    if not out or any(s < 1 for s in out):
        raise ValueError(
            f"shape must be a non-empty tuple of positive ints (one sample's shape), got {shape!r}")
    return out


def _check_diffusion(diffusion: Any, interpolant: Interpolant | None) -> float:
    g = check_finite_number("diffusion", diffusion, minimum=0.0)
    if g > 0 and interpolant is not None and interpolant.sigma == 0:
        raise ValueError(
            f"diffusion={g:g} > 0 needs a stochastic interpolant (sigma > 0), got {interpolant!r}"
        )
    return g


def _check_time_weight(time_weight: Any, interpolant: Interpolant, like: Tensor) -> None:
    """Validate w(t) once, where it enters: on 64 midpoint times of [t_eps, 1 - t_eps] it must return
    64 finite non-negative weights (the training hot path does not re-check the values)."""
    if not callable(time_weight):
        raise TypeError(f"time_weight must be None or a callable w(t), got {type(time_weight).__name__}")
    n = 64
    eps = interpolant.t_eps
    probe = eps + (1 - 2 * eps) * (torch.arange(n, dtype=torch.float64) + 0.5) / n
    w = time_weight(probe.to(device=like.device, dtype=like.dtype))
    check_tensor("time_weight(t)", w)
    if w.shape != (n,):
        raise ValueError(
            f"time_weight(t) must return one weight per time, shape ({n},) for t of shape ({n},), got "
            f"{tuple(w.shape)}")
    if bool((w < 0).any()):
        raise ValueError(
            f"time_weight(t) must be non-negative, got min {float(w.min()):g} on [t_eps, 1 - t_eps]")


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


# ----------------------------------------------------------------------------------------- data order
class BatchSampler:
    """Epoch-wise random permutations of ``range(n_items)`` from its own seeded CPU generator.

    Batches are consecutive blocks of ``batch_size`` indices of the stream perm_0 ++ perm_1 ++ ...,
    so every item is used exactly once per epoch (a batch may straddle two epochs; with
    ``batch_size > n_items`` one batch spans several epochs). ``epoch`` counts completed
    permutations. After :meth:`set_rank` the sampler still draws the *global* batch (``batch_size``
    is global) identically on every rank and :meth:`next_indices` returns the rank's contiguous
    slice of length ``batch_size // world_size``. :meth:`state_dict` holds the generator state, the
    current permutation, the position and the epoch, so a resumed sampler continues the exact order.
    """

    def __init__(self, n_items: int, batch_size: int, seed: int = 0) -> None:
        self.n_items = check_positive_int("n_items", n_items)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.seed = check_positive_int("seed", seed, minimum=0)
        self._generator = torch.Generator().manual_seed(self.seed)
        self._perm = torch.randperm(self.n_items, generator=self._generator)
        self._pos = 0
        self.epoch = 0
        self.rank, self.world_size = 0, 1

    def set_rank(self, rank: int, world_size: int) -> None:
        """Take the slice ``[rank * b, (rank + 1) * b)``, ``b = batch_size // world_size``, of each batch."""
        self.rank, self.world_size = _check_rank(rank, world_size, self.batch_size)

    @property
    def local_batch_size(self) -> int:
        return self.batch_size // self.world_size

    @property
    def local_slice(self) -> slice:
        b = self.local_batch_size
        return slice(self.rank * b, (self.rank + 1) * b)

    def next_global_indices(self) -> Tensor:
        """The next global batch, LongTensor ``(batch_size,)`` (advances the stream)."""
        parts = []
        need = self.batch_size
        while need > 0:
            if self._pos == self.n_items:
                self._perm = torch.randperm(self.n_items, generator=self._generator)
                self._pos = 0
                self.epoch += 1
            take = min(need, self.n_items - self._pos)
            parts.append(self._perm[self._pos:self._pos + take])
            self._pos += take
            need -= take
        return torch.cat(parts) if len(parts) > 1 else parts[0].clone()

    def next_indices(self) -> Tensor:
        """This rank's slice of the next global batch, LongTensor ``(batch_size // world_size,)``."""
        return self.next_global_indices()[self.local_slice]

    def state_dict(self) -> dict[str, Any]:
        return {
            "n_items": self.n_items,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "generator": self._generator.get_state(),
            "perm": self._perm.clone(),
            "pos": self._pos,
            "epoch": self.epoch,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = {"n_items", "batch_size", "generator", "perm", "pos", "epoch"} - set(state)
        if missing:
            raise ValueError(f"BatchSampler state is missing keys {sorted(missing)}")
        for key in ("n_items", "batch_size"):
            if int(state[key]) != getattr(self, key):
                raise ValueError(
                    f"cannot resume: the saved sampler has {key}={state[key]}, this one has "
                    f"{key}={getattr(self, key)}"
                )
        perm = torch.as_tensor(state["perm"], dtype=torch.long)
        if perm.shape != (self.n_items,):
            raise ValueError(f"saved permutation has shape {tuple(perm.shape)}, expected ({self.n_items},)")
        self._generator.set_state(state["generator"])
        self._perm = perm.clone()
        self._pos = int(state["pos"])
        self.epoch = int(state["epoch"])
        self.seed = int(state.get("seed", self.seed))


# ----------------------------------------------------------------------------------------- objectives
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
        if interpolant is None:
            interpolant = Interpolant()
        if not isinstance(interpolant, Interpolant):
            raise TypeError(
                f"interpolant must be a gftlib.paths.interpolants.Interpolant, got {type(interpolant).__name__}")
        self.interpolant = interpolant
        self.coupling = make_coupling(coupling) if isinstance(coupling, str) else coupling
        if not callable(self.coupling):
            raise TypeError(
                f"coupling must be a coupling name or a callable coupling, got {type(coupling).__name__}")
        self._check_pairing_batch(self.batch_size)
        self.diffusion = _check_diffusion(diffusion, interpolant)
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
            _check_time_weight(time_weight, interpolant, target_data)
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
        generator = _check_generator(generator)
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
        x1 = _to_device(data[_to_device(idx, data.device)], device)
        gdev = generator.device
        x0_all = torch.randn((sampler.batch_size, *shape), generator=generator, device=gdev, dtype=dtype)
        u_all = torch.rand(sampler.batch_size, generator=generator, device=gdev, dtype=torch.float64)
        sl = sampler.local_slice
        x0 = _to_device(x0_all[sl], device)
        t = _to_device(_draw_times(u_all[sl], self.interpolant, dtype), device)
        local = generator if sampler.world_size == 1 else _fork_generator(generator, sampler.rank)
        return _Head(x0=x0, x1=x1, t=t, local=local)

    def _finish(self, head: _Head, pair: CoupledBatch, beta: float, device: torch.device) -> ObjectiveBatch:
        """Path noise and target for the coupled pairs, then the pretrained batch (beta > 0)."""
        # Everything here was produced by the library from validated data: no value checks (each
        # would be a host-device synchronisation on a GPU), shapes are still checked.
        path = self.interpolant.sample(pair.x0, pair.x1, t=head.t, generator=head.local,
                                       diffusion=self.diffusion, check_values=False)
        pre = None
        if beta > 0:
            pre = _move(self.pretrained.batch(head.x0.shape[0], head.local, target_path=path), device)
        return ObjectiveBatch(target=path, pretrained=pre)

    def loss(self, model: nn.Module, beta: float, generator: torch.Generator) -> LossTerms:
        """Loss terms of one fresh batch at temperature ``beta`` (see :func:`gftlib.losses.gft_loss`)."""
        batch = self.sample_batch(beta, generator, device=_model_device(model, self.target_data.device))
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


class ReflowObjective:
    """Reflow baseline: plain CFM on pairs (x0, Phi_pre(x0)) of a :class:`PretrainedCouplingCache`.

    There is no target term in the GFT sense: the "target" data *are* the pretrained coupling, so
    the trained flow stays at p_pre and only straightens its paths. The returned LossTerms put the
    CFM loss on the pairs in ``total`` and ``target``; ``pretrained`` is 0. Only beta = 0 is
    accepted (use no cooling schedule). Under DDP each rank draws ``batch_size // world_size`` pairs
    with its own forked generator.
    """

    def __init__(self, cache: "PretrainedCouplingCache", *, batch_size: int,
                 time_weight: Callable[[Tensor], Tensor] | None = None) -> None:
        if not isinstance(cache, PretrainedCouplingCache):
            raise TypeError(f"cache must be a PretrainedCouplingCache, got {type(cache).__name__}")
        self.cache = cache
        self.batch_size = check_positive_int("batch_size", batch_size)
        if time_weight is not None:
            _check_time_weight(time_weight, cache.interpolant,
                               torch.empty(0, dtype=cache.dtype, device=cache.device))
        self.time_weight = time_weight
        self.diffusion = cache.diffusion
        self.rank, self.world_size = 0, 1

    def set_rank(self, rank: int, world_size: int) -> None:
        self.rank, self.world_size = _check_rank(rank, world_size, self.batch_size)

    def sample_batch(self, beta: float, generator: torch.Generator, *,
                     device: torch.device | str | None = None) -> ObjectiveBatch:
        beta = check_finite_number("beta", beta, minimum=0.0)
        if beta != 0:
            raise ValueError(f"ReflowObjective has no pretrained term: beta must be 0, got {beta:g}")
        generator = _check_generator(generator)
        local = generator if self.world_size == 1 else _fork_generator(generator, self.rank)
        path = self.cache.batch(self.batch_size // self.world_size, local)
        if device is not None:
            path = _move(path, torch.device(device))
        return ObjectiveBatch(target=path, pretrained=None)

    def loss(self, model: nn.Module, beta: float, generator: torch.Generator) -> LossTerms:
        batch = self.sample_batch(beta, generator, device=_model_device(model, self.cache.device))
        return gft_loss(model, batch.target, 0.0, None, weight=self.time_weight, normalize=True,
                        check_values=False)

    def state_dict(self) -> dict[str, Any]:
        return {"cache": self.cache.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "cache" not in state:
            raise ValueError("ReflowObjective state is missing key 'cache'")
        self.cache.load_state_dict(state["cache"])


# ----------------------------------------------------------------------------------------- pretrained terms
class _PretrainedCache:
    """Shared machinery: lazy deterministic build per generation, refresh counter, state.

    Generation k of a cache is a pure function of (seed, k, the frozen field, the solver settings,
    the device): its noise comes from a CPU generator seeded with mix(seed, k). The state therefore
    holds (generation, batches since refresh) plus a fingerprint of the cache; loading it rebuilds
    the same cache lazily on the next batch (and warns if the fingerprint differs, e.g. different
    pretrained weights or non-deterministic GPU kernels). Builds run in float32 with autocast off.
    """

    _KIND = "cache"

    def __init__(self, pretrained_field: VelocityField, shape: Any, *, refresh_every: int | None,
                 device: str | torch.device, seed: int, chunk_size: int, dtype: torch.dtype) -> None:
        self.field = _check_field("pretrained_field", pretrained_field)
        self.shape = _check_shape(shape)
        self.refresh_every = (None if refresh_every is None
                              else check_positive_int("refresh_every", refresh_every))
        self.device = resolve_device(device)
        self.seed = check_positive_int("seed", seed, minimum=0)
        self.chunk_size = check_positive_int("chunk_size", chunk_size)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        self.dtype = dtype
        self.generation = 0
        self.batches_since_refresh = 0
        self._built: int | None = None
        self._expected_fingerprint: tuple[float, ...] | None = None

    # subclasses implement _build(generation) and _fingerprint()
    def _build(self, generation: int) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _fingerprint(self) -> tuple[float, ...]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _set_solver(self, method: str, steps: int, atol: float, rtol: float) -> None:
        """Validate and store the pretrained sampler's settings (ODE method, steps, tolerances)."""
        self.solver_method = check_choice("solver_method", method, ODE_METHODS)
        self.solver_steps = check_positive_int("solver_steps", steps)
        self.atol = check_finite_number("atol", atol, minimum=0.0, strict=True)
        self.rtol = check_finite_number("rtol", rtol, minimum=0.0, strict=True)

    def _check_sde_solver(self) -> None:
        """With diffusion > 0 the pretrained sampler is Euler–Maruyama: refuse another ODE method."""
        if self.diffusion > 0 and self.solver_method != "euler":
            raise ValueError(f"diffusion={self.diffusion:g} > 0 samples the pretrained SDE by Euler–Maruyama: "
                             f"solver_method must be 'euler', got {self.solver_method!r}")

    def _noise(self, n: int, generation: int) -> Tensor:
        g = torch.Generator().manual_seed(_mix_seed(self.seed, generation))
        return torch.randn((n, *self.shape), generator=g, dtype=self.dtype)

    def prepare(self) -> "_PretrainedCache":
        """Build the current generation now (otherwise it is built on the first batch)."""
        if self._built != self.generation:
            with torch.autocast(device_type=self.device.type, enabled=False):
                self._build(self.generation)
            self._built = self.generation
            if self._expected_fingerprint is not None:
                got = self._fingerprint()
                want = self._expected_fingerprint
                self._expected_fingerprint = None
                if len(got) != len(want) or not all(
                        math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-8) for a, b in zip(got, want)):
                    warnings.warn(
                        f"rebuilt {type(self).__name__} (generation {self.generation}) differs from the "
                        f"saved one: fingerprint {got} vs {want} (different pretrained weights, solver "
                        f"settings or non-deterministic kernels); the data order is no longer exact",
                        RuntimeWarning, stacklevel=2,
                    )
        return self

    def _tick(self) -> None:
        self.batches_since_refresh += 1
        if self.refresh_every is not None and self.batches_since_refresh >= self.refresh_every:
            self.generation += 1
            self.batches_since_refresh = 0

    def _check_batch_args(self, batch_size: Any, generator: Any) -> tuple[int, torch.Generator]:
        return check_positive_int("batch_size", batch_size), _check_generator(generator)

    def state_dict(self) -> dict[str, Any]:
        fp = None
        if self._built == self.generation:
            fp = self._fingerprint()
        return {"kind": self._KIND, "seed": self.seed, "generation": self.generation,
                "batches_since_refresh": self.batches_since_refresh, "fingerprint": fp}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = {"kind", "seed", "generation", "batches_since_refresh"} - set(state)
        if missing:
            raise ValueError(f"{type(self).__name__} state is missing keys {sorted(missing)}")
        if state["kind"] != self._KIND:
            raise ValueError(f"cannot load a {state['kind']!r} state into a {self._KIND!r} cache")
        if int(state["seed"]) != self.seed:
            raise ValueError(
                f"cannot resume: the saved cache has seed={state['seed']}, this one seed={self.seed}")
        generation = int(state["generation"])
        if generation != self._built:
            self._built = None  # rebuilt lazily on the next batch
        self.generation = generation
        self.batches_since_refresh = int(state["batches_since_refresh"])
        fp = state.get("fingerprint")
        self._expected_fingerprint = (None if fp is None or self._built == generation
                                      else tuple(float(v) for v in fp))


class PretrainedCouplingCache(_PretrainedCache):
    """Coupling form of the pretrained term: cached pairs (x0, Phi_pre(x0)).

    ``size`` noise points x0 ~ N(0, I) of shape ``shape`` are pushed through the frozen pretrained
    ODE (:func:`gftlib.solvers.samplers.sample_ode` with ``solver_method``/``solver_steps``, under
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
        super().__init__(pretrained_field, shape, refresh_every=refresh_every, device=device, seed=seed,
                         chunk_size=chunk_size, dtype=dtype)
        self.size = check_positive_int("size", size)
        if interpolant is None:
            interpolant = Interpolant()
        if not isinstance(interpolant, Interpolant):
            raise TypeError(
                f"interpolant must be a gftlib.paths.interpolants.Interpolant, got {type(interpolant).__name__}")
        self.interpolant = interpolant
        self._set_solver(solver_method, solver_steps, atol, rtol)
        self.diffusion = _check_diffusion(diffusion, interpolant)
        self._check_sde_solver()
        self._x0: Tensor | None = None
        self._x1: Tensor | None = None

    def _build(self, generation: int) -> None:
        x0 = self._noise(self.size, generation)
        noise_gen = None
        if self.diffusion > 0:
            noise_gen = torch.Generator(device=self.device)
            noise_gen.manual_seed(_mix_seed(self.seed, generation, 1))
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
        return (_norm64(self._x1), _norm64(self._x1 - self._x0))

    @property
    def pairs(self) -> tuple[Tensor, Tensor]:
        """The current cache (x0, x1), each (size, *shape) (built if needed)."""
        self.prepare()
        return self._x0, self._x1

    def batch(self, batch_size: int, generator: torch.Generator, *,
              target_path: PathSample | None = None) -> PathSample:
        """Random pairs from the cache as a PathSample (t and z from ``generator``)."""
        batch_size, generator = self._check_batch_args(batch_size, generator)
        self.prepare()
        idx = torch.randint(self.size, (batch_size,), generator=generator, device=generator.device)
        idx = idx.to(self.device)
        path = self.interpolant.sample(self._x0[idx], self._x1[idx], generator=generator,
                                       diffusion=self.diffusion, check_values=False)
        self._tick()
        return path


class PretrainedDriftCache(_PretrainedCache):
    """Drift form of the pretrained term: points x_t ~ p^pre_t with the frozen drift b_pre there.

    ``n_trajectories`` trajectories start at x0 ~ N(0, I) and follow the frozen pretrained field:
    the ODE (``diffusion = 0``; :func:`gftlib.solvers.samplers.sample_ode`) or Euler–Maruyama with the same
    diffusion g (``diffusion > 0``; Euler–Maruyama, ``solver_method="euler"``, noise from a generator on
    ``device`` seeded with mix(seed, generation, 1)). With g > 0, ``pretrained_field`` must be the
    pretrained *SDE drift* for that g (probability-flow velocity + g^2/2 score), THEORY T2 caveat.
    The state is recorded at the times of ``time_grid``: an int G gives the midpoints
    t_k = t_eps + (1 - 2 t_eps) (k + 1/2) / G (a midpoint rule for the uniform t of the target term),
    or pass an increasing 1-D tensor of times in [0, 1]. The chain is the pretrained sampler itself
    (``solver_method`` with ``solver_steps`` uniform steps on [0, 1], the sampler that defines p_pre),
    read off at the cache times: a fixed-step ODE state between two grid points is torchdiffeq's
    linear interpolation (for Euler: the partial Euler step, i.e. the sampler's own piecewise-linear
    path), dopri5 its dense output, Euler–Maruyama a partial step (:func:`gftlib.solvers.samplers.sde_states_at`).
    ``jitter=True`` (int ``time_grid`` only) draws every build's times as a stratified sample,
    t_k = t_eps + (1 - 2 t_eps) (k + u_k) / G with u_k ~ U(0, 1) from a generator seeded with
    mix(seed, generation, 2): an unbiased estimate of the uniform-t expectation, and with
    ``refresh_every`` the regressed times cover [t_eps, 1 - t_eps] continuously over training, so a
    network with high-frequency time features cannot fit the pretrained term at G times only.
    :meth:`batch` draws (x, t, b_pre(x, t)) uniformly with replacement from the
    G * n_trajectories cached points. Memory: 2 * G * n_trajectories * prod(shape) floats.
    """

    _KIND = "drift"

    def __init__(
        self,
        pretrained_field: VelocityField,
        shape: Any,
        *,
        n_trajectories: int,
        time_grid: int | Tensor = 32,
        t_eps: float = 0.0,
        jitter: bool = False,
        solver_method: str = "euler",
        solver_steps: int = 32,
        atol: float = 1e-5,
        rtol: float = 1e-5,
        diffusion: float = 0.0,
        refresh_every: int | None = None,
        device: str | torch.device = "cpu",
        seed: int = 0,
        chunk_size: int = 1024,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__(pretrained_field, shape, refresh_every=refresh_every, device=device, seed=seed,
                         chunk_size=chunk_size, dtype=dtype)
        self.n_trajectories = check_positive_int("n_trajectories", n_trajectories)
        t_eps = check_finite_number("t_eps", t_eps, minimum=0.0)
        if not t_eps < 0.5:
            raise ValueError(f"t_eps must be a finite number >= 0 and < 0.5, got {t_eps!r}")
        self.jitter = check_bool("jitter", jitter)
        self.t_eps = t_eps
        if isinstance(time_grid, Tensor) or isinstance(time_grid, (list, tuple)):
            grid = torch.as_tensor(time_grid, dtype=torch.float64).reshape(-1)
            if grid.numel() == 0 or not bool(torch.isfinite(grid).all()):
                raise ValueError(f"time_grid must be a non-empty list of finite times, got {time_grid!r}")
            if float(grid.min()) < 0 or float(grid.max()) > 1:
                raise ValueError(f"time_grid times must lie in [0, 1], got {grid.tolist()}")
            if grid.numel() > 1 and not bool((grid[1:] > grid[:-1]).all()):
                raise ValueError(f"time_grid must be strictly increasing, got {grid.tolist()}")
            if jitter:
                raise ValueError(
                    "jitter=True needs an int time_grid (a number of strata), got explicit times")
        else:
            n_times = check_positive_int("time_grid", time_grid)
            grid = self._strata_times(torch.full((n_times,), 0.5, dtype=torch.float64))
        self.times = grid  # with jitter: the stratum midpoints until the first build
        self._set_solver(solver_method, solver_steps, atol, rtol)
        self.diffusion = _check_diffusion(diffusion, None)
        self._check_sde_solver()
        self._x: Tensor | None = None
        self._t: Tensor | None = None
        self._b: Tensor | None = None

    def _strata_times(self, offsets: Tensor) -> Tensor:
        """t_k = t_eps + (1 - 2 t_eps) (k + offsets[k]) / G for offsets (G,) in [0, 1) (0.5: midpoints)."""
        n_times = offsets.numel()
        span = 1 - 2 * self.t_eps
        return self.t_eps + span * (torch.arange(n_times, dtype=torch.float64) + offsets) / n_times

    @property
    def size(self) -> int:
        return self.n_trajectories * self.times.numel()

    def _build(self, generation: int) -> None:
        x0 = self._noise(self.n_trajectories, generation)
        n_times = self.times.numel()
        if self.jitter:
            u = torch.rand(n_times, dtype=torch.float64,
                           generator=torch.Generator().manual_seed(_mix_seed(self.seed, generation, 2)))
            self.times = self._strata_times(u)
        noise_gen = None
        if self.diffusion > 0:
            noise_gen = torch.Generator(device=self.device)
            noise_gen.manual_seed(_mix_seed(self.seed, generation, 1))
        xs = torch.empty((n_times, self.n_trajectories, *self.shape), dtype=self.dtype, device=self.device)
        bs = torch.empty_like(xs)
        with torch.inference_mode():
            for start in range(0, self.n_trajectories, self.chunk_size):
                x = x0[start:start + self.chunk_size].to(self.device)
                stop = start + x.shape[0]
                # the pretrained sampler itself (its grid on [0, 1]), read off at the cache times
                if self.diffusion > 0:
                    states = sde_states_at(self.field, x, self.times, diffusion=self.diffusion,
                                           steps=self.solver_steps, generator=noise_gen)
                else:
                    states = sample_ode(self.field, x, method=self.solver_method, steps=self.solver_steps,
                                        atol=self.atol, rtol=self.rtol, trajectory_times=self.times).trajectory
                for k in range(n_times):
                    tt = torch.full((x.shape[0],), float(self.times[k]), dtype=self.dtype, device=self.device)
                    xs[k, start:stop] = states[k]
                    bs[k, start:stop] = self.field(states[k], tt)
        # validated once per build; batches drawn from the cache are not re-checked
        check_tensor("the pretrained trajectories (drift cache x)", xs)
        check_tensor("the pretrained drift (drift cache b_pre(x, t))", bs)
        # xs, bs were allocated outside inference mode (normal tensors), so views are fine for autograd
        self._x = xs.reshape(n_times * self.n_trajectories, *self.shape)
        self._b = bs.reshape(n_times * self.n_trajectories, *self.shape)
        self._t = self.times.to(self.dtype).repeat_interleave(self.n_trajectories).to(self.device)

    def _fingerprint(self) -> tuple[float, ...]:
        return (_norm64(self._x), _norm64(self._b))

    def points(self, k: int) -> tuple[Tensor, Tensor]:
        """Cached points and drifts at grid time ``times[k]``, each (n_trajectories, *shape)."""
        self.prepare()
        k = check_positive_int("k", k, minimum=0)
        if k >= self.times.numel():
            raise ValueError(f"k must be < len(times) = {self.times.numel()}, got {k}")
        sl = slice(k * self.n_trajectories, (k + 1) * self.n_trajectories)
        return self._x[sl], self._b[sl]

    def batch(self, batch_size: int, generator: torch.Generator, *,
              target_path: PathSample | None = None) -> DriftBatch:
        """Random cached (x, t, b_pre(x, t)) triples as a DriftBatch (indices from ``generator``)."""
        batch_size, generator = self._check_batch_args(batch_size, generator)
        self.prepare()
        idx = torch.randint(self.size, (batch_size,), generator=generator, device=generator.device)
        idx = idx.to(self.device)
        out = DriftBatch(x=self._x[idx], t=self._t[idx], target=self._b[idx])
        self._tick()
        return out


class TargetPathRegularizer:
    """Naive "L2-to-pretrained" baseline: the pretrained term on the *target* path.

    :meth:`batch` needs the current target batch (``target_path``) and returns
    DriftBatch(x = target_path.xt, t = target_path.t, target = b_pre(xt, t)) with the frozen
    field evaluated under ``torch.no_grad()``; ``batch_size`` must equal the target batch's size.
    Its pointwise optimum (b_tgt + beta b_pre) / (1 + beta) has no terminal-law guarantee (THEORY).
    Stateless (empty state).
    """

    def __init__(self, pretrained_field: VelocityField) -> None:
        self.field = _check_field("pretrained_field", pretrained_field)

    def batch(self, batch_size: int, generator: torch.Generator, *,
              target_path: PathSample | None = None) -> DriftBatch:
        batch_size = check_positive_int("batch_size", batch_size)
        if not isinstance(target_path, PathSample):
            raise TypeError(
                "TargetPathRegularizer.batch needs target_path=PathSample (the current target batch), "
                f"got {type(target_path).__name__}"
            )
        if target_path.xt.shape[0] != batch_size:
            raise ValueError(
                f"batch_size must equal the target batch size {target_path.xt.shape[0]}, got {batch_size}"
            )
        x, t = target_path.xt, target_path.t
        dev = _field_device(self.field)
        with torch.no_grad():
            if dev is None or dev == x.device:
                target = self.field(x, t)
            else:  # the frozen network lives elsewhere: evaluate there, bring the result back
                target = self.field(x.to(dev), t.to(dev)).to(x.device)
        return DriftBatch(x=x, t=t, target=target.detach())

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "target-path"}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "target-path":
            raise ValueError(f"cannot load {state.get('kind')!r} state into a TargetPathRegularizer")
