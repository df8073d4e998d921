"""Tests of gftlib.gft: data order, draws, DDP slicing, pretrained caches, resume."""

from __future__ import annotations

import io
import math
import warnings

import pytest
import torch

from gftlib.theory.analytic import GaussianMixture, GaussianMixturePath
from gftlib.paths.interpolants import Interpolant, PathSample
from gftlib.losses import DriftBatch, cfm_loss
from gftlib.gft.batch_sampler import BatchSampler
from gftlib.gft.objective import FlowMatchingObjective, ObjectiveBatch
from gftlib.gft.coupling_cache import PretrainedCouplingCache
from gftlib.gft.drift_cache import PretrainedDriftCache
from gftlib.gft.regularizer import TargetPathRegularizer
from gftlib.solvers.ode import sample_ode

torch.set_num_threads(1)

MEAN = torch.tensor([2.0, -1.0])
STD = 0.5


def gaussian_path(sigma: float = 0.0) -> GaussianMixturePath:
    """Single Gaussian N(MEAN, STD^2 I): under the independent straight-line coupling its ODE map is
    x0 -> MEAN + STD * x0 and its marginals are N(t MEAN, v(t) I),
    v = (1-t)^2 + t^2 STD^2 + sigma^2 t(1-t)."""
    return GaussianMixturePath(GaussianMixture(weights=[1.0], means=[MEAN.tolist()], stds=[STD]), sigma=sigma)


def velocity_of(path: GaussianMixturePath):
    return lambda x, t: path.velocity(x, t).to(x.dtype)


def drift_of(path: GaussianMixturePath, g: float):
    return lambda x, t: path.drift(x, t, g).to(x.dtype)


def marginal_var(t: float, sigma: float = 0.0) -> float:
    return (1 - t) ** 2 + t**2 * STD**2 + sigma**2 * t * (1 - t)


