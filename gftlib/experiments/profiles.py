"""Notebook profiles: ``smoke`` (tests, seconds), ``quick`` (CPU default), ``paper`` (full scale).

A notebook declares its knobs in the ``parameters`` cell with default ``None`` ("take it from the
profile") and a table of per-profile values; :func:`resolve_parameters` merges both, an explicitly
passed value always winning over the profile.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gftlib.validation import check_choice, check_positive_int

__all__ = ["PROFILES", "resolve_parameters"]

PROFILES: tuple[str, ...] = ("smoke", "quick", "paper")


def resolve_parameters(
    profile_table: Mapping[str, Mapping[str, Any]],
    *,
    profile: str,
    seed: int,
    device: str,
    **explicit: Any,
) -> dict[str, Any]:
    """Merge per-profile defaults with explicitly given parameters.

    ``profile_table[profile]`` must define every knob in ``explicit``; a knob passed as ``None``
    takes the profile's value. Returns a flat dict with ``seed``, ``profile``, ``device`` and every knob.

    Side effect, on purpose: seeds Python's, NumPy's and torch's global random generators with
    ``seed`` (:func:`gftlib.rng.seed_global_rngs`), so that anything a notebook draws without an explicit
    generator (e.g. a network's initial weights) is reproducible. torch's global generator is
    otherwise seeded at random when the process starts.
    """
    check_choice("profile", profile, PROFILES)
    missing = [p for p in PROFILES if p not in profile_table]
    if missing:
        raise ValueError(f"profile table must define every profile {PROFILES}; missing {missing}")
    seed = check_positive_int("seed", seed, minimum=0)
    check_choice("device", device if not str(device).startswith("cuda:") else "cuda",
                 ("auto", "cpu", "cuda"))
    table = profile_table[profile]
    unknown = sorted(set(explicit) - set(table))
    if unknown:
        raise ValueError(f"parameters {unknown} have no profile default; known: {sorted(table)}")
    from gftlib.rng import seed_global_rngs  # here, not at the top: importing the profiles needs no torch

    seed_global_rngs(seed)
    params: dict[str, Any] = {"seed": seed, "profile": profile, "device": device}
    for key, default in table.items():
        value = explicit.get(key)
        params[key] = default if value is None else value
    return params
