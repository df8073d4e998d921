"""Small self-contained objectives and models for the training-loop tests (no other gftlib module).

``ToyObjective``: conditional flow matching on a fixed 2-D data set with straight paths,
x_t = (1 - t) x0 + t x1, target u = x1 - x0; the "pretrained" term regresses the model on the zero
field at the same points. Data order from its own seeded generator (resumable state); noise and
times drawn for the *global* batch from the trainer's generator and sliced to the rank, so the
union of the rank batches is the single-process batch (pairs are kept row by row: the data order
is already random, so this is the independent coupling).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from gftlib.paths.couplings import CoupledBatch
from gftlib.losses import LossTerms


class TinyMLP(nn.Module):
    """b(x, t) = MLP([x, t]) for x (n, d), t (n,)."""

    def __init__(self, dim: int = 2, hidden: int = 32, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim + 1, hidden), nn.SiLU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.net(torch.cat([x, t[:, None].to(x.dtype)], dim=1))


class ConstantField(nn.Module):
    """b(x, t) = bias (a learnable vector): the CFM minimiser is E[x1 - x0] = E[x1]."""

    def __init__(self, dim: int = 2) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.bias.expand_as(x)


class ToyObjective:
    """See the module docstring. ``nan_at``: 1-based call at which ``nan_term`` ("target",
    "pretrained", "gradient") becomes non-finite. ``fail_at``: call at which ``RuntimeError`` is raised
    (a crash mid-run). ``record``: keep (beta, total) of every call for the tests."""

    def __init__(self, data: Tensor, batch_size: int, *, seed: int = 0, nan_at: int | None = None,
                 nan_term: str = "target", fail_at: int | None = None) -> None:
        self.data, self.batch_size = data, batch_size
        self.order = torch.Generator().manual_seed(seed)
        self.calls = 0
        self.rank, self.world_size = 0, 1
        self.nan_at, self.nan_term, self.fail_at = nan_at, nan_term, fail_at
        self.betas: list[float] = []
        self.totals: list[float] = []
        self.targets: list[float] = []

    def set_rank(self, rank: int, world_size: int) -> None:
        assert self.batch_size % world_size == 0
        self.rank, self.world_size = rank, world_size

    def loss(self, model: nn.Module, beta: float, generator: torch.Generator) -> LossTerms:
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise RuntimeError(f"simulated crash at call {self.calls}")
        n, d = self.batch_size, self.data.shape[1]
        idx = torch.randint(self.data.shape[0], (n,), generator=self.order)
        x0 = torch.randn(n, d, generator=generator, device=generator.device)
        t = torch.rand(n, generator=generator, device=generator.device)
        b = n // self.world_size
        sl = slice(self.rank * b, (self.rank + 1) * b)
        x1, x0, t = self.data[idx[sl]], x0[sl], t[sl]
        xt = (1 - t[:, None]) * x0 + t[:, None] * x1
        out = model(xt, t)
        if self.nan_at == self.calls and self.nan_term == "gradient":
            out = out + 0.0 * torch.sqrt(out - out)  # finite value, infinite gradient (d sqrt at 0)
        target = ((out - (x1 - x0)) ** 2).sum(1).mean()
        pretrained = (out ** 2).sum(1).mean()
        if self.nan_at == self.calls and self.nan_term == "target":
            target = target * float("nan")
        if self.nan_at == self.calls and self.nan_term == "pretrained":
            pretrained = pretrained * float("inf")
        total = (target + beta * pretrained) / (1 + beta)
        self.betas.append(beta)
        self.totals.append(total.item())
        self.targets.append(target.item())
        return LossTerms(total=total, target=target, pretrained=pretrained, beta=beta)

    def state_dict(self) -> dict[str, Any]:
        return {"order": self.order.get_state(), "calls": self.calls}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.order.set_state(state["order"])
        self.calls = state["calls"]


def toy_data(n: int = 512, seed: int = 1) -> Tensor:
    """Two Gaussian blobs at (+-2, 1) with std 0.3, (n, 2) float32."""
    g = torch.Generator().manual_seed(seed)
    sign = torch.randint(0, 2, (n,), generator=g).float() * 2 - 1
    centers = torch.stack([2 * sign, torch.ones(n)], dim=1)
    return centers + 0.3 * torch.randn(n, 2, generator=g)


class CrashAt:
    """Wraps an objective and raises ``RuntimeError`` at its ``n``-th loss call (a crash mid-run)."""

    def __init__(self, inner: Any, n: int) -> None:
        self.inner, self.n, self.calls = inner, n, 0

    def loss(self, model: nn.Module, beta: float, generator: torch.Generator) -> LossTerms:
        self.calls += 1
        if self.calls == self.n:
            raise RuntimeError(f"simulated crash at call {self.calls}")
        return self.inner.loss(model, beta, generator)

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state)

    def set_rank(self, rank: int, world_size: int) -> None:
        self.inner.set_rank(rank, world_size)


def rows_as_drawn(x0: Tensor, x1: Tensor, *, generator: torch.Generator | None = None) -> CoupledBatch:
    """A coupling callable that keeps the rows as drawn: an independent coupling for the library's
    objective (x0 is i.i.d. noise, the data order is random) that draws nothing, so a DDP rank's
    batch is exactly its slice of the single-process batch."""
    return CoupledBatch(x0=x0, x1=x1, index=torch.arange(x1.shape[0], device=x1.device))


def tiny_images(n: int = 64, size: int = 8, seed: int = 5) -> Tensor:
    """(n, 3, size, size) images in [-1, 1]."""
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def seeded_tiny_mlp(seed: int = 0, **kw: Any) -> TinyMLP:
    """A ``TinyMLP`` whose initial weights come from ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    return TinyMLP(**kw)


def equal_states(a: dict, b: dict) -> bool:
    """Bit-identical state dicts: the same keys and ``torch.equal`` tensors."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
