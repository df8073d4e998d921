"""The target data's order: epoch-wise seeded permutations, sliced per rank under DDP, resumable."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from gftlib.gft.checks import check_rank
from gftlib.rng import seeded_generator
from gftlib.validation import check_positive_int

__all__ = ["BatchSampler"]


class BatchSampler:
    """Epoch-wise random permutations of ``range(n_items)`` from its own seeded CPU generator.

    Batches are consecutive blocks of ``batch_size`` indices of the stream perm_0 ++ perm_1 ++ ...,
    so every item is used exactly once per epoch (a batch may straddle two epochs; with
    ``batch_size > n_items`` one batch spans several epochs). ``epoch`` counts completed
    permutations. After :meth:`set_rank` the sampler still draws the *global* batch (``batch_size``
    is global) identically on every rank and :meth:`next_indices` returns the rank's contiguous
    slice of length ``batch_size // world_size``. :meth:`state_dict` holds the generator state, the
    current permutation, the position and the epoch, so a resumed sampler continues the exact order.
    """

    def __init__(self, n_items: int, batch_size: int, seed: int = 0) -> None:
        self.n_items = check_positive_int("n_items", n_items)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.seed = check_positive_int("seed", seed, minimum=0)
        self._generator = seeded_generator(self.seed)
        self._perm = torch.randperm(self.n_items, generator=self._generator)
        self._pos = 0
        self.epoch = 0
        self.rank, self.world_size = 0, 1

    def set_rank(self, rank: int, world_size: int) -> None:
        """Take the slice ``[rank * b, (rank + 1) * b)``, ``b = batch_size // world_size``, of each batch."""
        self.rank, self.world_size = check_rank(rank, world_size, self.batch_size)

    @property
    def local_batch_size(self) -> int:
        return self.batch_size // self.world_size

    @property
    def local_slice(self) -> slice:
        b = self.local_batch_size
        return slice(self.rank * b, (self.rank + 1) * b)

    def next_global_indices(self) -> Tensor:
        """The next global batch, LongTensor ``(batch_size,)`` (advances the stream)."""
        parts = []
        need = self.batch_size
        while need > 0:
            if self._pos == self.n_items:
                self._perm = torch.randperm(self.n_items, generator=self._generator)
                self._pos = 0
                self.epoch += 1
            take = min(need, self.n_items - self._pos)
            parts.append(self._perm[self._pos:self._pos + take])
            self._pos += take
            need -= take
        return torch.cat(parts) if len(parts) > 1 else parts[0].clone()

    def next_indices(self) -> Tensor:
        """This rank's slice of the next global batch, LongTensor ``(batch_size // world_size,)``."""
        return self.next_global_indices()[self.local_slice]

    def state_dict(self) -> dict[str, Any]:
        return {
            "n_items": self.n_items,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "generator": self._generator.get_state(),
            "perm": self._perm.clone(),
            "pos": self._pos,
            "epoch": self.epoch,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = {"n_items", "batch_size", "generator", "perm", "pos", "epoch"} - set(state)
        if missing:
            raise ValueError(f"BatchSampler state is missing keys {sorted(missing)}")
        for key in ("n_items", "batch_size"):
            if int(state[key]) != getattr(self, key):
                raise ValueError(
                    f"cannot resume: the saved sampler has {key}={state[key]}, this one has "
                    f"{key}={getattr(self, key)}"
                )
        perm = torch.as_tensor(state["perm"], dtype=torch.long)
        if perm.shape != (self.n_items,):
            raise ValueError(f"saved permutation has shape {tuple(perm.shape)}, expected ({self.n_items},)")
        self._generator.set_state(state["generator"])
        self._perm = perm.clone()
        self._pos = int(state["pos"])
        self.epoch = int(state["epoch"])
        self.seed = int(state.get("seed", self.seed))

