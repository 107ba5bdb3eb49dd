"""Ways to test a new model in production, side by side: how long each takes to decide, what it
costs in extra inference, and what it loses while it runs.

The champion is the model serving today (its rate of the metric ``p1``, e.g. CTR); the
challenger is the new one (``p2``). Every request is a Bernoulli trial of the metric. Five
methods (C. Huyen, *Designing Machine Learning Systems*, O'Reilly 2022, ch. 9):

- ``ab``: an A/B test. ``share`` of the traffic is split evenly between the two models until
  the sample of a two-sided two-proportion z-test (:mod:`sim.studies.abtest`) is reached:
  ``days = 2 n / (share x daily traffic)``, ``n`` the sample per arm (times the design effect
  when the test splits users).
- ``shadow``: the challenger scores ``share`` of the traffic beside the champion and nobody
  sees its predictions, until ``shadow_predictions``: ``days = predictions / (share x daily)``.
  It decides on agreement with the champion and on offline metrics, never on outcomes, and it
  doubles inference on its share: extra cost = predictions x cost per prediction (Huyen ch. 9).
- ``canary``: a ramp of traffic shares on the challenger (``canary_steps``, e.g. 1%, 5%, 25%,
  50%), each held ``canary_step_days``: ``days = len(steps) x step``. It guards against a
  broken model; whether its outcomes could also *measure* the difference is computed: its
  requests on the challenger ``n_c = sum(steps) x step x daily`` against the champion's
  ``n_0 = sum(1 - steps) x step x daily`` give ``se = sqrt(p1 (1 - p1) / n_0 + p2 (1 - p2) /
  n_c)``, a power ``Phi(|Δ| / se - z_{1-α/2})`` for the difference and a smallest detectable
  difference ``(z_{1-α/2} + z_power) x se`` (with ``p1`` in both arms).
- ``interleaving``: for rankers: both models rank every request of the test share and the
  user sees one merged list, so the same decision needs ``interleaving_speedup`` times fewer
  requests than the A/B test (Netflix, "Innovating Faster on Personalization Algorithms at
  Netflix Using Interleaving", Netflix Technology Blog 2017, reported over 100x fewer users
  for its rankers; 10 is a cautious default): ``requests = ceil(2 n / speedup)``,
  ``days = requests / (share x daily)``. Both models score those requests: extra cost =
  requests x cost per prediction.
- ``bandit``: Thompson sampling between the two models on the test share (:func:`thompson`),
  until the posterior says one is best with ``bandit_confidence``: ``days = samples / (share x
  daily)``. It sends more traffic to the better model as it learns.

Definitions, used the same way for every method:

- ``Δ = p2 - p1``, of either sign. The effect the A/B, interleaving and bandit tests are sized
  for is ``Δ`` itself unless ``min_effect`` (relative) is given: then ``p1 x (1 + min_effect)``
  (``1 - min_effect`` when ``Δ < 0``) stands in for ``p2`` when sizing the test.
- *exposure*: the share of all traffic served by the challenger, on average over the test: A/B
  and interleaving ``share / 2`` (interleaving shows the challenger's items in half the slots of
  the test's lists), shadow 0, canary ``mean(steps)``, bandit ``share x`` the bandit's
  challenger share.
- *outcomes lost while testing*: against an oracle that serves the better model to all traffic
  from the start, ``daily x days x |Δ| x`` (the share of all traffic on the worse model during
  the test): ``1 - exposure`` when the challenger is better (``Δ > 0``: everyone waits for it,
  so a long test is costly however little traffic it takes), ``exposure`` when it is worse
  (``Δ < 0``: the harm of showing it). For the bandit with ``Δ > 0`` this is its regret on the
  test share (:attr:`BanditOutcome.regret`) plus ``(1 - share) x daily x days x Δ`` for the
  rest of the traffic, which stays on the champion. 0 when ``Δ = 0``.
- *value lost while testing* = outcomes lost x ``value_per_outcome`` (US$).
- *extra cost* = the extra inference: the predictions the challenger makes beside the champion
  on the same requests (shadow, interleaving) x ``cost_per_prediction``; 0 for A/B, canary and
  bandit, which serve each request with one model.

Pure functions (numpy and SciPy); :func:`compare_from_results` reads the rates, traffic and
prices from a simulation's results without importing the engine.
"""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import asdict, dataclass

