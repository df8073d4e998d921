"""Tests of gftlib.gft.checks: each shared argument check names the parameter, the value and what is
allowed."""

from __future__ import annotations

import pytest
import torch

from gftlib.gft.checks import (check_diffusion, check_field, check_generator, check_interpolant, check_rank,
                               check_shape, check_time_weight)
from gftlib.gft.coupling_cache import PretrainedCouplingCache
from gftlib.gft.objective import FlowMatchingObjective
from gftlib.paths.interpolants import Interpolant

NOT_A_PATH = "interpolant must be a gftlib.paths.interpolants.Interpolant, got str"


def test_check_interpolant_defaults_to_the_straight_line_and_is_shared():
    path = check_interpolant(None)
    assert isinstance(path, Interpolant) and path.sigma == 0
    own = Interpolant(0.2)
    assert check_interpolant(own) is own
    with pytest.raises(TypeError, match=NOT_A_PATH):
        check_interpolant("linear")
    # the objective and the coupling cache both go through it
    with pytest.raises(TypeError, match=NOT_A_PATH):
        FlowMatchingObjective(torch.zeros(4, 2), batch_size=2, interpolant="linear")
    with pytest.raises(TypeError, match=NOT_A_PATH):
        PretrainedCouplingCache(lambda x, t: x, (2,), size=4, interpolant="linear")


def test_checks_pass_good_values_through():
    g = torch.Generator()
    assert check_generator(g) is g
    assert check_rank(1, 2, 8) == (1, 2)
    assert check_shape([3, 4]) == (3, 4)
    assert check_diffusion(0, None) == 0.0 and check_diffusion(0.3, Interpolant(0.1)) == 0.3
    f = lambda x, t: x  # noqa: E731
    assert check_field("field", f) is f
    check_time_weight(lambda t: 1 + t, Interpolant(), torch.zeros(1))


@pytest.mark.parametrize("call,exc,match", [
    (lambda: check_generator(0), TypeError, "generator must be a torch.Generator, got int"),
    (lambda: check_rank(2, 2, 8), ValueError, r"rank must be in \[0, world_size\) = \[0, 2\), got rank=2"),
    (lambda: check_rank(0, 3, 8), ValueError, "batch_size .* divisible by world_size, got batch_size=8"),
    (lambda: check_rank(0, 0, 8), ValueError, "world_size must be an integer >= 1, got 0"),
    (lambda: check_shape((2, 0)), ValueError, r"shape must be a non-empty tuple of positive ints"),
    (lambda: check_field("pretrained_field", None), TypeError, r"pretrained_field must be callable"),
    (lambda: check_diffusion(0.5, Interpolant()), ValueError, "needs a stochastic interpolant"),
    (lambda: check_diffusion(float("inf"), None), ValueError, "diffusion must be a finite number >= 0"),
    (lambda: check_time_weight(lambda t: -t, Interpolant(), torch.zeros(1)), ValueError,
     "time_weight.* must be non-negative"),
    (lambda: check_time_weight(lambda t: t[:3], Interpolant(), torch.zeros(1)), ValueError,
     r"time_weight\(t\) must return one weight per time"),
    (lambda: check_time_weight(2.0, Interpolant(), torch.zeros(1)), TypeError,
     "time_weight must be None or a callable"),
])
def test_checks_reject_bad_input_naming_the_parameter(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
