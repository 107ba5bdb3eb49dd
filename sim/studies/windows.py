"""Where a search judges its constraints: the busiest hour of the arrivals, whole days, or the
scenario's own window (:func:`judged_window`), and which metrics depend on the load at the time
(:func:`is_load_metric`). Used by :mod:`sim.studies.search` (``--window``); see its docstring.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sim.results import catalogue
from sim.scenario import Scenario
from sim.studies.designs import SweepError
from sim.units import DAY_S, WEEK_S, format_rate


class SearchError(SweepError):
    """A search that cannot run as asked; the message names the option and what was expected."""


def _show_rate(per_s: float) -> str:
    """A rate to 4 significant digits: 61.0777 -> '61.08/s'."""
    return format_rate(float(f"{per_s:.4g}"))

WINDOWS = ("peak", "day", "horizon")
BUSIEST_S = 3600.0   # the busiest window is an hour long
SETTLE_S = 3600.0    # simulated before it (at least), so queues and autoscalers settle
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# Summary columns that depend on the load at the time (the catalogue's ``load``): judged over
# the busiest hour with --window peak. The others (cost, value, quality, ages) are judged over
# the scenario's window.
LOAD_COLUMNS = catalogue.load_columns()


def is_load_metric(column: str) -> bool:
    """Whether a summary column (or its ``_ci95``) depends on the traffic at the time
    (latency, queueing, coverage, utilisation)."""
    return column.removesuffix("_ci95") in LOAD_COLUMNS


@dataclass(frozen=True)
class Busiest:
    """The busiest window of a scenario's arrivals (requests per second over it the most).

    ``window_per_s`` is the mean rate over it, ``peak_per_s`` the highest rate inside it (for a
    trace: its busiest minute), ``mean_per_s`` the scenario's mean rate (``arrivals.rate``);
    ``period_s`` is how often it recurs (None: once, as a burst or a log that does not loop).
    """

    start_s: float
    end_s: float
    mean_per_s: float
    window_per_s: float
    peak_per_s: float
    source: str
    period_s: float | None
    weekly: bool = False

    def occurrences(self, until_s: float) -> list[tuple[float, float]]:
        """Every (start, end) of the window that starts before ``until_s``."""
        if self.period_s is None:
            return [(self.start_s, self.end_s)]
        k = -math.floor(self.start_s / self.period_s)  # the first at or after time 0
        out = []
        while self.start_s + k * self.period_s < until_s:
            out.append((self.start_s + k * self.period_s, self.end_s + k * self.period_s))
            k += 1
        return out

    def within(self, start_s: float, end_s: float) -> bool:
        """Whether one occurrence lies wholly in [start_s, end_s]."""
        return any(a >= start_s - 1e-6 and b <= end_s + 1e-6
                   for a, b in self.occurrences(end_s))

    def describe(self, first: str = "when") -> str:
        """'19:30–20:30 on day 1, the busiest hour of the diurnal pattern (32/s there at a mean
        of 20/s)', or with ``first="what"`` 'the busiest hour of the diurnal pattern, 19:30–20:30
        on day 1 (...)'."""
        peaking = (f", peaking at {_show_rate(self.peak_per_s)}"
                   if self.peak_per_s > 1.01 * self.window_per_s else "")
        ratio = (f"{_show_rate(self.window_per_s)} there{peaking}{',' if peaking else ''} at a "
                 f"mean of {_show_rate(self.mean_per_s)}")
        when = span_text(self.start_s, self.end_s, self.weekly)
        if first == "what":
            return f"the {self.source}, {when} ({ratio})"
        return f"{when}, the {self.source} ({ratio})"


def _rate_profile(arrivals):
    from sim.engine.workload import RateProfile
    return RateProfile(arrivals)