import numpy as np
from scipy import special, stats

from sim.studies.abtest import PlanError, arm_rates, check_unit, plan
from sim.units import DAY_S, count_short, human_duration, usd_short

METHODS = ("ab", "shadow", "canary", "interleaving", "bandit")
LABELS = {"ab": "A/B test", "shadow": "shadow", "canary": "canary",
          "interleaving": "interleaving", "bandit": "bandit"}
BATCH_GROWTH = 0.02       # each bandit batch: 2% of the samples so far (at least 1)
CANARY_STEPS = (0.01, 0.05, 0.25, 0.5)
SOURCES = ("C. Huyen, Designing Machine Learning Systems, O'Reilly 2022, ch. 9 (shadow, canary, "
           "A/B, interleaving, bandits); Netflix Technology Blog 2017, \"Innovating Faster on "
           "Personalization Algorithms at Netflix Using Interleaving\" (interleaving); Agrawal & "
           "Goyal 2012 and Kaufmann, Korda & Munos 2012 (Thompson sampling)")


# --------------------------------------------------------------------------------------------
# The bandit
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BanditOutcome:
    """Thompson sampling between champion (``p_champion``) and challenger, over ``runs`` runs.

    ``samples``: mean requests over both arms until the decision (a run that never decides
    counts at ``max_samples``); ``challenger_share``: the share of all those requests served by
    the challenger (total over runs / total samples); ``regret``: mean outcomes lost against
    always serving the better arm, ``|Δ| x`` the mean requests on the worse arm (0 when the
    arms are equal); ``picks_challenger``: share of runs that decided for the challenger;
    ``decided``: share of runs that decided before ``max_samples``.
    """

    p_champion: float
    p_challenger: float
    confidence: float
    max_samples: float
    samples: float
    challenger_share: float
    regret: float
    picks_challenger: float
    decided: float
    runs: int
    seed: int = 0

    @property
    def worse_pulls(self) -> float:
        """Mean requests served by the worse arm (0 when the arms are equal)."""
        if self.p_challenger == self.p_champion:
            return 0.0
        worse = (self.challenger_share if self.p_challenger < self.p_champion
                 else 1.0 - self.challenger_share)
        return self.samples * worse

    @property
    def picks_better(self) -> float | None:
        """Share of runs that decided for the better arm (None when the arms are equal)."""
        if self.p_challenger == self.p_champion:
            return None
        if self.p_challenger > self.p_champion:
            return self.picks_challenger
        return self.decided - self.picks_challenger

    def to_dict(self) -> dict:
        out = asdict(self)
        out.update(worse_pulls=self.worse_pulls, picks_better=self.picks_better)
        return out


