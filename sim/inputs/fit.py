"""Fitting a ``workload:`` section to a request log (:func:`fit_workload`): the mean rate, an
hour-of-day or hour-of-week profile, burstiness (index of dispersion against Poisson), the Zipf
exponent of entity popularity (maximum likelihood), new entities per day and the share active
per day. Nothing here simulates; ``predsim workload fit`` prints what it returns.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import optimize, special, stats

from sim.inputs.logs import WEEK_HOURS, InputError, RequestLog
from sim.units import DAY_S, HOUR_S, round_rate

if TYPE_CHECKING:
    from sim.inputs.mmpp_fit import MmppFit


@dataclass
class Dispersion:
    """Counts of requests per interval against the fitted rate profile.

    ``index`` is Pearson's X^2 / degrees of freedom: about 1 for a Poisson process, above 1 for
    burstier traffic, below 1 for more regular traffic; ``p_value`` is the two-sided chi-square
    test of Poisson counts."""

    interval_s: float
    intervals: int
    index: float
    p_value: float

    @property
    def poisson_fits(self) -> bool:
        return self.p_value >= 0.01


@dataclass
class FirstShare:
    """The share of requests made by entities in their first ``days`` (1 or 7) of the log.

    Counted over the requests at least ``2 * days`` after the log's first request (``requests``
    of them), an entity being in its first ``days`` when first seen less than ``days`` before the
    request; such an entity was first seen after the log's first ``days``, so an old entity is
    not taken for a new one just because the log starts after its creation (left-censoring).
    An old entity quiet for longer than ``days`` still counts as new when it comes back, and the
    ``days`` count from an entity's first request, not its creation: both make the share a
    little high."""

    days: int
    share: float
    requests: int
    from_new: int

    @property
    def key(self) -> str:
        return "first_week_share" if self.days == 7 else "first_day_share"

    @property
    def period(self) -> str:
        return "week" if self.days == 7 else "day"


@dataclass
class WorkloadFit:
    """What :func:`fit_workload` found; :meth:`section` is the ``workload:`` section and
    :meth:`to_yaml` the same with the evidence as comments."""

    log: RequestLog = field(repr=False)
    rate_per_s: float
    rate_ci95: tuple[float, float]
    profile: np.ndarray | None        # 24 or 168 multipliers, mean 1, or None (constant)
    hours_observed: int
    dispersion: Dispersion | None
    zipf_exponent: float | None       # None when the log names no entities
    zipf_se: float | None
    new_entities_per_day: float | None
    active_share_per_day: float | None
    days_for_activity: int
    first_day: FirstShare | None = None
    first_week: FirstShare | None = None
    bursts: "MmppFit | None" = None   # fitted when the counts are burstier than Poisson

    @property
    def first_share(self) -> FirstShare | None:
        """The first-week share when the log is long enough for it, else the first-day share."""
        return self.first_week or self.first_day

    def first_share_for_scenario(self) -> tuple[float, bool] | None:
        """The share as ``workload.new_entities`` takes it (3 significant digits, and at most
        what the fitted entities, new entities per day and Zipf exponent let new entities make
        at the most popular ranks), and whether that limit cut it; None without a share or
        without new entities."""
        first = self.first_share
        sec = self._base_section()
        if first is None or not sec["new_entities_per_day"] > 0 or first.share <= 0:
            return None
        _, most = new_entity_share_range(sec["entities"], sec["new_entities_per_day"],
                                         sec["popularity"]["zipf"], first.days)
        value = float(f"{first.share:.3g}")
        if value <= most:
            return value, False
        digits = 2 - int(math.floor(math.log10(most)))  # 3 significant digits, rounded down
        return math.floor(most * 10 ** digits) / 10 ** digits, True

    @property
    def profile_kind(self) -> str:
        return {None: "none", 24: "daily", WEEK_HOURS: "weekly"}[
            None if self.profile is None else len(self.profile)]

    @property
    def zipf_ci95(self) -> tuple[float, float]:
        return (max(0.0, self.zipf_exponent - 1.96 * self.zipf_se),
                self.zipf_exponent + 1.96 * self.zipf_se)

    def daily_profile(self) -> np.ndarray | None:
        """The hour-of-day multipliers (a weekly profile averaged over its days)."""
        if self.profile is None:
            return None
        return self.profile.reshape(-1, 24).mean(axis=0)

    def _base_section(self) -> dict:
        arrivals: dict = {"rate": round_rate(self.rate_per_s)}
        if self.profile is not None:
            arrivals["profile"] = [round(float(m), 3) for m in self.profile]
        if self.bursts is not None and self.bursts.bursty:
            arrivals.update(self.bursts.section())
        if not self.log.has_entities:
            return {"arrivals": arrivals}
        return {"entities": self.log.n_entities,
                "new_entities_per_day": _round_count(self.new_entities_per_day or 0.0),
                "popularity": {"zipf": round(self.zipf_exponent, 3)},
                "arrivals": arrivals}

    def section(self) -> dict:
        """The ``workload:`` section as plain data in scenario-file form (only ``arrivals``
        for a log that names no entities)."""
        sec = self._base_section()
        if not self.log.has_entities:
            return sec
        share = self.first_share_for_scenario()
        if share is not None:
            sec = {k: sec[k] for k in ("entities", "new_entities_per_day")} | {
                "new_entities": {self.first_share.key: share[0]}} | {
                k: sec[k] for k in ("popularity", "arrivals")}
        return sec

    def to_yaml(self) -> str:
        """The section under the top-level ``workload:`` key, commented, ready to paste."""
        log, sec = self.log, self.section()
        end = log.start + pd.Timedelta(seconds=log.span_s)
        about = (f"about {log.n_entities:,} entities" if log.has_entities else
                 "(no entity ids)")
        lines = [f"# predsim workload fit: {Path(log.source).name}: {log.n_requests:,} requests "
                 f"{about} from {log.start:%Y-%m-%d %H:%M} to "
                 f"{end:%Y-%m-%d %H:%M} ({log.span_s / DAY_S:.3g} days; clock times "
                 f"{'as written in the log' if log.clock == 'as written' else 'in UTC'})."]
        lo, hi = self.rate_ci95
        lines.append(f"# Mean rate {round_rate(self.rate_per_s)} = "
                     f"{_day_count(self.rate_per_s * DAY_S)} a day (95% CI {round_rate(lo)} to "
                     f"{round_rate(hi)}).")
        daily = self.daily_profile()
        if daily is not None:
            peak, trough = int(np.argmax(daily)), int(np.argmin(daily))
            ratio = (f"peak to trough {daily[peak] / daily[trough]:.3g}" if daily[trough] > 0
                     else "no requests at all in the quietest hour")
            text = (f"# Daily cycle: busiest hour {peak:02d}:00 ({daily[peak]:.2f} x the mean), "
                    f"quietest {trough:02d}:00 ({daily[trough]:.2f} x); {ratio}.")
            if self.profile_kind == "weekly":
                days = self.profile.reshape(7, 24).mean(axis=1)
                weekend = days[5:].mean() / days[:5].mean()
                text += f" Weekends carry {weekend:.2f} x the traffic of weekdays."
            lines.append(text)
        d = self.dispersion
        if d is not None:
            verdict = ("a Poisson model fits" if d.poisson_fits else
                       "a Poisson model does not fit")
            shape = ("burstier than Poisson: consider arrivals.mmpp or arrivals.bursts"
                     if d.index > 1 else "more regular than Poisson")
            if self.bursts is not None:
                shape = "burstier than Poisson" if d.index > 1 else shape
            lines.append(f"# Burstiness: requests per {_INTERVAL_NAMES[d.interval_s]} around "
                         f"the fitted profile have an index of dispersion of {d.index:.3g} "
                         f"(Poisson: 1); {verdict} (p {_p_text(d.p_value)}, {d.intervals:,} "
                         f"intervals)"
                         + ("." if d.poisson_fits else f": the traffic is {shape}."))
        if self.bursts is not None:
            lines.extend(self.bursts.lines())
        if log.has_entities:
            lo, hi = self.zipf_ci95
            top = max(1, int(math.ceil(0.01 * log.n_entities)))
            top_share = log.counts[:top].sum() / log.n_requests
            lines.append(f"# Popularity: Zipf exponent {self.zipf_exponent:.3f} (95% CI {lo:.3f} to "
                         f"{hi:.3f}), maximum likelihood over the log's ids ranked by requests; the "
                         f"top 1% of entities ({top:,}) make {top_share:.1%} of the requests.")
            if self.active_share_per_day is not None:
                implied = expected_active_share(log.n_entities, self.rate_per_s * DAY_S,
                                                self.zipf_exponent)
                lines.append(f"# Active entities: on an average day {self.active_share_per_day:.1%} "
                             f"of the log's entities make a request ({self.days_for_activity} whole "
                             f"days); the fitted popularity gives about {implied:.1%}.")
            if self.new_entities_per_day is None:
                lines.append("# New entities: the log is too short to tell (less than two days).")
            for first, days in ((self.first_day, 1), (self.first_week, 7)):
                word = "day" if days == 1 else "week"
                if first is None:
                    lines.append(f"# First-{word} share: the log is too short to tell (it needs "
                                 f"more than {2 * days} days).")
                    continue
                lines.append(f"# First-{word} share: {100 * first.share:.3g}% of the requests from "
                             f"{'day' if days == 1 else 'week'} 3 on ({first.from_new:,} of "
                             f"{first.requests:,}) are about ids in their first {word}: ids first "
                             f"seen after the log's first {word}, less than a {word} before the "
                             f"request (an old id quiet for a {word} or more counts as new).")
            shared = self.first_share_for_scenario()
            if shared is not None and shared[1]:
                lines.append(f"# The fitted entities and popularity let a "
                             f"{self.first_share.period}'s new entities make at most "
                             f"{100 * shared[0]:.3g}% of the requests (at the most popular ranks): "
                             f"new_entities below gives that.")
        else:
            lines.append("# Entities: the log names none (no entity id column), so it gives the "
                         "arrivals only: keep your scenario's entities, popularity and new "
                         "entities (replaying it with arrivals.trace draws each request's "
                         "entity from them).")
            if log.sizes is not None:
                lines.append(f"# Sizes ({log.size_column}): mean {np.mean(log.sizes):.4g}, p50 "
                             f"{np.percentile(log.sizes, 50):.4g}, p99 "
                             f"{np.percentile(log.sizes, 99):.4g} per request.")
        lines = [wrapped for line in lines for wrapped in _wrap_comment(line)]
        profile_note = {
            "weekly": "hour-of-week multipliers, Monday 00:00 first (normalised to mean 1)",
            "daily": "hour-of-day multipliers, 00:00 first (normalised to mean 1)"}
        lines.append("workload:")
        if log.has_entities:
            lo, hi = self.zipf_ci95
            lines.append(_commented(f"  entities: {sec['entities']}",
                                    "distinct ids in the log; use your full count if a batch job "
                                    "scores more"))
            lines.append(_commented(f"  new_entities_per_day: {sec['new_entities_per_day']}",
                                    "ids first seen per day in the second half of the log"))
            if "new_entities" in sec:
                (key, value), = sec["new_entities"].items()
                lines.append(_commented(f"  new_entities: {{{key}: {value:g}}}",
                                        f"where new ids enter the popularity ranking: see "
                                        f"First-{self.first_share.period} share above"))
            lines.append(_commented(f"  popularity: {{zipf: {sec['popularity']['zipf']}}}",
                                    f"95% CI {lo:.3f} to {hi:.3f}"))
        lines.append("  arrivals:")
        lines.append(_commented(f"    rate: {sec['arrivals']['rate']}", "the mean rate"))
        if self.profile is not None:
            lines.append(f"    # {profile_note[self.profile_kind]}")
            lines.extend(_flow_list("    profile: ", sec["arrivals"]["profile"]))
        if "mmpp" in sec["arrivals"]:
            mmpp = sec["arrivals"]["mmpp"]
            lines.append(_commented("    mmpp:", "bursts: see above"))
            lines.extend(_flow_list("      multipliers: ", mmpp["multipliers"]))
            lines.extend(_flow_list("      mean_sojourn: ", mmpp["mean_sojourn"]))
        return "\n".join(lines) + "\n"


def fit_workload(log: RequestLog, profile: str = "auto", bursts: bool = True) -> WorkloadFit:
    """Fit a workload section to ``log``.

    The clock hours from the first request's hour to the last request's are the observed
    hours. ``profile``: ``weekly`` (168 hour-of-week multipliers, needs every hour of the week
    observed), ``daily`` (24 multipliers, needs every hour of the day), ``none``, or ``auto``
    (weekly when the log covers a week, else daily when it covers a day, else none). Each
    multiplier is the mean count in that hour over its occurrences, over the mean of them all;
    the mean rate is that mean per second. Without a profile the rate is (n - 1) / span. When
    the counts are burstier than Poisson (and ``bursts``), a 2- or 3-state MMPP is fitted to
    the request times around the profile (:func:`sim.inputs.mmpp_fit.fit_mmpp`) and becomes
    ``arrivals.mmpp`` when the BIC prefers it to Poisson.
    """
    if profile not in ("auto", "weekly", "daily", "none"):
        raise ValueError(f"profile must be auto, weekly, daily or none (got {profile!r})")
    wall_start = log.start.floor("h")
    offset_s = (log.start - wall_start).total_seconds()
    hour_abs = np.floor((log.times_s + offset_s) / HOUR_S).astype(np.int64)
    n_hours = int(hour_abs[-1]) + 1
    counts = np.bincount(hour_abs, minlength=n_hours).astype(float)
    first_how = wall_start.day_of_week * 24 + wall_start.hour  # Monday 00:00 is 0
    hour_of_week = (first_how + np.arange(n_hours)) % WEEK_HOURS
    seen_week = np.unique(hour_of_week).size == WEEK_HOURS
    seen_day = np.unique(hour_of_week % 24).size == 24
    if profile == "auto":
        profile = "weekly" if seen_week else "daily" if seen_day else "none"
    if profile == "weekly" and not seen_week:
        raise InputError([f"{log.source}: a weekly profile needs a log covering a whole week "
                          f"(it covers {log.span_s / DAY_S:.3g} days)"])
    if profile == "daily" and not seen_day:
        raise InputError([f"{log.source}: a daily profile needs a log covering a whole day "
                          f"(it covers {log.span_s / HOUR_S:.3g} hours)"])
    multipliers = None
    if profile == "none":
        rate = (log.n_requests - 1) / log.span_s
        expected_per_hour = np.full(n_hours, rate * HOUR_S)
        index = np.zeros(n_hours, dtype=np.int64)
    else:
        period = WEEK_HOURS if profile == "weekly" else 24
        index = hour_of_week % period
        sums = np.bincount(index, weights=counts, minlength=period)
        occurrences = np.bincount(index, minlength=period)
        per_hour = sums / occurrences
        rate = float(per_hour.mean()) / HOUR_S
        multipliers = per_hour / per_hour.mean()
        expected_per_hour = per_hour[index]
    dispersion = _dispersion(log, offset_s, expected_per_hour, index)
    exposure_s = log.n_requests / rate
    inflate = max(1.0, dispersion.index) if dispersion is not None else 1.0
    half = 1.96 * math.sqrt(log.n_requests * inflate) / exposure_s
    fit = WorkloadFit(log=log, rate_per_s=rate, rate_ci95=(max(0.0, rate - half), rate + half),
                      profile=multipliers, hours_observed=n_hours, dispersion=dispersion,
                      zipf_exponent=None, zipf_se=None, new_entities_per_day=None,
                      active_share_per_day=None, days_for_activity=0)
    if bursts and dispersion is not None and not dispersion.poisson_fits and dispersion.index > 1:
        from sim.inputs.mmpp_fit import fit_mmpp
        # the fitted profile's multiplier at each request: a daily cycle is not a burst
        hour_of_request = np.floor((log.times_s + offset_s) / HOUR_S).astype(np.int64)
        at_request = (multipliers[index[hour_of_request]] if multipliers is not None
                      else None)
        try:
            fit.bursts = fit_mmpp(log.times_s, states="auto", profile=at_request)
        except ValueError:  # too few requests, or none where the profile is 0: no fit
            fit.bursts = None
    if not log.has_entities:  # the arrivals only
        return fit
    fit.zipf_exponent, fit.zipf_se = zipf_mle(log.counts)
    if log.span_s >= 2 * DAY_S:
        half_s = log.span_s / 2
        fit.new_entities_per_day = float(np.count_nonzero(log.first_seen_s >= half_s)) / (
            (log.span_s - half_s) / DAY_S)
    fit.active_share_per_day, fit.days_for_activity = _active_share(log)
    fit.first_day, fit.first_week = first_share(log, 1), first_share(log, 7)
    return fit


def first_share(log: RequestLog, days: int) -> FirstShare | None:
    """The share of the requests made at least ``2 * days`` after the log's first request that
    are about an entity first seen less than ``days`` before them (see :class:`FirstShare`);
    None when the log is not longer than ``2 * days``."""
    h = days * DAY_S
    start = int(np.searchsorted(log.times_s, 2 * h, side="left"))
    n = log.n_requests - start
    if log.span_s <= 2 * h or n == 0:
        return None
    age = log.times_s[start:] - log.first_seen_s[log.slot[start:]]
    from_new = int(np.count_nonzero(age < h))
    return FirstShare(days=days, share=from_new / n, requests=n, from_new=from_new)


_INTERVAL_NAMES = {1.0: "second", 10.0: "10 seconds", 60.0: "minute", 300.0: "5 minutes",
                   900.0: "15 minutes", HOUR_S: "hour"}
_INTERVALS_S = tuple(_INTERVAL_NAMES)


def _dispersion(log: RequestLog, offset_s: float, expected_per_hour: np.ndarray,
                param_of_hour: np.ndarray) -> Dispersion | None:
    """Pearson's X^2 of counts per interval against the profile's expected counts, on the
    shortest interval (of 1s, 10s, 1m, 5m, 15m, 1h) that expects at least 5 requests on average
    (an hour at most); intervals are aligned to clock hours and only whole ones are used. The
    degrees of freedom are the intervals less the profile values fitted to them
    (``param_of_hour``: which value each clock hour's rate came from)."""
    mean_per_hour = float(expected_per_hour.mean())
    width = next((w for w in _INTERVALS_S if mean_per_hour * w / HOUR_S >= 5), HOUR_S)
    per_hour = int(round(HOUR_S / width))
    first = int(math.ceil(offset_s / width))  # the first whole interval after the first request
    last = int(math.floor((log.span_s + offset_s) / width))  # intervals end before the last
    index = np.floor((log.times_s + offset_s) / width).astype(np.int64)
    counts = np.bincount(index, minlength=last + 1)[first:last]
    expected = expected_per_hour[np.arange(first, last) // per_hour] / per_hour
    ok = expected > 0
    x2 = float(np.sum((counts[ok] - expected[ok]) ** 2 / expected[ok]))
    fitted = np.unique(param_of_hour[np.arange(first, last) // per_hour][ok]).size
    df = int(ok.sum()) - fitted
    if df < 1:
        return None
    p = 2 * min(stats.chi2.sf(x2, df), stats.chi2.cdf(x2, df))
    return Dispersion(interval_s=width, intervals=int(ok.sum()), index=x2 / df,
                      p_value=float(min(1.0, p)))


def _active_share(log: RequestLog) -> tuple[float | None, int]:
    """Mean over the whole calendar days inside the log of the share of the log's entities with
    a request that day."""
    wall_day = log.start.normalize()
    offset_s = (log.start - wall_day).total_seconds()
    day = np.floor((log.times_s + offset_s) / DAY_S).astype(np.int64)
    first = 0 if offset_s == 0 else 1
    last = int(math.floor((log.span_s + offset_s) / DAY_S))  # days ending by the last request
    shares = []
    for d in range(first, last):
        lo, hi = np.searchsorted(day, [d, d + 1])
        shares.append(np.unique(log.slot[lo:hi]).size / log.n_entities)
    if not shares:
        return None, 0
    return float(np.mean(shares)), len(shares)


def zipf_mle(counts: np.ndarray) -> tuple[float, float]:
    """Maximum-likelihood Zipf exponent ``s`` of request counts per entity, and its standard
    error.

    The entities with at least one request are ranked by count (rank 1 the most); each request
    is taken to pick rank ``k`` with probability ``k^-s / H(N, s)``. The log-likelihood
    ``-s sum_k c_k log k - n log H(N, s)`` is maximised over ``s`` in [0, 6]; the standard error
    is ``1 / sqrt(n Var_s(log k))`` (the inverse Fisher information). Ranking by observed counts
    makes the estimate a little steep when most entities have only a request or two.
    """
    c = np.sort(np.asarray(counts, dtype=float)[np.asarray(counts) > 0])[::-1]
    n, big_n = c.sum(), c.size
    if big_n < 2:
        return 0.0, math.inf
    log_k = np.log(np.arange(1, big_n + 1, dtype=float))
    weighted = float(np.dot(c, log_k))

    def negative_log_likelihood(s):
        return s * weighted + n * special.logsumexp(-s * log_k)

    best = optimize.minimize_scalar(negative_log_likelihood, bounds=(0.0, 6.0), method="bounded",
                                    options={"xatol": 1e-7})
    s = float(best.x)
    p = np.exp(-s * log_k - special.logsumexp(-s * log_k))
    variance = float(np.dot(p, log_k ** 2) - np.dot(p, log_k) ** 2)
    return s, (1.0 / math.sqrt(n * variance) if variance > 0 else math.inf)


def expected_active_share(entities: int, requests_per_day: float, exponent: float) -> float:
    """Expected share of ``entities`` with at least one of ``requests_per_day`` requests in a
    day, each entity of Zipf rank ``k`` being asked about as a Poisson process at rate
    ``R k^-s / H(N, s)``."""
    k = np.arange(1, int(entities) + 1, dtype=float)
    weights = k ** -exponent
    return float(np.mean(-np.expm1(-requests_per_day * weights / weights.sum())))


EXACT_RANKS = 1 << 20


class ZipfMass:
    """Sums of the Zipf weights ``(k + 1) ** -s`` over popularity ranks ``lo <= k < hi`` (rank 0
    the most popular), for populations of any size: exact (prefix sums) over the first 2^20
    ranks, the midpoint-rule integral of ``x ** -s`` beyond them (relative error below 1e-12
    there)."""

    def __init__(self, exponent: float, n_slots: int):
        self.s = float(exponent)
        self._exact = min(int(n_slots), EXACT_RANKS)
        weights = np.arange(1, self._exact + 1, dtype=float) ** -self.s
        self._prefix = np.concatenate([[0.0], np.cumsum(weights)])

    def __call__(self, lo: int, hi: int) -> float:
        lo, hi = int(lo), int(hi)
        total = 0.0
        cut = min(hi, self._exact)
        if lo < cut:
            total += float(self._prefix[cut] - self._prefix[lo])
        start = max(lo, self._exact)
        if start < hi:  # ranks start..hi-1 weigh j^-s for j = start+1..hi: about the integral
            a, log_ratio = start + 0.5, math.log((hi + 0.5) / (start + 0.5))
            u = (1.0 - self.s) * log_ratio
            total += a ** (1.0 - self.s) * log_ratio * (math.expm1(u) / u if abs(u) > 1e-12
                                                        else 1.0)
        return total


def new_entity_share_range(entities: int, new_per_day: float, exponent: float,
                           days: float) -> tuple[float, float]:
    """The least and the largest share of requests that ``days`` of new entities
    (``new_per_day * days`` of them, at least one) can make under Zipf popularity when they are
    the only new ones: ranked below every other entity, and above every other entity."""
    n, big_n = max(1, int(round(new_per_day * days))), int(entities)
    mass = ZipfMass(exponent, big_n + n)
    total = mass(0, big_n + n)
    return mass(big_n, big_n + n) / total, mass(0, n) / total


def _day_count(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def _round_count(x: float) -> float | int:
    if x >= 100:
        return int(round(x))
    return float(f"{x:.3g}")


def _p_text(p: float) -> str:
    """``'< 0.001'`` or ``'= 0.123'``."""
    return "< 0.001" if p < 0.001 else f"= {p:.3f}"


def _wrap_comment(line: str, width: int = 100) -> list[str]:
    """A long ``# ...`` line as several, continuation lines indented."""
    return textwrap.wrap(line, width=width, initial_indent="", subsequent_indent="#   ",
                         break_on_hyphens=False) or [line]


def _commented(text: str, comment: str, column: int = 36) -> str:
    return f"{text.ljust(column - 1)} # {comment}"


def _flow_list(prefix: str, values: list, width: int = 100) -> list[str]:
    """A YAML flow sequence wrapped to ``width`` columns, continuation lines aligned."""
    items = [v if isinstance(v, str) else f"{v:g}" for v in values]
    lines, current = [], prefix + "["
    indent = " " * (len(prefix) + 1)
    for i, item in enumerate(items):
        piece = item + ("]" if i == len(items) - 1 else ",")
        if len(current) + len(piece) + 1 > width and current.strip() not in ("", "["):
            lines.append(current.rstrip())
            current = indent
        current += piece + ("" if i == len(items) - 1 else " ")
    lines.append(current)
    return lines
