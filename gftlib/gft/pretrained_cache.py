"""What the two pretrained-term caches share: their validated settings, the lazy deterministic build
per generation, the refresh counter and the resumable state (:class:`PretrainedCache`)."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor

from gftlib.gft.checks import check_diffusion, check_field, check_generator, check_shape
from gftlib.paths.interpolants import Interpolant
from gftlib.rng import mix_seed, seeded_generator
from gftlib.solvers import ODE_METHODS
from gftlib.types import VelocityField
from gftlib.validation import check_choice, check_finite_number, check_positive_int, resolve_device

__all__ = ["CacheSettings", "check_cache_settings", "PretrainedCache"]


@dataclass(frozen=True)
class CacheSettings:
    """The constructor arguments both caches share, validated (attribute names as on the caches).

    ``field``: the frozen pretrained field b_pre(x, t); ``shape``: one sample's shape; the pretrained
    sampler (``solver_method`` with ``solver_steps`` steps or ``atol``/``rtol``; Euler–Maruyama with
    ``diffusion`` g > 0); ``refresh_every`` (None: never rebuild); ``device``, ``seed``, ``chunk_size``
    (points per solver call) and the floating ``dtype`` of the cache.
    """

    field: VelocityField
    shape: tuple[int, ...]
    solver_method: str
    solver_steps: int
    atol: float
    rtol: float
    diffusion: float
    refresh_every: int | None
    device: torch.device
    seed: int
    chunk_size: int
    dtype: torch.dtype


def check_cache_settings(pretrained_field: Any, shape: Any, *, solver_method: Any, solver_steps: Any,
                         atol: Any, rtol: Any, diffusion: Any, refresh_every: Any, device: Any, seed: Any,
                         chunk_size: Any, dtype: Any, interpolant: Interpolant | None = None
                         ) -> CacheSettings:
    """Validate the shared cache arguments once (each error names the parameter, value and what is
    allowed). ``interpolant``: the coupling cache's path, whose sigma must be > 0 when g > 0 (None:
    no path to check). With g > 0 the pretrained sampler is Euler–Maruyama, so ``solver_method``
    must be "euler"."""
    field = check_field("pretrained_field", pretrained_field)
    sample_shape = check_shape(shape)
    method = check_choice("solver_method", solver_method, ODE_METHODS)
    steps = check_positive_int("solver_steps", solver_steps)
    atol = check_finite_number("atol", atol, minimum=0.0, strict=True)
    rtol = check_finite_number("rtol", rtol, minimum=0.0, strict=True)
    g = check_diffusion(diffusion, interpolant)
    if g > 0 and method != "euler":
        raise ValueError(f"diffusion={g:g} > 0 samples the pretrained SDE by Euler–Maruyama: "
                         f"solver_method must be 'euler', got {method!r}")
    refresh = None if refresh_every is None else check_positive_int("refresh_every", refresh_every)
    dev = resolve_device(device)
    seed = check_positive_int("seed", seed, minimum=0)
    chunk_size = check_positive_int("chunk_size", chunk_size)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    return CacheSettings(field=field, shape=sample_shape, solver_method=method, solver_steps=steps, atol=atol,
                         rtol=rtol, diffusion=g, refresh_every=refresh, device=dev, seed=seed,
                         chunk_size=chunk_size, dtype=dtype)


class PretrainedCache:
    """Shared machinery: lazy deterministic build per generation, refresh counter, state.

    Generation k of a cache is a pure function of (seed, k, the frozen field, the solver settings,
    the device): its noise comes from a CPU generator seeded with mix(seed, k). The state therefore
    holds (generation, batches since refresh) plus a fingerprint of the cache; loading it rebuilds
    the same cache lazily on the next batch (and warns if the fingerprint differs, e.g. different
    pretrained weights or non-deterministic GPU kernels). Builds run in float32 with autocast off.
    """

    _KIND = "cache"

    def __init__(self, settings: CacheSettings) -> None:
        """Every field of ``settings`` becomes an attribute of the same name (``self.solver_steps``, ...)."""
        for item in fields(settings):
            setattr(self, item.name, getattr(settings, item.name))
        self.generation = 0
        self.batches_since_refresh = 0
        self._built: int | None = None
        self._expected_fingerprint: tuple[float, ...] | None = None

    # subclasses implement _build(generation) and _fingerprint()
    def _build(self, generation: int) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _fingerprint(self) -> tuple[float, ...]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _noise(self, n: int, generation: int) -> Tensor:
        g = seeded_generator(mix_seed(self.seed, generation))
        return torch.randn((n, *self.shape), generator=g, dtype=self.dtype)

    def _sde_noise(self, generation: int) -> torch.Generator | None:
        """Euler–Maruyama noise of generation k (on ``device``, seeded with mix(seed, k, 1)); None for
        the ODE (g = 0)."""
        if self.diffusion == 0:
            return None
        return seeded_generator(mix_seed(self.seed, generation, 1), self.device)

    def prepare(self) -> "PretrainedCache":
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

    def _draw_indices(self, batch_size: Any, generator: Any) -> Tensor:
        """``batch_size`` cache indices drawn uniformly with replacement from ``generator`` (on its
        device, then moved to the cache's), after building the current generation if needed."""
        batch_size, generator = check_positive_int("batch_size", batch_size), check_generator(generator)
        self.prepare()
        idx = torch.randint(self.size, (batch_size,), generator=generator, device=generator.device)
        return idx.to(self.device)

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