def thompson(p_champion: float, p_challenger: float, *, confidence: float = 0.95,
             max_samples: float = 1e8, runs: int = 200, seed: int = 0) -> BanditOutcome:
    """Thompson sampling between two Bernoulli arms (champion ``p_champion``, challenger
    ``p_challenger``) from Beta(1, 1) priors, ``runs`` independent runs at once.

    Each run updates its posteriors ``Beta(1 + successes, 1 + failures)`` in batches that grow
    geometrically (each batch is 2% of the samples so far, at least one: a run of 10^8 samples
    takes under a thousand numpy steps; all runs move in step). A batch of ``b`` requests goes
    to the challenger ``Binomial(b, q)`` times, ``q = P(challenger is best | posterior)``: what
    Thompson sampling does in expectation, request by request, with the posterior of the
    batch's start. A run stops when ``P(one arm is best) >= confidence``, or at
    ``max_samples``; ``confidence=1`` never stops early (a fixed horizon of ``max_samples``).

    ``P(challenger is best)`` is a normal approximation of the difference of the two posteriors
    *on the logit scale*: ``logit θ`` of ``θ ~ Beta(a, b)`` has mean ``ψ(a) − ψ(b)`` and
    variance ``ψ'(a) + ψ'(b)`` exactly (ψ the digamma function), so ::

        q = Φ((ψ(a2) − ψ(b2) − ψ(a1) + ψ(b1)) / sqrt(ψ'(a1) + ψ'(b1) + ψ'(a2) + ψ'(b2)))

    Unlike the plain normal approximation of ``θ2 − θ1``, it keeps the right tail of an arm with
    few successes, so a run that starts badly for the better arm keeps exploring it.

    The decision rule is the posterior's, checked after every batch; it makes no promise on
    error rates: with a small difference a run often stops early on noise and picks the worse
    arm (``picks_challenger`` says how often), and with equal arms most runs still end up
    deciding for one of them. Deterministic for a seed (PCG64); cached on the inputs (rates
    rounded to 9 significant digits). Raises :class:`~sim.studies.abtest.PlanError`.
    """
    for name, p in (("p_champion", p_champion), ("p_challenger", p_challenger)):
        if not (isinstance(p, numbers.Real) and 0 < p < 1):
            raise PlanError(f"{name.replace('_', ' ')} must be a rate strictly between 0 and 1 "
                            f"(got {p!r})", name)
    if not (isinstance(confidence, numbers.Real) and 0.5 < confidence <= 1):
        raise PlanError(f"the bandit's confidence must be above 0.5 and at most 1 (got "
                        f"{confidence!r})", "bandit_confidence")
    if not (isinstance(max_samples, numbers.Real) and 1 <= max_samples <= 1e12):
        raise PlanError(f"max_samples must be between 1 and 10^12 (got {max_samples!r})",
                        "max_samples")
    if not (isinstance(runs, numbers.Integral) and 1 <= runs <= 100_000):
        raise PlanError(f"runs must be a whole number from 1 to 100,000 (got {runs!r})", "runs")
    if not (isinstance(seed, numbers.Integral) and seed >= 0):
        raise PlanError(f"seed must be a whole number >= 0 (got {seed!r})", "seed")
    p_champion, p_challenger = float(p_champion), float(p_challenger)
    p1, p2 = _rounded(p_champion), _rounded(p_challenger)
    samples, challenger, worse, picks, decided = _thompson_runs(
        p1, p2, float(confidence), int(max_samples), int(runs), int(seed))
    gap = abs(p_challenger - p_champion) if p1 != p2 else 0.0
    return BanditOutcome(p_champion, p_challenger, float(confidence), float(int(max_samples)),
                         samples, challenger / samples, gap * worse, picks, decided, int(runs),
                         int(seed))


def _rounded(p: float) -> float:
    return float(f"{p:.9g}")


@functools.lru_cache(maxsize=256)
def _thompson_runs(p1: float, p2: float, confidence: float, cap: int, runs: int,
                   seed: int) -> tuple[float, float, float, float, float]:
    """Mean samples, mean challenger pulls, mean worse-arm pulls, share of runs picking the
    challenger and share deciding (see :func:`thompson`)."""
    rng = np.random.Generator(np.random.PCG64(seed))
    z_stop = math.inf if confidence >= 1 else float(special.ndtri(confidence))
    live = np.arange(runs)
    n1 = np.zeros(runs, np.int64)      # pulls and successes of the champion (1), challenger (2)
    n2 = np.zeros(runs, np.int64)
    s1 = np.zeros(runs, np.int64)
    s2 = np.zeros(runs, np.int64)
    q = np.full(runs, 0.5)             # P(challenger is best) under the Beta(1, 1) priors
    samples = np.full(runs, cap, np.int64)
    pulls1 = np.zeros(runs, np.int64)
    pulls2 = np.zeros(runs, np.int64)
    pick = np.zeros(runs, np.int8)     # +1 challenger, -1 champion, 0 undecided
    t = 0                              # samples so far: the same in every live run
    while live.size and t < cap:
        b = min(max(1, int(t * BATCH_GROWTH)), cap - t)
        c = rng.binomial(b, q)
        s2 += rng.binomial(c, p2)
        s1 += rng.binomial(b - c, p1)
        n2 += c
        n1 += b - c
        t += b
        z = _logit_z(s1, n1, s2, n2)
        done = np.abs(z) >= z_stop
        if done.any():
            ended = live[done]
            samples[ended] = t
            pulls1[ended], pulls2[ended] = n1[done], n2[done]
            pick[ended] = np.where(z[done] > 0, 1, -1)
            keep = ~done
            live, n1, n2, s1, s2, z = live[keep], n1[keep], n2[keep], s1[keep], s2[keep], z[keep]
        q = special.ndtr(z)
    pulls1[live], pulls2[live] = n1, n2
    worse = pulls1 if p2 > p1 else pulls2 if p2 < p1 else np.zeros(runs)
    return (float(samples.mean()), float(pulls2.mean()), float(worse.mean()),
            float(np.mean(pick == 1)), float(np.mean(pick != 0)))


