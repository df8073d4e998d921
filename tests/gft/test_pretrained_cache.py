"""Tests of gftlib.gft.pretrained_cache: the one validation of the arguments both caches share, and the
shared per-generation noise streams."""

from __future__ import annotations

import pytest
import torch

from gftlib.gft.coupling_cache import PretrainedCouplingCache
from gftlib.gft.drift_cache import PretrainedDriftCache
from gftlib.gft.pretrained_cache import CacheSettings, check_cache_settings
from gftlib.paths.interpolants import Interpolant
from gftlib.rng import mix_seed

torch.set_num_threads(1)

GOOD = dict(solver_method="euler", solver_steps=8, atol=1e-5, rtol=1e-5, diffusion=0.0, refresh_every=None,
            device="cpu", seed=0, chunk_size=16, dtype=torch.float32)


def field(x, t):
    return -x


def test_check_cache_settings_returns_the_validated_values():
    s = check_cache_settings(field, [2], **{**GOOD, "solver_steps": 4.0, "refresh_every": 3})
    assert isinstance(s, CacheSettings)
    assert s.shape == (2,) and s.solver_steps == 4 and isinstance(s.solver_steps, int)
    assert s.refresh_every == 3 and s.device == torch.device("cpu") and s.field is field
    # the caches carry the same settings as attributes
    common = dict(solver_steps=4, refresh_every=3, chunk_size=16)
    for cache in (PretrainedCouplingCache(field, (2,), size=4, **common),
                  PretrainedDriftCache(field, (2,), n_trajectories=4, **common)):
        for name in ("shape", "solver_method", "solver_steps", "atol", "rtol", "diffusion", "refresh_every",
                     "device", "seed", "chunk_size", "dtype"):
            assert getattr(cache, name) == getattr(s, name), name


BAD = [
    ({"pretrained_field": 3}, TypeError, "pretrained_field must be callable as pretrained_field"),
    ({"shape": ()}, ValueError, r"shape must be a non-empty tuple of positive ints .*got \(\)"),
    ({"shape": 5}, TypeError, "shape must be a tuple of positive ints"),
    ({"solver_method": "heun"}, ValueError,
     "solver_method must be one of 'euler', 'midpoint', 'rk4', 'dopri5'; got 'heun'"),
    ({"solver_steps": 0}, ValueError, "solver_steps must be an integer >= 1, got 0"),
    ({"atol": 0.0}, ValueError, "atol must be a finite number > 0, got 0.0"),
    ({"rtol": float("nan")}, ValueError, "rtol must be a finite number > 0, got nan"),
    ({"diffusion": -0.5}, ValueError, "diffusion must be a finite number >= 0, got -0.5"),
    ({"diffusion": 0.5, "solver_method": "rk4"}, ValueError, "solver_method must be 'euler', got 'rk4'"),
    ({"refresh_every": 0}, ValueError, "refresh_every must be an integer >= 1, got 0"),
    ({"device": "tpu"}, ValueError, "device"),
    ({"seed": -1}, ValueError, "seed must be an integer >= 0, got -1"),
    ({"chunk_size": 0}, ValueError, "chunk_size must be an integer >= 1, got 0"),
    ({"dtype": torch.int64}, TypeError, "dtype must be a floating torch.dtype, got torch.int64"),
]


@pytest.mark.parametrize("change,exc,match", BAD)
def test_check_cache_settings_rejects_bad_input_naming_the_parameter(change, exc, match):
    args = {"pretrained_field": field, "shape": (2,), **GOOD, **change}
    f, shape = args.pop("pretrained_field"), args.pop("shape")
    with pytest.raises(exc, match=match):
        check_cache_settings(f, shape, **args)


@pytest.mark.parametrize("change,exc,match", BAD)
def test_both_caches_reject_bad_shared_input_through_the_one_check(change, exc, match):
    args = {"pretrained_field": field, "shape": (2,), **GOOD, **change}
    f, shape = args.pop("pretrained_field"), args.pop("shape")
    interpolant = Interpolant(0.5) if args["diffusion"] > 0 else None  # let g > 0 pass the path check
    with pytest.raises(exc, match=match):
        PretrainedCouplingCache(f, shape, size=4, interpolant=interpolant, **args)
    with pytest.raises(exc, match=match):
        PretrainedDriftCache(f, shape, n_trajectories=4, **args)


def test_diffusion_needs_a_stochastic_path_only_where_there_is_one():
    with pytest.raises(ValueError, match="diffusion=0.5 > 0 needs a stochastic interpolant"):
        check_cache_settings(field, (2,), **{**GOOD, "diffusion": 0.5}, interpolant=Interpolant())
    assert check_cache_settings(field, (2,), **{**GOOD, "diffusion": 0.5}).diffusion == 0.5  # drift form


def test_generation_noise_streams_are_the_documented_seeds():
    """Generation k's x0 from a CPU generator seeded mix(seed, k); the SDE noise from mix(seed, k, 1) on
    the device (none for g = 0): the same streams for both caches."""
    ode = PretrainedDriftCache(field, (2,), n_trajectories=4, seed=5)
    sde = PretrainedCouplingCache(field, (2,), size=4, seed=5, diffusion=0.3, interpolant=Interpolant(0.3))
    want = torch.randn((3, 2), generator=torch.Generator().manual_seed(mix_seed(5, 2)))
    assert torch.equal(ode._noise(3, 2), want) and torch.equal(sde._noise(3, 2), want)
    assert ode._sde_noise(2) is None
    noise = sde._sde_noise(2)
    assert torch.equal(torch.rand(4, generator=noise),
                       torch.rand(4, generator=torch.Generator().manual_seed(mix_seed(5, 2, 1))))
