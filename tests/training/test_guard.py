"""gftlib.training.guard: the non-finite guard on its own (per-step and deferred), single process."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gftlib.training import guard as G
from gftlib.training.guard import NonFiniteGuard, NonFiniteLossError

NAN, INF = float("nan"), float("inf")
BETAS = np.array([0.5, 0.25, 0.125, 0.0])


def _guard(calls: list) -> NonFiniteGuard:
    return NonFiniteGuard(torch.device("cpu"), 1, BETAS, lambda: calls.append("closed"))


@pytest.mark.parametrize("vals, terms", [
    ([NAN, NAN, 1.0, 1.0], ("target",)),
    ([INF, 1.0, INF, 1.0], ("pretrained",)),
    ([NAN, NAN, INF, 1.0], ("target", "pretrained")),
    ([1.0, 1.0, 1.0, INF], ("gradient",)),
    ([NAN, 1.0, 1.0, 1.0], ("total",)),
])
def test_per_step_guard_raises_at_once_naming_the_terms(vals, terms):
    calls: list = []
    guard = _guard(calls)
    assert guard.per_step and not guard.deferred
    guard.record(1, torch.tensor([1.0, 1.0, 0.5, 2.0]), None)
    assert calls == []
    with pytest.raises(NonFiniteLossError) as info:
        guard.record(2, torch.tensor(vals), "ckpt_00000001.pt")
    err = info.value
    assert (err.step, err.terms, err.beta, err.last_checkpoint) == (2, terms, 0.25, "ckpt_00000001.pt")
    assert calls == ["closed"]  # the progress bar is closed before the error
    assert ("norm" in str(err)) == (terms == ("gradient",))
    assert "the last good checkpoint ckpt_00000001.pt is kept" in str(err)


def test_deferred_guard_keeps_the_first_bad_step_until_checked(monkeypatch):
    monkeypatch.setattr(G, "_CPU_PER_STEP_CHECK", False)
    calls: list = []
    guard = _guard(calls)
    assert guard.deferred
    guard.record(1, torch.tensor([1.0, 1.0, 0.5, 2.0]), None)
    guard.check(None)  # nothing bad yet
    guard.record(2, torch.tensor([INF, 1.0, INF, 1.0]), None)
    guard.record(3, torch.tensor([NAN, NAN, 1.0, 1.0]), None)  # a later bad step does not overwrite it
    assert calls == []
    with pytest.raises(NonFiniteLossError, match="no checkpoint was written") as info:
        guard.check(None)
    assert (info.value.step, info.value.terms, info.value.beta) == (2, ("pretrained",), 0.25)
    assert info.value.values["pretrained"] == INF and calls == ["closed"]