def _logit_z(s1, n1, s2, n2) -> np.ndarray:
    """``(E logit θ2 − E logit θ1) / sd`` for the Beta(1 + s, 1 + n − s) posteriors."""
    a1, b1 = s1 + 1.0, n1 - s1 + 1.0
    a2, b2 = s2 + 1.0, n2 - s2 + 1.0
    mean = special.digamma(a2) - special.digamma(b2) - special.digamma(a1) + special.digamma(b1)
    var = (special.polygamma(1, a1) + special.polygamma(1, b1) + special.polygamma(1, a2)
           + special.polygamma(1, b2))
    return mean / np.sqrt(var)


def kl_bernoulli(p: float, q: float) -> float:
    """Kullback–Leibler divergence KL(Bernoulli(p) || Bernoulli(q)), for the Lai–Robbins bound
    ``log(n) / KL(p_worse, p_better)`` on the worse arm's pulls."""
    return p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))


# --------------------------------------------------------------------------------------------
# The comparison
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MethodRow:
    """One way of testing: days to a decision at this traffic, the requests it takes, its
    extra cost (US$), the outcomes and value (US$) lost while it runs, the challenger's average
    share of all traffic (``exposure``), and a one-line note.

    ``requests``: A/B and interleaving, the test's sample (both models together); shadow, the
    challenger's predictions; canary, its requests on the challenger; bandit, the mean samples
    to a decision."""

    method: str
    days: float                 # math.inf: it never decides (no difference to detect)
    requests: float
    extra_cost_usd: float
    outcomes_lost: float
    value_lost_usd: float
    exposure: float
    note: str

    @property
    def label(self) -> str:
        return LABELS[self.method]

    def to_dict(self) -> dict:
        out = {key: _finite(value) for key, value in asdict(self).items()}
        out["label"] = self.label
        return out


@dataclass(frozen=True)
class MethodComparison:
    """The five methods (:data:`METHODS`, in that order) for one champion and challenger."""

    p_champion: float
    p_challenger: float
    daily_traffic: float
    share: float
    alpha: float
    power: float
    min_effect: float | None
    cost_per_prediction: float
    value_per_outcome: float
    rows: list[MethodRow]
    bandit: BanditOutcome
    canary_power: float | None       # power of the canary's outcomes for Δ (None: Δ = 0)
    canary_detectable: float         # smallest relative difference the canary could detect
    metric: str = "rate"
    source: str | None = None

    @property
    def difference(self) -> float:
        """Δ = p_challenger − p_champion."""
        return self.p_challenger - self.p_champion

    @property
    def relative_difference(self) -> float:
        return self.difference / self.p_champion

    def row(self, method: str) -> MethodRow:
        return next(r for r in self.rows if r.method == method)

    def lines(self) -> list[str]:
        """The comparison in plain sentences (the table is :func:`rich_table`)."""
        d = self.difference
        if d > 0:
            which = "the challenger is better"
        elif d < 0:
            which = "the challenger is worse"
        else:
            which = "the two models are equally good"
        sized = ("" if self.min_effect is None else
                 f" The A/B, interleaving and bandit tests are sized for a difference of "
                 f"{self.min_effect:.3g} relative (min_effect), not the actual one.")
        out = [f"Testing the challenger ({self.metric} {self.p_challenger:.4g}) against the "
               f"champion ({self.p_champion:.4g})"
               + (f", from {self.source}" if self.source else "") + f": {which} (difference "
               f"{d:+.3g}, {self.relative_difference * 100:+.3g}% relative). "
               f"{count_short(self.daily_traffic)} requests a day; the A/B, shadow, "
               f"interleaving and bandit tests take {percent(self.share)} of them.{sized}"]
        for r in self.rows:
            out.append(f"{r.label}: {days_text(r.days)}. {r.note}")
        if d > 0:
            lost = ("Value lost while testing: the outcomes every request on the champion "
                    "misses while the test runs (the challenger is better, so everyone waits "
                    "for it: the longer the test, the more it loses)")
        elif d < 0:
            lost = ("Value lost while testing: the outcomes lost on the requests the "
                    "challenger serves (it is worse: the more it is shown, the more it loses)")
        else:
            lost = "Value lost while testing: none, the two models being equally good"
        price = (f", at {usd_short(self.value_per_outcome)} an outcome" if self.value_per_outcome
                 else "; give a value per outcome to see it in US$")
        out.append(f"{lost}{price}. Extra cost: the challenger's predictions beside the "
                   f"champion's (shadow, interleaving), at "
                   f"{_price(self.cost_per_prediction)} a prediction. The times are the "
                   f"traffic each decision needs; in practice an A/B, interleaving or bandit "
                   f"test runs whole weeks, so that every day of the week is in it.")
        return out

    def to_dict(self) -> dict:
        return {
            "p_champion": self.p_champion, "p_challenger": self.p_challenger,
            "difference": self.difference, "relative_difference": self.relative_difference,
            "metric": self.metric, "source": self.source,
            "daily_traffic": self.daily_traffic, "share": self.share, "alpha": self.alpha,
            "power": self.power, "min_effect": self.min_effect,
            "cost_per_prediction": self.cost_per_prediction,
            "value_per_outcome": self.value_per_outcome,
            "rows": [r.to_dict() for r in self.rows],
            "bandit": {k: _finite(v) for k, v in self.bandit.to_dict().items()},
            "canary_power": self.canary_power,
            "canary_detectable": _finite(self.canary_detectable),
        }


