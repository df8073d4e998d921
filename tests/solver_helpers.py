"""Closed-form test fields shared by the solver tests (and any test that needs an exact ODE solution)."""

from __future__ import annotations

import torch

# dx/dt = a(t) A x with a(t) = 1 + t: x(1) = expm((int_0^1 a) A) x0 = expm(1.5 A) x0.
A = torch.tensor([[-0.5, 1.0], [-1.0, -0.5]], dtype=torch.float64)


def linear_field(x, t):
    assert t.shape == (x.shape[0],)
    return (1.0 + t)[:, None] * (x @ A.T.to(x.dtype))


def linear_exact(x0):
    return x0 @ torch.linalg.matrix_exp(1.5 * A).T


class Counting:
    """A field wrapper counting its calls (independently of the sampler's own counter)."""

    def __init__(self, field):
        self.field, self.calls = field, 0

    def __call__(self, x, t):
        self.calls += 1
        return self.field(x, t)
