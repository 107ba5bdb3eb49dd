"""Training, drift, costs, business value and the SLO."""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import Field, WithJsonSchema, field_validator, model_validator

from sim.distributions import ZERO
from sim.scenario.fields import (Count, Dist, Duration, MAX_UNITS, MetricValue, Model,
                                 changed_from_default,
                                 NonNegativeDuration, PositiveDuration, Price, Rate,
                                 _duration_json_schema)


# --------------------------------------------------------------------------------------------
# Training, drift, costs, business, SLO
# --------------------------------------------------------------------------------------------

LABEL_QUANTILES = 4000


class Labels(Model):
    """When training examples get their labels, and so where a run's usable data ends."""

    delay: Dist = Field(ZERO, description="From a prediction to its positive label arriving "
                        "(ad clicks: minutes; fraud disputes: weeks).")
    wait: NonNegativeDuration | None = Field(
        None, description="The negative-label window: an example with no label after this "
        "long counts as negative and can be trained on. A run's data ends this long before it "
        "starts. Short: late positives are mislabelled; long: the data is older. Default: the "
        "delay's 99th percentile.")
    mislabel_loss: MetricValue = Field(0.0, ge=0, description="Metric a model loses if every "
                                       "positive were mislabelled; it loses this x the share "
                                       "of positives arriving after `wait`.")

    @property
    def wait_s(self) -> float:
        """The window in force: as given, else the delay's 99th percentile."""
        if self.wait is not None:
            return float(self.wait)
        return float(self.delay.ppf(np.array(0.99)))

    @property
    def mislabelled_share(self) -> float:
        """Share of positives whose label arrives after the window: P(delay > wait), from
        ``LABEL_QUANTILES`` quantiles of the delay (to within 1 / LABEL_QUANTILES)."""
        u = (np.arange(LABEL_QUANTILES) + 0.5) / LABEL_QUANTILES
        return float(np.mean(self.delay.ppf(u) > self.wait_s))

    @property
    def loss(self) -> float:
        """Metric a model trained with this window loses to mislabelled positives."""
        return self.mislabel_loss * self.mislabelled_share


class Trigger(Model):
    """When ``policy: trigger``: a monitor that starts a training run. ``kind: performance``
    (the default) watches the deployed model's quality on labelled predictions; ``volume``
    retrains after enough new labelled data; ``distribution`` runs a test on the inputs, which
    needs no labels but raises false alarms."""

    kind: Literal["performance", "volume", "distribution"] = Field(
        "performance", description="performance: the windowed metric on labelled predictions "
        "falls (below or drop); volume: new_labels labelled examples (or data_growth x "
        "data_window) arrived since the last run's data; distribution: a drift test on the "
        "inputs flags a shift (detection per check) or raises a false alarm.")
    label_delay: Dist | None = Field(None, description="From a prediction to its label "
                                     "arriving (default: training.labels.delay, else 0). The "
                                     "monitor sees a prediction's outcome only after it.")
    window: PositiveDuration | None = Field(None, description="performance: sliding window; "
                                            "the monitor averages the labels that arrived in the "
                                            "last `window`. Short: quick to react, noisy.")
    check_every: PositiveDuration = Field(3600.0, description="How often the monitor looks.")
    below: float | None = Field(None, ge=0, description="performance: retrain when the "
                                "windowed metric is below this value. Give this or drop.")
    drop: float | None = Field(None, gt=0, lt=1, description="performance: retrain when the "
                               "windowed metric is this share below quality.fresh (the level "
                               "of a just-trained model), e.g. 0.05. Give this or below.")
    min_interval: NonNegativeDuration = Field(0.0, description="Cool-down: at least this long "
                                              "from one triggered run to the next.")
    min_labels: Count = Field(100, description="performance: labelled predictions the window "
                              "must hold before the monitor decides.")
    labelled_share: float = Field(1.0, gt=0, le=1, description="Share of predictions that ever "
                                  "get a label.")
    noise: bool = Field(True, description="performance: sampling noise of the measured metric "
                        "(binomial); false: the monitor sees the exact expected value.")
    new_labels: Count | None = Field(None, description="volume: retrain once this many labelled "
                                     "examples arrived after the last run's data cut-off.")
    data_growth: float | None = Field(None, gt=0, description="volume: retrain once the new "
                                      "labelled data is this share of training.data_window "
                                      "(0.1: +10%).")
    detection: float = Field(0.5, gt=0, le=1, description="distribution: chance that a check "
                             "flags inputs that have shifted since the model's data (scaled by "
                             "how much of a gradual or recurring shift happened).")
    false_alarm_rate: float = Field(0.01, ge=0, lt=1, description="distribution: chance that a "
                                    "check flags a shift when there is none (the test's alpha).")

    @model_validator(mode="after")
    def _check(self) -> "Trigger":
        own = {"performance": ("window", "below", "drop"),
               "volume": ("new_labels", "data_growth")}
        for kind, keys in own.items():
            if self.kind != kind:
                given = [k for k in keys if getattr(self, k) is not None]
                if given:
                    raise ValueError(f"{', '.join(given)}: only with kind {kind} (this "
                                     f"trigger is {self.kind})")
        if self.kind == "performance":
            if self.window is None:
                raise ValueError("kind performance needs window (e.g. window: 1d): the span of "
                                 "labels the monitor averages")
            if (self.below is None) == (self.drop is None):
                raise ValueError("give exactly one of below (an absolute level of the metric) "
                                 "or drop (a share below quality.fresh, e.g. 0.05)")
        if self.kind == "volume" and (self.new_labels is None) == (self.data_growth is None):
            raise ValueError("kind volume needs exactly one of new_labels (e.g. 100k) or "
                             "data_growth (e.g. 0.1 for +10% of data_window)")
        if self.kind != "distribution" and changed_from_default(self, ("detection",
                                                                       "false_alarm_rate")):
            raise ValueError(f"detection and false_alarm_rate: only with kind distribution "
                             f"(this trigger is {self.kind})")
        if self.min_labels < 1:
            raise ValueError(f"min_labels must be >= 1 (got {self.min_labels:g})")
        return self


