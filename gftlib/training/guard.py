"""The non-finite guard of :func:`gftlib.training.loop.train`: a NaN/Inf loss term or gradient norm stops
training with :class:`NonFiniteLossError` naming the step and the term.

On the CPU the check runs every step (before the optimizer update); on an accelerator the first bad
step is recorded on the device (no host sync per step) and checked at each log / evaluation /
checkpoint boundary and at the end, before any checkpoint is written, so the last good checkpoint
is kept. Under DDP the ranks agree on the first bad step through collectives.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from gftlib.training import distributed as D

__all__ = ["NonFiniteLossError"]

#: The logged loss values, in the order of the guard's value vector.
TERMS = ("total", "target", "pretrained", "gradient")

#: Check for non-finite values every step on the CPU (cheap there). On accelerators the check is
#: deferred to log / evaluation / checkpoint boundaries to avoid a host sync per step. Tests flip
#: this to exercise the deferred path on the CPU.
_CPU_PER_STEP_CHECK = True


class NonFiniteLossError(FloatingPointError):
    """A loss term or the gradient norm became NaN/Inf. ``step``: the 1-based update in which it
    happened; ``terms``: which of "target", "pretrained", "gradient", "total" were non-finite;
    ``last_checkpoint``: the newest (good) checkpoint on disk, or None."""

    def __init__(self, step: int, terms: tuple[str, ...], values: dict[str, float], beta: float,
                 last_checkpoint: str | None) -> None:
        self.step, self.terms, self.values, self.beta = step, terms, values, beta
        self.last_checkpoint = last_checkpoint
        shown = ", ".join(f"{k}={v:g}" for k, v in values.items())
        kept = (f"the last good checkpoint {last_checkpoint} is kept" if last_checkpoint
                else "no checkpoint was written")
        super().__init__(
            f"non-finite {' and '.join(terms)} {'loss term' if terms != ('gradient',) else 'norm'} at step "
            f"{step} (beta={beta:g}; {shown}); training stopped and {kept}"
        )


class NonFiniteGuard:
    """Records the first update whose values ``(total, target, pretrained, grad norm)`` (a (4,) tensor)
    are not all finite and raises :class:`NonFiniteLossError` for it (calling ``before_raise`` first).

    ``per_step``: check on the host at every :meth:`record` (the CPU default); otherwise the record
    stays on the device until :meth:`check`, which the loop calls at its boundaries (``deferred``).
    """

    def __init__(self, device: torch.device, world: int, betas: np.ndarray,
                 before_raise: Callable[[], None]) -> None:
        self.per_step = device.type == "cpu" and _CPU_PER_STEP_CHECK
        self.world, self.betas, self.before_raise = world, betas, before_raise
        self.bad_step = torch.zeros((), dtype=torch.long, device=device)   # first bad step (0: none)
        self.bad_flags = torch.zeros(4, dtype=torch.bool, device=device)   # which of TERMS at that step
        self.bad_vals = torch.zeros(4, device=device)

    @property
    def deferred(self) -> bool:
        return not self.per_step

    def record(self, k: int, vals: Tensor, last_checkpoint: str | None) -> None:
        """Note update ``k``'s values; with ``per_step`` raise at once if one is not finite."""
        nonfinite = ~torch.isfinite(vals)
        if self.per_step:
            any_bad = nonfinite.any().float()
            if self.world > 1:  # every rank must take the same branch (collectives follow)
                D.all_reduce_(any_bad, "max")
            if bool(any_bad):
                self.bad_step.fill_(k)
                self.bad_flags.copy_(nonfinite)
                self.bad_vals.copy_(vals)
                self.check(last_checkpoint)
        else:
            new = nonfinite.any() & (self.bad_step == 0)
            self.bad_step = torch.where(new, torch.full_like(self.bad_step, k), self.bad_step)
            self.bad_flags = torch.where(new, nonfinite, self.bad_flags)
            self.bad_vals = torch.where(new, vals, self.bad_vals)

    def check(self, last_checkpoint: str | None) -> None:
        """Raise :class:`NonFiniteLossError` for the first bad step recorded (on every rank), if any."""
        info = torch.cat([self.bad_step.reshape(1).float(), self.bad_flags.float(), self.bad_vals])
        if self.world > 1:
            first = info[:1].clone()
            first[first == 0] = float("inf")
            D.all_reduce_(first, "min")
            mine = info[0] == first[0]
            flags = torch.where(mine, info[1:5], torch.zeros_like(info[1:5]))
            D.all_reduce_(flags, "max")
            info = torch.cat([torch.where(torch.isinf(first), torch.zeros_like(first), first), flags,
                              info[5:]])
        values = info.tolist()
        step = int(values[0])
        if step == 0:
            return
        flags = [v > 0 for v in values[1:5]]
        names = tuple(n for n, f in zip(TERMS[1:3], flags[1:3]) if f)
        if not names:
            names = ("gradient",) if flags[3] else ("total",)
        shown = dict(zip(TERMS, values[5:9]))
        self.before_raise()
        raise NonFiniteLossError(step, names, shown, float(self.betas[step - 1]), last_checkpoint)
