"""The task runner shared by the 2-D task, the image task and the scenarios (gftlib.experiments.tasks.runner).

A fake task kind records what the runner asks of it; ``run_method`` is replaced by a stub, so these
tests check the runner's own logic (order of the pieces, cache keys, the per-method loop).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import pytest
import torch
from torch import nn

from gftlib.experiments.tasks import runner as R


@dataclass(frozen=True)
class FakeTask:
    seed: int = 0
    source: str = "a"
    size: int = 3

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def target_train(self) -> torch.Tensor:
        return torch.zeros(self.size, 2)

    def build_model(self, *, seed: int | None = None) -> nn.Module:
        torch.manual_seed(0 if seed is None else seed)
        return nn.Linear(2, 2)


@dataclass(frozen=True)
class FakeConfig:
    steps: int = 4

    def key_for(self, method: str) -> dict[str, Any]:
        return {"steps": self.steps, "for": method}


class FakeRunner(R.TaskRunner[FakeTask, FakeConfig, dict]):
    name = "fake"
    eval_key = "score"
    task_type = FakeTask
    config_type = FakeConfig
    scratch_ignores = ("source",)

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pretrained(self, task, method, config, device):
        self.calls.append("pretrained")
        return None if method == "scratch" else task.build_model(seed=task.seed)

    def train_config(self, config, seed, device):
        self.calls.append("train_config")
        return R.TrainConfig(steps=config.steps, seed=seed, device=str(device), progress=False)

    def method_options(self, task, config, seed):
        self.calls.append("method_options")
        return {"seed": seed}

    def evaluator(self, task, config, device):
        self.calls.append("evaluator")
        return lambda model, step: {"score": float(step)}

    def collect(self, task, method, seed, config, run, device):
        self.calls.append("collect")
        return {"method": method, "seed": seed, "run": run}


@pytest.fixture
def stub_run_method(monkeypatch):
    seen: list[dict[str, Any]] = []

    def fake(method, **kw):
        seen.append({"method": method, **kw})
        return f"run-{method}-{kw['seed']}"

    monkeypatch.setattr(R, "run_method", fake)
    return seen


def test_finetune_runs_the_pieces_in_order_and_is_cached(stub_run_method) -> None:
    runner, task, cfg = FakeRunner(), FakeTask(), FakeConfig()
    out = runner.finetune(task, "ft", 2, cfg)
    assert out == {"method": "ft", "seed": 2, "run": "run-ft-2"}
    assert runner.calls == ["pretrained", "train_config", "evaluator", "method_options", "collect"]
    call = stub_run_method[0]
    assert call["eval_key"] == "score" and call["train_config"].seed == 2
    assert call["pretrained_model"] is not None
    assert torch.equal(call["target_data"], task.target_train())
    # a fresh model comes from the run's seed
    assert torch.equal(call["new_model"]().weight, task.build_model(seed=2).weight)
    runner.calls.clear()
    assert runner.finetune(task, "ft", 2, cfg) == out and runner.calls == []  # from the cache
    runner.finetune(task, "ft", 3, cfg)  # another seed is another run
    assert len(stub_run_method) == 2


def test_scratch_key_drops_the_fields_it_ignores(stub_run_method) -> None:
    runner, cfg = FakeRunner(), FakeConfig()
    assert "source" not in runner.run_key(FakeTask(), "scratch", 0, cfg)["task"]
    assert runner.run_key(FakeTask(), "ft", 0, cfg)["task"]["source"] == "a"
    runner.finetune(FakeTask(source="a"), "scratch", 0, cfg)
    runner.finetune(FakeTask(source="b"), "scratch", 0, cfg)  # same scratch run
    assert len(stub_run_method) == 1 and stub_run_method[0]["pretrained_model"] is None
    runner.finetune(FakeTask(source="b"), "ft", 0, cfg)
    assert len(stub_run_method) == 2


def test_check_names_the_parameter(stub_run_method) -> None:
    runner = FakeRunner()
    with pytest.raises(ValueError, match="method must be one of"):
        runner.finetune(FakeTask(), "gft", 0, FakeConfig())
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        runner.finetune(FakeTask(), "ft", -1, FakeConfig())
    with pytest.raises(TypeError, match="task must be a FakeTask, got int"):
        runner.finetune(3, "ft", 0, FakeConfig())
    with pytest.raises(TypeError, match="config must be a FakeConfig, got dict"):
        runner.finetune(FakeTask(), "ft", 0, {})
    assert stub_run_method == []


def test_run_methods_loops_methods_then_units(stub_run_method) -> None:
    runner = FakeRunner()
    units = [(FakeTask(seed=0), 0), (FakeTask(seed=1), 1)]
    out = runner.run_methods(units, ["ft", "scratch"], FakeConfig())
    assert {m: [r["seed"] for r in rs] for m, rs in out.items()} == {"ft": [0, 1], "scratch": [0, 1]}
    assert [(c["method"], c["seed"]) for c in stub_run_method] == [("ft", 0), ("ft", 1), ("scratch", 0),
                                                                    ("scratch", 1)]


def test_single_thread_restores_the_setting() -> None:
    before = torch.get_num_threads()
    with R.single_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), R.single_thread():
        raise RuntimeError("inside")
    assert torch.get_num_threads() == before


def test_ema_state_and_load_weights_round_trip() -> None:
    a, b = FakeTask().build_model(seed=1), FakeTask().build_model(seed=2)
    state = R.ema_state(a)
    assert all(v.device.type == "cpu" and not v.requires_grad for v in state.values())
    loaded = R.load_weights(b, state)
    assert torch.equal(loaded.weight, a.weight) and not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters())


def test_pretrain_source_trains_once_per_key(monkeypatch) -> None:
    trained: list[int] = []

    class Result:
        def __init__(self, model):
            self.ema_model, self.history = model, [{"step": 1}]

    def fake_train(model, objective, cfg):
        trained.append(cfg.steps)
        assert objective == "objective" and cfg.seed == 7 and cfg.lr == 0.5 and cfg.log_every == 2
        return Result(model)

    monkeypatch.setattr(R, "train", fake_train)
    task = type("T", (FakeTask,), {"pretrain_steps": 10, "pretrain_lr": 0.5})(seed=7)
    state = R.pretrain_source(task, lambda: "objective", name="fake-pre", key={"k": 1},
                              device=torch.device("cpu"), n_logs=5)
    again = R.pretrain_source(task, lambda: "objective", name="fake-pre", key={"k": 1},
                              device=torch.device("cpu"), n_logs=5)
    assert trained == [10] and state["history"] == [{"step": 1}]
    assert torch.equal(again["ema"]["weight"], task.build_model(seed=7).weight)
