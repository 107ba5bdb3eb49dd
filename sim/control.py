"""Control-plane building blocks: SimPy schedules and the record of the work they did.

Everything here changes the *state* requests see (a job finishing, a model deployed). Each
process is a generator taking ``env`` first, as SimPy processes do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Generator

import simpy


@dataclass(frozen=True)
class Run:
    """One run of a scheduled job: when it started, for how long, on how many nodes."""

    start_s: float
    duration_s: float
    nodes: int
    period_s: float


def first_run_at(every_s: float, start_at_s: float, since_s: float) -> float:
    """The first scheduled time ``k * every + start_at`` at or after ``since_s``."""
    k = math.ceil((since_s - start_at_s) / every_s)
    return k * every_s + start_at_s


def periodic(env: simpy.Environment, every_s: float, start_at_s: float, since_s: float,
             job: Callable[[simpy.Environment, float], Generator]) -> Generator:
    """Start ``job(env, scheduled_at)`` as its own process every ``every_s``.

    Runs may overlap when a job takes longer than its period; each is independent.
    """
    t = first_run_at(every_s, start_at_s, since_s)
    if t > env.now:
        yield env.timeout(t - env.now)
    while True:
        env.process(job(env, env.now))
        yield env.timeout(every_s)


def apportioned_usd(runs: list[Run], usd_per_run: Callable[[Run], float], window_start_s: float,
                    window_end_s: float) -> float:
    """Money spent on ``runs`` attributable to a window, per day.

    Each run's cost is spread evenly over its period (the interval until the next scheduled
    run), so a weekly job contributes a seventh of its cost to each day.
    """
    total = 0.0
    for run in runs:
        overlap = min(run.start_s + run.period_s, window_end_s) - max(run.start_s, window_start_s)
        if overlap > 0:
            total += usd_per_run(run) * overlap / run.period_s
    return total / ((window_end_s - window_start_s) / 86400.0)
