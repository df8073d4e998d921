"""The GPU fast path, exercised on the CPU with the same code: no host reads in the training hot
path, bit-identical prefetching of the OT coupling (and its exact resume), bf16 autocast,
channels_last, torch.compile wiring and batched (bf16) sampling."""

from __future__ import annotations

import contextlib
import sys
import threading
from pathlib import Path

import pytest
import torch
from torch import nn

from gftlib.training import checkpoint as C
from gftlib.training import guard as G
from gftlib.paths.couplings import IndependentCoupling
from gftlib.experiments.methods import build_method
from gftlib.training.fastpath import ChannelsLastInput, fast_settings, sample_batched
from gftlib.paths.interpolants import Interpolant
from gftlib.losses import regression_loss
from gftlib.models import build_model
from gftlib.gft.objective import FlowMatchingObjective, Objective, _couple
from gftlib.gft.coupling_cache import PretrainedCouplingCache
from gftlib.gft.drift_cache import PretrainedDriftCache
from gftlib.rng import fork_generator as _fork_generator
from gftlib.gft.prefetch import PrefetchingObjective
from gftlib.solvers.ode import sample_ode
from gftlib.training.config import TrainConfig
from gftlib.training.loop import train

from train_helpers import CrashAt
from train_helpers import equal_states as _equal_states

torch.set_num_threads(1)

GFTLIB = str(Path(__file__).resolve().parents[2] / "gftlib")
_READS = ("item", "tolist", "cpu", "__bool__", "__float__", "__int__", "__index__")


@contextlib.contextmanager
def host_reads():
    """Record calls, made from gftlib code in the calling thread, of the Tensor methods that copy a
    value to the host (on a GPU each is a device synchronisation). Yields the list of (method,
    file:line) records."""
    calls: list[tuple[str, str]] = []
    main = threading.get_ident()
    originals = {name: getattr(torch.Tensor, name) for name in _READS}

    def wrap(name, orig):
        def method(self, *args, **kwargs):
            frame = sys._getframe(1)
            if frame.f_code.co_filename.startswith(GFTLIB) and threading.get_ident() == main:
                calls.append((name, f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno}"))
            return orig(self, *args, **kwargs)
        return method

    for name, orig in originals.items():
        setattr(torch.Tensor, name, wrap(name, orig))
    try:
        yield calls
    finally:
        for name, orig in originals.items():
            setattr(torch.Tensor, name, orig)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def data2d(n: int = 64, seed: int = 1) -> torch.Tensor:
    g = gen(seed)
    return torch.randn(n, 2, generator=g) * 0.5 + torch.tensor([1.0, -1.0])


def mlp(seed: int = 0) -> nn.Module:
    return build_model("mlp", dim=2, hidden=32, depth=2, seed=seed)


def tiny_unet(seed: int = 0, **kw) -> nn.Module:
    return build_model("unet", config="tiny", seed=seed, **kw)


def images(n: int = 16, size: int = 16, seed: int = 2) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=gen(seed)) * 2 - 1


def _cfg(**kw) -> TrainConfig:
    base = dict(steps=6, lr=1e-2, device="cpu", progress=False, log_every=100, seed=3)
    base.update(kw)
    return TrainConfig(**base)


def _objective(kind: str, data: torch.Tensor):
    """(objective, beta) for each code path of the training hot path."""
    pre = mlp(seed=5).eval().requires_grad_(False)
    if kind == "independent":
        return FlowMatchingObjective(data, batch_size=8, seed=0), 0.0
    if kind == "bridge+weight":
        return FlowMatchingObjective(data, batch_size=8, interpolant=Interpolant(sigma=0.3, t_eps=1e-3),
                                     time_weight=lambda t: 1 + t, seed=0), 0.0
    if kind == "ddp-rank":
        obj = FlowMatchingObjective(data, batch_size=8, seed=0)
        obj.set_rank(1, 2)
        return obj, 0.0
    if kind in ("gft-coupling", "gft-drift", "l2-reg"):
        spec = build_method(kind, target_data=data, pretrained_model=pre, batch_size=8, steps=4,
                            target_coupling="independent", cache_size=16, n_trajectories=8, time_grid=4,
                            solver_steps=4, device="cpu")
        return spec.objective, 0.7
    raise AssertionError(kind)


