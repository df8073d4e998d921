"""The fine-tuning budget shared by the 2-D and image tasks: one :class:`FinetuneConfig`, identical
for every method of :mod:`gftlib.experiments.methods` (optimizer, steps, batch size, cooling
schedule, pretrained-term caches and evaluation plan). The image task extends it
(:class:`gftlib.experiments.tasks.images.ImageFinetuneConfig`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from gftlib.experiments.methods import METHODS, check_schedule_options
from gftlib.schedules import SCHEDULES, CoolingSchedule, default_schedule_options, make_schedule
from gftlib.training import TrainConfig
from gftlib.validation import check_choice, check_finite_number, check_int_fields, check_positive_int

__all__ = ["SCHEDULED_METHODS", "FinetuneConfig", "ends_at_zero"]

#: Methods whose objective has a cooling schedule on beta (the others train at beta = 0).
SCHEDULED_METHODS: tuple[str, ...] = ("l2-reg", "gft-drift", "gft-coupling")


@dataclass(frozen=True)
class FinetuneConfig:
    """One fine-tuning budget, identical for every method (validated on construction).

    ``steps`` AdamW updates of ``batch_size`` at learning rate ``lr`` (EMA ``ema_decay`` with the
    trainer's EMA warm-up). Cooling schedule of the scheduled methods: ``schedule_kind`` from
    ``beta0`` to 0 with ``schedule_options`` (``rate`` for exponential, ``n_stages`` for step; see
    :func:`default_schedule_options`). ``target_coupling``: coupling of the target term of
    l2-reg / gft-*. ``cache_size``/``n_trajectories``: pretrained coupling / drift caches (fixed,
    independent of ``n_target``). ``n_evals`` evaluations evenly spaced over training (plus step 0);
    dopri5 at the evaluations closest to ``dopri_fractions`` of training.
    """

    steps: int = 400
    batch_size: int = 128
    lr: float = 2e-3
    ema_decay: float = 0.999
    beta0: float = 2.0
    schedule_kind: str = "cosine"
    schedule_options: tuple[tuple[str, float], ...] = ()
    target_coupling: str = "ot"
    cache_size: int = 1024
    n_trajectories: int = 512
    n_evals: int = 10
    dopri_fractions: tuple[float, ...] = (0.0, 0.5, 1.0)

    def __post_init__(self) -> None:
        put = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        check_int_fields(self, {"steps": 1, "batch_size": 1, "cache_size": 1, "n_trajectories": 1,
                                "n_evals": 1})
        put("batch_size", check_positive_int("batch_size", self.batch_size, minimum=2))
        put("lr", check_finite_number("lr", self.lr, minimum=0.0, strict=True))
        put("beta0", check_finite_number("beta0", self.beta0, minimum=0.0))
        kind = check_choice("schedule_kind", self.schedule_kind, tuple(k for k in SCHEDULES if k != "custom"))
        put("schedule_kind", kind)
        if self.schedule_options:
            try:
                opts = dict(self.schedule_options)
            except (TypeError, ValueError) as err:
                raise TypeError("schedule_options must be (name, value) pairs or a dict, got "
                                f"{self.schedule_options!r}") from err
        else:
            opts = default_schedule_options(kind)
        check_schedule_options(opts)
        put("schedule_options", tuple(sorted(opts.items())))
        self.schedule()  # validates beta0, kind and options with the library's messages
        fr = tuple(check_finite_number("dopri_fractions[]", f, minimum=0.0, maximum=1.0)
                   for f in self.dopri_fractions)
        put("dopri_fractions", fr)
        TrainConfig(steps=self.steps, lr=self.lr, ema_decay=self.ema_decay)  # validates ema_decay

    def schedule(self) -> CoolingSchedule:
        """The cooling schedule the scheduled methods use (``steps`` values, last one 0)."""
        return make_schedule(self.schedule_kind, self.beta0, self.steps, **dict(self.schedule_options))

    @property
    def eval_every(self) -> int:
        return max(1, self.steps // self.n_evals)

    def eval_steps(self) -> np.ndarray:
        """Steps at which the callback runs (0 is evaluated before training)."""
        grid = list(range(self.eval_every, self.steps + 1, self.eval_every))
        if grid[-1] != self.steps:
            grid.append(self.steps)
        return np.asarray([0, *grid], dtype=np.int64)

    def dopri_steps(self) -> tuple[int, ...]:
        ev = self.eval_steps()
        return tuple(sorted({int(ev[np.argmin(np.abs(ev - f * self.steps))]) for f in self.dopri_fractions}))

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["schedule_options"] = dict(self.schedule_options)
        return d

    def method_options(self, seed: int) -> dict[str, Any]:
        """Keyword arguments of :func:`gftlib.experiments.methods.build_method` for this budget (the
        drift cache draws stratified jittered times, ``time_jitter=True``: a fixed time grid lets a
        network with time features fit the pretrained term at the grid times only, T2 notebook)."""
        return dict(batch_size=self.batch_size, steps=self.steps, beta0=self.beta0,
                    schedule_kind=self.schedule_kind, schedule_options=dict(self.schedule_options),
                    target_coupling=self.target_coupling, cache_size=self.cache_size,
                    n_trajectories=self.n_trajectories, time_jitter=True, seed=seed)

    def key_for(self, method: str) -> dict[str, Any]:
        """The fields that can change ``method``'s run (schedule/caches dropped where unused)."""
        d = self.as_dict()
        if method not in SCHEDULED_METHODS:
            for k in ("beta0", "schedule_kind", "schedule_options", "target_coupling"):
                d.pop(k)
        if method not in ("gft-coupling", "reflow"):
            d.pop("cache_size")
        if method != "gft-drift":
            d.pop("n_trajectories")
        return d


def ends_at_zero(method: str, config: FinetuneConfig) -> bool:
    """Whether ``method``'s objective is plain CFM on the target at the last step (beta = 0 there)."""
    method = check_choice("method", method, METHODS)
    return method not in SCHEDULED_METHODS or config.schedule().final == 0.0
