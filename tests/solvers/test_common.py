"""Tests of gftlib.solvers.common: the input checks sample_ode, sample_sde and sde_states_at share, and
straightness."""

from __future__ import annotations

import pytest
import torch

from gftlib.solvers.common import check_field_output, check_sampler_inputs, straightness
from gftlib.solvers.ode import sample_ode
from gftlib.solvers.sde import sample_sde, sde_states_at


def field(x, t):
    return -x


def test_check_sampler_inputs_returns_validated_values():
    x0 = torch.zeros(3, 2)
    out, t0, t1 = check_sampler_inputs("field", field, x0, 0, 1)
    assert out is x0 and (t0, t1) == (0.0, 1.0) and isinstance(t0, float)


@pytest.mark.parametrize("args,exc,match", [
    ((field, torch.zeros(3, 2), 0.5, 0.5), ValueError, "t0 must be < t1, got t0=0.5, t1=0.5"),
    ((field, torch.zeros(3, 2), float("nan"), 1.0), ValueError, "t0 must be a finite number, got nan"),
    ((field, torch.zeros(3), 0.0, 1.0), ValueError, "x0 must have at least 2 dimensions"),
    ((field, torch.zeros(3, 2, dtype=torch.long), 0.0, 1.0), TypeError,
     "x0 must be a floating-point tensor, got dtype torch.int64"),
    ((field, torch.tensor([[float("inf"), 0.0]]), 0.0, 1.0), ValueError,
     "x0 must contain only finite values"),
    ((None, torch.zeros(3, 2), 0.0, 1.0), TypeError,
     "drift must be callable as drift\\(x, t\\), got NoneType"),
])
def test_check_sampler_inputs_rejects_bad_input_naming_the_parameter(args, exc, match):
    with pytest.raises(exc, match=match):
        check_sampler_inputs("drift", *args)


@pytest.mark.parametrize("run,name", [
    (lambda f, x: sample_ode(f, x), "field"),
    (lambda f, x: sample_sde(f, x, diffusion=0.1), "drift"),
    (lambda f, x: sde_states_at(f, x, [0.5], diffusion=0.1, steps=2, generator=torch.Generator()), "drift"),
])
def test_every_sampler_uses_the_shared_checks(run, name):
    with pytest.raises(TypeError, match=f"{name} must be callable as {name}"):
        run(3, torch.zeros(2, 2))
    with pytest.raises(TypeError, match="x0 must be a floating-point tensor"):
        run(field, torch.zeros(2, 2, dtype=torch.int32))


def test_check_field_output_names_the_field_and_the_shapes():
    x = torch.zeros(4, 2)
    v = torch.ones(4, 2)
    assert check_field_output("field", v, x) is v
    wrong = r"drift must return a tensor of shape \(4, 2\), got torch.Size\(\[4, 1\]\)"
    with pytest.raises(ValueError, match=wrong):
        check_field_output("drift", torch.ones(4, 1), x)
    with pytest.raises(ValueError, match="field must return a tensor of shape .*got list"):
        check_field_output("field", [1.0], x)
    with pytest.raises(ValueError, match=r"drift must return a tensor of shape"):
        sample_sde(lambda x, t: x[:, :1], torch.zeros(3, 2), diffusion=0.0, steps=2)


def test_straightness_is_chord_over_length_and_one_at_zero_length():
    start = torch.zeros(3, 2)
    end = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]])
    length = torch.tensor([10.0, 0.0, 1.0])
    torch.testing.assert_close(straightness(start, end, length), torch.tensor([0.5, 1.0, 1.0]))