# ----------------------------------------------------------------------------------------- host syncs
@pytest.mark.parametrize("kind", ["independent", "bridge+weight", "ddp-rank", "gft-coupling", "gft-drift",
                                  "l2-reg"])
def test_objective_loss_reads_nothing_back_to_the_host(kind):
    obj, beta = _objective(kind, data2d())
    model, g = mlp(), gen(1)
    obj.loss(model, beta, g)  # first call builds the caches (validated once, outside the hot path)
    with host_reads() as calls:
        for _ in range(3):
            obj.loss(model, beta, g).total.backward()
    assert calls == []


def test_host_read_counter_sees_the_public_checks():
    """Control: the counter does detect the value checks that the hot path skips."""
    x0, x1 = torch.zeros(4, 2), torch.ones(4, 2)
    with host_reads() as calls:
        Interpolant(sigma=0.5).sample(x0, x1, t=0.5, generator=gen())
    assert calls and all(f.startswith(("validation.py", "interpolants.py")) for _, f in calls)
    with host_reads() as quiet:
        Interpolant(sigma=0.5).sample(x0, x1, t=0.5, generator=gen(), check_values=False)
    assert quiet == []


def test_prefetching_objective_reads_nothing_back_in_the_training_thread():
    obj = PrefetchingObjective(FlowMatchingObjective(data2d(), batch_size=8, coupling="ot", seed=0))
    model, g = mlp(), gen(1)
    obj.loss(model, 0.0, g)
    with host_reads() as calls:
        for _ in range(3):
            obj.loss(model, 0.0, g)
    obj.close()
    assert calls == [] and obj.background_solves == 3


@pytest.mark.parametrize("method", ["ft", "gft-drift", "gft-coupling+prefetch-ot"])
def test_train_loop_host_reads_do_not_grow_with_steps(monkeypatch, method):
    """With the deferred (GPU) non-finite check, host reads happen at log/checkpoint boundaries and in
    one-off cache builds only. (The exact OT coupling needs its batch on the CPU: without prefetching
    that is one read per step by design; prefetched, it happens in the worker thread.)"""
    monkeypatch.setattr(G, "_CPU_PER_STEP_CHECK", False)
    name, _, prefetch = method.partition("+")
    counts = []
    for steps in (4, 8):
        spec = build_method(name, target_data=data2d(), pretrained_model=mlp(5), batch_size=8, steps=steps,
                            target_coupling="ot" if prefetch else "independent", cache_size=16,
                            n_trajectories=8, time_grid=4, solver_steps=4, device="cpu")
        obj = PrefetchingObjective(spec.objective) if prefetch else spec.objective
        with host_reads() as calls:
            train(mlp(), obj, _cfg(steps=steps), schedule=spec.schedule)
        counts.append(len(calls))
    assert counts[0] == counts[1]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_training_step_does_not_synchronize():
    device = torch.device("cuda")
    data = data2d().to(device)
    obj = PrefetchingObjective(FlowMatchingObjective(data, batch_size=16, coupling="ot", seed=0))
    model = mlp().to(device)
    g = torch.Generator(device=device).manual_seed(0)
    obj.loss(model, 0.0, g).total.backward()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            obj.loss(model, 0.0, g).total.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    obj.close()


