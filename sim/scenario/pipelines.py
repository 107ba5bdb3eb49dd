"""How pipelines fail and run late, how long stored data stays valid, what answers a request
without a prediction, and the train-serving skew of separate pipelines.

Used by the architectures section: batch scoring and feature materialisation take
``failures``, ``delay`` and ``spot``; stream processing takes ``outages``; stores take a ``ttl``;
each architecture a ``fallback`` chain and a ``pipelines`` (skew) section.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from sim.distributions import ZERO
from sim.scenario.fields import Dist, MAX_UNITS, MetricValue, Model, PositiveDuration, Price


class Failures(Model):
    """Runs of a scheduled job (batch scoring, feature materialisation) that fail.

    Each run (a retry too) fails with ``probability``, at a uniformly drawn point of its run
    time (it pays for the time it ran), and is retried ``retry_after`` later, up to ``retries``
    times. A retry reprocesses the same data (its cut-off stays the scheduled time); a retry
    that would start after the next scheduled run is dropped, since that run has newer data.
    While runs fail, requests keep reading the last good run's output, which ages.
    """

    probability: float = Field(ge=0, le=1, description="Share of runs that fail (each run "
                               "independently), e.g. 0.02.")
    retry_after: Dist = Field(ZERO, description="From a failure to the retry (a duration or "
                              "a distribution).")
    retries: int = Field(0, ge=0, le=1000, description="Retries of a failed run before giving "
                         "up until the next scheduled run.")


class Spot(Model):
    """Runs on spot (preemptible) or idle capacity: cheaper, and sometimes preempted.

    A run is preempted after an exponentially distributed time with rate
    ``preemptions_per_hour`` (of its run time); a preempted run pays for the time it ran and
    starts again from scratch ``restart`` later, as often as needed, until the next scheduled
    run starts (which supersedes it).
    """

    discount: float = Field(ge=0, lt=1, description="Share off the node-hour price, e.g. 0.7 "
                            "(spot at 30% of on-demand).")
    preemptions_per_hour: float = Field(0.0, ge=0, le=3600, description="Preemptions per hour "
                                        "of run time (0: never preempted).")
    restart: Dist = Field(ZERO, description="From a preemption to the run starting again.")


class StreamOutages(Model):
    """Stream-processing outages: the processor stops now and then, and catches up after.

    The processor runs for an exponentially distributed time (mean ``every``), then is down
    for ``duration``, and so on: outages start on average ``every + mean duration`` apart. During an outage no new stream features become visible; at its end the
    backlog is processed (at once, or at ``node_capacity`` when given, so lag then drains).
    """

    every: PositiveDuration = Field(description="Mean time the processor runs between "
                                    "outages (from the end of one to the start of the next), "
                                    "e.g. 7d.")
    duration: Dist = Field(description="How long an outage lasts (a duration or a "
                           "distribution), e.g. {exponential: {mean: 45m}}.")


FALLBACK_STEPS = ("stale", "default", "error")


class Pipelines(Model):
    """Separate or shared training and serving pipelines, and their train-serving skew.

    ``dual``: features are computed by one pipeline for training and another for serving; a
    share of requests (``skewed_share``) sees a feature computed differently from training,
    which costs ``skew_loss`` of the metric each. ``unified`` (one feature definition for both)
    and ``log_and_wait`` (train on the features logged at serving time) have no skew and cost
    ``cost_per_day`` (the extra infrastructure and work).
    """

    kind: Literal["dual", "unified", "log_and_wait"] = Field(
        description="dual: separate training and serving pipelines (skew); unified: one "
        "feature definition for both; log_and_wait: train on features logged when serving.")
    skew_loss: MetricValue = Field(0.0, ge=0, description="dual: metric lost by a request with "
                                   "a skewed feature.")
    skewed_share: float = Field(1.0, ge=0, le=1, description="dual: share of requests with a "
                                "skewed feature (1: all).")
    cost_per_day: Price = Field(0.0, ge=0, description="unified or log_and_wait: US$ per day "
                                "of keeping the pipelines consistent.")

    @model_validator(mode="after")
    def _check(self) -> "Pipelines":
        if self.kind == "dual" and self.cost_per_day > 0:
            raise ValueError("cost_per_day is what unified or log_and_wait cost to remove the "
                             "skew; a dual pipeline states its skew_loss instead")
        if self.kind != "dual" and self.skew_loss > 0:
            raise ValueError(f"skew_loss applies to dual pipelines; {self.kind} has no skew")
        return self

    @property
    def mean_loss(self) -> float:
        """Metric lost per request to skew, on average."""
        return self.skew_loss * self.skewed_share if self.kind == "dual" else 0.0


def check_fallback(chain: list[str], stores_predictions: bool) -> list[str]:
    """A fallback chain, checked: steps from FALLBACK_STEPS, no repeats, ending with one that
    always answers (default or error), ``stale`` only where predictions are stored."""
    if not chain:
        raise ValueError("fallback needs at least one step, e.g. [default]")
    for step in chain:
        if step not in FALLBACK_STEPS:
            raise ValueError(f"fallback step {step!r} is not one of {', '.join(FALLBACK_STEPS)}")
    if len(set(chain)) != len(chain):
        raise ValueError("fallback lists a step twice")
    if chain[-1] == "stale":
        raise ValueError("fallback must end with default or error: a stale prediction is not "
                         "always there (a new entity has none)")
    if "stale" in chain and not stores_predictions:
        raise ValueError("fallback step stale (the last stored prediction) needs stored "
                         "predictions (kind batch or hybrid)")
    for step in chain[:-1]:
        if step in ("default", "error"):
            raise ValueError(f"fallback step {step} always answers, so the steps after it "
                             f"never run; put it last")
    return chain


__all__ = ["Failures", "Spot", "StreamOutages", "Pipelines", "FALLBACK_STEPS", "check_fallback",
           "MAX_UNITS"]
