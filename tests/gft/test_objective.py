"""Tests of gftlib.gft.objective: the documented draw, DDP slicing, bad input, resume, the T2 minimiser."""

from __future__ import annotations

import math

import pytest
import torch

from gftlib.theory.analytic import GaussianMixture, GaussianMixturePath
from gftlib.paths.interpolants import Interpolant
from gftlib.losses import cfm_loss
from gftlib.gft.batch_sampler import BatchSampler
from gftlib.gft.objective import FlowMatchingObjective, ObjectiveBatch
from gftlib.gft.coupling_cache import PretrainedCouplingCache
from gftlib.gft.drift_cache import PretrainedDriftCache
from gftlib.gft.regularizer import TargetPathRegularizer

from gft_helpers import gaussian_path, velocity_of, Linear, gen, roundtrip, toy_target, as_rows

torch.set_num_threads(1)


def test_objective_at_beta0_is_cfm_on_the_documented_draw():
    data = toy_target()
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


def test_objective_ddp_slices_are_the_global_batch():
    data = toy_target(30)
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
            assert as_rows(p.x1) == as_rows(data[idx[4 * r:4 * (r + 1)]])
        assert as_rows(torch.cat([p.x1 for p in parts])) == as_rows(glob.x1)


def test_objective_ddp_ranks_do_not_share_path_noise():
    data = toy_target(16)
    interp = Interpolant(sigma=0.5, t_eps=0.01)
    objs = [FlowMatchingObjective(data, batch_size=8, interpolant=interp, seed=0) for _ in range(2)]
    for r, o in enumerate(objs):
        o.set_rank(r, 2)
    paths = [o.sample_batch(0.0, gen(3)).target for o in objs]
    z = [(p.xt - interp.mean(p.x0, p.x1, p.t)) / interp.std(p.t)[:, None] for p in paths]
    assert not torch.allclose(z[0], z[1])


def test_objective_rejects_bad_input():
    data = toy_target()
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


def test_objective_state_round_trip_with_pretrained_cache():
    data = toy_target()
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
