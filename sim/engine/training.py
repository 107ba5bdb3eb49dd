"""Retraining: the policies that start training runs, and the deploys that change the model.

Three policies (``training.policy``), all SimPy processes of the control plane:

- ``schedule``: a run every ``every`` (at ``k * every + start_at``); runs may overlap.
- ``continual``: small stateful updates every ``every``, one at a time: a tick that finds an
  update still running is skipped, and its data goes to the next update.
- ``trigger``: a monitor looks every ``trigger.check_every`` at the deployed model's quality as
  seen on labelled predictions, and starts a run when the windowed metric falls below a level.

Every run has a data cut-off ``labels.wait`` before its start (the negative-label window: an
example is trained on once its label has had that long to arrive; positives later than that are
mislabelled, costing ``mislabel_loss x P(delay > wait)``), and deploys after its run time, its
evaluation (below) and ``deploy_delay``. What a run learns from is its *mode*: stateless runs retrain from scratch on ``data_window`` of data;
stateful runs fine-tune the last model on the data since the previous run's cut-off. With
``throughput`` the run time is ``examples / throughput + overhead`` (else the fixed
``duration + overhead``); a run costs ``run time x nodes x training_node_hour + training_run``.

Each model carries a *training loss*, metric lost (negative: gained) against a model of the same
age trained well: the mislabelled positives above; for a stateful run ``-stateful.lift +
stateful.forgetting x`` the stateful updates since the last stateless run (this one included);
and ``bad_models.loss`` for the share ``bad_models.share`` of runs that produce a bad model
(drawn from the stream ``training_runs[/NAME]``). The model in service before the first run has
the labels' loss (and the lift, in stateful mode) and is good.

Evaluation (``training.evaluation``). A trained candidate is tested before it deploys; one test
runs at a time, and a candidate that finishes training while one runs waits for it, a newer
candidate replacing an older one that is still waiting. At the workload's mean rate ``r`` the
test takes: offline, its ``duration``; shadow, ``predictions / (share r)``; canary,
``len(steps) x step_duration``; A/B, ``2 n / (share r)`` with ``n`` the per-arm sample of a
two-proportion test of ``quality.fresh`` against ``fresh x (1 + min_effect)``; interleaving, the
A/B time over ``speedup``; bandit, Thompson sampling's mean samples to a decision over ``share
r``. A bad candidate is stopped: a canary at the end of its first step, the others at the end.
During a test the candidate serves users (split by a hash of the entity, the same user always
in the same arm): A/B and interleaving ``share / 2``, bandit ``share x`` its mean challenger
share, canary the step's share, shadow and offline none.

The monitor (``trigger``). Three kinds. ``volume`` starts a run once ``new_labels`` labelled
examples (``rate x labelled_share x`` the data time since the last run's cut-off, whose labels
have matured: up to ``now - wait``) have arrived, or ``data_growth x data_window`` of data.
``distribution`` tests the inputs at each check: it flags with probability ``detection x
shift`` once a drift has shifted the inputs since the model's data (``shift`` in [0, 1] as in
:class:`sim.scenario.Drift`), else with ``false_alarm_rate``. ``performance`` (the default):
predictions arrive as a Poisson process at the workload's mean rate;
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
from sim.engine.freshness import Timeline, shift_since, staleness_loss
from sim.engine.freshness import drift_loss as _drift_loss
from sim.scenario import Costs, Training
from sim.units import DAY_S

# The monitor cuts its window into bins this many times shorter than min(check_every, window).
BINS_PER_CHECK = 10
MAX_BINS = 2000
# Label-delay CDF from this many quantiles of the distribution (works for every kind).
CDF_POINTS = 2000
# Users are split between champion and candidate by this hash of their entity slot: the
# fractional part of slot x (golden ratio - 1) + 0.5, spread evenly over [0, 1).
GOLDEN = 0.6180339887498949
# One multiplier per use of the user hash (a test's arms, the network's regions, an edge
# device's sync phase): frac(n a) and frac(n b) for rationally independent a, b are
# independent in the limit, so the users in a test's arm are not all in one region.
BUCKET_MULTIPLIERS = {"test": GOLDEN, "region": 2 ** 0.5 - 1, "sync": 3 ** 0.5 - 1}


def user_bucket(slot, use: str = "test") -> np.ndarray:
    """Each entity's place in [0, 1) for splitting traffic by user; the same user always falls
    in the same place, so a share ``s`` of users is those with bucket < ``s``. ``use`` picks
    the multiplier (:data:`BUCKET_MULTIPLIERS`)."""
    return np.mod(np.asarray(slot, dtype=float) * BUCKET_MULTIPLIERS[use] + 0.5, 1.0)


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
    cutoff_s: float = 0.0
    quality_loss: float = 0.0
    bad: bool = False


@dataclass(frozen=True)
class Test:
    """One evaluation of a candidate model: when it ran, what it decided, and the share of
    traffic (by user) the candidate served from each of ``steps`` (time, share) on."""

    method: str
    start_s: float
    end_s: float
    cutoff_s: float
    deployed: bool
    steps: tuple[tuple[float, float], ...] = ()
    extra_predictions: float = 0.0


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
    tests: list[Test] = field(init=False, default_factory=list)
    superseded: list[float] = field(init=False, default_factory=list)

    def __post_init__(self):
        self.deploys = Timeline("model" if self.name is None else f"model/{self.name}")
        self._busy = 0     # runs started and not yet deployed (the trigger waits for none)
        self._running = 0  # runs still training (a continual tick skips while one is)
        self._last_cutoff_s: float | None = None
        self._last_start_s = -math.inf
        self._last_trigger_s = -math.inf
        self._stateful_updates = 0
        self._testing = False      # a test is running
        self._waiting = None       # (event, run) of the candidate waiting for the test
        # Training loss of each model by its data cut-off (runs start in order, so cut-offs
        # grow): looked up per request by the cut-off of the model that served it.
        self._loss_cutoffs: list[float] = []
        self._losses: list[float] = []
        self.loss_by_cutoff: dict[float, float] = {}
        self._loss_arrays: tuple[np.ndarray, np.ndarray] | None = None
        self._any_loss = False
        t = self.training
        self._initial_loss = 0.0
        if t is not None:
            if t.labels is not None:
                self._initial_loss += t.labels.loss
            if t.stateful is not None and t.training_mode == "stateful":
                self._initial_loss -= t.stateful.lift

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

    @property
    def wait_s(self) -> float:
        """From a run's start back to its data cut-off (the label window)."""
        return 0.0 if self.training is None else self.training.wait_s

    def test_plan(self) -> tuple[float, float]:
        """(test duration in seconds, share of traffic on the candidate) of this training's
        evaluation at the workload's mean rate (see the module docstring); canary: the share of
        its first step."""
        e = self.training.evaluation
        rate = self.scenario.workload.arrivals.rate
        share = e.traffic_share
        if e.method == "offline":
            return float(e.duration), 0.0
        if e.method == "shadow":
            return e.predictions / (share * rate), 0.0
        if e.method == "canary":
            return len(e.steps) * e.step_duration, e.steps[0]
        p = self.scenario.quality.fresh
        if e.method == "bandit":
            from sim.studies.testplan import thompson
            outcome = thompson(p, p * (1 + e.min_effect), confidence=e.confidence)
            return outcome.samples / (share * rate), share * outcome.challenger_share
        from sim.studies.abtest import sample_size_per_arm
        n = sample_size_per_arm(p, p * (1 + e.min_effect), e.alpha, e.power)
        days = 2 * n / (share * rate)
        if e.method == "interleaving":
            days /= e.speedup
        return days, share / 2

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
        test_s = self.test_plan()[0] if t.evaluation is not None else 0.0
        if t.policy == "trigger":
            g = t.trigger
            delay_p99 = float(t.label_delay.ppf(np.array(0.99)))
            return 2 * ((g.window or 0.0) + g.check_every + delay_p99) + g.min_interval + \
                self._longest_s() + t.deploy_delay + 2 * test_s + t.wait_s
        # a test longer than the cadence deploys one candidate per test: twice that covers it
        return 2 * max(t.every, test_s) + self._longest_s() + t.deploy_delay + test_s

    # -- the processes ----------------------------------------------------------------------------
    def start(self, env: simpy.Environment, since_s: float) -> None:
        t = self.training
        if t is None:
            self.deploys.append(env.now, 0.0, version=0)
            return
        self._bad_rng = self.streams.fresh(f"training_runs/{self.name}" if self.name
                                           else "training_runs") \
            if self.streams is not None and t.bad_models is not None else None
        if t.policy in ("schedule", "continual"):
            # the model the schedule had produced before the lead: in service until a run
            # deploys (and still, should tests stop every run of the lead)
            self._last_cutoff_s = first_run_at(t.every, t.start_at, since_s) - t.every - t.wait_s
            self.deploys.append(env.now, self._last_cutoff_s, version=0)
            self._remember_loss(self._last_cutoff_s, self._initial_loss)
            env.process(periodic(env, t.every, t.start_at, since_s, self._scheduled)
                        if t.policy == "schedule" else self._continual(env, since_s))
        else:
            # The first model's cut-off is this policy's own lead before time 0, whatever the
            # other architectures need, so that an architecture's numbers do not depend on them.
            own_s = max(since_s, -self.lead_s)
            self.deploys.append(env.now, own_s - t.wait_s, version=0)
            self._remember_loss(own_s - t.wait_s, self._initial_loss)
            self._last_cutoff_s = own_s - t.wait_s
            since_s = own_s
            self._rng = self.streams[f"training_monitor/{self.name}" if self.name
                                     else "training_monitor"] if self.streams else None
            self._label_quantiles = np.sort(t.label_delay.ppf(
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
        cutoff = start_s - t.wait_s
        if mode == "stateless":
            span = t.data_window if t.data_window is not None else 0.0
        else:
            span = max(0.0, cutoff - self._last_cutoff_s)
        examples = span * self.examples_per_s if (t.throughput is not None or
                                                  t.examples_per_day is not None or
                                                  self.scenario is not None) else 0.0
        duration = self.duration_s(examples)
        loss, bad = self._training_loss(mode)
        run = TrainingRun(start_s, duration, t.nodes, period_s, mode=mode, examples=examples,
                          cost_usd=self.run_cost_usd(duration), reason=reason, cutoff_s=cutoff,
                          quality_loss=loss, bad=bad)
        self.runs.append(run)
        self._remember_loss(cutoff, loss)
        self._last_cutoff_s = cutoff
        self._last_start_s = start_s
        self._busy += 1
        self._running += 1
        try:
            yield env.timeout(duration)
            self._running -= 1
            if t.evaluation is not None:
                passed = yield from self._test(env, run)
                if not passed:
                    return
            yield env.timeout(t.deploy_delay)
        finally:
            self._busy -= 1
        self.deploys.append(env.now, cutoff, version=len(self.deploys))

    def _training_loss(self, mode: str) -> tuple[float, bool]:
        """(training loss, whether the model is bad) of a run in ``mode`` starting now."""
        t = self.training
        loss = t.labels.loss if t.labels is not None else 0.0
        if mode == "stateless":
            self._stateful_updates = 0
        else:
            self._stateful_updates += 1
            if t.stateful is not None:
                loss += t.stateful.forgetting * self._stateful_updates - t.stateful.lift
        bad = self._bad_rng is not None and \
            bool(self._bad_rng.random() < t.bad_models.share)
        if bad:
            loss += t.bad_models.loss
        return loss, bad

    def _remember_loss(self, cutoff_s: float, loss: float) -> None:
        self._loss_cutoffs.append(cutoff_s)
        self._losses.append(loss)
        self.loss_by_cutoff[cutoff_s] = loss
        self._loss_arrays = None
        self._any_loss = self._any_loss or loss != 0

    def training_loss(self, model_cutoff_s) -> np.ndarray | None:
        """Each request's model's training loss, looked up by the model's data cut-off (0 for
        none: NaN); None when no model has one (nothing to add)."""
        if not self._any_loss:
            return None
        if self._loss_arrays is None:
            self._loss_arrays = (np.asarray(self._loss_cutoffs), np.asarray(self._losses))
        keys, values = self._loss_arrays
        c = np.asarray(model_cutoff_s, dtype=float)
        i = np.clip(np.searchsorted(keys, c), 0, keys.size - 1)
        return np.where(keys[i] == c, values[i], 0.0)

    # -- evaluation ---------------------------------------------------------------------------------
    def _test(self, env: simpy.Environment, run: TrainingRun):
        """Wait for the test bench, test ``run``'s model and say whether it passed (False too
        when a newer candidate replaced it while it waited)."""
        if self._testing:
            if self._waiting is not None:
                self.superseded.append(env.now)
                self._waiting[0].succeed(False)
            turn = env.event()
            self._waiting = (turn, run)
            if not (yield turn):
                return False
        self._testing = True
        try:
            e = self.training.evaluation
            duration, share = self.test_plan()
            rate = self.scenario.workload.arrivals.rate
            if e.method == "canary":
                steps = tuple((env.now + k * e.step_duration, s) for k, s in enumerate(e.steps))
                if run.bad:
                    duration, steps = e.step_duration, steps[:1]
            else:
                steps = ((env.now, share),) if share > 0 else ()
            extra = 0.0
            if e.method == "shadow":
                extra = float(e.predictions)
            elif e.method == "interleaving":
                extra = e.traffic_share * rate * duration
            self.tests.append(Test(e.method, env.now, env.now + duration, run.cutoff_s,
                                   not run.bad, steps, extra))
            yield env.timeout(duration)
        finally:
            if self._waiting is not None:   # the bench passes to the waiting candidate
                turn, self._waiting = self._waiting[0], None
                turn.succeed(True)
            else:
                self._testing = False
        return not run.bad

    def assign(self, at_s, slot, model_cutoff_s):
        """The data cut-off of the model that served each request: the candidate's for users in
        a test's share (by :func:`user_bucket`) while it ran at ``at_s`` (the request time, or
        a batch job's cut-off), else ``model_cutoff_s`` as given."""
        if not self.tests:
            return model_cutoff_s
        at_s = np.asarray(at_s, dtype=float)
        known = at_s[~np.isnan(at_s)]
        if not known.size:
            return model_cutoff_s
        lo, hi = float(known.min()), float(known.max())
        exposed = [x for x in self.tests if x.steps and x.start_s <= hi and x.end_s > lo]
        if not exposed:
            return model_cutoff_s
        out = np.array(model_cutoff_s, dtype=float, copy=True)
        bucket = None
        for test in exposed:
            during = (at_s >= test.start_s) & (at_s < test.end_s)
            if not during.any():
                continue
            if bucket is None:
                bucket = user_bucket(slot)
            share = np.zeros(at_s.shape)
            for begin, s in test.steps:
                share[at_s >= begin] = s
            out[during & (bucket < share)] = test.cutoff_s
        return out

    # -- the trigger monitor ----------------------------------------------------------------------
    def _monitor(self, env: simpy.Environment, since_s: float):
        g = self.training.trigger
        at = first_run_at(g.check_every, 0.0, since_s)
        if at <= since_s:  # not at the first model's own start: its run would share its cut-off
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
        trained = self.training_loss(np.array([current["cutoff_s"]]))
        if trained is not None:
            q = np.maximum(q - trained[0], 0.0)
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
        if g.kind == "performance":
            n, measured = self.observe(now)
            level = g.below if g.below is not None else (1 - g.drop) * \
                self.scenario.quality.fresh
            fired = n >= g.min_labels and measured < level
        elif g.kind == "volume":
            n = self.new_labels(now)
            measured = math.nan
            fired = n >= (g.new_labels if g.new_labels is not None else
                          g.data_growth * t.data_window * self.examples_per_s *
                          g.labelled_share)
        else:
            n, measured = 0.0, self.shifted(now)
            chance = g.false_alarm_rate + (1 - g.false_alarm_rate) * g.detection * measured
            fired = bool(self._rng.random() < chance) if self._rng is not None else \
                chance >= 0.5
        self.checks.append(Check(now, n, measured, fired))
        if fired:
            self._last_trigger_s = now
            env.process(self._train(env, now, 0.0, "trigger"))

    def new_labels(self, t_s: float) -> float:
        """volume: labelled examples that matured (data time up to ``t_s - wait``) since the
        last run's data cut-off."""
        g = self.training.trigger
        span = max(0.0, t_s - self.training.wait_s - self._last_cutoff_s)
        return span * self.examples_per_s * g.labelled_share

    def shifted(self, t_s: float) -> float:
        """distribution: how much the inputs shifted since the deployed model's data, in [0, 1]
        (the largest shift of any drift)."""
        current = self.deploys.rows[self.deploys.current]
        shifts = [float(shift_since(d, np.array(current["cutoff_s"]), np.array(t_s)))
                  for d in self.scenario.drift]
        return max(shifts, default=0.0)

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


    def test_cost_usd_per_day(self, start_s: float, end_s: float,
                              per_prediction_usd: float) -> float:
        """Cost of testing candidates per day over a window: each test's fixed
        ``evaluation.cost`` and its extra inference (shadow's predictions, interleaving's test
        traffic scored by both models) at ``per_prediction_usd``, spread over the test's run."""
        e = None if self.training is None else self.training.evaluation
        if e is None:
            return 0.0
        total = 0.0
        for test in self.tests:
            usd = e.cost + test.extra_predictions * per_prediction_usd
            length = test.end_s - test.start_s
            if length > 0:
                overlap = min(test.end_s, end_s) - max(test.start_s, start_s)
                if overlap > 0:
                    total += usd * overlap / length
            elif start_s <= test.start_s < end_s:
                total += usd
        return total / ((end_s - start_s) / DAY_S)

    def deploys_per_day(self, start_s: float, end_s: float) -> float:
        """New models that started serving in ``[start_s, end_s)``, per day."""
        deploys = sum(1 for row in self.deploys.rows if start_s <= row["visible_at_s"] < end_s)
        return deploys / ((end_s - start_s) / DAY_S)

    def test_stats(self, start_s: float, end_s: float) -> dict[str, float]:
        """Tests that ended in the window: how many, how long they took on average (hours),
        the share that stopped a candidate, and deploys per day."""
        ended = [x for x in self.tests if start_s <= x.end_s < end_s]
        days = (end_s - start_s) / DAY_S
        return {"deploys_per_day": self.deploys_per_day(start_s, end_s),
                "tests_per_day": len(ended) / days,
                "test_hours_mean": (float(np.mean([(x.end_s - x.start_s) / 3600 for x in ended]))
                                    if ended else math.nan),
                "tests_stopped_share": (float(np.mean([not x.deployed for x in ended]))
                                        if ended else math.nan),
                "candidates_superseded_per_day": sum(
                    1 for x in self.superseded if start_s <= x < end_s) / days}


def lifecycles(scenario, streams) -> tuple[ModelLifecycle, dict[str, ModelLifecycle]]:
    """The shared model lifecycle and, per architecture, the one it uses: its own when it has a
    ``training`` section, else the shared one."""
    shared = ModelLifecycle(scenario.training, scenario, streams)
    per_arch = {}
    for name, spec in scenario.architectures.items():
        own = getattr(spec, "training", None)
        per_arch[name] = shared if own is None else ModelLifecycle(own, scenario, streams, name)
    return shared, per_arch