def busiest_window(scenario: Scenario, length_s: float = BUSIEST_S,
                   settle_s: float = SETTLE_S) -> Busiest | None:
    """The busiest ``length_s`` of the scenario's arrival rate: of the windows that hold its
    highest rate, the one with the most requests. For a pattern that repeats, its first
    occurrence with ``settle_s`` of simulated traffic before it. None when the rate is constant
    (every hour is as busy; a Markov-modulated rate is random, so it has no busiest hour known
    in advance).

    A diurnal pattern's is centred on ``peak_hour``; a weekly pattern's on the busiest weekday's
    peak; an hourly profile's is its busiest hour (or hours); flash-crowd bursts count. For a
    replayed log it is the hour of replayed time with the most requests.
    """
    arrivals = scenario.workload.arrivals
    if arrivals.trace is not None:
        return _busiest_in_trace(arrivals, length_s, settle_s)
    profile = _rate_profile(arrivals)
    if profile.is_constant:
        return None
    hourly = profile.hourly
    weekly = profile.pattern == "weekly" or (hourly is not None and hourly.size == 168)
    periodic = profile.pattern != "constant" or hourly is not None
    period_s = (WEEK_S if weekly else DAY_S) if periodic else None
    bursts = profile.bursts
    # Every start up to a whole period after the last burst (or the last burst's end).
    span_s = max([0.0] + [end for _, end, _ in bursts]) + (period_s or 0.0)
    step_s = 10.0
    edges = np.arange(0.0, span_s + length_s + step_s, step_s)
    rate = profile(edges[:-1] + step_s / 2)
    n = int(round(length_s / step_s))
    sums = np.concatenate([[0.0], np.cumsum(rate)])
    window = sums[n:] - sums[:-n]
    # Windows that hold the highest rate (a burst shorter than the window counts in full),
    # and of those the one with the most requests; the first of ties.
    at_peak = np.concatenate([[0], np.cumsum(rate >= rate.max() * (1 - 1e-9))])
    holds_peak = (at_peak[n:] - at_peak[:-n]) > 0
    starts = edges[:window.size]
    candidates = np.flatnonzero(holds_peak & (starts < span_s))
    best_sum = window[candidates].max()
    best = int(candidates[window[candidates] >= best_sum * (1 - 1e-9)][0])
    start_s = float(starts[best])
    in_burst = any(a < start_s + length_s and b > start_s for a, b, _ in bursts)
    if period_s is not None and not in_burst:
        if start_s < settle_s:
            start_s += math.ceil((settle_s - start_s) / period_s) * period_s
        while any(a < start_s + length_s and b > start_s for a, b, _ in bursts):
            start_s += period_s  # a later day's, away from a dip (a burst below 1)
    if in_burst:
        period_s = None
    fine = profile(start_s + (np.arange(int(length_s)) + 0.5) * (length_s / int(length_s)))
    if in_burst:
        source = "hour around the peak of the arrivals, in a burst"
    elif hourly is not None:
        source = "busiest hour of the hourly profile"
    else:
        source = f"busiest hour of the {profile.pattern} pattern"
    return Busiest(start_s, start_s + length_s, profile.mean_per_s, float(fine.mean()),
                   float(fine.max()), source, period_s, weekly)


def _busiest_in_trace(arrivals, length_s: float, settle_s: float) -> Busiest:
    trace = arrivals.trace
    t = trace.log.times_s / arrivals.replay_speedup
    period_s = trace.period_s / arrivals.replay_speedup
    length_s = min(length_s, period_s)
    counts = np.searchsorted(t, t + length_s, side="left") - np.arange(t.size)
    best = int(np.argmax(counts))
    start_s = float(t[best])
    if start_s + length_s > period_s:  # the last hour of the log, not past its end
        start_s = period_s - length_s
    loops = trace.loop is not False
    if loops and start_s < settle_s:
        start_s += math.ceil((settle_s - start_s) / period_s) * period_s
    minute = min(60.0, length_s)
    per_minute = np.searchsorted(t, t + minute, side="left") - np.arange(t.size)
    inside = (t >= start_s % period_s) & (t < start_s % period_s + length_s)
    peak = float(per_minute[inside].max()) / minute if inside.any() else 0.0
    return Busiest(start_s, start_s + length_s, float(arrivals.rate),
                   float(counts[best]) / length_s, peak, "busiest hour of the replayed log",
                   period_s if loops else None)


