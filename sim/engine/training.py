"""Retraining: the policies that start training runs, and the deploys that change the model.

Three policies (``training.policy``), all SimPy processes of the control plane:

- ``schedule``: a run every ``every`` (at ``k * every + start_at``); runs may overlap.
- ``continual``: small stateful updates every ``every``, one at a time: a tick that finds an
  update still running is skipped, and its data goes to the next update.
- ``trigger``: a monitor looks every ``trigger.check_every`` at the deployed model's quality as
  seen on labelled predictions, and starts a run when the windowed metric falls below a level.

Every run has a data cut-off at its start and deploys ``duration + deploy_delay`` later. What a
run learns from is its *mode*: stateless runs retrain from scratch on ``data_window`` of data;
stateful runs fine-tune the last model on the data since the previous run's cut-off. With
``throughput`` the run time is ``examples / throughput + overhead`` (else the fixed
``duration + overhead``); a run costs ``run time x nodes x training_node_hour + training_run``.

The monitor (``trigger``). Predictions arrive as a Poisson process at the workload's mean rate;
the label of a prediction made at ``s`` arrives at ``s + label_delay``. At a check at ``t`` the
monitor averages over the labels that arrived in ``[t - window, t]``, of predictions made by the
model in service (after it was deployed). The span of prediction times is cut into short bins;
bin ``i`` with middle ``s_i`` and width ``w_i`` holds ``k_i ~ Poisson(rate * labelled_share * w_i
* (F(t - s_i) - F(t - window - s_i)))`` labelled predictions (``F`` the label-delay CDF: Poisson
arrivals thinned by the chance that the label came in during the window), each an outcome with
probability ``q(s_i)``, the model's quality
then (``fresh`` minus the model-staleness and drift losses at its age; feature staleness is not
the model's doing). The measured metric is ``sum(successes) / sum(k_i)``; a short window holds
few labels, so it is noisy and raises false alarms; a long one reacts late. With ``noise:
false`` the monitor sees ``sum(k_i q_i) / sum(k_i)`` with the expected ``k_i``. A bin counts
only when ``F(t - s_i) > 0``, so no alarm can come before a label could have arrived. With a
constant delay ``D`` the window holds the predictions made in ``[t - window - D, t - D]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import simpy

from sim.engine.control import Run, first_run_at, periodic
from sim.engine.freshness import Timeline, staleness_loss
from sim.engine.freshness import drift_loss as _drift_loss
from sim.scenario import Costs, Training
from sim.units import DAY_S

# The monitor cuts its window into bins this many times shorter than min(check_every, window).
BINS_PER_CHECK = 10
MAX_BINS = 2000
# Label-delay CDF from this many quantiles of the distribution (works for every kind).
CDF_POINTS = 2000


def model_drift_loss(drifts, t_s: np.ndarray, model_cutoff_s: np.ndarray) -> np.ndarray:
    """Metric a model with these cut-offs loses to drift at ``t_s`` (features not counted).

    The one place the training code calls :func:`sim.engine.freshness.drift_loss`, so a change of its
    signature is absorbed here.
    """
    return _drift_loss(drifts, np.asarray(t_s, dtype=float),
                       np.asarray(model_cutoff_s, dtype=float))


@dataclass(frozen=True)
class TrainingRun(Run):
    """One training run: a :class:`Run` (``period_s`` 0 for runs no schedule spreads) with what
    it learned from and what it cost."""

    mode: str = "stateless"
    examples: float = 0.0
    cost_usd: float = 0.0
    reason: str = "schedule"


@dataclass(frozen=True)
class Check:
    """One look of the trigger monitor: labelled predictions, measured metric, whether it fired."""

    at_s: float
    labels: float
    measured: float
    fired: bool


@dataclass(eq=False)
class ModelLifecycle:
    """The deployed model over time, as a :class:`Timeline` of deploys with data cut-offs.

    Without a ``training`` section the model is never retrained: it was trained on data up to
    the start of the simulation (cut-off 0). With ``policy: schedule``, runs start every
    ``every`` (with cut-off at their start); the schedule is taken to have been running before
    the simulation starts, so the model in service at time 0 is already as old as the schedule
    implies. ``continual`` does the same one update at a time. ``trigger`` starts with a model
    just trained at the start of the control plane and retrains when the monitor fires.

    ``scenario`` gives the quality curves, the drift, the prices and the request rate (examples
    per day by default); ``streams`` the monitor's random numbers, drawn from the stream
    ``training_monitor`` (``training_monitor/NAME`` for an architecture's own training).
    """

    training: Training | None
    scenario: object | None = None
    streams: object | None = None
    name: str | None = None
    deploys: Timeline = field(init=False)
    runs: list[TrainingRun] = field(init=False, default_factory=list)
    checks: list[Check] = field(init=False, default_factory=list)
    skipped: list[float] = field(init=False, default_factory=list)

    def __post_init__(self):
        self.deploys = Timeline("model" if self.name is None else f"model/{self.name}")
        self._busy = 0     # runs started and not yet deployed (the trigger waits for none)
        self._running = 0  # runs still training (a continual tick skips while one is)
        self._last_cutoff_s: float | None = None
        self._last_start_s = -math.inf
        self._last_trigger_s = -math.inf

    # -- sizes ----------------------------------------------------------------------------------
    @property
    def examples_per_s(self) -> float:
        t = self.training
        if t is not None and t.examples_per_day is not None:
            return t.examples_per_day / DAY_S
        if self.scenario is None:
            raise ValueError("training needs examples_per_day when no scenario gives the "
                             "request rate")
        return self.scenario.workload.arrivals.rate

    def duration_s(self, examples: float) -> float:
        """Run time for a run over ``examples`` training examples."""
        t = self.training
        if t.throughput is not None:
            return examples / t.throughput + t.overhead
        return t.duration + t.overhead

    def run_cost_usd(self, duration_s: float, costs: Costs | None = None) -> float:
        costs = costs if costs is not None else (self.scenario.costs if self.scenario else Costs())
        return duration_s / 3600.0 * self.training.nodes * costs.training_node_hour + \
            costs.training_run

    def _longest_s(self) -> float:
        t = self.training
        if t.throughput is None:
            return t.duration + t.overhead
        window = t.data_window or 0.0
        span = max(window, t.every or 0.0, t.full_retrain_every or 0.0)
        return self.duration_s(span * self.examples_per_s)

    @property
    def lead_s(self) -> float:
        """How long before time 0 the policy must start to be in steady state."""
        t = self.training
        if t is None:
            return 0.0
        if t.policy == "trigger":
            g = t.trigger
            delay_p99 = float(g.label_delay.ppf(np.array(0.99)))
            return 2 * (g.window + g.check_every + delay_p99) + g.min_interval + \
                self._longest_s() + t.deploy_delay
        return 2 * t.every + self._longest_s() + t.deploy_delay

    # -- the processes ----------------------------------------------------------------------------
    def start(self, env: simpy.Environment, since_s: float) -> None:
        t = self.training
        if t is None:
            self.deploys.append(env.now, 0.0, version=0)
            return
        if t.policy == "schedule":
            self._last_cutoff_s = first_run_at(t.every, t.start_at, since_s) - t.every
            env.process(periodic(env, t.every, t.start_at, since_s, self._scheduled))
        elif t.policy == "continual":
            self._last_cutoff_s = first_run_at(t.every, t.start_at, since_s) - t.every
            env.process(self._continual(env, since_s))
        else:
            # The first model's cut-off is this policy's own lead before time 0, whatever the
            # other architectures need, so that an architecture's numbers do not depend on them.
            own_s = max(since_s, -self.lead_s)
            self.deploys.append(env.now, own_s, version=0)
            self._last_cutoff_s = own_s
            since_s = own_s
            self._rng = self.streams[f"training_monitor/{self.name}" if self.name
                                     else "training_monitor"] if self.streams else None
            self._label_quantiles = np.sort(t.trigger.label_delay.ppf(
                (np.arange(CDF_POINTS) + 0.5) / CDF_POINTS))
            env.process(self._monitor(env, since_s))

    def _scheduled(self, env: simpy.Environment, scheduled_s: float):
        yield from self._train(env, scheduled_s, self.training.every, "schedule")

    def _continual(self, env: simpy.Environment, since_s: float):
        t = self.training
        first = first_run_at(t.every, t.start_at, since_s)
        if first > env.now:
            yield env.timeout(first - env.now)
        while True:
            if self._running:
                self.skipped.append(env.now)
            else:
                # period 0: counted when it starts (skipped ticks make the gaps uneven)
                env.process(self._train(env, env.now, 0.0, "continual"))
            yield env.timeout(t.every)

    def _mode_of(self, start_s: float) -> str:
        t = self.training
        if t.training_mode == "stateless":
            return "stateless"
        previous = self._last_start_s
        if any(previous < c <= start_s for c in t.architecture_changes):
            return "stateless"
        f = t.full_retrain_every
        if f is not None and math.isfinite(previous) and \
                math.floor(start_s / f) != math.floor(previous / f):
            return "stateless"
        return "stateful"

    def _train(self, env: simpy.Environment, start_s: float, period_s: float, reason: str):
        t = self.training
        mode = self._mode_of(start_s)
        if mode == "stateless":
            span = t.data_window if t.data_window is not None else 0.0
        else:
            span = max(0.0, start_s - self._last_cutoff_s)
        examples = span * self.examples_per_s if (t.throughput is not None or
                                                  t.examples_per_day is not None or
                                                  self.scenario is not None) else 0.0
        duration = self.duration_s(examples)
        self.runs.append(TrainingRun(start_s, duration, t.nodes, period_s, mode=mode,
                                     examples=examples, cost_usd=self.run_cost_usd(duration),
                                     reason=reason))
        self._last_cutoff_s = start_s
        self._last_start_s = start_s
        self._busy += 1
        self._running += 1
        try:
            yield env.timeout(duration)
            self._running -= 1
            yield env.timeout(t.deploy_delay)
        finally:
            self._busy -= 1
        self.deploys.append(env.now, start_s, version=len(self.deploys))

    # -- the trigger monitor ----------------------------------------------------------------------
    def _monitor(self, env: simpy.Environment, since_s: float):
        g = self.training.trigger
        at = first_run_at(g.check_every, 0.0, since_s)
        if at <= env.now:
            at += g.check_every
        yield env.timeout(at - env.now)
        while True:
            self._check(env)
            yield env.timeout(g.check_every)

    def label_cdf(self, wait_s: np.ndarray) -> np.ndarray:
        """P(label delay <= wait): share of a prediction's labels in after ``wait_s``."""
        q = self._label_quantiles
        return np.searchsorted(q, np.asarray(wait_s, dtype=float), side="right") / q.size

    def observe(self, t_s: float) -> tuple[float, float]:
        """(labelled predictions, measured metric) the monitor sees at ``t_s`` (NaN: none)."""
        g = self.training.trigger
        spec = self.scenario.quality
        current = self.deploys.rows[self.deploys.current]
        longest_delay = float(self._label_quantiles[-1])
        lo = max(t_s - g.window - longest_delay, current["visible_at_s"])
        if t_s <= lo:
            return 0.0, math.nan
        width = max(min(g.check_every, g.window) / BINS_PER_CHECK, (t_s - lo) / MAX_BINS)
        n_bins = max(1, math.ceil((t_s - lo) / width - 1e-9))
        edges = np.maximum(t_s - width * np.arange(n_bins, -1, -1), lo)
        widths = np.diff(edges)
        mid = (edges[:-1] + edges[1:]) / 2
        # labels of predictions made at mid that arrived within the window [t - window, t]
        share = self.label_cdf(t_s - mid) - self.label_cdf(t_s - g.window - mid)
        age = mid - current["cutoff_s"]
        q = spec.fresh - staleness_loss(spec.model_staleness, spec.fresh, age) - \
            model_drift_loss(self.scenario.drift, mid, np.full(mid.shape, current["cutoff_s"]))
        q = np.clip(q, 0.0, spec.fresh)
        rate = self.scenario.workload.arrivals.rate  # predictions made per second
        expected = rate * g.labelled_share * widths * share
        if g.noise and self._rng is not None:
            k = self._rng.poisson(expected)
            hits = self._rng.binomial(k, np.clip(q, 0.0, 1.0))
            n = float(k.sum())
            return n, (float(hits.sum()) / n if n > 0 else math.nan)
        n = float(expected.sum())
        return n, (float((expected * q).sum()) / n if n > 0 else math.nan)

    def _check(self, env: simpy.Environment) -> None:
        t = self.training
        g = t.trigger
        now = env.now
        if self._busy or now < self._last_trigger_s + g.min_interval:
            return
        n, measured = self.observe(now)
        level = g.below if g.below is not None else (1 - g.drop) * self.scenario.quality.fresh
        fired = n >= g.min_labels and measured < level
        self.checks.append(Check(now, n, measured, fired))
        if fired:
            self._last_trigger_s = now
            env.process(self._train(env, now, 0.0, "trigger"))

    # -- what it did ------------------------------------------------------------------------------
    def trainings(self, start_s: float, end_s: float) -> int:
        """Runs started in ``[start_s, end_s)``."""
        return sum(1 for r in self.runs if start_s <= r.start_s < end_s)

    def cost_usd_per_day(self, costs: Costs, start_s: float, end_s: float) -> float:
        """Training cost per day over a window: a scheduled run's cost spread evenly over its
        period (a weekly run contributes a seventh to each day), a triggered run's or a continual
        update's counted when it starts."""
        total = 0.0
        for run in self.runs:
            usd = self.run_cost_usd(run.duration_s, costs)
            if run.period_s > 0:
                overlap = min(run.start_s + run.period_s, end_s) - max(run.start_s, start_s)
                if overlap > 0:
                    total += usd * overlap / run.period_s
            elif start_s <= run.start_s < end_s:
                total += usd
        return total / ((end_s - start_s) / DAY_S)


def lifecycles(scenario, streams) -> tuple[ModelLifecycle, dict[str, ModelLifecycle]]:
    """The shared model lifecycle and, per architecture, the one it uses: its own when it has a
    ``training`` section, else the shared one."""
    shared = ModelLifecycle(scenario.training, scenario, streams)
    per_arch = {}
    for name, spec in scenario.architectures.items():
        own = getattr(spec, "training", None)
        per_arch[name] = shared if own is None else ModelLifecycle(own, scenario, streams, name)
    return shared, per_arch
