"""Training, drift, costs, business value and the SLO."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, WithJsonSchema, field_validator, model_validator

from sim.distributions import ZERO
from sim.scenario.fields import (Count, Dist, Duration, MAX_UNITS, MetricValue, Model,
                                 NonNegativeDuration, PositiveDuration, Price, Rate,
                                 _duration_json_schema)


# --------------------------------------------------------------------------------------------
# Training, drift, costs, business, SLO
# --------------------------------------------------------------------------------------------

class Trigger(Model):
    """When ``policy: trigger``: a monitor of the deployed model's quality as seen on labelled
    predictions, which starts a training run when the windowed metric falls too low."""

    label_delay: Dist = Field(ZERO, description="From a prediction to its label arriving (ad "
                              "clicks: minutes; fraud: weeks). The monitor sees a prediction's "
                              "outcome only after it.")
    window: PositiveDuration = Field(description="Sliding window: the monitor averages the "
                                     "labels that arrived in the last `window` (of predictions "
                                     "by the model in service). Short: quick to react, noisy.")
    check_every: PositiveDuration = Field(3600.0, description="How often the monitor looks at "
                                          "the windowed metric.")
    below: float | None = Field(None, ge=0, description="Retrain when the windowed metric is "
                                "below this value. Give this or drop.")
    drop: float | None = Field(None, gt=0, lt=1, description="Retrain when the windowed metric "
                               "is this share below quality.fresh (the level of a just-trained "
                               "model), e.g. 0.05. Give this or below.")
    min_interval: NonNegativeDuration = Field(0.0, description="Cool-down: at least this long "
                                              "from one triggered run to the next.")
    min_labels: Count = Field(100, description="Labelled predictions the window must hold "
                              "before the monitor decides.")
    labelled_share: float = Field(1.0, gt=0, le=1, description="Share of predictions that ever "
                                  "get a label.")
    noise: bool = Field(True, description="Sampling noise of the measured metric (binomial: "
                        "the metric read as a rate over the labelled predictions); false: the "
                        "monitor sees the exact expected value.")

    @model_validator(mode="after")
    def _check(self) -> "Trigger":
        if (self.below is None) == (self.drop is None):
            raise ValueError("give exactly one of below (an absolute level of the metric) or "
                             "drop (a share below quality.fresh, e.g. 0.05)")
        if self.min_labels < 1:
            raise ValueError(f"min_labels must be >= 1 (got {self.min_labels:g})")
        return self


class Training(Model):
    """Retraining: when runs start (policy), what they learn from (mode), how long they take and
    what they cost. A run deploys ``duration + deploy_delay`` after it starts, with a data
    cut-off at its start."""

    policy: Literal["schedule", "trigger", "continual"] = Field(
        "schedule", description="schedule: a run every `every`; trigger: a run when the "
        "monitored quality falls (see trigger); continual: small stateful updates every `every` "
        "(minutes), one at a time.")
    every: PositiveDuration | None = Field(None, description="Time between training runs "
                                           "(schedule, continual).")
    duration: NonNegativeDuration = Field(0.0, description="Run time of one training run; or "
                                          "give throughput (and leave this 0) to derive it from "
                                          "the data volume.")
    deploy_delay: NonNegativeDuration = Field(0.0, description="From the end of a run to the "
                                              "new model serving.")
    start_at: NonNegativeDuration = Field(0.0, description="Offset of the schedule, e.g. 2h "
                                          "for 02:00.")
    mode: Literal["stateless", "stateful"] | None = Field(
        None, description="stateless: retrain from scratch on data_window of data; stateful: "
        "fine-tune the last model on the data since the last update (default: stateful for "
        "continual, else stateless).")
    examples_per_day: Count | None = Field(None, description="Training examples produced per "
                                           "day (default: one per request, from the workload's "
                                           "mean rate).")
    data_window: PositiveDuration | None = Field(None, description="Stateless: how much data "
                                                 "each run trains on (e.g. 30d). Needed with "
                                                 "throughput.")
    throughput: Rate | None = Field(None, description="Examples a training run processes per "
                                    "second; the run time is then examples / throughput + "
                                    "overhead.")
    overhead: NonNegativeDuration = Field(0.0, description="Fixed time added to each run "
                                          "(start-up, evaluation).")
    nodes: int = Field(1, ge=1, le=MAX_UNITS,
                       description="Nodes a run occupies (cost: run time x nodes x "
                       "costs.training_node_hour).")
    full_retrain_every: PositiveDuration | None = Field(
        None, description="Stateful: a stateless retrain from scratch at least this often.")
    architecture_changes: list[NonNegativeDuration] = Field(
        [], description="Times (from the start of the simulation, warm-up included) of model "
        "architecture changes: the first run after each must be stateless.")
    trigger: Trigger | None = Field(None, description="policy trigger: the quality monitor "
                                      "{label_delay, window, check_every, below or drop, "
                                      "min_interval, ...}.")

    @model_validator(mode="after")
    def _check(self) -> "Training":
        if self.policy in ("schedule", "continual") and self.every is None:
            raise ValueError(f"every is required with policy {self.policy} (time between runs)")
        if self.policy == "trigger":
            if self.trigger is None:
                raise ValueError("policy trigger needs a trigger section (label_delay, window, "
                                 "below or drop)")
            if self.every is not None:
                raise ValueError("every: not with policy trigger (the monitor decides when to "
                                 "retrain; use trigger.min_interval for a cool-down)")
        elif self.trigger is not None:
            raise ValueError(f"trigger: only with policy trigger (got policy {self.policy})")
        if self.policy == "continual" and self.mode == "stateless":
            raise ValueError("policy continual makes stateful updates (mode: stateful)")
        if self.throughput is not None and self.duration > 0:
            raise ValueError("give either duration or throughput, not both (with throughput "
                             "the run time follows from the data volume)")
        retrains_from_scratch = (self.training_mode == "stateless" or self.architecture_changes
                                 or self.full_retrain_every is not None)
        if self.throughput is not None and retrains_from_scratch and self.data_window is None:
            raise ValueError("training with throughput needs data_window: how much data a "
                             "stateless run (a retrain from scratch) learns from, e.g. 30d")
        if self.training_mode == "stateless" and self.full_retrain_every is not None:
            raise ValueError("full_retrain_every: only with mode stateful (every stateless run "
                             "is already a full retrain)")
        return self

    @property
    def training_mode(self) -> str:
        """The mode in force: as given, else stateful for continual and stateless otherwise."""
        if self.mode is not None:
            return self.mode
        return "stateful" if self.policy == "continual" else "stateless"


class Drift(Model):
    """A shift in the world at ``at`` (time since the start of the simulation, warm-up
    included) that costs ``quality_drop`` to predictions that have not caught up with it.

    What a prediction has caught up with is decided by two data times: the model's
    (its data cut-off minus ``recovery_data``) and the features' (request time minus feature
    age). ``shift(k, t)`` in [0, 1] is how much of the shift happened between data time ``k``
    and now ``t``:

    - ``sudden``: 1 when ``k < at <= t``, else 0 (with ``recovery_data: 0``, today's rule: the
      drop hurts models whose cut-off is before ``at``);
    - ``gradual``: the shift grows linearly over ``ramp``; with ``S(x) = clip((x - at) / ramp,
      0, 1)``, ``shift = max(0, S(t) - S(k))``: the part of the ramp since the data time;
    - ``recurring``: a seasonal cycle of ``period`` starting at ``at``; with ``p(x) = max(x,
      at)``, ``shift = (1 - cos(2 pi (p(t) - p(k)) / period)) / 2``: 0 at the same phase of the
      cycle as the data, 1 half a period away.

    The loss is ``quality_drop * ((1 - v) * shift(model) + v * min(shift(model),
    shift(features)))`` with ``v = visible_in_features``: the share ``v`` of the loss goes away
    once either the model or the features have seen the shift, the rest only with the model.
    """

    at: NonNegativeDuration = Field(description="When it happens (sudden), starts (gradual: the "
                                    "start of the ramp; recurring: the start of the cycle), from "
                                    "the start of the simulation, warm-up included.")
    quality_drop: MetricValue = Field(gt=0, description="Metric lost by predictions that have not "
                                "caught up with the whole shift (for recurring: half a period "
                                "out of phase).")
    kind: Literal["sudden", "gradual", "recurring"] = Field(
        "sudden", description="sudden: all at once at `at`; gradual: growing linearly over "
        "`ramp`; recurring: a seasonal cycle of `period` (a model is best at the same time of "
        "day or week as its training data, worst half a period away).")
    ramp: PositiveDuration | None = Field(None, description="gradual only: how long the shift "
                                          "takes to build up fully, e.g. 6h.")
    period: PositiveDuration | None = Field(None, description="recurring only: the length of "
                                            "the cycle, e.g. 1d (daily) or 7d (weekly).")
    recovery_data: NonNegativeDuration = Field(0.0, description="How much data after the shift "
                                               "a model must be trained on to learn it: a model "
                                               "recovers once its data cut-off is at least this "
                                               "long after the shift (0: any later cut-off).")
    visible_in_features: float = Field(0.0, ge=0, le=1, description="Share of the loss that "
                                       "goes away as soon as the request's features were "
                                       "computed from data after the shift (0 to 1): stream "
                                       "features, minutes old, recover it long before a "
                                       "nightly batch.")

    @model_validator(mode="after")
    def _check(self) -> "Drift":
        needs = {"sudden": None, "gradual": "ramp", "recurring": "period"}[self.kind]
        for key in ("ramp", "period"):
            given = getattr(self, key) is not None
            if key == needs and not given:
                example = "ramp: 6h" if key == "ramp" else "period: 1d"
                raise ValueError(f"kind {self.kind} needs {key} (e.g. {example})")
            if key != needs and given:
                raise ValueError(f"{key} applies only to kind "
                                 f"{'gradual' if key == 'ramp' else 'recurring'} "
                                 f"(this drift is {self.kind})")
        return self


class Costs(Model):
    """Unit prices in US dollars."""

    replica_hour: Price = Field(0.0, ge=0, description="One serving replica for an hour.")
    batch_node_hour: Price = Field(0.0, ge=0, description="One node of a batch scoring or "
                                   "feature job for an hour.")
    stream_node_hour: Price = Field(0.0, ge=0, description="One stream-processing node for an "
                                    "hour.")
    training_run: Price = Field(0.0, ge=0, description="One training run (a fixed cost per run, "
                                "on top of its node-hours).")
    training_node_hour: Price = Field(0.0, ge=0, description="One training node for an hour "
                                      "(a run costs run time x training.nodes x this).")
    stream_per_million_events: Price = Field(0.0, ge=0, description="Stream processing per "
                                             "million events processed (a managed service's "
                                             "per-event price), on top of its nodes.")
    stream_state_gb_month: Price = Field(0.0, ge=0, description="Stream window state held, per "
                                         "GB-month.")
    storage_gb_month: Price = Field(0.0, ge=0, description="Stored predictions and online "
                                    "features, per GB-month.")


class LatencyPenalty(Model):
    """Value lost to waiting, in proportion to latency."""

    per_100ms: float = Field(0.0, ge=0, description="Share of value lost per 100 ms of latency.")


class Business(Model):
    """What an outcome is worth."""

    value_per_outcome: Price = Field(0.0, ge=0, description="US dollars per outcome (a click...).")
    latency_penalty: LatencyPenalty = Field(LatencyPenalty(), description="Value lost per "
                                            "100 ms of latency, capped at all of it.")


class Freshness(Model):
    """How old each class of data may be before it counts as stale."""

    batch: PositiveDuration | None = Field(None, description="Batch features and stored "
                                           "predictions (e.g. 30h for a nightly job).")
    stream: PositiveDuration | None = Field(None, description="Stream features (e.g. 10m).")


class Slo(Model):
    """The service-level objectives: latency, and how fresh data must be."""

    latency_p99: Duration | None = Field(None, description="Target for the 99th percentile.")
    freshness: Annotated[Freshness | None, WithJsonSchema({"anyOf": [
        _duration_json_schema("exclusiveMinimum"),
        {"type": "object", "additionalProperties": False,
         "properties": {
             "batch": {**_duration_json_schema("exclusiveMinimum"), "description":
                       "Batch features and stored predictions (e.g. 30h for a nightly job)."},
             "stream": {**_duration_json_schema("exclusiveMinimum"), "description":
                        "Stream features (e.g. 10m)."}}},
        {"type": "null"}]})] = Field(
        None, description="Data older than this is stale: one duration for every class, or "
        "{batch: 30h, stream: 10m}. The reliability numbers count the requests served stale "
        "data and the minutes per day without fresh data.")

    @field_validator("freshness", mode="before")
    @classmethod
    def _one_bound_for_all(cls, value):
        """A single duration bounds every class of data."""
        if value is None or isinstance(value, (dict, Freshness)):
            return value
        return {"batch": value, "stream": value}

    def freshness_bound(self, feature_class: str) -> float | None:
        """The freshness bound of ``batch`` (stored predictions too) or ``stream`` data (None:
        not bounded)."""
        return None if self.freshness is None else getattr(self.freshness, feature_class)

    @property
    def has_freshness(self) -> bool:
        """Whether some class of data has a freshness bound."""
        return any(self.freshness_bound(c) is not None for c in ("batch", "stream"))