# ----------------------------------------------------------------------------------------- cheap path
def test_check_values_false_gives_identical_results_and_keeps_shape_checks():
    it = Interpolant(sigma=0.4, t_eps=0.01)
    x0, x1 = torch.randn(6, 3, generator=gen(1)), torch.randn(6, 3, generator=gen(2))
    t = torch.rand(6, generator=gen(4)) * 0.9 + 0.05
    a = it.sample(x0, x1, t=t, generator=gen(3), diffusion=0.4)
    b = it.sample(x0, x1, t=t, generator=gen(3), diffusion=0.4, check_values=False)
    assert all(torch.equal(getattr(a, f), getattr(b, f)) for f in ("t", "x0", "x1", "xt", "target"))
    model = nn.Linear(3, 3)
    la = regression_loss(lambda x, s: model(x), a.xt, a.t, a.target, weight=lambda s: 1 + s)
    lb = regression_loss(lambda x, s: model(x), a.xt, a.t, a.target, weight=lambda s: 1 + s,
                         check_values=False)
    assert torch.equal(la, lb)
    with pytest.raises(ValueError, match="x0 and x1 must have the same shape"):
        it.sample(x0, x1[:, :2], t=t, generator=gen(), check_values=False)
    with pytest.raises(ValueError, match=r"t must be a float or a tensor of shape \(6,\)"):
        it.sample(x0, x1, t=t[:5], generator=gen(), check_values=False)
    with pytest.raises(ValueError, match="target must have the shape of x"):
        regression_loss(lambda x, s: x, a.xt, a.t, a.target[:, :2], check_values=False)
    with pytest.raises(ValueError, match=r"weight\(t\) must have shape \(6,\)"):
        regression_loss(lambda x, s: x, a.xt, a.t, a.target, weight=lambda s: s[:3], check_values=False)
    with pytest.raises(TypeError, match="check_values must be True or False"):
        it.sample(x0, x1, t=t, generator=gen(), check_values="no")
    with pytest.raises(TypeError, match="check_values must be True or False"):
        regression_loss(lambda x, s: x, a.xt, a.t, a.target, check_values=1)


@pytest.mark.parametrize("weight, exc, match", [
    (lambda t: -t, ValueError, r"time_weight\(t\) must be non-negative"),
    (lambda t: t[:3], ValueError, r"time_weight\(t\) must return one weight per time, shape \(64,\)"),
    (lambda t: t * float("nan"), ValueError, r"time_weight\(t\) must contain only finite values"),
    ("1/t", TypeError, "time_weight must be None or a callable"),
])
def test_time_weight_is_validated_once_at_construction(weight, exc, match):
    with pytest.raises(exc, match=match):
        FlowMatchingObjective(data2d(), batch_size=4, time_weight=weight)


def test_caches_validate_the_pretrained_output_once_at_build():
    def bad(x, t):
        return x * float("nan")
    with pytest.raises(ValueError, match=r"coupling cache x1\) must contain only finite values"):
        PretrainedCouplingCache(bad, (2,), size=4, solver_steps=2).prepare()
    with pytest.raises(ValueError, match=r"drift cache x\) must contain only finite values"):
        PretrainedDriftCache(bad, (2,), n_trajectories=4, time_grid=1, solver_steps=2).prepare()


def test_independent_coupling_fast_path_equals_the_coupling():
    x0, x1 = torch.randn(9, 2, generator=gen(1)), torch.randn(9, 2, generator=gen(2))
    ref = IndependentCoupling()(x0, x1, generator=gen(4))
    got = _couple(IndependentCoupling(), x0, x1, gen(4))
    assert torch.equal(ref.index, got.index) and torch.equal(ref.x1, got.x1) and torch.equal(ref.x0, got.x0)


def test_rank_fork_draws_nothing_and_depends_on_state_and_rank():
    g = gen(7)
    before = g.get_state()
    a0, a1 = _fork_generator(g, 0), _fork_generator(g, 1)
    assert torch.equal(g.get_state(), before)  # no draw from the trainer's generator
    r = [torch.rand(4, generator=x) for x in (a0, a1, _fork_generator(gen(7), 0))]
    assert not torch.equal(r[0], r[1]) and torch.equal(r[0], r[2])
    torch.rand(1, generator=g)
    assert not torch.equal(torch.rand(4, generator=_fork_generator(g, 0)), r[0])