def compare_methods(p_champion: float, p_challenger: float, daily_traffic: float, *,
                    share: float = 0.1, alpha: float = 0.05, power: float = 0.8,
                    two_sided: bool = True, min_effect: float | None = None,
                    shadow_predictions: float = 100_000,
                    canary_steps: tuple[float, ...] = CANARY_STEPS,
                    canary_step_days: float = 1 / 24, interleaving_speedup: float = 10.0,
                    bandit_confidence: float = 0.95, cost_per_prediction: float = 0.0,
                    value_per_outcome: float = 0.0, unit: str = "request",
                    icc: float | None = None, requests_per_user: float | None = None,
                    cv: float | None = None, metric: str = "rate", source: str | None = None,
                    bandit_runs: int = 200, seed: int = 0) -> MethodComparison:
    """Compare A/B, shadow, canary, interleaving and bandit tests of ``p_challenger`` against
    ``p_champion`` at ``daily_traffic`` requests a day (definitions: the module docstring).

    ``unit``, ``icc``, ``requests_per_user`` and ``cv`` size the A/B sample as
    :func:`sim.studies.abtest.plan` does (interleaving divides that sample). Raises
    :class:`~sim.studies.abtest.PlanError` naming the parameter.
    """
    _check_inputs(p_champion, p_challenger, daily_traffic, share, min_effect, shadow_predictions,
                  canary_steps, canary_step_days, interleaving_speedup, cost_per_prediction,
                  value_per_outcome)
    check_unit(unit, icc, requests_per_user, cv)
    steps = tuple(float(s) for s in canary_steps)
    delta = p_challenger - p_champion
    gap = abs(delta)
    test_share = share * daily_traffic           # requests a day in a test that takes `share`
    if min_effect is None:
        p_test = p_challenger
    else:
        p_test = p_champion * (1 + (min_effect if delta >= 0 else -min_effect))
        if not 0 < p_test < 1:
            raise PlanError(f"the champion's rate {p_champion:g} changed by {min_effect:g} "
                            f"(relative) gives {p_test:g}, outside (0, 1)", "min_effect")

    def lost(days: float, exposure: float) -> float:
        if gap == 0:
            return 0.0
        worse_share = 1.0 - exposure if delta > 0 else exposure
        return daily_traffic * days * gap * worse_share

    def row(method, days, requests, extra, exposure, note):
        outcomes = lost(days, exposure)
        return MethodRow(method, days, requests, extra, outcomes, outcomes * value_per_outcome,
                         exposure, note)

    rows = []
    # A/B and interleaving: the z-test's sample (with the design effect when splitting users).
    if p_test == p_champion:
        total = math.inf
    else:
        ab = plan(p_champion, p_test - p_champion, daily_traffic=daily_traffic, alpha=alpha,
                  power=power, two_sided=two_sided, traffic_share=share, unit=unit, icc=icc,
                  requests_per_user=requests_per_user, cv=cv)
        total = float(ab.total)
    never = ("The two models are equally good: there is no difference to detect and the test "
             "never ends (give min_effect to size it for the smallest difference worth "
             "finding).")
    sided = "two-sided" if two_sided else "one-sided"
    rows.append(row("ab", total / test_share, total, 0.0, share / 2,
                    never if math.isinf(total) else
                    f"{count_short(total / 2)} requests per model ({sided} z-test, "
                    f"significance {alpha:g}, power {power:g}); half the test's traffic goes "
                    f"to the challenger, and it measures the outcomes themselves."))
    # Shadow: predictions only.
    shadow_days = shadow_predictions / test_share
    rows.append(row("shadow", shadow_days, shadow_predictions,
                    shadow_predictions * cost_per_prediction, 0.0,
                    f"Decides on the agreement of {count_short(shadow_predictions)} predictions "
                    f"with the champion's and on offline metrics, not on outcomes; no user sees "
                    f"the challenger, and inference doubles on its share."))
    # Canary: the ramp, and whether its outcomes could measure the difference.
    canary_days = len(steps) * canary_step_days
    on_challenger = sum(steps) * canary_step_days * daily_traffic
    on_champion = sum(1 - s for s in steps) * canary_step_days * daily_traffic
    z_a = _z(1 - alpha / 2) if two_sided else _z(1 - alpha)
    if on_champion <= 0:        # every step at 100%: no champion traffic to compare with
        se0 = se = math.inf
    else:
        se0 = math.sqrt(p_champion * (1 - p_champion) * (1 / on_champion + 1 / on_challenger))
        se = math.sqrt(p_champion * (1 - p_champion) / on_champion
                       + p_challenger * (1 - p_challenger) / on_challenger)
    detectable = (z_a + _z(power)) * se0 / p_champion
    if gap == 0:
        canary_power = None
        measure = "there is no difference for its outcomes to measure"
    elif on_champion <= 0:
        canary_power = 0.0
        measure = ("with every step at 100% no traffic stays on the champion to compare its "
                   "outcomes with")
    else:
        canary_power = float(stats.norm.cdf(gap / se - z_a))
        rel = gap / p_champion
        if canary_power >= power:
            measure = (f"its {count_short(on_challenger)} requests on the challenger are "
                       f"enough to measure this difference too (power {canary_power:.0%})")
        else:
            measure = (f"too little traffic to measure this difference: its "
                       f"{count_short(on_challenger)} requests on the challenger detect a "
                       f"change of {percent(detectable)} or more (power {power:g}), this one is "
                       f"{percent(rel)} (power {canary_power:.0%})")
    ramp = ", ".join(percent(s) for s in steps)
    rows.append(row("canary", canary_days, on_challenger, 0.0, float(np.mean(steps)),
                    f"Ramps {ramp}, {human_duration(canary_step_days * DAY_S)} each: guards "
                    f"against a broken model (errors, latency, a collapse of the metric); "
                    f"{measure}."))
    # Interleaving: the A/B sample divided by the speedup.
    inter = math.ceil(total / interleaving_speedup - 1e-9) if math.isfinite(total) else math.inf
    rows.append(row("interleaving", inter / test_share, inter, inter * cost_per_prediction
                    if math.isfinite(inter) else math.inf, share / 2,
                    never if math.isinf(inter) else
                    f"For rankers only: both models rank each request of the test and the user "
                    f"sees one merged list; {interleaving_speedup:g}x fewer requests than the "
                    f"A/B test, both models scoring each."))
    # Bandit: Thompson sampling on the test share.
    bandit = thompson(p_champion, p_test, confidence=bandit_confidence, runs=bandit_runs,
                      seed=seed)
    bandit_days = bandit.samples / test_share
    exposure = share * bandit.challenger_share
    rows.append(row("bandit", bandit_days, bandit.samples, 0.0, exposure,
                    _bandit_note(bandit, bandit_confidence)))
    return MethodComparison(p_champion, p_challenger, float(daily_traffic), share, alpha, power,
                            min_effect, cost_per_prediction, value_per_outcome, rows, bandit,
                            canary_power, detectable, metric, source)