def _clock(t_s: float) -> tuple[int, str]:
    """(day, 'HH:MM') of a time; seconds shown only when there are any."""
    day = int(t_s // DAY_S)
    seconds = round(t_s - day * DAY_S)
    if seconds >= DAY_S:
        day, seconds = day + 1, 0
    h, rest = divmod(int(seconds), 3600)
    m, s = divmod(rest, 60)
    return day, f"{h:02d}:{m:02d}" + (f":{s:02d}" if s else "")


def span_text(start_s: float, end_s: float, weekly: bool = False) -> str:
    """'19:30–20:30 on day 1' (days counted from 1; a weekly pattern's named), or
    '01:00 on day 1 – 01:00 on day 3'."""
    (d0, c0), (d1, c1) = _clock(start_s), _clock(end_s)

    def day(d):
        return f"day {d + 1}" + (f" ({_WEEKDAYS[d % 7]})" if weekly else "")

    if d0 == d1 or (d1 == d0 + 1 and c1 == "00:00" and end_s - start_s <= DAY_S):
        return f"{c0}–{'24:00' if d1 != d0 else c1} on {day(d0)}"
    return f"{c0} on {day(d0)} – {c1} on {day(d1)}"


@dataclass(frozen=True)
class JudgedWindow:
    """Where the load metrics of a configuration are judged: [start_s, end_s) of simulated time,
    with everything before it simulated as warm-up."""

    mode: str
    start_s: float
    end_s: float
    busiest: Busiest | None
    text: str
    scenario_window: tuple[float, float]

    @property
    def is_scenario_window(self) -> bool:
        """Whether it is the scenario's own measured window (no separate run needed)."""
        a, b = self.scenario_window
        return abs(self.start_s - a) < 1e-6 and abs(self.end_s - b) < 1e-6

    @property
    def overrides(self) -> dict:
        """The scenario keys that make it the measured window."""
        return {"warmup": _round_s(self.start_s), "horizon": _round_s(self.end_s - self.start_s)}

    def warning(self) -> str | None:
        """A warning when the window leaves out the busiest hour of the arrivals."""
        busiest = self.busiest
        if busiest is None or busiest.within(self.start_s, self.end_s):
            return None
        where = span_text(self.start_s, self.end_s, busiest.weekly)
        fix = ("use --window peak (the default), or a horizon that covers it"
               if self.mode != "peak" else "")
        return (f"Warning: the window judged, {where}, does not cover "
                f"{busiest.describe('what')}: what is found holds off-peak only"
                + (f"; {fix}." if fix else "."))


def _round_s(x: float) -> float:
    return float(round(x, 3))


def judged_window(scenario: Scenario, window: str = "peak") -> JudgedWindow:
    """Where ``scenario``'s load metrics are judged with ``--window window``:

    - ``peak``: the busiest hour of the arrivals (:func:`busiest_window`), with at least an
      hour simulated before it; the scenario's own window when the rate is constant.
    - ``day``: whole days from the end of the scenario's warm-up (its horizon rounded up to
      whole days, one at least).
    - ``horizon``: the scenario's own measured window, as given.
    """
    if window not in WINDOWS:
        raise SearchError(f"--window: expected one of {', '.join(WINDOWS)} (got {window!r})")
    own = (scenario.warmup, scenario.end_s)
    busiest = busiest_window(scenario)
    weekly = busiest.weekly if busiest else False
    own_text = span_text(*own, weekly)
    if window == "horizon":
        return JudgedWindow(window, *own, busiest,
                            f"the scenario's measured window, {own_text} (--window horizon)", own)
    if window == "day":
        days = max(1, math.ceil(scenario.horizon / DAY_S - 1e-9))
        start, end = scenario.warmup, scenario.warmup + days * DAY_S
        text = (f"whole days: {span_text(start, end, weekly)} "
                f"({days} day{'s' if days > 1 else ''})")
        arrivals = scenario.workload.arrivals
        if arrivals.trace is not None and arrivals.trace.loop is False:
            covers = arrivals.trace.period_s / arrivals.replay_speedup
            if end > covers:
                end = covers
                text = (f"{span_text(start, end)}, up to the end of the replayed log (it covers "
                        f"less than {days} day{'s' if days > 1 else ''} at this rate)")
        return JudgedWindow(window, start, end, busiest, text, own)
    if busiest is None:
        why = ("the Markov-modulated rate is random, so no hour is known in advance to be the "
               "busiest" if scenario.workload.arrivals.mmpp is not None
               else "the arrival rate is constant, so every hour is as busy")
        return JudgedWindow(window, *own, None,
                            f"the scenario's measured window, {own_text}: {why}", own)
    return JudgedWindow(window, busiest.start_s, busiest.end_s, busiest, busiest.describe(), own)