# ----------------------------------------------------------------------------------------- prefetch
def _batches(obj, beta: float, steps: int, seed: int = 3) -> list[torch.Tensor]:
    g = gen(seed)
    out = []
    for _ in range(steps):
        b = obj.sample_batch(beta, g)
        parts = [b.target.t[:, None], b.target.x0, b.target.x1, b.target.xt, b.target.target]
        if b.pretrained is not None:
            p = b.pretrained
            parts += [p.t[:, None]] + ([p.xt, p.target] if hasattr(p, "xt") else [p.x, p.target])
        out.append(torch.cat([q.reshape(q.shape[0], -1) for q in parts], dim=1))
    return out


@pytest.mark.parametrize("coupling", ["ot", "sinkhorn", "independent"])
@pytest.mark.parametrize("setting", ["cfm", "bridge", "gft-coupling", "ddp-rank"])
def test_prefetching_batches_equal_plain_bit_for_bit(coupling, setting):
    data = data2d()

    def build():
        interp = Interpolant(sigma=0.3, t_eps=1e-3) if setting == "bridge" else None
        pretrained = None
        if setting == "gft-coupling":
            pretrained = PretrainedCouplingCache(mlp(5).eval().requires_grad_(False), (2,), size=16,
                                                 solver_steps=4)
        obj = FlowMatchingObjective(data, batch_size=8, coupling=coupling, interpolant=interp,
                                    pretrained=pretrained, seed=0)
        if setting == "ddp-rank":
            obj.set_rank(1, 2)
        return obj

    beta = 0.5 if setting == "gft-coupling" else 0.0
    plain = _batches(build(), beta, 5)
    with PrefetchingObjective(build()) as pre:
        fetched = _batches(pre, beta, 5)
        assert pre.background_solves == (4 if coupling != "independent" else 0)
    assert all(torch.equal(a, b) for a, b in zip(plain, fetched))


def test_prefetch_solves_in_a_background_thread(monkeypatch):
    import gftlib.gft.prefetch as P

    names = []
    real = P.ot_permutation

    def spy(x0, x1):
        names.append(threading.current_thread().name)
        return real(x0, x1)

    monkeypatch.setattr(P, "ot_permutation", spy)
    with PrefetchingObjective(FlowMatchingObjective(data2d(), batch_size=8, coupling="ot")) as obj:
        _batches(obj, 0.0, 3)
    # batches 2 and 3, and batch 4 (prefetched after the third call)
    assert len(names) == 3 and all(n.startswith("gftlib-coupling") for n in names)


def test_prefetch_records_the_wait_for_each_solve(monkeypatch):
    """The recorded wait is the time the caller spends in the background job's result().

    No wall clock: prefetch's clock is a fake one. Reading the start of a wait (the caller is about
    to block on the job) releases the background solve, which "takes" SOLVE seconds of fake time
    and returns; so the solve cannot finish before the caller waits, and each wait is exactly SOLVE.
    """
    import threading

    import gftlib.gft.prefetch as P

    SOLVE = 0.25
    real = P.ot_permutation
    released = threading.Semaphore(0)

    class FakeTime:
        def __init__(self) -> None:
            self.now, self.reads, self.lock = 100.0, 0, threading.Lock()

        def perf_counter(self) -> float:
            with self.lock:
                self.reads += 1
                now, starting = self.now, self.reads % 2 == 1
            if starting:  # the caller reads the clock, then blocks on job.result()
                released.release()
            return now

        def advance(self, seconds: float) -> None:
            with self.lock:
                self.now += seconds

    clock = FakeTime()

    def blocked_solve(x0, x1):
        # a safety limit only for a broken prefetcher (a hang would otherwise stall the suite)
        assert released.acquire(timeout=120), "the caller never waited for this solve"
        clock.advance(SOLVE)
        return real(x0, x1)

    monkeypatch.setattr(P, "time", clock)
    monkeypatch.setattr(P, "ot_permutation", blocked_solve)
    with PrefetchingObjective(FlowMatchingObjective(data2d(), batch_size=8, coupling="ot")) as obj:
        _batches(obj, 0.0, 3)
        assert len(obj.wait_seconds) == obj.background_solves == 2
        assert obj.wait_seconds == [SOLVE, SOLVE]
        released.release()  # let the solve prefetched after the third call finish before closing


