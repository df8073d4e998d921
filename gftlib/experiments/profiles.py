"""Notebook profiles: ``smoke`` (tests, seconds), ``quick`` (CPU default), ``paper`` (full scale).

A notebook declares its knobs in the ``parameters`` cell with default ``None`` ("take it from the
profile") and a table of per-profile values; :func:`resolve_parameters` merges both, an explicitly
passed value always winning over the profile.

Dry runs: ``dry_run=True`` keeps a profile's code path (its methods, pairs, schedules, model kind,
data source) but replaces its *sizes* (steps, samples, seeds, widths) by the tiny values of a
``dry_run_sizes`` table that the notebook or module declares next to its profile table, one table
for every profile. The tests run the ``paper`` profile this way; users can check a paper-profile
setup end to end (``-p dry_run True``) before spending GPU hours on it. A dry run's checks are not
evidence of anything, and its results JSON says ``"dry_run": true``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gftlib.validation import check_choice, check_positive_int

__all__ = ["PROFILES", "profile_values", "resolve_parameters"]

PROFILES: tuple[str, ...] = ("smoke", "quick", "paper")


def profile_values(
    table: Mapping[str, Mapping[str, Any]],
    profile: str,
    *,
    dry_run: bool = False,
    dry_run_sizes: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``table[profile]`` (a copy), with the entries of ``dry_run_sizes`` replacing it when ``dry_run``.

    ``table`` must define every profile of :data:`PROFILES`; ``dry_run_sizes`` may only name keys
    that the profile rows define (a size for a knob that does not exist is an error, not a no-op).
    """
    check_choice("profile", profile, PROFILES)
    missing = [p for p in PROFILES if p not in table]
    if missing:
        raise ValueError(f"profile table must define every profile {PROFILES}; missing {missing}")
    if not isinstance(dry_run, bool):
        raise TypeError(f"dry_run must be True or False, got {dry_run!r}")
    values = dict(table[profile])
    if not dry_run:
        return values
    if dry_run_sizes is None:
        raise ValueError("dry_run=True needs dry_run_sizes: this table declares no dry-run sizes")
    unknown = sorted(set(dry_run_sizes) - set(values))
    if unknown:
        raise ValueError(f"dry_run_sizes names {unknown}, which profile {profile!r} does not define; "
                         f"known: {sorted(values)}")
    values.update(dry_run_sizes)
    return values


def resolve_parameters(
    profile_table: Mapping[str, Mapping[str, Any]],
    *,
    profile: str,
    seed: int,
    device: str,
    dry_run: bool = False,
    dry_run_sizes: Mapping[str, Any] | None = None,
    **explicit: Any,
) -> dict[str, Any]:
    """Merge per-profile defaults with explicitly given parameters.

    ``profile_table[profile]`` must define every knob in ``explicit``; a knob passed as ``None``
    takes the profile's value (with ``dry_run``, the ``dry_run_sizes`` value where that names it:
    :func:`profile_values`). Returns a flat dict with ``seed``, ``profile``, ``device``,
    ``dry_run`` and every knob.

    Side effect, on purpose: seeds Python's, NumPy's and torch's global random generators with
    ``seed`` (:func:`gftlib.rng.seed_global_rngs`), so that anything a notebook draws without an explicit
    generator (e.g. a network's initial weights) is reproducible. torch's global generator is
    otherwise seeded at random when the process starts.
    """
    table = profile_values(profile_table, profile, dry_run=dry_run, dry_run_sizes=dry_run_sizes)
    seed = check_positive_int("seed", seed, minimum=0)
    check_choice("device", device if not str(device).startswith("cuda:") else "cuda",
                 ("auto", "cpu", "cuda"))
    unknown = sorted(set(explicit) - set(table))
    if unknown:
        raise ValueError(f"parameters {unknown} have no profile default; known: {sorted(table)}")
    from gftlib.rng import seed_global_rngs  # here, not at the top: importing the profiles needs no torch

    seed_global_rngs(seed)
    params: dict[str, Any] = {"seed": seed, "profile": profile, "device": device, "dry_run": dry_run}
    for key, default in table.items():
        value = explicit.get(key)
        params[key] = default if value is None else value
    return params
