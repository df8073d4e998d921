"""gftlib.training.state: fingerprints, global RNG states, optimizer layout, and a save/resume round trip
of the training state (single process, CPU)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from gftlib.rng import seed_global_rngs
from gftlib.training import state as S
from gftlib.training.config import RESULT_FIELDS, TrainConfig
from gftlib.training.ema import EMA

from train_helpers import ToyObjective, equal_states, seeded_tiny_mlp, toy_data


def test_fingerprint_holds_the_result_fields_world_size_betas_and_extra():
    cfg = TrainConfig(steps=4, lr=3e-3)
    fp = S.fingerprint_of(cfg, 2, np.zeros(4), {"batch": 8, "shape": (2, 3)})
    assert set(fp) == set(RESULT_FIELDS) | {"world_size", "schedule_sha256", "extra"}
    assert fp["lr"] == 3e-3 and fp["world_size"] == 2 and fp["extra"] == {"batch": 8, "shape": [2, 3]}
    assert fp["schedule_sha256"] != S.fingerprint_of(cfg, 2, np.ones(4), None)["schedule_sha256"]
    assert "extra" not in S.fingerprint_of(cfg, 1, np.zeros(4), None)
    with pytest.raises(TypeError, match="fingerprint must be None or a mapping"):
        S.fingerprint_of(cfg, 1, np.zeros(4), [1])


def test_check_fingerprint_names_every_difference(tmp_path):
    a = S.fingerprint_of(TrainConfig(steps=4), 1, np.zeros(4), None)
    S.check_fingerprint(a, dict(a), tmp_path / "c.pt")
    b = S.fingerprint_of(TrainConfig(steps=4, lr=1e-3, seed=2), 1, np.zeros(4), None)
    with pytest.raises(ValueError, match=r"lr: checkpoint 0\.0002 vs now 0\.001; seed: checkpoint 0 vs now 2"):
        S.check_fingerprint(a, b, tmp_path / "c.pt")


def test_global_rng_state_round_trip_and_seeding():
    seed_global_rngs(7)
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    seed_global_rngs(7)
    saved = S.global_rng_state()
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first
    S.set_global_rng_state(saved)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_optimizer_impl_is_fused_on_cuda_and_foreach_elsewhere():
    assert S.optimizer_impl(torch.device("cuda")) == {"fused": True}
    assert S.optimizer_impl(torch.device("cpu")) == {"foreach": True}


def test_optimizer_state_follows_the_parameter_layout_on_resume():
    p = nn.Parameter(torch.randn(2, 3, 4, 4).contiguous(memory_format=torch.channels_last))
    opt = torch.optim.AdamW([p])
    opt.state[p] = {"exp_avg": torch.ones(2, 3, 4, 4), "step": torch.tensor(1.0)}
    S.match_state_layout(opt)
    assert opt.state[p]["exp_avg"].stride() == p.stride()
    assert torch.equal(opt.state[p]["exp_avg"], torch.ones(2, 3, 4, 4))


def _state(seed: int, cfg: TrainConfig) -> S.TrainingState:
    model = seeded_tiny_mlp(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, foreach=True)
    fp = S.fingerprint_of(cfg, 1, np.zeros(cfg.steps), None)
    return S.TrainingState(module=model, ema=EMA(model), optimizer=opt, generator=torch.Generator().manual_seed(3),
                           objective=ToyObjective(toy_data(), 8), fingerprint=fp, acc=torch.zeros(4))


def test_save_then_resume_restores_every_part(tmp_path):
    cfg = TrainConfig(steps=6, checkpoint_dir=str(tmp_path), progress=False, device="cpu")
    a = _state(0, cfg)
    a.objective.loss(a.module, 0.0, a.generator).total.backward()
    a.optimizer.step()
    a.acc += torch.tensor([1.0, 2.0, 3.0, 4.0])
    a.count, a.history = 1, [{"step": 1, "total": 1.0}]
    S.save(a, tmp_path, 2, 0.5, cfg)
    assert a.last_checkpoint == str(tmp_path / "ckpt_00000002.pt")
    rng_after_save = torch.get_rng_state()

    torch.manual_seed(123)  # the global RNGs move on; resume puts them back
    b = _state(1, cfg)
    S.resume(b, tmp_path, S.optimizer_impl(torch.device("cpu")), 0)
    assert (b.step, b.resumed_from, b.last_checkpoint, b.count) == (2, 2, a.last_checkpoint, 1)
    assert b.history == a.history and torch.equal(b.acc, a.acc)
    assert equal_states(b.module.state_dict(), a.module.state_dict())
    assert equal_states(b.ema.model.state_dict(), a.ema.model.state_dict())
    assert torch.equal(b.generator.get_state(), a.generator.get_state())
    assert b.objective.state_dict()["calls"] == 1 and torch.equal(torch.get_rng_state(), rng_after_save)
    assert b.optimizer.state_dict()["state"][0]["step"] == a.optimizer.state_dict()["state"][0]["step"]

    other = TrainConfig(steps=6, lr=1e-3, checkpoint_dir=str(tmp_path), progress=False, device="cpu")
    with pytest.raises(ValueError, match="lr: checkpoint"):
        S.resume(_state(1, other), tmp_path, S.optimizer_impl(torch.device("cpu")), 0)


def test_resume_from_an_empty_directory_changes_nothing(tmp_path):
    cfg = TrainConfig(steps=3, progress=False, device="cpu")
    s = _state(0, cfg)
    before = {k: v.clone() for k, v in s.module.state_dict().items()}
    S.resume(s, tmp_path, S.optimizer_impl(torch.device("cpu")), 0)
    assert (s.step, s.resumed_from, s.last_checkpoint, s.history) == (0, None, None, [])
    assert equal_states(s.module.state_dict(), before)