@pytest.mark.parametrize("method", ["ft-ot", "gft-coupling"])
def test_prefetch_training_equals_plain_and_resumes_exactly(tmp_path, method):
    data, steps = data2d(), 8

    def spec():
        return build_method(method, target_data=data, pretrained_model=mlp(5), batch_size=8, steps=steps,
                            cache_size=16, solver_steps=4, device="cpu")

    plain_spec = spec()
    ref = train(mlp(), plain_spec.objective, _cfg(steps=steps), schedule=plain_spec.schedule)
    s = spec()
    with PrefetchingObjective(s.objective) as obj:
        fast = train(mlp(), obj, _cfg(steps=steps), schedule=s.schedule)
    assert _equal_states(fast.model.state_dict(), ref.model.state_dict())
    assert _equal_states(fast.ema_model.state_dict(), ref.ema_model.state_dict())

    cfg = _cfg(steps=steps, checkpoint_dir=str(tmp_path), checkpoint_every=3)
    s = spec()
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(mlp(), CrashAt(PrefetchingObjective(s.objective), 5), cfg, schedule=s.schedule)
    assert C.latest_checkpoint(tmp_path).name == "ckpt_00000003.pt"
    s = spec()
    with PrefetchingObjective(s.objective) as obj:
        resumed = train(mlp(), obj, cfg, schedule=s.schedule)
    assert resumed.resumed_from == 3
    assert _equal_states(resumed.model.state_dict(), ref.model.state_dict())
    assert _equal_states(resumed.ema_model.state_dict(), ref.ema_model.state_dict())


def test_prefetch_state_needs_a_prefetching_objective_and_the_same_generator():
    data = data2d()
    obj = PrefetchingObjective(FlowMatchingObjective(data, batch_size=8, coupling="ot"))
    assert isinstance(obj, Objective)
    g = gen(1)
    obj.sample_batch(0.0, g)
    state = obj.state_dict()
    with pytest.raises(ValueError, match="written by gftlib.gft.prefetch.PrefetchingObjective"):
        FlowMatchingObjective(data, batch_size=8, coupling="ot").load_state_dict(state)
    with pytest.raises(RuntimeError, match="set_rank must be called before the first batch"):
        obj.set_rank(0, 2)
    torch.rand(1, generator=g)  # a foreign draw between calls
    with pytest.raises(RuntimeError, match="generator is not in the state it had"):
        obj.sample_batch(0.0, g)
    fresh = PrefetchingObjective(FlowMatchingObjective(data, batch_size=8, coupling="ot"))
    fresh.load_state_dict(state)
    with pytest.raises(RuntimeError, match="generator is not in the state it had"):
        fresh.sample_batch(0.0, gen(1))  # not the checkpointed generator state
    with pytest.raises(ValueError, match=r"missing keys \['generator_after'"):
        fresh.load_state_dict({**state, "prefetch": {"generator_before": 0, "sampler_before": {}}})
    with pytest.raises(TypeError, match="objective must be a gftlib.gft.objective.FlowMatchingObjective"):
        PrefetchingObjective(object())
    obj.close()


# ----------------------------------------------------------------------------------------- bf16, layout
def test_train_bf16_on_cpu_runs_in_bf16_and_keeps_fp32_state(tmp_path):
    model = tiny_unet(zero_init=False)
    seen = []
    model.input_conv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    obj = FlowMatchingObjective(images(8), batch_size=4, coupling="ot")
    res = train(model, obj, _cfg(steps=2, amp="bf16", log_every=1, checkpoint_dir=str(tmp_path)))
    assert seen and all(d == torch.bfloat16 for d in seen)  # autocast was active
    assert all(torch.isfinite(torch.tensor(e["total"])) for e in res.history)
    assert all(p.dtype == torch.float32 for p in res.model.parameters())
    assert all(p.dtype == torch.float32 for p in res.ema_model.parameters())
    opt = C.load_checkpoint(C.latest_checkpoint(tmp_path))["optimizer"]["state"]
    assert opt and all(v.dtype == torch.float32 for s in opt.values() for k, v in s.items() if k != "step")


