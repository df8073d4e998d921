"""Input validation shared by every module.

Each helper validates one parameter where it enters the library and raises a ``ValueError`` (or
``TypeError``) whose message names the parameter, the value given and what is allowed, e.g.
``beta must be a finite number >= 0, got -1.0``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "check_bool",
    "check_finite_number",
    "check_positive_int",
    "check_int_fields",
    "check_choice",
    "check_tensor",
    "check_same_shape",
    "check_probability_vector",
    "check_list",
    "check_existing_path",
    "resolve_device",
]


def check_finite_number(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    strict: bool = False,
) -> float:
    """Return ``value`` as a float after checking it is a finite real number within bounds.

    ``strict=True`` makes the bounds exclusive (``value > minimum``, ``value < maximum``).
    """
    if isinstance(value, bool) or not isinstance(value, Real):
        if isinstance(value, Tensor) and value.numel() == 1:
            value = value.item()
        else:
            raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    value = float(value)
    lo_op, hi_op = (">", "<") if strict else (">=", "<=")
    bounds = []
    if minimum is not None:
        bounds.append(f"{lo_op} {minimum:g}")
    if maximum is not None:
        bounds.append(f"{hi_op} {maximum:g}")
    allowed = "a finite number" + (" " + " and ".join(bounds) if bounds else "")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    if minimum is not None and (value <= minimum if strict else value < minimum):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    if maximum is not None and (value >= maximum if strict else value > maximum):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return value


def check_bool(name: str, value: Any) -> bool:
    """Return ``value`` after checking it is ``True`` or ``False`` (not 0/1 or another truthy value)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def check_positive_int(name: str, value: Any, *, minimum: int = 1) -> int:
    """Return ``value`` as an int after checking it is an integer ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_int_fields(obj: Any, minimums: Mapping[str, int]) -> None:
    """:func:`check_positive_int` on each field ``name`` of ``obj`` with its ``minimum``, in order,
    storing the int back on ``obj`` (``object.__setattr__``, so frozen dataclasses work too)."""
    for name, minimum in minimums.items():
        object.__setattr__(obj, name, check_positive_int(name, getattr(obj, name), minimum=minimum))


def check_choice(name: str, value: Any, allowed: Iterable[str]) -> str:
    """Return ``value`` after checking it is one of ``allowed`` (a typo gets the full list)."""
    allowed = tuple(allowed)
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
    return value


def check_tensor(name: str, x: Any, *, ndim: int | None = None, min_ndim: int | None = None,
                 finite: bool = True) -> Tensor:
    """Check ``x`` is a floating tensor with the expected rank and (by default) finite entries."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    if min_ndim is not None and x.ndim < min_ndim:
        raise ValueError(
            f"{name} must have at least {min_ndim} dimensions (batch first), got shape {tuple(x.shape)}"
        )
    if finite and x.is_floating_point() and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} must contain only finite values, found {bad} NaN/Inf entries")
    return x


def check_same_shape(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    """Raise unless ``a`` and ``b`` have identical shapes."""
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def check_probability_vector(name: str, w: Sequence[float] | Tensor, *, atol: float = 1e-6) -> Tensor:
    """Return ``w`` as a float64 tensor after checking it is non-negative and sums to one."""
    t = torch.as_tensor(w, dtype=torch.float64)
    if t.ndim != 1 or t.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 1-D list of weights, got {w!r}")
    if not bool(torch.isfinite(t).all()) or bool((t < 0).any()):
        raise ValueError(f"{name} must contain finite non-negative weights, got {t.tolist()}")
    total = float(t.sum())
    if abs(total - 1.0) > atol:
        raise ValueError(f"{name} must sum to 1 (within {atol:g}), got sum {total:.6g} for {t.tolist()}")
    return t


def resolve_device(device: str | torch.device) -> torch.device:
    """Map ``"auto" | "cpu" | "cuda" | "cuda:N"`` to a ``torch.device``; fail if CUDA is absent."""
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise TypeError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} was requested but no CUDA GPU is available; use 'cpu' or 'auto'"
            )
        index = device.partition(":")[2]
        if index:
            count = torch.cuda.device_count()
            if not index.isdigit() or int(index) >= count:
                raise ValueError(
                    f"device={device!r} is not available: only {count} CUDA device(s) are visible "
                    f"(allowed 'cuda:0' to 'cuda:{count - 1}')"
                )
        return torch.device(device)
    raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")


def check_list(name: str, values: Any, check: Callable[[str, Any], Any]) -> list[Any]:
    """A non-empty list or tuple, each entry validated by ``check(f"{name}[i]", value)`` (which returns the
    clean value or raises naming the entry); returns the clean values as a list."""
    if not isinstance(values, (list, tuple)) or len(values) == 0:
        raise ValueError(f"{name} must be a non-empty list, got {values!r}")
    return [check(f"{name}[{i}]", v) for i, v in enumerate(values)]


def check_existing_path(name: str, value: Any, *, what: str = "an existing local path") -> Path:
    """Return ``value`` as an expanded ``Path`` after checking it is a non-empty str / Path that exists;
    a missing path raises ``FileNotFoundError`` naming ``name``, the value and ``what`` is expected."""
    if not isinstance(value, (str, Path)) or str(value) == "":
        raise TypeError(f"{name} must be {what} (a str or Path), got {value!r}")
    path = Path(value).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{name} must be {what}, got {str(value)!r}: {path} does not exist")
    return path
