"""Tests of gftlib.gft.batch_sampler: every item once per epoch, exact resume, rank slices."""

from __future__ import annotations

import pytest
import torch

from gftlib.gft.batch_sampler import BatchSampler

from gft_helpers import roundtrip

torch.set_num_threads(1)


def test_batch_sampler_covers_every_item_once_per_epoch():
    s = BatchSampler(10, 3, seed=1)
    stream = torch.cat([s.next_indices() for _ in range(10)])  # 30 items = 3 epochs
    for e in range(3):
        assert sorted(stream[10 * e:10 * (e + 1)].tolist()) == list(range(10))
    assert s.epoch == 2
    # different epochs use different permutations (probability 1/10! of a false failure per pair)
    assert not torch.equal(stream[:10], stream[10:20])


def test_batch_sampler_batch_larger_than_dataset():
    s = BatchSampler(4, 10, seed=0)
    stream = torch.cat([s.next_indices() for _ in range(2)])
    for e in range(5):
        assert sorted(stream[4 * e:4 * (e + 1)].tolist()) == [0, 1, 2, 3]


def test_batch_sampler_resume_is_exact():
    a = BatchSampler(17, 5, seed=3)
    for _ in range(4):
        a.next_indices()
    state = roundtrip(a.state_dict())
    b = BatchSampler(17, 5, seed=99)  # a different seed: everything comes from the state
    b.load_state_dict(state)
    for _ in range(12):  # crosses several epochs, so the generator state matters too
        assert torch.equal(a.next_indices(), b.next_indices())
    assert a.epoch == b.epoch


@pytest.mark.parametrize("world_size", [2, 4])
def test_batch_sampler_rank_slices_union_is_global_batch(world_size):
    ref = BatchSampler(23, 8, seed=5)
    ranks = [BatchSampler(23, 8, seed=5) for _ in range(world_size)]
    for r, s in enumerate(ranks):
        s.set_rank(r, world_size)
    for _ in range(7):
        glob = ref.next_indices()
        parts = [s.next_indices() for s in ranks]
        assert all(p.shape == (8 // world_size,) for p in parts)
        assert torch.equal(torch.cat(parts), glob)


def test_batch_sampler_rejects_bad_input():
    with pytest.raises(ValueError, match="n_items"):
        BatchSampler(0, 4)
    with pytest.raises(ValueError, match="batch_size"):
        BatchSampler(5, 0)
    s = BatchSampler(10, 6)
    with pytest.raises(ValueError, match="divisible by world_size"):
        s.set_rank(0, 4)
    with pytest.raises(ValueError, match="rank must be in"):
        s.set_rank(2, 2)
    with pytest.raises(ValueError, match="n_items=10"):
        BatchSampler(11, 6).load_state_dict(s.state_dict())
    with pytest.raises(ValueError, match="missing keys"):
        s.load_state_dict({"pos": 0})
