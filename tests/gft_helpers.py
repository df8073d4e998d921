"""Shared pieces of the gftlib.gft tests: a single-Gaussian pretrained path with closed-form map and
marginals, a tiny linear model, seeded generators and a checkpoint-like state round trip."""

from __future__ import annotations

import io

import torch

from gftlib.theory.analytic import GaussianMixture, GaussianMixturePath

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


def toy_target(n=40, d=2, seed=0):
    return torch.randn(n, d, generator=gen(seed)) + 3.0


def as_rows(x: torch.Tensor) -> list[tuple[float, ...]]:
    return sorted(map(tuple, x.tolist()))
