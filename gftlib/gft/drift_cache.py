"""Drift form of the pretrained term: points x_t ~ p^pre_t of the frozen pretrained sampler, with the
frozen drift b_pre(x_t, t) there."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from gftlib.gft.pretrained_cache import PretrainedCache, check_cache_settings
from gftlib.gft.tensors import norm64
from gftlib.losses import DriftBatch
from gftlib.paths.interpolants import PathSample
from gftlib.rng import mix_seed, seeded_generator
from gftlib.solvers import sample_ode, sde_states_at
from gftlib.types import VelocityField
from gftlib.validation import check_bool, check_finite_number, check_positive_int, check_tensor

__all__ = ["PretrainedDriftCache"]


class PretrainedDriftCache(PretrainedCache):
    """Drift form of the pretrained term: points x_t ~ p^pre_t with the frozen drift b_pre there.

    ``n_trajectories`` trajectories start at x0 ~ N(0, I) and follow the frozen pretrained field:
    the ODE (``diffusion = 0``; :func:`gftlib.solvers.ode.sample_ode`) or Euler–Maruyama with the same
    diffusion g (``diffusion > 0``; Euler–Maruyama, ``solver_method="euler"``, noise from a generator on
    ``device`` seeded with mix(seed, generation, 1)). With g > 0, ``pretrained_field`` must be the
    pretrained *SDE drift* for that g (probability-flow velocity + g^2/2 score), THEORY T2 caveat.
    The state is recorded at the times of ``time_grid``: an int G gives the midpoints
    t_k = t_eps + (1 - 2 t_eps) (k + 1/2) / G (a midpoint rule for the uniform t of the target term),
    or pass an increasing 1-D tensor of times in [0, 1]. The chain is the pretrained sampler itself
    (``solver_method`` with ``solver_steps`` uniform steps on [0, 1], the sampler that defines p_pre),
    read off at the cache times: a fixed-step ODE state between two grid points is torchdiffeq's
    linear interpolation (for Euler: the partial Euler step, i.e. the sampler's own piecewise-linear
    path), dopri5 its dense output, Euler–Maruyama a partial step (:func:`gftlib.solvers.sde.sde_states_at`).
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
        super().__init__(check_cache_settings(
            pretrained_field, shape, solver_method=solver_method, solver_steps=solver_steps, atol=atol,
            rtol=rtol, diffusion=diffusion, refresh_every=refresh_every, device=device, seed=seed,
            chunk_size=chunk_size, dtype=dtype))
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
            jitter_gen = seeded_generator(mix_seed(self.seed, generation, 2))
            u = torch.rand(n_times, dtype=torch.float64, generator=jitter_gen)
            self.times = self._strata_times(u)
        noise_gen = self._sde_noise(generation)
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
        return (norm64(self._x), norm64(self._b))

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
        idx = self._draw_indices(batch_size, generator)
        out = DriftBatch(x=self._x[idx], t=self._t[idx], target=self._b[idx])
        self._tick()
        return out

