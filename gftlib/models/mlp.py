"""MLP velocity field for vector data: ``model(x (n, d), t (n,)) -> (n, d)``."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from gftlib.models.embeddings import SinusoidalTimeEmbedding, check_time_batch
from gftlib.validation import check_choice, check_finite_number, check_positive_int

__all__ = ["MLPVelocity", "ACTIVATIONS"]

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "silu": nn.SiLU,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "softplus": nn.Softplus,
}
#: Names accepted by ``MLPVelocity(activation=...)``.
ACTIVATIONS: tuple[str, ...] = tuple(_ACTIVATIONS)


class MLPVelocity(nn.Module):
    """Velocity / drift network ``b(x, t)`` for points ``x: (n, dim)`` and times ``t: (n,)`` in [0, 1].

    Input ``[x, emb(time_scale * t)]`` (sinusoidal time features, ``time_features`` of them), then
    ``depth`` hidden layers of width ``hidden`` with the chosen activation, then a linear map back to
    ``dim``. ``time_scale`` (default 1000, DDPM-style) sets the fastest time frequency; small 2-D
    fields train smoother in t with ``time_scale=1``. Output has the shape and dtype of ``x``.
    ``config`` holds the constructor arguments (``MLPVelocity(**model.config)`` rebuilds it).
    """

    def __init__(
        self,
        dim: int,
        hidden: int = 256,
        depth: int = 3,
        time_features: int = 64,
        activation: str = "silu",
        time_scale: float = 1000.0,
    ) -> None:
        super().__init__()
        self.dim = check_positive_int("dim", dim)
        hidden = check_positive_int("hidden", hidden)
        depth = check_positive_int("depth", depth)
        time_features = check_positive_int("time_features", time_features)
        act = _ACTIVATIONS[check_choice("activation", activation, ACTIVATIONS)]
        time_scale = check_finite_number("time_scale", time_scale, minimum=0.0, strict=True)
        self.config: dict[str, Any] = dict(
            dim=self.dim, hidden=hidden, depth=depth, time_features=time_features, activation=activation,
            time_scale=time_scale,
        )
        self.time_embed = SinusoidalTimeEmbedding(time_features, scale=time_scale)
        layers: list[nn.Module] = []
        width = self.dim + time_features
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), act()]
            width = hidden
        layers.append(nn.Linear(width, self.dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """``x: (n, dim)``, ``t: (n,)`` -> velocity ``(n, dim)`` in ``x.dtype``."""
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor of shape (n, {self.dim}), got {type(x).__name__}")
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (n, dim) with dim={self.dim}, got shape {tuple(x.shape)}")
        check_time_batch(t, x.shape[0])
        w = self.net[0].weight
        feats = self.time_embed(t).to(dtype=w.dtype)
        h = torch.cat([x.to(w.dtype), feats], dim=1)
        return self.net(h).to(x.dtype)