class Linear(torch.nn.Module):
    """b(x, t) = A x + c t + d: a tiny model with parameters."""

    def __init__(self, dim: int = 2, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.A = torch.nn.Parameter(torch.randn(dim, dim, generator=g) * 0.3)
        self.c = torch.nn.Parameter(torch.randn(dim, generator=g))
        self.d = torch.nn.Parameter(torch.randn(dim, generator=g))

    def forward(self, x, t):
        return x @ self.A.T + t[:, None] * self.c + self.d


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def roundtrip(state):
    """Serialize like a checkpoint does."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


# ----------------------------------------------------------------------------------------- BatchSampler
def test_batch_sampler_covers_every_item_once_per_epoch():
    s = BatchSampler(10, 3, seed=1)
    stream = torch.cat([s.next_indices() for _ in range(10)])  # 30 items = 3 epochs
    for e in range(3):
        assert sorted(stream[10 * e:10 * (e + 1)].tolist()) == list(range(10))
    assert s.epoch == 2
    # different epochs use different permutations (probability 1/10! of a false failure per pair)
    assert not torch.equal(stream[:10], stream[10:20])


def test_batch_sampler_batch_larger_than_dataset():
    s = BatchSampler(4, 10, seed=0)
    stream = torch.cat([s.next_indices() for _ in range(2)])
    for e in range(5):
        assert sorted(stream[4 * e:4 * (e + 1)].tolist()) == [0, 1, 2, 3]


def test_batch_sampler_resume_is_exact():
    a = BatchSampler(17, 5, seed=3)
    for _ in range(4):
        a.next_indices()
    state = roundtrip(a.state_dict())
    b = BatchSampler(17, 5, seed=99)  # a different seed: everything comes from the state
    b.load_state_dict(state)
    for _ in range(12):  # crosses several epochs, so the generator state matters too
        assert torch.equal(a.next_indices(), b.next_indices())
    assert a.epoch == b.epoch


@pytest.mark.parametrize("world_size", [2, 4])
def test_batch_sampler_rank_slices_union_is_global_batch(world_size):
    ref = BatchSampler(23, 8, seed=5)
    ranks = [BatchSampler(23, 8, seed=5) for _ in range(world_size)]
    for r, s in enumerate(ranks):
        s.set_rank(r, world_size)
    for _ in range(7):
        glob = ref.next_indices()
        parts = [s.next_indices() for s in ranks]
        assert all(p.shape == (8 // world_size,) for p in parts)
        assert torch.equal(torch.cat(parts), glob)


def test_batch_sampler_rejects_bad_input():
    with pytest.raises(ValueError, match="n_items"):
        BatchSampler(0, 4)
    with pytest.raises(ValueError, match="batch_size"):
        BatchSampler(5, 0)
    s = BatchSampler(10, 6)
    with pytest.raises(ValueError, match="divisible by world_size"):
        s.set_rank(0, 4)
    with pytest.raises(ValueError, match="rank must be in"):
        s.set_rank(2, 2)
    with pytest.raises(ValueError, match="n_items=10"):
        BatchSampler(11, 6).load_state_dict(s.state_dict())
    with pytest.raises(ValueError, match="missing keys"):
        s.load_state_dict({"pos": 0})


# ----------------------------------------------------------------------------------------- objective draws
def _data(n=40, d=2, seed=0):
    return torch.randn(n, d, generator=gen(seed)) + 3.0


def test_objective_at_beta0_is_cfm_on_the_documented_draw():
    data = _data()
    model = Linear()
    obj = FlowMatchingObjective(data, batch_size=8, interpolant=Interpolant(), coupling="independent", seed=7)
    terms = obj.loss(model, 0.0, gen(11))
    # Replay the documented draw order by hand.
    g = gen(11)
    idx = BatchSampler(40, 8, seed=7).next_indices()
    x0 = torch.randn(8, 2, generator=g)
    t = torch.rand(8, generator=g, dtype=torch.float64).float()
    perm = torch.randperm(8, generator=g)
    x1 = data[idx][perm]
    xt = (1 - t[:, None]) * x0 + t[:, None] * x1
    expected = ((model(xt, t) - (x1 - x0)) ** 2).sum(1).mean()
    torch.testing.assert_close(terms.total, expected)
    torch.testing.assert_close(terms.target, expected)
    assert float(terms.pretrained) == 0.0
    # and equals cfm_loss on the batch drawn from the same state
    obj2 = FlowMatchingObjective(data, batch_size=8, coupling="independent", seed=7)
    batch = obj2.sample_batch(0.0, gen(11))
    assert isinstance(batch, ObjectiveBatch) and batch.pretrained is None
    assert torch.equal(cfm_loss(model, batch.target), terms.total)


def _rows(x: torch.Tensor) -> list[tuple[float, ...]]:
    return sorted(map(tuple, x.tolist()))


def test_objective_ddp_slices_are_the_global_batch():
    data = _data(30)
    ref = FlowMatchingObjective(data, batch_size=12, coupling="independent", seed=2)
    order = BatchSampler(30, 12, seed=2)
    ws = 3
    ranks = [FlowMatchingObjective(data, batch_size=12, coupling="independent", seed=2) for _ in range(ws)]
    for r, o in enumerate(ranks):
        o.set_rank(r, ws)
    for step in range(3):
        glob = ref.sample_batch(0.0, gen(100 + step)).target
        idx = order.next_indices()
        parts = [o.sample_batch(0.0, gen(100 + step)).target for o in ranks]  # identically seeded generators
        torch.testing.assert_close(torch.cat([p.x0 for p in parts]), glob.x0)
        torch.testing.assert_close(torch.cat([p.t for p in parts]), glob.t)
        for r, p in enumerate(parts):  # the independent coupling shuffles within each rank
            assert _rows(p.x1) == _rows(data[idx[4 * r:4 * (r + 1)]])
        assert _rows(torch.cat([p.x1 for p in parts])) == _rows(glob.x1)


def test_objective_ddp_ranks_do_not_share_path_noise():
    data = _data(16)
    interp = Interpolant(sigma=0.5, t_eps=0.01)
    objs = [FlowMatchingObjective(data, batch_size=8, interpolant=interp, seed=0) for _ in range(2)]
    for r, o in enumerate(objs):
        o.set_rank(r, 2)
    paths = [o.sample_batch(0.0, gen(3)).target for o in objs]
    z = [(p.xt - interp.mean(p.x0, p.x1, p.t)) / interp.std(p.t)[:, None] for p in paths]
    assert not torch.allclose(z[0], z[1])


def test_objective_rejects_bad_input():
    data = _data()
    with pytest.raises(ValueError, match="needs a pretrained term"):
        FlowMatchingObjective(data, batch_size=4).loss(Linear(), 0.5, gen())
    with pytest.raises(ValueError, match="beta must be"):
        FlowMatchingObjective(data, batch_size=4).loss(Linear(), -1.0, gen())
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        FlowMatchingObjective(data, batch_size=4).loss(Linear(), 0.0, 3)
    with pytest.raises(ValueError, match="sigma > 0"):
        FlowMatchingObjective(data, batch_size=4, diffusion=0.5)
    with pytest.raises(TypeError, match="pretrained must provide"):
        FlowMatchingObjective(data, batch_size=4, pretrained=object())
    with pytest.raises(ValueError, match="must equal the objective's diffusion"):
        term = PretrainedDriftCache(velocity_of(gaussian_path()), (2,), n_trajectories=4, diffusion=0.3)
        FlowMatchingObjective(data, batch_size=4, interpolant=Interpolant(sigma=0.3, t_eps=0.01),
                              pretrained=term)
    with pytest.raises(ValueError, match="coupling must be one of"):
        FlowMatchingObjective(data, batch_size=4, coupling="bogus")
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        FlowMatchingObjective(torch.randn(5), batch_size=4)
    with pytest.raises(ValueError, match="divisible by world_size"):
        FlowMatchingObjective(data, batch_size=6).set_rank(0, 4)
    obj = FlowMatchingObjective(data, batch_size=4)
    with pytest.raises(ValueError, match="had no pretrained term"):
        term = TargetPathRegularizer(velocity_of(gaussian_path()))
        FlowMatchingObjective(data, batch_size=4, pretrained=term).load_state_dict(obj.state_dict())


# ----------------------------------------------------------------------------------------- coupling cache
def test_coupling_cache_pairs_are_the_pretrained_ode_map():
    field = velocity_of(gaussian_path())
    cache = PretrainedCouplingCache(field, (2,), size=300, solver_method="rk4", solver_steps=16, seed=4,
                                    chunk_size=128)
    x0, x1 = cache.pairs
    assert x0.shape == x1.shape == (300, 2)
    # closed-form ODE map of the Gaussian path; RK4 with h = 1/16 on this smooth field errs ~1e-5
    torch.testing.assert_close(x1, MEAN + STD * x0, atol=1e-3, rtol=0)
    # exactly the sampler's output on the same noise
    torch.testing.assert_close(x1, sample_ode(field, x0, method="rk4", steps=16).x, atol=1e-6, rtol=0)
    # x0 ~ N(0, I): mean within 5 standard errors (1/sqrt(300))
    assert float(x0.mean(0).abs().max()) < 5 / math.sqrt(300)


def test_coupling_cache_batches_and_refresh():
    field = velocity_of(gaussian_path())
    cache = PretrainedCouplingCache(field, (2,), size=64, solver_method="rk4", solver_steps=16,
                                    refresh_every=2, seed=0)
    g = gen(1)
    first = cache.pairs[0].clone()
    for k in range(5):
        p = cache.batch(32, g)
        assert isinstance(p, PathSample)
        torch.testing.assert_close(p.x1, MEAN + STD * p.x0, atol=1e-3, rtol=0)  # rows are cache pairs
        torch.testing.assert_close(p.target, p.x1 - p.x0)
        assert cache.generation == (k + 1) // 2
    assert not torch.equal(cache.pairs[0], first)  # refreshed with fresh noise
    x0, x1 = cache.pairs
    torch.testing.assert_close(x1, MEAN + STD * x0, atol=1e-3, rtol=0)


def test_coupling_cache_state_round_trip_and_fingerprint_warning():
    field = velocity_of(gaussian_path())
    kw = dict(size=50, solver_method="euler", solver_steps=8, refresh_every=3, seed=2)
    a = PretrainedCouplingCache(field, (2,), **kw)
    ga = gen(9)
    for _ in range(4):
        a.batch(10, ga)
    state = roundtrip(a.state_dict())
    gb = gen(0)
    gb.set_state(ga.get_state())
    b = PretrainedCouplingCache(field, (2,), **kw)
    b.load_state_dict(state)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(4):  # crosses a refresh
            pa, pb = a.batch(10, ga), b.batch(10, gb)
            assert torch.equal(pa.xt, pb.xt) and torch.equal(pa.target, pb.target)
    # a cache rebuilt with other pretrained weights is detected
    other = PretrainedCouplingCache(lambda x, t: 1.01 * field(x, t), (2,), **kw)
    other.load_state_dict(a.state_dict())
    with pytest.warns(RuntimeWarning, match="differs from the saved one"):
        other.batch(10, gen())


def test_coupling_cache_rejects_bad_input():
    field = velocity_of(gaussian_path())
    with pytest.raises(ValueError, match="size"):
        PretrainedCouplingCache(field, (2,), size=0)
    with pytest.raises(ValueError, match="solver_method"):
        PretrainedCouplingCache(field, (2,), size=4, solver_method="heun")
    with pytest.raises(ValueError, match="shape"):
        PretrainedCouplingCache(field, (), size=4)
    with pytest.raises(TypeError, match="pretrained_field must be callable"):
        PretrainedCouplingCache(3, (2,), size=4)
    with pytest.raises(ValueError, match="sigma > 0"):
        PretrainedCouplingCache(field, (2,), size=4, diffusion=0.5)
    with pytest.raises(ValueError, match="refresh_every"):
        PretrainedCouplingCache(field, (2,), size=4, refresh_every=0)
    c = PretrainedCouplingCache(field, (2,), size=4, seed=1)
    with pytest.raises(ValueError, match="seed=1"):
        PretrainedCouplingCache(field, (2,), size=4, seed=2).load_state_dict(c.state_dict())
    with pytest.raises(ValueError, match="cannot load a 'coupling' state"):
        PretrainedDriftCache(field, (2,), n_trajectories=4).load_state_dict(c.state_dict())


# ----------------------------------------------------------------------------------------- drift cache
def _check_marginals(cache: PretrainedDriftCache, field, sigma: float, extra_tol: float) -> None:
    n = cache.n_trajectories
    for k, t in enumerate(cache.times.tolist()):
        x, b = cache.points(k)
        v = marginal_var(t, sigma)
        se_mean = math.sqrt(v / n)
        se_var = v * math.sqrt(2 / (n - 1))
        assert torch.allclose(x.mean(0), t * MEAN, atol=5 * se_mean + extra_tol), (t, x.mean(0))
        assert torch.allclose(x.var(0), torch.full((2,), v), atol=5 * se_var + extra_tol), (t, x.var(0), v)
        # the stored target is the frozen drift at the stored point and time
        torch.testing.assert_close(b, field(x, torch.full((n,), t)), atol=1e-5, rtol=1e-5)


def test_drift_cache_ode_points_follow_pretrained_marginals():
    field = velocity_of(gaussian_path())
    cache = PretrainedDriftCache(field, (2,), n_trajectories=3000, time_grid=4, solver_method="rk4",
                                 solver_steps=16, seed=3)
    torch.testing.assert_close(cache.times, torch.tensor([0.125, 0.375, 0.625, 0.875], dtype=torch.float64))
    _check_marginals(cache, field, 0.0, extra_tol=1e-3)  # RK4 error is negligible


def test_drift_cache_sde_points_follow_pretrained_marginals():
    g = 0.8
    field = drift_of(gaussian_path(sigma=g), g)
    cache = PretrainedDriftCache(field, (2,), n_trajectories=3000, time_grid=torch.tensor([0.25, 0.5, 0.9]),
                                 solver_steps=100, diffusion=g, seed=5)
    # Euler–Maruyama has weak error O(h); h = 1/100 with O(1) drift Lipschitz constants -> 0.03 allowance.
    # (Without the noise the variance at t = 0.5 would be short by g^2/4 = 0.16.)
    _check_marginals(cache, field, g, extra_tol=0.03)


def test_drift_cache_batches_and_state():
    field = velocity_of(gaussian_path())
    kw = dict(n_trajectories=20, time_grid=8, t_eps=0.05, solver_steps=8, refresh_every=2, seed=1)
    a = PretrainedDriftCache(field, (2,), **kw)
    assert float(a.times.min()) > 0.05 and float(a.times.max()) < 0.95
    ga = gen(2)
    batch = a.batch(16, ga)
    assert isinstance(batch, DriftBatch) and batch.x.shape == (16, 2) and batch.t.shape == (16,)
    grid = a.times.float()
    assert all(bool((grid - t).abs().min() < 1e-6) for t in batch.t)  # exact grid times
    torch.testing.assert_close(batch.target, field(batch.x, batch.t), atol=1e-5, rtol=1e-5)
    a.batch(16, ga)  # triggers a refresh
    assert a.generation == 1
    state = roundtrip(a.state_dict())
    b = PretrainedDriftCache(field, (2,), **kw)
    b.load_state_dict(state)
    gb = gen(0)
    gb.set_state(ga.get_state())
    for _ in range(3):
        pa, pb = a.batch(16, ga), b.batch(16, gb)
        assert torch.equal(pa.x, pb.x) and torch.equal(pa.t, pb.t) and torch.equal(pa.target, pb.target)


def test_drift_cache_jitter_draws_stratified_times_per_build():
    field = velocity_of(gaussian_path())
    kw = dict(n_trajectories=3000, time_grid=4, t_eps=0.05, solver_method="rk4", solver_steps=16,
              refresh_every=1, seed=3, jitter=True)
    cache = PretrainedDriftCache(field, (2,), **kw)
    seen = []
    g = gen(4)
    for generation in range(3):
        cache.prepare()
        times = cache.times.clone()
        lo = 0.05 + 0.9 * torch.arange(4, dtype=torch.float64) / 4
        assert bool((times >= lo).all() and (times < lo + 0.9 / 4).all())  # one time per stratum
        # the stored points follow the pretrained marginals at the jittered times (same check as the grid)
        _check_marginals(cache, field, 0.0, extra_tol=1e-3)
        seen.append(times)
        cache.batch(8, g)  # refresh_every=1: the next build is a new generation
        assert cache.generation == generation + 1
    assert not torch.equal(seen[0], seen[1]) and not torch.equal(seen[1], seen[2])
    # the same seed and generation give the same times (exact resume)
    again = PretrainedDriftCache(field, (2,), **kw)
    torch.testing.assert_close(again.prepare().times, seen[0], rtol=0, atol=0)


def test_drift_cache_jitter_is_uniform_within_strata():
    # u_k = (t_k - stratum start) / width must be U(0, 1): over 400 builds its mean is 1/2 within 5 SE
    field = velocity_of(gaussian_path())
    us = []
    for seed in range(400):
        c = PretrainedDriftCache(field, (2,), n_trajectories=1, time_grid=2, solver_steps=1, seed=seed, jitter=True)
        us.append((c.prepare().times - torch.tensor([0.0, 0.5], dtype=torch.float64)) / 0.5)
    u = torch.stack(us)
    assert bool(((u >= 0) & (u < 1)).all())
    se = math.sqrt(1 / 12 / u.shape[0])
    assert (u.mean(0) - 0.5).abs().max().item() < 5 * se


def test_drift_cache_rejects_bad_input():
    field = velocity_of(gaussian_path())
    with pytest.raises(ValueError, match="n_trajectories"):
        PretrainedDriftCache(field, (2,), n_trajectories=0)
    with pytest.raises(ValueError, match="strictly increasing"):
        PretrainedDriftCache(field, (2,), n_trajectories=4, time_grid=torch.tensor([0.5, 0.2]))
    with pytest.raises(ValueError, match="lie in"):
        PretrainedDriftCache(field, (2,), n_trajectories=4, time_grid=torch.tensor([0.5, 1.2]))
    with pytest.raises(ValueError, match="time_grid"):
        PretrainedDriftCache(field, (2,), n_trajectories=4, time_grid=0)
    with pytest.raises(ValueError, match="t_eps"):
        PretrainedDriftCache(field, (2,), n_trajectories=4, t_eps=0.5)
    with pytest.raises(ValueError, match="diffusion"):
        PretrainedDriftCache(field, (2,), n_trajectories=4, diffusion=-1.0)
    with pytest.raises(ValueError, match="jitter=True needs an int time_grid"):
        PretrainedDriftCache(field, (2,), n_trajectories=4, time_grid=torch.tensor([0.2, 0.5]), jitter=True)
    with pytest.raises(TypeError, match="jitter must be True or False"):
        PretrainedDriftCache(field, (2,), n_trajectories=4, jitter="yes")
    cache = PretrainedDriftCache(field, (2,), n_trajectories=4, time_grid=3)
    with pytest.raises(ValueError, match="k must be"):
        cache.points(3)


# ----------------------------------------------------------------------------------------- naive regulariser
def test_target_path_regularizer_uses_target_points():
    field = velocity_of(gaussian_path())
    reg = TargetPathRegularizer(field)
    data = _data()
    obj = FlowMatchingObjective(data, batch_size=8, coupling="ot", pretrained=reg)
    batch = obj.sample_batch(2.0, gen(4))
    path, pre = batch.target, batch.pretrained
    assert isinstance(pre, DriftBatch)
    assert torch.equal(pre.x, path.xt) and torch.equal(pre.t, path.t)
    torch.testing.assert_close(pre.target, field(path.xt, path.t))
    model = Linear()
    obj2 = FlowMatchingObjective(data, batch_size=8, coupling="ot", pretrained=reg)
    terms = obj2.loss(model, 2.0, gen(4))  # the same draw as `batch`
    want_pre = ((model(path.xt, path.t) - field(path.xt, path.t)) ** 2).sum(1).mean()
    want_tgt = ((model(path.xt, path.t) - path.target) ** 2).sum(1).mean()
    torch.testing.assert_close(terms.pretrained, want_pre)
    torch.testing.assert_close(terms.total, (want_tgt + 2.0 * want_pre) / 3.0)
    with pytest.raises(TypeError, match="target_path"):
        reg.batch(8, gen())
    with pytest.raises(ValueError, match="batch_size must equal"):
        reg.batch(7, gen(), target_path=path)


def test_objective_state_round_trip_with_pretrained_cache():
    data = _data()
    field = velocity_of(gaussian_path())

    def make():
        term = PretrainedCouplingCache(field, (2,), size=40, solver_steps=8, refresh_every=3, seed=8)
        return FlowMatchingObjective(data, batch_size=8, coupling="ot", pretrained=term, seed=3)

    a, model = make(), Linear()
    ga = gen(1)
    for _ in range(4):
        a.loss(model, 1.0, ga)
    state = roundtrip(a.state_dict())
    b = make()
    b.load_state_dict(state)
    gb = gen(0)
    gb.set_state(ga.get_state())
    for beta in (1.0, 0.5, 0.0, 0.25):
        ta, tb = a.loss(model, beta, ga), b.loss(model, beta, gb)
        assert torch.equal(ta.total, tb.total) and torch.equal(ta.pretrained, tb.pretrained)


# ----------------------------------------------------------------------------------------- T2 minimiser
def test_objective_minimiser_in_a_window_is_the_gft_mixture_drift():
    """THEORY T2 through the objective's own draws (1-D, drift form, independent target coupling).

    Over a constant c on a window W of (x, t), the expected objective E_tgt[1_W |c - u|^2] +
    beta E_pre[1_W |c - b_pre|^2] is minimised by c* = (E_tgt[1_W u] + beta E_pre[1_W b_pre]) /
    (P_tgt(W) + beta P_pre(W)), with E_tgt[1_W u] = int_W p_tgt b_tgt (t uniform) and the pretrained
    part at the drift cache's grid times. The Monte Carlo minimiser from sample_batch must match
    c* (quadrature of the analytic paths) within 5 standard errors (draws + cache, delta method).
    """
    q = GaussianMixture(weights=[0.5, 0.5], means=[[-1.5], [1.5]], stds=[0.4, 0.4])
    tgt = GaussianMixturePath(q)
    pre = GaussianMixturePath(GaussianMixture(weights=[1.0], means=[[0.5]], stds=[0.6]))
    n_batches, bsz, n_traj, n_grid, beta = 50, 2000, 20000, 20, 1.0
    data = q.sample(n_batches * bsz, gen(0)).float()  # one epoch: every target draw is i.i.d.
    cache = PretrainedDriftCache(velocity_of(pre), (1,), n_trajectories=n_traj, time_grid=n_grid,
                                 solver_method="rk4", solver_steps=40, seed=1, chunk_size=n_traj)
    obj = FlowMatchingObjective(data, batch_size=bsz, coupling="independent", pretrained=cache, seed=2)
    xlo, xhi, tlo, thi = 0.2, 1.0, 0.5, 0.7  # both densities have mass here; 4 grid times inside

    def in_window(x, t):
        return ((x[:, 0] >= xlo) & (x[:, 0] <= xhi) & (t >= tlo) & (t <= thi)).double()

    g = gen(3)
    a, na, b, nb = [], [], [], []
    for _ in range(n_batches):
        batch = obj.sample_batch(beta, g)
        w = in_window(batch.target.xt, batch.target.t)
        a.append(w * batch.target.target[:, 0].double())
        na.append(w)
        w = in_window(batch.pretrained.x, batch.pretrained.t)
        b.append(w * batch.pretrained.target[:, 0].double())
        nb.append(w)
    a, na, b, nb = map(torch.cat, (a, na, b, nb))
    denom = na.mean() + beta * nb.mean()
    c_hat = float((a.mean() + beta * b.mean()) / denom)

    xs = torch.linspace(xlo, xhi, 801, dtype=torch.float64)

    def x_integrals(path, t):
        p = path.log_prob(xs[:, None], t).exp()
        v = path.velocity(xs[:, None], t)[:, 0]
        return torch.stack([torch.trapezoid(p * v, xs), torch.trapezoid(p, xs)])

    ts = torch.linspace(tlo, thi, 401, dtype=torch.float64)
    e_t, p_t = torch.trapezoid(torch.stack([x_integrals(tgt, float(t)) for t in ts]), ts, dim=0)
    in_grid = [k for k, tk in enumerate(cache.times.tolist()) if tlo <= tk <= thi]
    assert len(in_grid) == 4
    e_p, p_p = sum(x_integrals(pre, float(cache.times[k])) for k in in_grid) / n_grid

    def c_star(bt):
        return float((e_t + bt * e_p) / (p_t + bt * p_p))

    c_ref = c_star(beta)
    n = a.numel()
    var = float((a - c_ref * na).var()) / n + beta**2 * float((b - c_ref * nb).var()) / n
    per_traj = torch.zeros(n_traj, dtype=torch.float64)  # the cache is itself a sample of trajectories
    for k in in_grid:
        x, drift = cache.points(k)
        w = in_window(x, torch.full((n_traj,), float(cache.times[k])))
        per_traj += w * (drift[:, 0].double() - c_ref) / n_grid
    var += beta**2 * float(per_traj.var()) / n_traj
    se = math.sqrt(var) / float(denom)
    assert abs(c_hat - c_ref) < 5 * se, (c_hat, c_ref, se)
    # the test discriminates: target-only, pretrained-only and a mis-weighted beta are far away
    for wrong in (c_star(0.0), float(e_p / p_p), c_star(beta / (1 + beta))):
        assert abs(wrong - c_ref) > 20 * se


# ------------------------------------------------- the drift cache's chain is the pretrained sampler
def test_drift_cache_euler_chain_is_the_pretrained_sampler():
    """Euler on the sampler's own grid (solver_steps uniform steps on [0, 1]); a cache time t in
    [t_j, t_j+1) holds the partial Euler step x_j + b(x_j, t_j)(t - t_j); t = 1 holds p_pre's sample."""
    field = velocity_of(gaussian_path())
    steps = 8
    times = torch.tensor([0.05, 0.3, 0.5, 0.9, 1.0], dtype=torch.float64)
    cache = PretrainedDriftCache(field, (2,), n_trajectories=50, time_grid=times, solver_steps=steps, seed=2)
    cache.prepare()
    x0 = cache._noise(50, 0)
    pre = sample_ode(field, x0, method="euler", steps=steps, return_trajectory=True)
    for k, t in enumerate(times.tolist()):
        j = min(int(math.floor(t * steps)), steps)
        xj, tj = pre.trajectory[j], j / steps
        want = xj if t == tj else xj + field(xj, torch.full((50,), tj)) * (t - tj)
        x, _ = cache.points(k)
        torch.testing.assert_close(x, want, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(cache.points(len(times) - 1)[0], pre.x, rtol=0, atol=0)


def test_sde_states_at_law_and_chain():
    """Zero drift: the state at any t is x0 + g W_t (variance 1 + g^2 t, exact for Euler–Maruyama);
    constant drift c: mean c t. Asking for t = 1 only reproduces sample_sde with the same generator."""
    from gftlib.solvers.sde import sample_sde, sde_states_at

    n, g = 20000, 0.7
    x0 = torch.randn(n, 2, generator=gen(1), dtype=torch.float64)
    c = torch.tensor([1.0, -2.0], dtype=torch.float64)
    times = [0.13, 0.5, 0.77]
    states = sde_states_at(lambda x, t: c.expand_as(x), x0, times, diffusion=g, steps=10, generator=gen(2))
    for k, t in enumerate(times):
        se_m, var = math.sqrt((1 + g**2 * t) / n), 1 + g**2 * t
        assert torch.allclose(states[k].mean(0), c * t, atol=5 * se_m)
        assert torch.allclose(states[k].var(0), torch.full((2,), var, dtype=torch.float64),
                              atol=5 * var * math.sqrt(2 / (n - 1)))
    field = drift_of(gaussian_path(sigma=g), g)
    x0f = x0.float()
    end = sde_states_at(field, x0f, [1.0], diffusion=g, steps=10, generator=gen(3))[0]
    ref = sample_sde(field, x0f, diffusion=g, steps=10, generator=gen(3)).x
    assert torch.equal(end, ref)


def _ks_to_target(x: torch.Tensor) -> float:
    """Largest KS distance of the two coordinates of x to the target N(MEAN, STD^2)."""
    from scipy import stats as st

    return max(st.kstest(x[:, i].double().numpy(), "norm", args=(float(MEAN[i]), STD)).statistic
               for i in range(2))


def test_coupling_cache_with_diffusion_samples_the_pretrained_sde():
    """g > 0: the pairs' x1 follow p_pre when the SDE drift is simulated by Euler–Maruyama; the same
    drift integrated as an ODE (the old behaviour) misses p_pre (negative control)."""
    g, n = 0.8, 4000
    field = drift_of(gaussian_path(sigma=g), g)
    cache = PretrainedCouplingCache(field, (2,), size=n, interpolant=Interpolant(g), diffusion=g,
                                    solver_steps=200, seed=4)
    x0, x1 = cache.pairs
    # KS critical value at level 1e-3 for n points (1.95 / sqrt(n)), plus 0.01 for the O(h) weak error
    bound = 1.95 / math.sqrt(n) + 0.01
    assert _ks_to_target(x1) <= bound
    wrong = sample_ode(field, x0, method="euler", steps=200).x
    assert _ks_to_target(wrong) > bound
    with pytest.raises(ValueError, match="solver_method must be 'euler', got 'rk4'"):
        PretrainedCouplingCache(field, (2,), size=8, interpolant=Interpolant(g), diffusion=g, solver_method="rk4")
    with pytest.raises(ValueError, match="solver_method must be 'euler', got 'dopri5'"):
        PretrainedDriftCache(field, (2,), n_trajectories=8, diffusion=g, solver_method="dopri5")