def test_channels_last_forward_backward_matches_contiguous():
    """Same function up to float32 summation order: a sum of K <= 10^3 products has relative
    roundoff <= K u ~ 6e-5 (u = 2^-24), so outputs and gradients agree to 1e-4 relative."""
    from gftlib.models import to_fast_layout

    x, t = images(4), torch.rand(4, generator=gen(3))
    grads, outs = [], []
    for cl in (False, True):
        model = tiny_unet(zero_init=False)
        net = ChannelsLastInput(to_fast_layout(model)) if cl else model
        y = net(x, t)
        y.pow(2).sum().backward()
        outs.append(y.detach())
        grads.append({n: p.grad for n, p in model.named_parameters()})
    assert (outs[1] - outs[0]).norm() <= 1e-4 * outs[0].norm()
    for name, g in grads[0].items():
        assert (grads[1][name] - g).norm() <= 1e-4 * g.norm() + 1e-12, name


def test_train_channels_last_matches_contiguous():
    """The loss history agrees to 1e-4 relative (roundoff, see above). The weights take the same
    trajectory: Adam rescales every coordinate's update to ~lr, so a coordinate whose gradient is at
    roundoff level may move differently, but that is a small part (< 1 %) of the total displacement."""
    runs = {}
    init = tiny_unet(zero_init=False).state_dict()
    for cl in (False, True):
        model = tiny_unet(zero_init=False)
        inputs = []
        model.input_conv.register_forward_pre_hook(lambda m, a: inputs.append(a[0]))
        obj = FlowMatchingObjective(images(8), batch_size=4, coupling="independent")
        runs[cl] = train(model, obj, _cfg(steps=4, lr=1e-3, log_every=1, channels_last=cl))
        fmt = torch.channels_last if cl else torch.contiguous_format
        assert all(x.is_contiguous(memory_format=fmt) for x in inputs)
        assert runs[cl].model.input_conv.weight.is_contiguous(memory_format=fmt)
    for a, b in zip(runs[False].history, runs[True].history):
        assert a["total"] == pytest.approx(b["total"], rel=1e-4)
    a, b = runs[False].model.state_dict(), runs[True].model.state_dict()
    diff = sum(((a[k] - b[k]) ** 2).sum() for k in a) ** 0.5
    moved = sum(((a[k] - init[k]) ** 2).sum() for k in a) ** 0.5
    assert diff < 1e-2 * moved


def test_channels_last_wrapper_passes_other_inputs_through():
    seen = []

    class Probe(nn.Module):
        def forward(self, x, t):
            seen.append(x.is_contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x.ndim)
            return x

    w = ChannelsLastInput(Probe())
    w(torch.zeros(2, 3, 4, 4), torch.zeros(2))
    w(torch.zeros(2, 5), torch.zeros(2))
    assert seen == [True, 2]
    with pytest.raises(TypeError, match="module must be a torch.nn.Module"):
        ChannelsLastInput(lambda x, t: x)


def test_train_compile_wraps_the_network(monkeypatch):
    wrapped = []

    def fake_compile(net, **kw):
        wrapped.append(net)
        return net

    monkeypatch.setattr(torch, "compile", fake_compile)
    obj = FlowMatchingObjective(images(8), batch_size=4)
    train(tiny_unet(), obj, _cfg(steps=1, compile=True, channels_last=True))
    assert len(wrapped) == 1 and isinstance(wrapped[0], ChannelsLastInput)


@pytest.mark.slow
def test_train_compile_matches_eager_on_cpu():
    """Real torch.compile (inductor, CPU): same losses as eager up to float32 reassociation."""
    runs = []
    for compiled in (False, True):
        obj = FlowMatchingObjective(data2d(), batch_size=8)
        runs.append(train(mlp(), obj, _cfg(steps=3, log_every=1, compile=compiled)))
    for a, b in zip(*[r.history for r in runs]):
        assert a["total"] == pytest.approx(b["total"], rel=1e-4)