def _bandit_note(bandit: BanditOutcome, confidence: float) -> str:
    text = (f"Thompson sampling: sends more traffic to the better model as it learns "
            f"({bandit.challenger_share:.0%} of the test's requests went to the challenger), "
            f"and stops when one model is best with probability {confidence:g}")
    better = bandit.picks_better
    if better is None:
        return (text + f"; with no difference it still decided in {bandit.decided:.0%} of "
                       f"{bandit.runs} simulated runs, for either model at random.")
    text += f"; it picked the better model in {better:.0%} of {bandit.runs} simulated runs"
    if bandit.decided < 1:
        text += (f", and {1 - bandit.decided:.0%} had not decided after "
                 f"{count_short(bandit.max_samples)} requests (counted at that many)")
    return text + "."


def compare_from_results(results, treatment: str, baseline: str | None = None, *,
                         daily_traffic: float | None = None,
                         cost_per_prediction: float | None = None,
                         value_per_outcome: float | None = None, **options) -> MethodComparison:
    """:func:`compare_methods` for ``treatment`` (the challenger) against ``baseline`` (the
    champion) in a simulation's ``results`` (duck-typed: ``.scenario``, ``.summary``,
    ``.baseline``, as :func:`sim.studies.abtest.plan_from_results` reads them).

    The rates are the two architectures' mean quality; the daily traffic the scenario's mean
    arrival rate times a day; the cost per prediction the treatment's serving and batch-scoring
    cost per day over its requests per day; the value per outcome
    ``business.value_per_outcome``. Options left out (or None) come from the treatment's (else
    the scenario's) ``training.evaluation``, for the keys its method uses
    (:func:`evaluation_options`), else from :func:`compare_methods`'s defaults.
    """
    scenario = results.scenario
    metric = scenario.quality.metric
    baseline, p1, p2 = arm_rates(results, treatment, baseline)
    if daily_traffic is None:
        daily_traffic = scenario.workload.arrivals.rate * DAY_S
    if cost_per_prediction is None:
        cost_per_prediction = prediction_cost(results, treatment)
    if value_per_outcome is None:
        value_per_outcome = float(scenario.business.value_per_outcome)
    given = {k: v for k, v in options.items() if v is not None}
    merged = {**evaluation_options(find_evaluation(scenario, treatment)), **given}
    return compare_methods(p1, p2, daily_traffic, cost_per_prediction=cost_per_prediction,
                           value_per_outcome=value_per_outcome, metric=metric,
                           source=f"the simulation of {scenario.name} ({treatment} vs "
                                  f"{baseline})", **merged)


