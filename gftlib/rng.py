"""Seeded random streams: every seed the library derives, and every generator it seeds, in one place.

Two derivations of a seed from a tuple of integers, both through :class:`numpy.random.SeedSequence`
(so nearby tuples such as ``(seed, 0)`` and ``(seed, 1)`` give unrelated streams):

* :func:`mix_seed` -- two 32-bit words ``a, b`` folded to 62 bits, ``((a << 30) ^ b) mod 2^62``:
  the pretrained-term caches (noise of generation k: ``mix_seed(seed, k)``; SDE noise
  ``mix_seed(seed, k, 1)``; jittered times ``mix_seed(seed, k, 2)``) and the per-rank fork.
* :func:`stream_seed` -- the first 64-bit word masked to ``bits`` bits: the experiment tasks'
  named streams (one per role, e.g. ``stream_seed(seed, role_id)``).

SeedSequence pads its entropy with zeros, so a trailing 0 does not count: ``(seed, 0)`` and
``(seed,)`` name the same stream; tell streams apart by a non-zero last value (as the caches do with
1 and 2). They are kept apart, not unified, because each one defines streams that committed results were
drawn from (the same seeds must give byte-identical results). :func:`seeded_generator` builds a
``torch.Generator`` from a seed, :func:`fork_generator` a per-rank generator, and
:func:`seed_global_rngs` seeds the global generators of ``random``, numpy and torch.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch

from gftlib.validation import check_positive_int

__all__ = ["SEED_BITS", "mix_seed", "stream_seed", "seeded_generator", "fork_generator", "seed_global_rngs"]

#: Bits of a seed from :func:`mix_seed` (below torch's limit of 2^64 and numpy's of 2^128).
SEED_BITS = 62


def _sequence(values: tuple[int, ...]) -> np.random.SeedSequence:
    if not values:
        raise ValueError("a seed needs at least one integer to derive it from, got none")
    ints = []
    for i, v in enumerate(values):
        ints.append(check_positive_int(f"seed value #{i}", v, minimum=0))
    return np.random.SeedSequence(ints)


def mix_seed(*values: int) -> int:
    """A well-mixed ``SEED_BITS``-bit seed from non-negative integers: SeedSequence(values) gives two
    32-bit words ``a, b``; the seed is ``((a << 30) ^ b) mod 2^62``."""
    a, b = _sequence(values).generate_state(2, dtype=np.uint32)
    return int((int(a) << 30) ^ int(b)) % 2**SEED_BITS


def stream_seed(*values: int, bits: int = SEED_BITS) -> int:
    """The seed of a named stream: the first 64-bit word of SeedSequence(values), masked to ``bits``
    bits (1 to 64; the 2-D tasks use 63, the image tasks 62)."""
    bits = check_positive_int("bits", bits)
    if bits > 64:
        raise ValueError(f"bits must be an int in [1, 64], got {bits}")
    word = _sequence(values).generate_state(1, dtype=np.uint64)[0]
    return int(word) & ((1 << bits) - 1)


def seeded_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` on ``device`` seeded with ``seed`` (>= 0)."""
    seed = check_positive_int("seed", seed, minimum=0)
    return torch.Generator(device=device).manual_seed(seed)


def fork_generator(generator: torch.Generator, rank: int) -> torch.Generator:
    """Per-rank generator seeded with ``mix_seed(h, rank)``, ``h`` a 64-bit hash of ``generator``'s
    current state (the same on all ranks when the generator is). ``get_state`` is host-side (a CUDA
    generator's state is its seed and offset), so forking neither draws from ``generator`` nor
    synchronises with the device. The fork lives on ``generator``'s device."""
    digest = hashlib.blake2b(generator.get_state().numpy().tobytes(), digest_size=8).digest()
    return seeded_generator(mix_seed(int.from_bytes(digest, "little"), rank), generator.device)


def seed_global_rngs(seed: int) -> None:
    """Seed ``random``, ``numpy.random`` (with ``seed mod 2^32``) and torch's global generators (CPU
    and every CUDA device) with ``seed`` (>= 0)."""
    seed = check_positive_int("seed", seed, minimum=0)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
