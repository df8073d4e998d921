"""Tests of gftlib.rng: the one module that derives seeds and seeds generators.

The pinned values were computed with the helpers it replaced (gft.objectives._mix_seed and
_fork_generator, experiments.tasks2d._generator, experiments.tasks_images._role_seed; now
experiments.tasks.toy2d.role_generator and experiments.tasks.images_data._role_seed) before the
merge: committed results were drawn from these streams, so they must never change.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from gftlib.rng import SEED_BITS, fork_generator, mix_seed, seed_global_rngs, seeded_generator, stream_seed


def test_mix_seed_is_the_documented_fold_and_pinned():
    for values in [(0, 0), (7, 3, 1), (2**64 - 1, 5), (123,)]:
        a, b = np.random.SeedSequence(list(values)).generate_state(2, dtype=np.uint32)
        assert mix_seed(*values) == ((int(a) << 30) ^ int(b)) % 2**SEED_BITS
        assert 0 <= mix_seed(*values) < 2**62
    assert mix_seed(0, 0) == 3187737299990140903
    assert mix_seed(7, 3, 1) == 1139026748415938297
    assert mix_seed(2**64 - 1, 5) == 2366417154205962326


def test_stream_seed_is_the_masked_first_word_and_pinned():
    word = int(np.random.SeedSequence([3, 8, 2]).generate_state(1, dtype=np.uint64)[0])
    assert stream_seed(3, 8, 2) == word & (2**62 - 1)
    assert stream_seed(3, 8, 2, bits=63) == word & (2**63 - 1)
    assert stream_seed(3, 8, 2, bits=64) == word
    # the image tasks' role seeds (62 bits) and the 2-D tasks' role generators (63 bits)
    assert stream_seed(0, 0, 0) == 1958177328105552062
    assert stream_seed(3, 8, 2) == 1323814295294580006
    first = torch.rand(3, generator=seeded_generator(stream_seed(0, 0, bits=63)))
    pinned = [0.11343264579772949, 0.9062243700027466, 0.39901453256607056]
    assert first.tolist() == torch.tensor(pinned).tolist()
    noise = torch.randn(2, generator=seeded_generator(stream_seed(5, 3, bits=63)))
    assert noise.tolist() == torch.tensor([1.205456256866455, -0.006670311093330383]).tolist()


def test_nearby_tuples_give_different_seeds_but_trailing_zeros_do_not_count():
    assert len({mix_seed(s, k, j) for s in range(20) for k in range(5) for j in (1, 2)}) == 200
    assert len({stream_seed(s, r) for s in range(20) for r in range(10)}) == 200
    # SeedSequence pads its entropy with zeros: a trailing 0 names the same stream (documented)
    assert mix_seed(4, 0) == mix_seed(4) and stream_seed(4, 7, 0) == stream_seed(4, 7)


def test_fork_generator_is_pinned_per_rank_and_draws_nothing():
    g = seeded_generator(11)
    state = g.get_state().clone()
    r0 = torch.rand(3, generator=fork_generator(g, 0))
    r1 = torch.rand(3, generator=fork_generator(g, 1))
    assert torch.equal(g.get_state(), state)  # forking does not advance the parent
    assert r0.tolist() == torch.tensor([0.47315818071365356, 0.6909840106964111, 0.6582573652267456]).tolist()
    assert r1.tolist() == torch.tensor([0.9811141490936279, 0.9891317486763, 0.32567983865737915]).tolist()
    torch.rand(1, generator=g)  # a different parent state gives a different fork
    assert not torch.equal(torch.rand(3, generator=fork_generator(g, 0)), r0)
    assert fork_generator(g, 0).device == g.device


def test_seed_global_rngs_seeds_python_numpy_and_torch():
    seed_global_rngs(2**32 + 5)  # numpy gets seed mod 2^32
    a = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.seed(2**32 + 5)
    np.random.seed(5)
    torch.manual_seed(2**32 + 5)
    assert a == (random.random(), float(np.random.rand()), float(torch.rand(1)))


@pytest.mark.parametrize("call,exc,match", [
    (lambda: mix_seed(), ValueError, "at least one integer"),
    (lambda: mix_seed(1, -2), ValueError, r"seed value #1 must be an integer >= 0, got -2"),
    (lambda: stream_seed(1.5), TypeError, r"seed value #0 must be an integer >= 0, got 1.5"),
    (lambda: stream_seed(1, bits=0), ValueError, "bits must be an integer >= 1, got 0"),
    (lambda: stream_seed(1, bits=65), ValueError, r"bits must be an int in \[1, 64\], got 65"),
    (lambda: seeded_generator(-1), ValueError, "seed must be an integer >= 0, got -1"),
    (lambda: seed_global_rngs("3"), TypeError, "seed must be an integer >= 0, got '3'"),
])
def test_bad_input_names_the_parameter(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