def prediction_cost(results, architecture: str) -> float:
    """US$ per prediction of ``architecture``: its serving and batch-scoring cost per day over
    its requests per day (0 without requests)."""
    row = results.summary.set_index("architecture").loc[architecture]
    per_day = sum(_zero_nan(row.get(f"cost_usd_per_day_{c}", 0.0))
                  for c in ("serving", "batch_scoring"))
    requests_per_day = _zero_nan(row.get("requests", 0.0)) / (results.scenario.horizon / DAY_S)
    return per_day / requests_per_day if requests_per_day > 0 else 0.0


def find_evaluation(scenario, architecture: str | None = None):
    """The ``training.evaluation`` in force for ``architecture``: its own training section's,
    else the scenario's; None without one."""
    arch = scenario.architectures.get(architecture) if architecture else None
    training = getattr(arch, "training", None) or getattr(scenario, "training", None)
    return getattr(training, "evaluation", None)


# The keys of training.evaluation each method uses (those the scenario schema accepts for it),
# and the compare_methods option each feeds.
_EVALUATION_OPTIONS = {"share": "share", "predictions": "shadow_predictions",
                       "steps": "canary_steps", "step_duration": "canary_step_days",
                       "min_effect": "min_effect", "alpha": "alpha", "power": "power",
                       "speedup": "interleaving_speedup", "confidence": "bandit_confidence"}
_METHOD_KEYS = {"offline": (), "shadow": ("share", "predictions"),
                "canary": ("steps", "step_duration"),
                "ab": ("share", "min_effect", "alpha", "power"),
                "interleaving": ("share", "min_effect", "alpha", "power", "speedup"),
                "bandit": ("share", "min_effect", "confidence")}


def evaluation_options(evaluation) -> dict:
    """:func:`compare_methods` options from a scenario's ``training.evaluation``: the keys its
    method uses (its defaults included, as the simulation uses them), durations in days."""
    if evaluation is None:
        return {}
    out = {}
    for key in _METHOD_KEYS.get(evaluation.method, ()):
        value = getattr(evaluation, key, None)
        if value is None:
            continue
        if key == "step_duration":
            value = float(value) / DAY_S
        elif key == "steps":
            value = tuple(float(s) for s in value)
        else:
            value = float(value)
        out[_EVALUATION_OPTIONS[key]] = value
    return out


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------

