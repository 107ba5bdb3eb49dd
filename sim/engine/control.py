"""Control-plane building blocks: SimPy schedules and the record of the work they did.

Everything here changes the *state* requests see (a job finishing, a model deployed). Each
process is a generator taking ``env`` first, as SimPy processes do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Generator

import numpy as np
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


@dataclass(frozen=True)
class Incident:
    """Something that went wrong in a pipeline: a run that failed or was preempted (``end_s``
    = ``start_s``, the moment it stopped), or a stream outage (from ``start_s`` to ``end_s``)."""

    component: str  # batch_scoring, feature_pipeline, stream_processing
    cause: str      # failed, preempted, outage
    start_s: float
    end_s: float


class Attempts:
    """Runs of one scheduled job as they really go: extra run time (``delay``), failures with
    retries, spot preemptions with restarts (see :class:`sim.scenario.pipelines.Failures` and
    :class:`~sim.scenario.pipelines.Spot`).

    Random draws come from generators of their own, named by ``component`` and started from
    their first number (:meth:`sim.engine.rng.Streams.fresh`): every architecture whose job has the
    same settings meets the same failures (common random numbers), and the fast and reference
    engines, which share the control plane, meet them too. Without delay, failures or spot a
    run is one attempt of its computed duration, as before.
    """

    def __init__(self, spec, component: str, streams, runs: list, incidents: list):
        self.spec = spec
        self.component = component
        self.runs = runs
        self.incidents = incidents
        self.failures = getattr(spec, "failures", None)
        self.spot = getattr(spec, "spot", None)
        delay = getattr(spec, "delay", None)
        self.delay = None if delay is None or delay.is_zero else delay
        self._rng = {name: streams.fresh(f"pipeline/{component}/{name}")
                     for name in ("delay", "failure", "preemption", "retry")}

    def lead_s(self) -> float:
        """Extra lead for the control plane: the longest likely delay."""
        return 0.0 if self.delay is None else float(self.delay.ppf(np.array(0.9999)))

    def run(self, env: simpy.Environment, scheduled_s: float, work_s: float,
            done: Callable[[], None]) -> Generator:
        """Attempt the run scheduled at ``scheduled_s`` (``work_s`` of computed run time) until
        it succeeds, gives up, or is superseded by the next scheduled run; ``done()`` is called
        when it succeeds."""
        spec = self.spec
        every = spec.every
        retries = self.failures.retries if self.failures is not None else 0
        while True:
            duration = work_s
            if self.delay is not None:
                duration += float(self.delay.ppf(self._rng["delay"].random()))
            stop_s, cause = duration, None
            if self.spot is not None and self.spot.preemptions_per_hour > 0:
                at = self._rng["preemption"].exponential(3600.0 / self.spot.preemptions_per_hour)
                if at < stop_s:
                    stop_s, cause = at, "preempted"
            if self.failures is not None and self.failures.probability > 0:
                u, where = self._rng["failure"].random(2)
                if u < self.failures.probability and where * duration < stop_s:
                    stop_s, cause = where * duration, "failed"
            self.runs.append(Run(env.now, stop_s, spec.nodes, every))
            yield env.timeout(stop_s)
            if cause is None:
                done()
                return
            self.incidents.append(Incident(self.component, cause, env.now, env.now))
            if cause == "preempted":
                wait = float(self.spot.restart.ppf(self._rng["retry"].random()))
            else:
                if retries == 0:
                    return
                retries -= 1
                wait = float(self.failures.retry_after.ppf(self._rng["retry"].random()))
            if env.now + wait >= scheduled_s + every:
                return  # the next scheduled run, with newer data, supersedes this one
            yield env.timeout(wait)