def test_unet_attention_uses_scaled_dot_product_attention(monkeypatch):
    import torch.nn.functional as F

    calls = []
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or real(*a, **k))
    model = tiny_unet()
    model(images(2), torch.rand(2))
    n_attention = sum(type(m).__name__ == "AttentionBlock" for m in model.modules())
    assert n_attention > 0 and len(calls) == n_attention


def test_optimizer_is_foreach_on_the_cpu(tmp_path):
    obj = FlowMatchingObjective(data2d(), batch_size=8)
    train(mlp(), obj, _cfg(steps=1, checkpoint_dir=str(tmp_path)))
    groups = C.load_checkpoint(C.latest_checkpoint(tmp_path))["optimizer"]["param_groups"]
    assert all(g["foreach"] and not g["fused"] for g in groups)


def test_fast_settings_are_off_on_the_cpu():
    assert fast_settings("cpu") == {"amp": "none", "channels_last": False, "compile": False}


# ----------------------------------------------------------------------------------------- sampling
def test_sample_batched_equals_sample_ode_and_ignores_batch_size():
    field = mlp(3).eval()
    res = sample_batched(field, 10, (2,), nfe=8, batch_size=4, device="cpu", generator=gen(5))
    x0 = torch.randn(10, 2, generator=gen(5))
    with torch.no_grad():
        ref = sample_ode(field, x0, steps=8).x
    torch.testing.assert_close(res.x, ref, rtol=1e-6, atol=1e-6)
    assert res.nfe == 8 and res.n_batches == 3 and res.batch_size == 4 and res.images_per_second > 0
    mid = sample_batched(field, 10, (2,), nfe=8, method="midpoint", device="cpu", generator=gen(5))
    assert mid.n_batches == 1 and mid.x.shape == (10, 2) and not mid.x.is_inference()


def test_sample_batched_bf16_runs_under_autocast_and_stays_close():
    """bf16 keeps 8 significant bits (unit roundoff 2^-8 = 0.004); with a few layers each evaluation
    is accurate to a few percent, and Euler averages the N evaluations with weights 1/N, so the
    end point moves by at most ~5 % of the displacement x1 - x0."""
    field = tiny_unet(seed=1, zero_init=False).eval()
    dtypes = []
    field.input_conv.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    ref = sample_batched(field, 4, (3, 16, 16), nfe=4, device="cpu", generator=gen(2))
    low = sample_batched(field, 4, (3, 16, 16), nfe=4, device="cpu", generator=gen(2), amp="bf16",
                         channels_last=True)
    assert set(dtypes) == {torch.float32, torch.bfloat16} and low.x.dtype == torch.float32
    x0 = torch.randn(4, 3, 16, 16, generator=gen(2))
    rel = (low.x - ref.x).norm() / (ref.x - x0).norm()
    assert 0 < rel < 0.05


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(nfe=3, method="midpoint"), ValueError, r"nfe must be a multiple of 2 for method='midpoint'"),
    (dict(nfe=4, method="dopri5"), ValueError, "method must be one of"),
    (dict(nfe=0), ValueError, "nfe must be an integer >= 1"),
    (dict(nfe=4, amp="fp16"), ValueError, "amp must be one of 'none', 'bf16'"),
    (dict(nfe=4, batch_size=0), ValueError, "batch_size must be an integer >= 1"),
    (dict(nfe=4, channels_last=1), TypeError, "channels_last must be True or False"),
    (dict(nfe=4, generator=3), TypeError, "generator must be a torch.Generator or None"),
])
def test_sample_batched_rejects_bad_input(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        sample_batched(lambda x, t: x, 4, (2,), device="cpu", **kwargs)


def test_sample_batched_rejects_bad_shape_and_field():
    with pytest.raises(ValueError, match="shape must be a non-empty tuple of positive ints"):
        sample_batched(lambda x, t: x, 4, (0,), nfe=2, device="cpu")
    with pytest.raises(TypeError, match="field must be callable"):
        sample_batched(None, 4, (2,), nfe=2, device="cpu")