TABLE_HEADERS = ("method", "time to decide", "challenger's share of traffic",
                 "extra cost", "outcomes lost", "value lost")


def table_cells(comparison: MethodComparison) -> list[list[str]]:
    """The table's rows as text (shared by :func:`rich_table` and the manager report)."""
    out = []
    for r in comparison.rows:
        out.append([r.label, days_text(r.days), percent(r.exposure),
                    usd_short(r.extra_cost_usd) if math.isfinite(r.extra_cost_usd) else "-",
                    _outcomes(r.outcomes_lost),
                    usd_short(r.value_lost_usd) if math.isfinite(r.value_lost_usd) else "-"])
    return out


def rich_table(comparison: MethodComparison):
    """The comparison as a rich table: one row per method."""
    from rich.table import Table

    table = Table(title=f"Ways to test the challenger ({comparison.metric} "
                        f"{comparison.relative_difference * 100:+.3g}% relative to the "
                        f"champion)",
                  title_justify="left")
    for i, header in enumerate(TABLE_HEADERS):
        table.add_column(header, justify="left" if i == 0 else "right",
                         no_wrap=i == 0)
    for cells in table_cells(comparison):
        table.add_row(*cells)
    return table


def days_text(days: float) -> str:
    """Days to a decision for people: ``'4h'``, ``'1 day'``, ``'77.4 days'``, ``'never'``."""
    if not math.isfinite(days):
        return "never"
    if days < 1:
        return human_duration(days * DAY_S)
    if round(days, 2) == 1:
        return "1 day"
    return f"{days:,.0f} days" if days >= 1000 else f"{days:.3g} days"


def percent(x: float) -> str:
    """A share as a percentage to 3 significant digits: 0.1 -> ``'10%'``, 0.2025 ->
    ``'20.2%'``."""
    return f"{x * 100:.3g}%"


def _outcomes(x: float) -> str:
    if not math.isfinite(x):
        return "-"
    return "0" if x == 0 else count_short(x) if x >= 10 else f"{x:.2g}"


def _price(x: float) -> str:
    return "$0" if x == 0 else f"${x:.3g}"


def _finite(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _zero_nan(x) -> float:
    x = float(x)
    return 0.0 if math.isnan(x) else x


def _z(q: float) -> float:
    return float(stats.norm.ppf(q))


def _check_inputs(p1, p2, daily, share, min_effect, predictions, steps, step_days, speedup,
                  cost, value) -> None:
    for name, p in (("p_champion", p1), ("p_challenger", p2)):
        if not (isinstance(p, numbers.Real) and 0 < p < 1):
            raise PlanError(f"the {name[2:]}'s rate must be strictly between 0 and 1 "
                            f"(got {p!r})", name)
    checks = [
        ("daily_traffic", daily, lambda x: x > 0, "daily traffic must be > 0"),
        ("share", share, lambda x: 0 < x <= 1, "the test's share of traffic must be in (0, 1]"),
        ("shadow_predictions", predictions, lambda x: x >= 1,
         "the shadow test's predictions must be >= 1"),
        ("canary_step_days", step_days, lambda x: x > 0, "the canary's step must last > 0"),
        ("interleaving_speedup", speedup, lambda x: x >= 1,
         "interleaving's speedup over an A/B test must be >= 1"),
        ("cost_per_prediction", cost, lambda x: x >= 0, "the cost per prediction must be >= 0"),
        ("value_per_outcome", value, lambda x: x >= 0, "the value per outcome must be >= 0"),
    ]
    if min_effect is not None:
        checks.append(("min_effect", min_effect, lambda x: 0 < x < 1,
                       "the smallest effect to detect (relative) must be between 0 and 1"))
    for name, x, ok, text in checks:
        if not (isinstance(x, numbers.Real) and math.isfinite(x) and ok(x)):
            raise PlanError(f"{text} (got {x!r})", name)
    steps = list(steps)
    if not steps or not all(isinstance(s, numbers.Real) and 0 < s <= 1 for s in steps):
        raise PlanError(f"the canary's steps must be shares of traffic in (0, 1], e.g. 1%, 5%, "
                        f"25%, 50% (got {steps!r})", "canary_steps")
    if steps != sorted(steps):
        raise PlanError(f"the canary's steps must grow (got {steps!r})", "canary_steps")