EVALUATION_METHODS = ("offline", "shadow", "canary", "ab", "interleaving", "bandit")
# What each method needs besides its defaults, and the keys only it takes.
_EVALUATION_KEYS = {"offline": ("duration",), "shadow": ("share", "predictions"),
                    "canary": ("steps", "step_duration"),
                    "ab": ("share", "min_effect", "alpha", "power"),
                    "interleaving": ("share", "min_effect", "alpha", "power", "speedup"),
                    "bandit": ("share", "min_effect", "confidence")}


class Evaluation(Model):
    """How a trained model is tested before it serves everyone. The deploy waits until the
    test decides; one test runs at a time, and a candidate that finishes training while one is
    running waits (a newer candidate replaces it)."""

    method: Literal["offline", "shadow", "canary", "ab", "interleaving", "bandit"] = Field(
        description="offline: a fixed time on held-out data; shadow: the candidate scores a "
        "share of traffic beside the champion until `predictions` (doubles inference there, "
        "no user sees it); canary: a ramp of traffic shares, `step_duration` each, aborted "
        "at the first step if the candidate is bad; ab: until the sample size of a "
        "two-proportion test of `min_effect` at this traffic; interleaving: the same test "
        "needing `speedup` times fewer samples (rankers; both models rank each request in "
        "the test); bandit: Thompson sampling between champion and challenger until one is "
        "best with `confidence`.")
    duration: NonNegativeDuration | None = Field(None, description="offline: how long the "
                                                 "evaluation takes.")
    share: float | None = Field(None, gt=0, le=1, description="Share of traffic (by user) in "
                                "the test; A/B and interleaving split it evenly between the "
                                "models. Default 1 for shadow, 0.1 for ab and interleaving, 1 "
                                "for bandit.")
    predictions: Count | None = Field(None, description="shadow: predictions the candidate "
                                      "must make before the decision.")
    steps: list[Annotated[float, Field(gt=0, le=1)]] = Field(
        [0.01, 0.05, 0.25, 0.5], min_length=1, description="canary: the ramp of traffic shares on the "
        "candidate, each held for step_duration.")
    step_duration: PositiveDuration | None = Field(None, description="canary: time at each "
                                                   "step of the ramp.")
    min_effect: float = Field(0.01, gt=0, description="ab, interleaving, bandit: the relative "
                              "uplift of the metric the test must detect (0.01: 1%).")
    alpha: float = Field(0.05, gt=0, lt=1, description="ab, interleaving: significance "
                         "(two-sided).")
    power: float = Field(0.8, gt=0, lt=1, description="ab, interleaving: power.")
    speedup: float = Field(10.0, gt=1, description="interleaving: how many times fewer samples "
                           "than an A/B test (Netflix reported over 100x for its rankers, "
                           "2017; 10 is a cautious default).")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="bandit: posterior probability "
                              "at which one model is declared best.")
    cost: Price = Field(0.0, ge=0, description="Fixed US$ per evaluation (people's time, "
                        "offline compute), on top of any extra inference.")

    @model_validator(mode="after")
    def _check(self) -> "Evaluation":
        if self.method == "offline" and self.duration is None:
            raise ValueError("method offline needs duration (e.g. duration: 2h)")
        if self.method == "shadow" and self.predictions is not None and self.predictions < 1:
            raise ValueError(f"predictions must be at least 1 (got {self.predictions:g})")
        if self.method == "shadow" and self.predictions is None:
            raise ValueError("method shadow needs predictions (e.g. predictions: 100k): how "
                             "many the candidate scores before the decision")
        if self.method == "canary" and self.step_duration is None:
            raise ValueError("method canary needs step_duration (e.g. step_duration: 1h)")
        mine = set(_EVALUATION_KEYS[self.method]) | {"method", "cost"}
        others = sorted(changed_from_default(self, self.model_fields_set - mine))
        if others:
            raise ValueError(f"{', '.join(others)}: not used by method {self.method} (it "
                             f"takes {', '.join(_EVALUATION_KEYS[self.method])})")
        if self.method == "canary" and list(self.steps) != sorted(self.steps):
            raise ValueError(f"steps: the canary's shares must grow (got {list(self.steps)})")
        return self

    @property
    def traffic_share(self) -> float:
        """The share of traffic in the test (the method's default when not given)."""
        if self.share is not None:
            return self.share
        return {"ab": 0.1, "interleaving": 0.1}.get(self.method, 1.0)


