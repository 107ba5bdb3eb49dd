"""Time-ordered service times: :func:`read_series` reads a log of requests (a time column and a
duration column) into a :class:`Series`, and :func:`check_independence` tests whether the
durations come independently (lag-1 autocorrelation, and a runs test on the slow ones, each with
a p-value) or in stretches, the question ``predsim calibrate latency`` asks first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import special, stats

from sim.inputs.fit import _p_text, _wrap_comment
from sim.inputs.latency_fit import SAMPLE_UNITS_S, column_scale
from sim.inputs.logs import MAX_REPORTED_ROWS, InputError, _is_blank, _parse_times
from sim.units import round_duration
from sim.units import share_rounded as _share

#: Column names taken as the request time, in order of preference (compared case-blind).
TIME_COLUMNS = ("t_s", "time_s", "start_s", "timestamp", "timestamp_s", "start_time",
                "started_at", "start", "time", "t", "t_ms", "start_ms", "time_ms",
                "timestamp_ms", "t_us", "start_us", "time_us")
TIME_UNITS_S = {"_ms": 1e-3, "_us": 1e-6, "_s": 1.0}
ALPHA = 0.01             # the false-alarm rate of the independence decision
SLOW_ABOVE = 1.5         # a "slow" request: above this multiple of the median
MIN_REQUESTS = 20
Z_95 = 1.959963984540054

# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Series:
    """Requests in time order: ``times_s`` since the first (ascending; equal times keep the
    file's order) and ``durations_s``; ``lines`` the file line of each."""

    source: str
    time_column: str
    column: str
    times_s: np.ndarray
    durations_s: np.ndarray
    lines: np.ndarray = field(repr=False)

    @property
    def n(self) -> int:
        return int(self.durations_s.size)

    @property
    def span_s(self) -> float:
        return float(self.times_s[-1] - self.times_s[0])


def find_time_column(columns) -> str | None:
    """The column that holds request times, by name (:data:`TIME_COLUMNS`), or None."""
    by_lower = {str(c).strip().lower(): str(c) for c in columns}
    return next((by_lower[name] for name in TIME_COLUMNS if name in by_lower), None)


def series_time_column(path: str | Path, column: str | None = None) -> str | None:
    """The time column of a CSV file when it holds a time series of durations, from its header
    alone: a column named as in :data:`TIME_COLUMNS` and, besides it, ``column`` or a column
    whose name carries its unit. None otherwise (a file of samples alone, such as one column
    ``time_s``, or a file that cannot be read: the caller reads it as samples, as before)."""
    try:
        header = [str(c) for c in pd.read_csv(path, nrows=0).columns]
    except Exception:  # noqa: BLE001 - any unreadable file goes the old way, which says why
        return None
    found = find_time_column(header)
    if found is None:
        return None
    if column is not None:
        return found if column != found else None
    others = [c for c in header if c != found and any(c.endswith(u) for u in SAMPLE_UNITS_S)]
    return found if others else None


def read_series(path: str | Path, time_column: str | None = None, column: str | None = None,
                unit: str | None = None) -> Series:
    """Read a time series of durations from a CSV file, sorted by time.

    ``time_column``: default the first of :data:`TIME_COLUMNS` present; numbers are seconds (or
    the unit its name ends in: ``_ms``, ``_us``), anything else ISO-8601 times (all with a UTC
    offset or none). ``column``: default the one other column whose name carries its unit
    (``service_time_ms``, ``latency_s``...); its unit is its name's suffix or ``unit``. Raises
    :class:`InputError` naming the file, and the line and column of each bad row (up to 10).
    """
    path = Path(path)
    label = str(path)
    if not path.is_file():
        raise InputError([f"{label}: file not found"])
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skip_blank_lines=False)
    except UnicodeDecodeError:
        raise InputError([f"{label}: not a text file (expected a CSV file)"]) from None
    except Exception as exc:  # pandas raises many kinds; the user needs only the message
        raise InputError([f"{label}: cannot read as CSV: {exc}"]) from None
    columns = [str(c) for c in frame.columns]
    if time_column is None:
        time_column = find_time_column(columns)
        if time_column is None:
            raise InputError([f"{label}: no time column (expected one named "
                              f"{', '.join(TIME_COLUMNS[:4])}...; the columns are "
                              f"{', '.join(columns)}); choose one with --time-column"])
    elif time_column not in columns:
        raise InputError([f"{label}: no column {time_column!r} (the columns are "
                          f"{', '.join(columns)}); choose the time column with --time-column"])
    if column is None:
        named = [c for c in columns if c != time_column
                 and any(c.endswith(u) for u in SAMPLE_UNITS_S)]
        if len(named) != 1:
            raise InputError([f"{label}: expected one column of durations besides "
                              f"{time_column!r}, its name carrying its unit, such as "
                              f"service_time_ms or latency_s (got columns {', '.join(columns)}); "
                              f"choose one with --column"])
        column = named[0]
    elif column not in columns:
        raise InputError([f"{label}: no column {column!r} (the columns are "
                          f"{', '.join(columns)}); choose one with --column"])
    if column == time_column:
        raise InputError([f"{label}: column {column!r} cannot be both the time and the "
                          f"durations; choose the time column with --time-column"])
    scale = column_scale(label, column, unit, "give it with --unit")

    lines = np.arange(len(frame)) + 2  # the header is line 1
    stamps, values = frame[time_column], frame[column]
    keep = ~(_is_blank(stamps) & _is_blank(values))  # blank lines are not rows
    stamps, values, lines = stamps[keep], values[keep], lines[keep]
    problems: list[tuple[int, str]] = []
    seconds = _series_times(stamps, time_column, lines, problems)
    text = values.astype(str).str.strip()
    durations = pd.to_numeric(text, errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(durations) | (durations < 0)
    for line, raw in zip(lines[bad], text[bad]):
        problems.append((int(line), f"{column}: expected a duration, a number >= 0 "
                                    f"(got {raw!r})"))
    if problems:
        problems.sort()
        out = [f"{label}: line {line}: {message}" for line, message in
               problems[:MAX_REPORTED_ROWS]]
        if len(problems) > MAX_REPORTED_ROWS:
            out.append(f"{label}: and {len(problems) - MAX_REPORTED_ROWS} more bad rows; "
                       f"nothing was dropped")
        raise InputError(out)
    if len(durations) < MIN_REQUESTS:
        raise InputError([f"{label}: a series needs at least {MIN_REQUESTS} requests to test "
                          f"(got {len(durations)})"])
    if seconds.max() == seconds.min():
        raise InputError([f"{label}: {time_column}: every request has the same time "
                          f"({stamps.iloc[0]!r}); give each request its own start time"])
    order = np.argsort(seconds, kind="stable")
    times = seconds[order] - seconds[order][0]
    return Series(source=label, time_column=time_column, column=column, times_s=times,
                  durations_s=durations[order] * scale, lines=lines[order])


def _series_times(stamps: pd.Series, column: str, lines: np.ndarray, problems: list) \
        -> np.ndarray:
    """Seconds (any origin) per row; numbers scaled by the unit in the column's name, other
    text read as ISO-8601 (:func:`sim.inputs.logs._parse_times`)."""
    text = stamps.astype(str).str.strip()
    present = text != ""
    numbers = pd.to_numeric(text, errors="coerce").to_numpy(dtype=float)
    first = np.flatnonzero(present.to_numpy())
    if first.size and not math.isfinite(numbers[first[0]]):
        seconds, _, _ = _parse_times(stamps, column, lines, problems)
        return seconds
    for line in lines[~present.to_numpy()]:
        problems.append((int(line), f"{column}: missing time"))
    bad = present.to_numpy() & ~np.isfinite(numbers)
    for line, raw in zip(lines[bad], text[bad]):
        problems.append((int(line), f"{column}: expected a time in seconds, a number like the "
                                    f"first row (got {raw!r})"))
    scale = next((s for u, s in TIME_UNITS_S.items() if column.lower().endswith(u)), 1.0)
    return numbers * scale


# --------------------------------------------------------------------------------------------
# Independence tests
# --------------------------------------------------------------------------------------------

@dataclass
class Independence:
    """The two tests of independence of consecutive durations (see the module docstring)."""

    n: int
    lag1: float                # lag-1 autocorrelation of the log durations
    lag1_p: float              # Ljung-Box, one lag (two-sided)
    slow_above: float          # a slow request: above this multiple of the median
    slow_threshold_s: float
    n_slow: int
    slow_with_next: int        # slow ones that have a next request
    slow_then_slow: int        # ... that is slow too
    slow_runs: int             # stretches of consecutive slow ones
    runs_p: float              # exact runs test, one-sided (too few stretches)
    alpha: float = ALPHA

    @property
    def p_value(self) -> float:
        """Bonferroni: twice the smaller p-value, at most 1."""
        return min(1.0, 2 * min(self.lag1_p, self.runs_p))

    @property
    def independent(self) -> bool:
        return self.p_value >= self.alpha

    @property
    def slow_stretches(self) -> bool:
        """Not independent in the way slow periods describe: positive autocorrelation, or slow
        ones following slow ones (not durations that alternate, long after short)."""
        return not self.independent and (self.lag1 > 0 or self.runs_p < self.alpha / 2)

    @property
    def slow_share(self) -> float:
        return self.n_slow / self.n

    @property
    def next_slow_share(self) -> float:
        """How often a slow request is followed by a slow one (NaN without slow ones)."""
        return self.slow_then_slow / self.slow_with_next if self.slow_with_next else math.nan

    @property
    def expected_next_slow_share(self) -> float:
        """The same, for independent durations: (slow - 1) / (n - 1)."""
        return (self.n_slow - 1) / (self.n - 1) if self.n_slow else math.nan

    def lines(self) -> list[str]:
        verdict = ("Yes, as far as these tests can tell" if self.independent
                   else "No: slow ones come in stretches" if self.runs_p < self.alpha / 2
                   else "No" if self.slow_stretches
                   else "No, but not in slow stretches: long and short ones alternate "
                        "(negative autocorrelation), which slow periods do not describe")
        out = [f"# Are consecutive service times independent? {verdict} (p {_p_text(self.p_value)}"
               f"; the smaller p-value of the two tests below, doubled: at most "
               f"{self.alpha:.0%} of independent series are judged dependent).",
               f"#   Lag-1 autocorrelation of log service times: {self.lag1:.3f} "
               f"(independent series: within ±{Z_95 / math.sqrt(self.n):.3f}, 95%); Ljung-Box p "
               f"{_p_text(self.lag1_p)}."]
        if self.n_slow == 0 or self.n_slow == self.n:
            out.append(f"#   Slow (over {self.slow_above:g}x the median, "
                       f"{round_duration(self.slow_threshold_s)}): {self.n_slow:,} of "
                       f"{self.n:,}; no runs test.")
        else:
            out.append(f"#   Slow (over {self.slow_above:g}x the median, "
                       f"{round_duration(self.slow_threshold_s)}): {self.n_slow:,} of "
                       f"{self.n:,} ({self.slow_share:.1%}), in {self.slow_runs:,} stretches; "
                       f"the next request is also slow after {_share(self.next_slow_share)} of "
                       f"them (independent: {_share(self.expected_next_slow_share)}); runs test "
                       f"p {_p_text(self.runs_p)}.")
        return [w for line in out for w in _wrap_comment(line)]


def check_independence(durations_s: np.ndarray, slow_above: float = SLOW_ABOVE,
                       alpha: float = ALPHA) -> Independence:
    """Test whether consecutive durations (in time order, all > 0) are independent."""
    x = np.asarray(durations_s, dtype=float)
    n = x.size
    if n < 3:
        raise InputError([f"the tests need at least three durations (got {n})"])
    if not np.all(x > 0):
        raise InputError([f"{int(np.count_nonzero(x <= 0))} of {n} durations are 0; measure "
                          f"with a finer unit"])
    if np.all(x == x[0]):
        raise InputError([f"every duration is {round_duration(float(x[0]))}: nothing to test; "
                          f"use {{constant: {round_duration(float(x[0]))}}}"])
    y = np.log(x)
    r1 = lag1_autocorrelation(y)
    q = n * (n + 2) * r1 * r1 / (n - 1)
    lag1_p = float(stats.chi2.sf(q, 1))
    threshold = slow_above * float(np.median(x))
    slow = x > threshold
    m = int(slow.sum())
    runs = int(np.count_nonzero(slow & ~np.r_[False, slow[:-1]]))
    return Independence(n=n, lag1=r1, lag1_p=lag1_p, slow_above=slow_above,
                        slow_threshold_s=threshold, n_slow=m,
                        slow_with_next=int(slow[:-1].sum()),
                        slow_then_slow=int(np.count_nonzero(slow[:-1] & slow[1:])),
                        slow_runs=runs, runs_p=runs_p_value(n, m, runs), alpha=alpha)


def lag1_autocorrelation(y: np.ndarray) -> float:
    """The lag-1 sample autocorrelation (the estimator of Ljung-Box: sums over the whole mean)."""
    y = np.asarray(y, dtype=float)
    if np.ptp(y) == 0:
        return 0.0
    d = y - np.mean(y)
    denominator = float(np.sum(d * d))
    return float(np.sum(d[:-1] * d[1:])) / denominator if denominator > 0 else 0.0


def runs_p_value(n: int, m: int, runs: int) -> float:
    """P(at most ``runs`` stretches of ones) when ``m`` ones of ``n`` are in random order:
    ``P(R = r) = C(m-1, r-1) C(n-m+1, r) / C(n, m)`` (exact). 1 when m is 0 or n."""
    if m <= 0 or m >= n:
        return 1.0
    r = np.arange(1, runs + 1)
    log_p = (_log_choose(m - 1, r - 1) + _log_choose(n - m + 1, r) - _log_choose(n, m))
    return float(min(1.0, np.exp(special.logsumexp(log_p))))


def _log_choose(n, k):
    n, k = np.asarray(n, dtype=float), np.asarray(k, dtype=float)
    return special.gammaln(n + 1) - special.gammaln(k + 1) - special.gammaln(n - k + 1)


def slow_after_slow(durations_s: np.ndarray, slow_above: float = SLOW_ABOVE) -> float:
    """The share of slow requests (above ``slow_above`` times the median) followed by a slow
    one."""
    x = np.asarray(durations_s, dtype=float)
    slow = x > slow_above * np.median(x)
    first = slow[:-1]
    return float(np.count_nonzero(first & slow[1:]) / first.sum()) if first.any() else math.nan


# --------------------------------------------------------------------------------------------
# Does the speed hold still over seconds?
# --------------------------------------------------------------------------------------------

WANDER_WINDOW_S = 2.0    # the windows over which the mean duration is compared
WANDER_MIN_REQUESTS = 30  # a window's mean counts when it has this many requests
WANDER_MIN_WINDOWS = 5
WANDER_LOADS = (0.5, 0.8, 0.9)  # the utilisations the consequence is printed at


@dataclass
class SpeedWander:
    """How much the mean duration moves from one window of :attr:`window_s` to the next, as a
    share of the series' mean: :attr:`windows_sd` (the windows' means' standard deviation),
    :attr:`sampling_sd` (what independent draws would give: the spread within windows over the
    root of each window's count, on average), and :attr:`wander`, the part sampling does not explain
    (their difference in quadrature, 0 when sampling explains it all). :attr:`p`: a chi-square
    test that every window has the same mean (each window's mean against the series' in units
    of its standard error, from the variance within the windows pooled). Independent draws
    from one distribution are judged wandering in about ``alpha`` of series."""

    window_s: float
    windows: int
    requests: int
    windows_sd: float
    sampling_sd: float
    wander: float
    chi2: float
    p: float
    alpha: float = ALPHA

    @property
    def wanders(self) -> bool:
        return self.p < self.alpha

    def wait_shift(self, utilisation: float) -> float:
        """How far the mean queue wait of one replica moves, as a share, when the speed is
        :attr:`wander` faster or slower: by Pollaczek-Khinchine the wait goes as S^2 / (1 - rho)
        with rho proportional to S, so d ln W / d ln S = 1 + 1 / (1 - rho)."""
        return (1 + 1 / (1 - utilisation)) * self.wander

    def lines(self) -> list[str]:
        head = f"# Does the speed hold still from one {self.window_s:g}-second window to the next? "
        figures = (f"over {self.windows:,} windows ({self.requests:,} requests) the mean "
                   f"duration moves ±{self.windows_sd:.1%} (one standard deviation), where "
                   f"independent draws would move it ±{self.sampling_sd:.1%} (chi-square p "
                   f"{_p_text(self.p)}).")
        if not self.wanders:
            return _wrap_comment(head + "Yes: " + figures)
        first, *rest = WANDER_LOADS
        shifts = (f"±{self.wait_shift(first):.0%} at utilisation {first:g}, "
                  + ", ".join(f"±{self.wait_shift(u):.0%} at {u:g}" for u in rest))
        return _wrap_comment(
            head + f"No: {figures} The machine's own speed wanders by ±{self.wander:.1%} over "
            f"seconds, which no distribution drawn request by request describes, and a "
            f"prediction of the queue is no closer than what that does to it: the mean wait "
            f"of one replica moves {shifts} (Pollaczek-Khinchine). Calibrate in the same "
            f"minutes as the load you predict, and read predictions at high utilisation with "
            f"that margin.")


def speed_wander(times_s: np.ndarray, durations_s: np.ndarray,
                 window_s: float = WANDER_WINDOW_S, alpha: float = ALPHA) -> SpeedWander | None:
    """The series' :class:`SpeedWander` over windows of ``window_s`` from its first time;
    None when fewer than :data:`WANDER_MIN_WINDOWS` windows hold
    :data:`WANDER_MIN_REQUESTS` requests or more."""
    t = np.asarray(times_s, dtype=float)
    x = np.asarray(durations_s, dtype=float)
    w = np.floor((t - t.min()) / window_s).astype(np.int64)
    n = np.bincount(w)
    full = n >= WANDER_MIN_REQUESTS
    if full.sum() < WANDER_MIN_WINDOWS:
        return None
    n = n[full].astype(float)
    mean = np.bincount(w, x)[full] / n
    within = float(np.sum(np.bincount(w, x * x)[full] - n * mean ** 2) / (n.sum() - n.size))
    grand = float(np.sum(n * mean) / n.sum())
    se2 = max(within, 0.0) / n  # the pooled within-window variance: steadier than each own
    between = float(np.var(mean, ddof=1)) / grand ** 2
    sampling = float(np.mean(se2)) / grand ** 2
    chi2 = float(np.sum((mean - grand) ** 2 / np.maximum(se2, 1e-300)))
    return SpeedWander(window_s=window_s, windows=int(full.sum()), requests=int(n.sum()),
                       windows_sd=math.sqrt(between), sampling_sd=math.sqrt(sampling),
                       wander=math.sqrt(max(between - sampling, 0.0)), chi2=chi2,
                       p=float(stats.chi2.sf(chi2, full.sum() - 1)), alpha=alpha)
