"""Reflow baseline: plain conditional flow matching on the pretrained coupling (x0, Phi_pre(x0))."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

from gftlib.gft.checks import check_generator, check_rank, check_time_weight
from gftlib.gft.coupling_cache import PretrainedCouplingCache
from gftlib.gft.objective import ObjectiveBatch
from gftlib.gft.tensors import model_device, move_batch
from gftlib.losses import LossTerms, gft_loss
from gftlib.rng import fork_generator
from gftlib.validation import check_finite_number, check_positive_int

__all__ = ["ReflowObjective"]


class ReflowObjective:
    """Reflow baseline: plain CFM on pairs (x0, Phi_pre(x0)) of a :class:`PretrainedCouplingCache`.

    There is no target term in the GFT sense: the "target" data *are* the pretrained coupling, so
    the trained flow stays at p_pre and only straightens its paths. The returned LossTerms put the
    CFM loss on the pairs in ``total`` and ``target``; ``pretrained`` is 0. Only beta = 0 is
    accepted (use no cooling schedule). Under DDP each rank draws ``batch_size // world_size`` pairs
    with its own forked generator.
    """

    def __init__(self, cache: PretrainedCouplingCache, *, batch_size: int,
                 time_weight: Callable[[Tensor], Tensor] | None = None) -> None:
        if not isinstance(cache, PretrainedCouplingCache):
            raise TypeError(f"cache must be a PretrainedCouplingCache, got {type(cache).__name__}")
        self.cache = cache
        self.batch_size = check_positive_int("batch_size", batch_size)
        if time_weight is not None:
            check_time_weight(time_weight, cache.interpolant,
                              torch.empty(0, dtype=cache.dtype, device=cache.device))
        self.time_weight = time_weight
        self.diffusion = cache.diffusion
        self.rank, self.world_size = 0, 1

    def set_rank(self, rank: int, world_size: int) -> None:
        self.rank, self.world_size = check_rank(rank, world_size, self.batch_size)

    def sample_batch(self, beta: float, generator: torch.Generator, *,
                     device: torch.device | str | None = None) -> ObjectiveBatch:
        beta = check_finite_number("beta", beta, minimum=0.0)
        if beta != 0:
            raise ValueError(f"ReflowObjective has no pretrained term: beta must be 0, got {beta:g}")
        generator = check_generator(generator)
        local = generator if self.world_size == 1 else fork_generator(generator, self.rank)
        path = self.cache.batch(self.batch_size // self.world_size, local)
        if device is not None:
            path = move_batch(path, torch.device(device))
        return ObjectiveBatch(target=path, pretrained=None)

    def loss(self, model: nn.Module, beta: float, generator: torch.Generator) -> LossTerms:
        batch = self.sample_batch(beta, generator, device=model_device(model, self.cache.device))
        return gft_loss(model, batch.target, 0.0, None, weight=self.time_weight, normalize=True,
                        check_values=False)

    def state_dict(self) -> dict[str, Any]:
        return {"cache": self.cache.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "cache" not in state:
            raise ValueError("ReflowObjective state is missing key 'cache'")
        self.cache.load_state_dict(state["cache"])