class BadModels(Model):
    """Training runs that produce a worse model (a bug, bad data): what an evaluation catches
    and a direct deploy does not."""

    share: float = Field(gt=0, lt=1, description="Share of training runs whose model is bad.")
    loss: MetricValue = Field(gt=0, description="Metric a bad model loses against a good one "
                              "of the same age.")


class Stateful(Model):
    """The quality effect of stateful training (fine-tuning the last model) beside its cost."""

    lift: float = Field(0.0, description="Metric added to a model from a stateful run (the "
                        "Grubhub case: fine-tuning on fresh data did better; negative: worse).")
    forgetting: MetricValue = Field(0.0, ge=0, description="Metric lost per stateful update "
                                    "since the last stateless run (catastrophic forgetting); a "
                                    "stateless run resets it.")


class Training(Model):
    """Retraining: when runs start (policy), what they learn from (mode), how long they take and
    what they cost. A run's data ends ``labels.wait`` before it starts (its data cut-off); its
    model deploys after ``duration``, the evaluation, and ``deploy_delay``."""

    policy: Literal["schedule", "trigger", "continual"] = Field(
        "schedule", description="schedule: a run every `every`; trigger: a run when the "
        "monitor says so (see trigger); continual: small stateful updates every `every` "
        "(minutes), one at a time.")
    every: PositiveDuration | None = Field(None, description="Time between training runs "
                                           "(schedule, continual).")
    duration: NonNegativeDuration = Field(0.0, description="Run time of one training run; or "
                                          "give throughput (and leave this 0) to derive it from "
                                          "the data volume.")
    deploy_delay: NonNegativeDuration = Field(0.0, description="From the end of a run (and its "
                                              "evaluation) to the new model serving.")
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
                                          "(start-up).")
    nodes: int = Field(1, ge=1, le=MAX_UNITS,
                       description="Nodes a run occupies (cost: run time x nodes x "
                       "costs.training_node_hour).")
    full_retrain_every: PositiveDuration | None = Field(
        None, description="Stateful: a stateless retrain from scratch at least this often.")
    architecture_changes: list[NonNegativeDuration] = Field(
        [], description="Times (from the start of the simulation, warm-up included) of model "
        "architecture changes: the first run after each must be stateless.")
    trigger: Trigger | None = Field(None, description="policy trigger: the monitor {kind, "
                                      "window, check_every, below or drop, ...}.")
    labels: Labels | None = Field(None, description="When labels arrive: {delay, wait, "
                                  "mislabel_loss}. A run's data ends `wait` before it starts.")
    evaluation: Evaluation | None = Field(None, description="How a new model is tested before "
                                          "it serves everyone: {method: offline | shadow | "
                                          "canary | ab | interleaving | bandit, ...}.")
    bad_models: BadModels | None = Field(None, description="Runs that produce a worse model "
                                         "{share, loss}: an evaluation stops them, a direct "
                                         "deploy serves them until the next model.")
    stateful: Stateful | None = Field(None, description="Quality effect of stateful runs "
                                      "{lift, forgetting}.")

    @model_validator(mode="after")
    def _check(self) -> "Training":
        if self.policy in ("schedule", "continual") and self.every is None:
            raise ValueError(f"every is required with policy {self.policy} (time between runs)")
        if self.policy == "trigger":
            if self.trigger is None:
                raise ValueError("policy trigger needs a trigger section (kind, window, below "
                                 "or drop...)")
            if self.every is not None:
                raise ValueError("every: not with policy trigger (the monitor decides when to "
                                 "retrain; use trigger.min_interval for a cool-down)")
            if self.trigger.data_growth is not None and self.data_window is None:
                raise ValueError("trigger.data_growth needs data_window (the growth is a share "
                                 "of it)")
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
        if self.stateful is not None and self.training_mode == "stateless":
            raise ValueError("stateful: only with mode stateful or policy continual (every run "
                             "here is stateless)")
        return self

    @property
    def training_mode(self) -> str:
        """The mode in force: as given, else stateful for continual and stateless otherwise."""
        if self.mode is not None:
            return self.mode
        return "stateful" if self.policy == "continual" else "stateless"

    @property
    def wait_s(self) -> float:
        """How long before a run's start its data ends (the label window; 0 without labels)."""
        return 0.0 if self.labels is None else self.labels.wait_s

    @property
    def label_delay(self):
        """The label delay the trigger monitor sees: its own, else the labels', else none."""
        if self.trigger is not None and self.trigger.label_delay is not None:
            return self.trigger.label_delay
        return self.labels.delay if self.labels is not None else ZERO


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
    device_download: Price = Field(0.0, ge=0, description="Edge: one device downloading one "
                                   "new model (CDN egress for its size).")
    device_sync: Price = Field(0.0, ge=0, description="Edge: one device syncing its features "
                               "once (the request and its egress).")


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
