"""Slow periods in measured service times: are consecutive ones independent, and if not, the
``serving.slow_periods`` model that fits them (``predsim calibrate latency`` on a time series).

- :func:`read_series` reads a CSV of requests in time: a time column (``t_s``, ``timestamp``,
  ``start_s``...: seconds, or ISO-8601 times) and a duration column (its unit in its name, as for
  :func:`sim.inputs.latency_fit.read_samples`), sorted by time.
- :func:`check_independence` asks whether consecutive durations are independent, with two
  tests: the lag-1 autocorrelation of the log durations (Ljung-Box with one lag: ``Q = n(n+2)
  r1^2 / (n-1)`` against chi-square with 1 degree of freedom, two-sided) and the clustering of
  the slow ones, those above ``slow_above`` times the median (the exact Wald-Wolfowitz runs
  distribution of the number of stretches of slow ones given how many there are, one-sided:
  too few stretches means slow ones follow slow ones). The series is judged not independent
  when either p-value is below ``alpha / 2`` (Bonferroni: at most ``alpha``, 1%, of independent
  series are misjudged); slow periods are fitted when, besides, the autocorrelation is positive
  or the runs test rejects (not for durations that alternate, long after short).
- :func:`fit_slow_periods` fits the slow-period model by maximum likelihood: a continuous-time
  hidden Markov model in which the log duration of a request is ``log(work) + log(slowdown)``,
  the work i.i.d. lognormal (``mu``, ``sigma``, the same in every state) and the slowdown that
  of the environment's state when the request starts (1 in the normal state, the fastest). The
  environment switches state in continuous time (generator ``Q``), so between requests ``dt``
  apart the state moves by ``expm(Q dt)`` (closed form for two states, else from the
  eigen-decomposition of ``Q``). The likelihood is the scaled forward algorithm (numba), with
  its exact gradient carried along; BFGS maximizes it over unconstrained parameters (log
  sigma, log log slowdown, log rates) from three starts: the rates read off an i.i.d. mixture
  fitted by EM, and five times slower and faster. Standard errors come from the Hessian
  (central differences of the gradient; the delta method on a log or logit scale for what is
  printed); the fit is checked by simulating it with requests spaced as measured (back-to-back
  calls kept back to back) and comparing the lag-1 autocorrelation and the slow-after-slow
  share with the data's.
- :func:`analyse_series` does both and :meth:`SeriesAnalysis.to_text` prints the result: the
  ``slow_periods:`` and ``service_time:`` keys with the evidence as comments, or (independent)
  today's distribution fit (:func:`sim.inputs.latency_fit.fit_latency`).

The model takes a request's slowdown at its start: right when a slow stay is long against a
request (the usual case: stays of tens of milliseconds and more, requests of a few); the
simulator itself stretches work over the path, so a request that spans a switch is slowed in
part. Durations must be service times (the work of one request on a replica), not latencies
that include queueing.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from numba import njit
from scipy import optimize, special, stats

from sim.distributions import Z_99
from sim.inputs.fit import _p_text, _wrap_comment
from sim.inputs.latency_fit import SAMPLE_UNITS_S, LatencyFit, column_scale, fit_latency
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
CHECK_RUNS = 200         # simulated series in the check of a fit
Z_95 = 1.959963984540054
WALL = 10.0              # the slope of the quadratic wall at the bounds of the parameters
STATE_WORDS = {2: "two", 3: "three"}


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
# The hidden Markov model: transition matrices, forward algorithm, posteriors, simulation
# --------------------------------------------------------------------------------------------

@njit(cache=True, nogil=True)
def _step(tm, i, out):
    """``out = expm(Q dt[i])`` from the prepared transitions ``tm`` (see :func:`_prepare`):
    ``v diag(e[i]) vi`` (real eigenvalues), or ``p[i]`` (complex ones, computed ahead)."""
    v, e, vi, p, use_p = tm
    k = out.shape[0]
    if use_p:
        for a in range(k):
            for b in range(k):
                out[a, b] = p[i, a, b]
        return
    for a in range(k):
        total = 0.0
        for b in range(k):
            x = 0.0
            for c in range(k):
                x += v[a, c] * e[i, c] * vi[c, b]
            if x < 0.0:
                x = 0.0
            out[a, b] = x
            total += x
        for b in range(k):
            out[a, b] /= total


@njit(cache=True, nogil=True)
def _densities_row(y, mu, sigma, log_s, out):
    """The normal densities of ``y`` in each state over the largest; returns the log of that."""
    k = log_s.size
    top = -np.inf
    for b in range(k):
        z = (y - mu - log_s[b]) / sigma
        out[b] = -0.5 * z * z
        if out[b] > top:
            top = out[b]
    for b in range(k):
        out[b] = math.exp(out[b] - top)
    return top - math.log(sigma) - 0.5 * math.log(2.0 * math.pi)


@njit(cache=True, nogil=True)
def _forward(y, mu, sigma, log_s, tm, pi, alphas, scales):
    """The scaled forward algorithm; returns the log-likelihood of the log durations ``y``.
    ``alphas[i]`` is P(state at request i | requests 0..i) and ``scales[i]`` the log of the i-th
    factor (filled when they have rows; pass 0-row arrays for the likelihood alone)."""
    n, k = y.size, log_s.size
    keep = alphas.shape[0] == n
    alpha = np.empty(k)
    dens = np.empty(k)
    new = np.empty(k)
    p = np.empty((k, k))
    total = 0.0
    for i in range(n):
        top = _densities_row(y[i], mu, sigma, log_s, dens)
        if i == 0:
            for b in range(k):
                new[b] = pi[b] * dens[b]
        else:
            _step(tm, i - 1, p)
            for b in range(k):
                s = 0.0
                for a in range(k):
                    s += alpha[a] * p[a, b]
                new[b] = s * dens[b]
        c = 0.0
        for b in range(k):
            c += new[b]
        if not c > 1e-300:  # the likely states have (almost) no density here
            return -np.inf
        for b in range(k):
            alpha[b] = new[b] / c
        log_c = top + math.log(c)
        total += log_c
        if keep:
            for b in range(k):
                alphas[i, b] = alpha[b]
            scales[i] = log_c
    return total


@njit(cache=True, nogil=True)
def _backward(y, mu, sigma, log_s, tm, alphas, scales):
    """Posterior state probabilities from the forward pass (same scaling)."""
    n, k = y.size, log_s.size
    gamma = np.empty((n, k))
    beta = np.ones(k)
    dens = np.empty(k)
    new = np.empty(k)
    p = np.empty((k, k))
    for b in range(k):
        gamma[n - 1, b] = alphas[n - 1, b]
    for i in range(n - 2, -1, -1):
        _step(tm, i, p)
        top = _densities_row(y[i + 1], mu, sigma, log_s, dens)
        factor = math.exp(top - scales[i + 1])
        for a in range(k):
            s = 0.0
            for b in range(k):
                s += p[a, b] * dens[b] * beta[b]
            new[a] = s * factor
        norm = 0.0
        for a in range(k):
            beta[a] = new[a]
            norm += alphas[i, a] * beta[a]
        for a in range(k):
            gamma[i, a] = alphas[i, a] * beta[a] / norm if norm > 0 else alphas[i, a]
    return gamma


@njit(cache=True, nogil=True)
def _simulate(v, w, vi, pi, mu, sigma, log_s, dt, idle, back_to_back, uniforms, normals):
    """Durations drawn from the model (``Q = v diag(w) vi``, complex), (runs, n): at the gaps
    ``dt`` between starts, or ``back_to_back``, each request starting ``idle[i]`` after the
    simulated end of the one before. ``uniforms`` and ``normals`` are (runs, n)."""
    runs, n = uniforms.shape
    k = pi.size
    out = np.empty((runs, n))
    row = np.empty(k)
    for r in range(runs):
        u = uniforms[r, 0]
        s, acc = k - 1, 0.0
        for b in range(k):
            acc += pi[b]
            if u < acc:
                s = b
                break
        for i in range(n):
            took = math.exp(mu + log_s[s] + sigma * normals[r, i])
            out[r, i] = took
            if i == n - 1:
                break
            gap = took + idle[i] if back_to_back else dt[i]
            total = 0.0
            for b in range(k):  # row s of expm(Q gap)
                x = 0.0 + 0.0j
                for c in range(k):
                    x += v[s, c] * np.exp(w[c] * gap) * vi[c, b]
                row[b] = x.real if x.real > 0.0 else 0.0
                total += row[b]
            u = uniforms[r, i + 1] * total
            nxt, acc = k - 1, 0.0
            for b in range(k):
                acc += row[b]
                if u < acc:
                    nxt = b
                    break
            s = nxt
    return out


def _generator(rates: np.ndarray, k: int) -> np.ndarray:
    """Q from the off-diagonal rates in row order."""
    q = np.zeros((k, k))
    q[~np.eye(k, dtype=bool)] = rates
    q[np.diag_indices(k)] = -q.sum(axis=1)
    return q


def _stationary(q: np.ndarray) -> np.ndarray:
    k = q.shape[0]
    a = np.vstack([q.T, np.ones(k)])
    pi = np.linalg.lstsq(a, np.r_[np.zeros(k), 1.0], rcond=None)[0]
    pi = np.clip(pi, 0, None)
    return pi / pi.sum()


@njit(cache=True, nogil=True)
def _two_state(y, dt, mu, sigma, log_s1, q01, q10, grad):
    """The log-likelihood of two states in closed form (``expm(Q dt) = Pi + exp(-lambda dt)
    (I - Pi)``, ``lambda = q01 + q10``) and, into ``grad``, its gradient with respect to
    ``theta = [mu, log sigma, log log s1, log q01, log q10]`` (the forward algorithm carried
    along with the derivatives of the scaled forward probabilities)."""
    n = y.size
    lam = q01 + q10
    pi0, pi1 = q10 / lam, q01 / lam
    # d(pi0), d(lambda) for the parameters log q01 (index 3) and log q10 (index 4)
    dpi0 = np.zeros(5)
    dlam = np.zeros(5)
    dpi0[3], dpi0[4] = -pi0 * pi1, pi0 * pi1
    dlam[3], dlam[4] = q01, q10
    a0, a1 = pi0, pi1                # the scaled forward probabilities
    da0 = np.zeros(5)
    da1 = np.zeros(5)
    dn0 = np.empty(5)
    dn1 = np.empty(5)
    g = np.zeros(5)
    total = 0.0
    half_log_2pi = 0.5 * math.log(2.0 * math.pi)
    log_sigma = math.log(sigma)
    for i in range(n):
        z0 = (y[i] - mu) / sigma
        z1 = (y[i] - mu - log_s1) / sigma
        l0, l1 = -0.5 * z0 * z0, -0.5 * z1 * z1
        top = l0 if l0 > l1 else l1
        b0, b1 = math.exp(l0 - top), math.exp(l1 - top)
        if i == 0:
            p00, p01, p10, p11 = pi0, pi1, pi0, pi1
            e = 0.0
            de_over = 0.0
        else:
            e = math.exp(-lam * dt[i - 1])
            p00, p01 = pi0 + e * pi1, pi1 * (1.0 - e)
            p10, p11 = pi0 * (1.0 - e), pi1 + e * pi0
            de_over = -dt[i - 1] * e  # d(e) / d(lambda)
        m0 = a0 * p00 + a1 * p10     # predicted probabilities of each state
        m1 = a0 * p01 + a1 * p11
        u0, u1 = m0 * b0, m1 * b1
        c = u0 + u1
        if not c > 1e-300:
            return -np.inf
        for j in range(5):
            dp0 = dpi0[j]
            de = de_over * dlam[j]
            # d P for this parameter (pi1 = 1 - pi0)
            d00 = dp0 + de * pi1 - e * dp0
            d01 = -dp0 * (1.0 - e) - pi1 * de
            d10 = dp0 * (1.0 - e) - pi0 * de
            d11 = -dp0 + de * pi0 + e * dp0
            dm0 = da0[j] * p00 + da1[j] * p10 + a0 * d00 + a1 * d10
            dm1 = da0[j] * p01 + da1[j] * p11 + a0 * d01 + a1 * d11
            # d log density of each state
            if j == 0:
                dl0, dl1 = z0 / sigma, z1 / sigma
            elif j == 1:  # with the -log(sigma) kept out of b0 and b1
                dl0, dl1 = z0 * z0 - 1.0, z1 * z1 - 1.0
            elif j == 2:
                dl0, dl1 = 0.0, z1 / sigma * log_s1
            else:
                dl0, dl1 = 0.0, 0.0
            dn0[j] = dm0 * b0 + u0 * dl0
            dn1[j] = dm1 * b1 + u1 * dl1
        for j in range(5):
            dc = dn0[j] + dn1[j]
            g[j] += dc / c
        a0, a1 = u0 / c, u1 / c
        for j in range(5):
            dc = dn0[j] + dn1[j]
            da0[j] = (dn0[j] - a0 * dc) / c
            da1[j] = (dn1[j] - a1 * dc) / c
        total += top + math.log(c) - log_sigma - half_log_2pi
    for j in range(5):
        grad[j] = g[j]
    return total


@njit(cache=True, nogil=True)
def _forward_gradient(y, dt, mu, sigma, log_s, steps, v, w, vi, g_rates, pi, dpi, grad):
    """The log-likelihood for any number of states when Q has real eigenvalues
    (``Q = v diag(w) vi``) and, into ``grad``, its gradient with respect to ``theta`` (see
    :func:`_unpack`): the forward algorithm carried along with the derivatives of the scaled
    forward probabilities. ``steps[j, b]`` is d log(s_b) / d theta[2 + j]; ``g_rates[r]`` is
    ``vi dQ v`` for the rate parameter ``theta[k + 1 + r]``; ``dpi[r]`` the derivative of the
    starting (stationary) probabilities for parameter r. The derivative of ``expm(Q dt)`` is
    ``v (F o (vi dQ v)) vi``, ``F[a, b] = (e^(w_a dt) - e^(w_b dt)) / (w_a - w_b)``."""
    n, k = y.size, log_s.size
    n_rates = g_rates.shape[0]
    n_par = grad.size
    first_rate = n_par - n_rates
    alpha = np.empty(k)
    dalpha = np.zeros((n_par, k))
    dens = np.empty(k)
    z = np.empty(k)
    m = np.empty(k)
    dm = np.empty((n_par, k))
    dnew = np.empty((n_par, k))
    new = np.empty(k)
    p = np.empty((k, k))
    e = np.empty(k)
    f = np.empty((k, k))
    av = np.empty(k)
    row = np.empty(k)
    g = np.zeros(n_par)
    total = 0.0
    constant = math.log(sigma) + 0.5 * math.log(2.0 * math.pi)
    for i in range(n):
        # the transition from the previous request, and its derivatives
        if i == 0:
            for b in range(k):
                m[b] = pi[b]
                for r in range(n_par):
                    dm[r, b] = dpi[r, b]
        else:
            h = dt[i - 1]
            for c in range(k):
                e[c] = math.exp(w[c] * h)
            for a in range(k):
                for b in range(k):
                    x = 0.0
                    for c in range(k):
                        x += v[a, c] * e[c] * vi[c, b]
                    p[a, b] = x if x > 0.0 else 0.0
            for a in range(k):
                for b in range(k):
                    gap = w[a] - w[b]
                    if abs(gap) > 1e-9 * (abs(w[a]) + abs(w[b]) + 1e-300):
                        f[a, b] = (e[a] - e[b]) / gap
                    else:
                        f[a, b] = h * 0.5 * (e[a] + e[b])
            # d m / d rate r = alpha dP_r = ((alpha v) (F o G_r)) vi: vector products only
            for c in range(k):
                x = 0.0
                for a in range(k):
                    x += alpha[a] * v[a, c]
                av[c] = x
            for b in range(k):
                x = 0.0
                for a in range(k):
                    x += alpha[a] * p[a, b]
                m[b] = x
                for r in range(n_par):
                    x = 0.0
                    for a in range(k):
                        x += dalpha[r, a] * p[a, b]
                    dm[r, b] = x
            for r in range(n_rates):
                for c in range(k):
                    x = 0.0
                    for a in range(k):
                        x += av[a] * f[a, c] * g_rates[r, a, c]
                    row[c] = x
                for b in range(k):
                    x = 0.0
                    for c in range(k):
                        x += row[c] * vi[c, b]
                    dm[first_rate + r, b] += x
        # the densities of this request in each state, and their log-derivatives
        top = -np.inf
        for b in range(k):
            z[b] = (y[i] - mu - log_s[b]) / sigma
            dens[b] = -0.5 * z[b] * z[b]
            if dens[b] > top:
                top = dens[b]
        c_total = 0.0
        for b in range(k):
            dens[b] = math.exp(dens[b] - top)
            new[b] = m[b] * dens[b]
            c_total += new[b]
        if not c_total > 1e-300:
            return -np.inf
        for b in range(k):
            for r in range(n_par):
                dnew[r, b] = dm[r, b] * dens[b]
            dnew[0, b] += new[b] * z[b] / sigma
            dnew[1, b] += new[b] * (z[b] * z[b] - 1.0)
            for j in range(k - 1):
                dnew[2 + j, b] += new[b] * z[b] / sigma * steps[j, b]
        for b in range(k):
            alpha[b] = new[b] / c_total
        for r in range(n_par):
            dc = 0.0
            for b in range(k):
                dc += dnew[r, b]
            g[r] += dc / c_total
            for b in range(k):
                dalpha[r, b] = (dnew[r, b] - alpha[b] * dc) / c_total
        total += top + math.log(c_total) - constant
    for r in range(n_par):
        grad[r] = g[r]
    return total


def _prepare(q: np.ndarray, dt: np.ndarray) -> tuple:
    """The transitions over the gaps ``dt`` as :func:`_step` takes them: from the
    eigen-decomposition ``Q = v diag(w) vi``, ``expm(Q dt) = v diag(exp(w dt)) vi``, the
    exponentials computed here at once; with complex eigenvalues (possible for three states or
    more) the matrices themselves."""
    w, v = np.linalg.eig(q)
    vi = np.linalg.inv(v)
    k = q.shape[0]
    if np.all(np.abs(np.imag(w)) <= 1e-12 * np.max(np.abs(w))):
        e = np.exp(np.outer(dt, np.real(w)))
        return (np.ascontiguousarray(np.real(v)), e, np.ascontiguousarray(np.real(vi)),
                np.empty((0, k, k)), False)
    p = np.einsum("ac,nc,cb->nab", v, np.exp(np.outer(dt, w)), vi).real
    p = np.clip(p, 0.0, None)
    p /= p.sum(axis=2, keepdims=True)
    return (np.eye(k), np.empty((0, k)), np.eye(k), np.ascontiguousarray(p), True)


# --------------------------------------------------------------------------------------------
# The model's parameters
# --------------------------------------------------------------------------------------------
#
# theta = [mu, log sigma, a_1 .. a_{K-1}, log q_jk (j != k, row order)]; log slowdown of state k
# is exp(a_1) + ... + exp(a_k), so slowdowns rise with k from 1 (state 0, the normal one).

def _unpack(theta: np.ndarray, k: int):
    mu, sigma = theta[0], math.exp(theta[1])
    log_s = np.r_[0.0, np.cumsum(np.exp(theta[2:k + 1]))]
    rates = np.exp(theta[k + 1:])
    return mu, sigma, log_s, _generator(rates, k)


def _pack(mu: float, sigma: float, log_s: np.ndarray, q: np.ndarray) -> np.ndarray:
    k = q.shape[0]
    steps = np.diff(log_s)
    return np.r_[mu, math.log(sigma), np.log(np.maximum(steps, 1e-6)),
                 np.log(q[~np.eye(k, dtype=bool)])]


def _emissions(y: np.ndarray, mu: float, sigma: float, log_s: np.ndarray) -> np.ndarray:
    z = (y[:, None] - mu - log_s[None, :]) / sigma
    return -0.5 * z * z - math.log(sigma) - 0.5 * math.log(2 * math.pi)


_EMPTY2, _EMPTY1 = np.empty((0, 0)), np.empty(0)


def hmm_log_likelihood(theta: np.ndarray, y: np.ndarray, dt: np.ndarray, k: int) -> float:
    """The log-likelihood of log durations ``y`` at gaps ``dt`` under parameters ``theta``
    (log scale: add ``-sum(y)`` for the density of the durations themselves)."""
    mu, sigma, log_s, q = _unpack(theta, k)
    return float(_forward(y, mu, sigma, log_s, _prepare(q, dt), _stationary(q), _EMPTY2,
                          _EMPTY1))


def hmm_log_likelihood_gradient(theta: np.ndarray, y: np.ndarray, dt: np.ndarray,
                                k: int) -> tuple[float, np.ndarray | None]:
    """The log-likelihood and its gradient with respect to ``theta``; the gradient is None
    when Q has complex eigenvalues (three states or more, not reversible)."""
    mu, sigma, log_s, q = _unpack(theta, k)
    p = theta.size
    if k == 2:
        grad = np.empty(5)
        value = _two_state(y, dt, mu, sigma, log_s[1], q[0, 1], q[1, 0], grad)
        return float(value), grad
    w, v = np.linalg.eig(q)
    if np.any(np.abs(np.imag(w)) > 1e-12 * np.max(np.abs(w))):
        return hmm_log_likelihood(theta, y, dt, k), None
    w, v = np.real(w), np.real(v)
    vi = np.linalg.inv(v)
    a = np.exp(theta[2:k + 1])
    steps = np.array([[a[j] if b > j else 0.0 for b in range(k)] for j in range(k - 1)])
    off = np.argwhere(~np.eye(k, dtype=bool))
    pi = _stationary(q)
    g_rates = np.empty((off.shape[0], k, k))
    dpi = np.zeros((p, k))
    system = np.vstack([q.T, np.ones(k)])
    for r, (j, b) in enumerate(off):
        dq = np.zeros((k, k))
        dq[j, b], dq[j, j] = q[j, b], -q[j, b]  # d / d log q_jb
        g_rates[r] = vi @ dq @ v
        # pi Q = 0, sum pi = 1: d(pi) Q = -pi dQ, sum d(pi) = 0
        dpi[k + 1 + r] = np.linalg.lstsq(system, np.r_[-(pi @ dq), 0.0], rcond=None)[0]
    grad = np.empty(p)
    value = _forward_gradient(y, dt, mu, sigma, log_s, steps, np.ascontiguousarray(v), w,
                              np.ascontiguousarray(vi), g_rates, pi, dpi, grad)
    return float(value), grad


# --------------------------------------------------------------------------------------------
# Fitting
# --------------------------------------------------------------------------------------------

@dataclass
class Estimate:
    """A fitted quantity with its 95% confidence interval (NaN when not available)."""

    value: float
    low: float = math.nan
    high: float = math.nan

    def text(self, fmt) -> str:
        if math.isnan(self.low):
            return fmt(self.value)
        if not (math.isfinite(self.high) and self.low > 0 and self.high < 1e3 * self.value):
            return f"{fmt(self.value)} (95% CI: very wide, not determined by these data)"
        return f"{fmt(self.value)} (95% CI {fmt(self.low)}-{fmt(self.high)})"


@dataclass
class Check:
    """The fitted model simulated at the data's own request times: lag-1 autocorrelation and
    slow-after-slow share, their means and central 95% ranges over the runs, and the data's."""

    runs: int
    back_to_back: bool
    lag1_data: float
    lag1_mean: float
    lag1_range: tuple[float, float]
    next_slow_data: float
    next_slow_mean: float
    next_slow_range: tuple[float, float]

    @property
    def lag1_ok(self) -> bool:
        return self.lag1_range[0] <= self.lag1_data <= self.lag1_range[1]

    @property
    def next_slow_ok(self) -> bool:
        lo, hi = self.next_slow_range
        return math.isnan(self.next_slow_data) or lo <= self.next_slow_data <= hi

    @property
    def reproduces(self) -> bool:
        return self.lag1_ok and self.next_slow_ok


@dataclass
class SlowPeriodFit:
    """A slow-period model fitted to a time series (see :func:`fit_slow_periods`).

    ``slowdowns`` rise from 1 (state 0, normal); ``generator`` is Q (per second). ``theta`` and
    ``cov`` are the unconstrained parameters and their covariance (None when the Hessian is not
    positive definite; rows and columns of 0 for the parameters at a bound, marked in
    ``fixed``). ``posterior`` holds P(state) for each request.
    """

    n: int
    mu: float
    sigma: float
    slowdowns: np.ndarray
    generator: np.ndarray
    log_likelihood: float          # log scale, as hmm_log_likelihood
    log_likelihood_iid: float      # one lognormal for every request
    log_likelihood_mixture: float  # the same speeds drawn independently for each request
    theta: np.ndarray = field(repr=False)
    cov: np.ndarray | None = field(repr=False)
    fixed: np.ndarray = field(repr=False)  # parameters at a bound (left out of cov)
    posterior: np.ndarray = field(repr=False)
    slow_above: float = SLOW_ABOVE
    check: Check | None = None
    converged: bool = True

    @property
    def states(self) -> int:
        return int(self.slowdowns.size)

    @property
    def mean_stays_s(self) -> np.ndarray:
        return -1.0 / np.diag(self.generator)

    @property
    def next_probabilities(self) -> np.ndarray:
        """The probability of each state coming next after a stay in each (rows)."""
        q = self.generator.copy()
        np.fill_diagonal(q, 0.0)
        return q / q.sum(axis=1, keepdims=True)

    @property
    def time_shares(self) -> np.ndarray:
        return _stationary(self.generator)

    @property
    def work_median_s(self) -> float:
        return math.exp(self.mu)

    @property
    def work_p99_s(self) -> float:
        return math.exp(self.mu + Z_99 * self.sigma)

    @property
    def expected_slowdown(self) -> np.ndarray:
        """Each request's posterior-expected slowdown (in time order)."""
        return self.posterior @ self.slowdowns

    def estimates(self) -> dict[str, Estimate]:
        """The reported quantities with 95% CIs (delta method on a log or logit scale)."""
        k = self.states

        def quantities(theta):
            mu, sigma, log_s, q = _unpack(theta, k)
            out = {"work_median": (math.exp(mu), "log"), "sigma": (sigma, "log")}
            stays, shares = -1.0 / np.diag(q), _stationary(q)
            for j in range(k):
                if j:
                    out[f"slowdown{j}"] = (math.exp(log_s[j]), "loglog")
                out[f"stay{j}"] = (stays[j], "log")
                out[f"share{j}"] = (shares[j], "logit")
            return out

        links = {"log": (np.log, np.exp),
                 "loglog": (lambda x: np.log(np.log(x)), lambda z: np.exp(np.exp(z))),
                 "logit": (special.logit, special.expit)}
        base = quantities(self.theta)
        result = {name: Estimate(value) for name, (value, _) in base.items()}
        if self.cov is None:
            return result
        names = list(base)
        linked = np.array([links[base[nm][1]][0](base[nm][0]) for nm in names])
        jac = np.empty((len(names), self.theta.size))
        for i in range(self.theta.size):
            h = 1e-6 * max(1.0, abs(self.theta[i]))
            up, down = self.theta.copy(), self.theta.copy()
            up[i] += h
            down[i] -= h
            qu, qd = quantities(up), quantities(down)
            jac[:, i] = [(links[base[nm][1]][0](qu[nm][0]) - links[base[nm][1]][0](qd[nm][0]))
                         / (2 * h) for nm in names]
        var = np.einsum("ij,jk,ik->i", jac, self.cov, jac)
        for nm, z, v in zip(names, linked, var):
            if np.isfinite(v) and v >= 0:
                back = links[base[nm][1]][1]
                se = math.sqrt(v)
                with np.errstate(over="ignore"):
                    result[nm] = Estimate(base[nm][0], float(back(z - Z_95 * se)),
                                          float(back(z + Z_95 * se)))
        return result

    def standard_errors(self) -> dict[str, float]:
        """Approximate standard errors of ``mu``, ``sigma``, the slowdowns and the mean stays
        (delta method, natural scale); empty without a covariance."""
        k = self.states
        if self.cov is None:
            return {}

        def values(theta):
            mu, sigma, log_s, q = _unpack(theta, k)
            return np.r_[mu, sigma, np.exp(log_s[1:]), -1.0 / np.diag(q)]

        base = values(self.theta)
        jac = np.empty((base.size, self.theta.size))
        for i in range(self.theta.size):
            h = 1e-6 * max(1.0, abs(self.theta[i]))
            up, down = self.theta.copy(), self.theta.copy()
            up[i] += h
            down[i] -= h
            jac[:, i] = (values(up) - values(down)) / (2 * h)
        se = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", jac, self.cov, jac), 0))
        names = ["mu", "sigma"] + [f"slowdown{j}" for j in range(1, k)] \
            + [f"stay{j}" for j in range(k)]
        return dict(zip(names, map(float, se)))

    def parameters_at_bounds(self) -> list[str]:
        """The parameters fitted at the edge of their range, in words."""
        k = self.states
        names = ["the work's median", "the work's log-sd"] + [
            f"the slowdown of {_state_name(j, k)}" for j in range(1, k)] + [
            f"the rate from {_state_name(j, k)} to {_state_name(b, k)}"
            for j in range(k) for b in range(k) if b != j]
        return [name for name, at in zip(names, self.fixed) if at]

    # ---- output ------------------------------------------------------------------------

    def lines(self) -> list[str]:
        """The fitted model and its evidence as comment lines."""
        k, est = self.states, self.estimates()
        dur = round_duration
        out = [f"# Fitted: slow periods, a {STATE_WORDS.get(k, str(k))}-state continuous-time "
               f"hidden Markov model (maximum likelihood at your request times"
               + ("" if self.cov is not None else "; no confidence intervals: the likelihood "
                  "is flat in some direction, so some parameters are not determined")
               + "".join(f"; {name} is at the edge of its range, its uncertainty left out"
                         for name in self.parameters_at_bounds())
               + ("" if self.converged else "; the optimizer did not fully converge")
               + "):",
               f"#   work at normal speed: lognormal, median "
               f"{est['work_median'].text(dur)}, log-sd "
               f"{est['sigma'].text(lambda x: f'{x:.3g}')}",
               f"#   normal (slowdown 1): stays {est['stay0'].text(dur)} on average, "
               f"{est['share0'].text(_share)} of the time"]
        for j in range(1, k):
            out.append(f"#   slow{'' if k == 2 else f' {j}'}: "
                       f"{est[f'slowdown{j}'].text(lambda x: f'{x:.3g}')} times slower, stays "
                       f"{est[f'stay{j}'].text(dur)} on average, "
                       f"{est[f'share{j}'].text(_share)} of the time")
        if k > 2:
            nxt = self.next_probabilities
            out.append("#   after a stay, the next state: " + "; ".join(
                f"from {_state_name(j, k)} " + ", ".join(
                    f"{_state_name(b, k)} {nxt[j, b]:.0%}" for b in range(k) if b != j)
                for j in range(k)))
        gain_iid = self.log_likelihood - self.log_likelihood_iid
        gain_mix = self.log_likelihood - self.log_likelihood_mixture
        out.append(f"#   log-likelihood gain: {gain_iid:+,.1f} over one lognormal for every "
                   f"request; {gain_mix:+,.1f} over the same {STATE_WORDS.get(k, str(k))} "
                   f"speeds drawn independently for each request (what the stretches add).")
        stays_short = self.mean_stays_s[1:].min() < 3 * math.exp(self.mu) * self.slowdowns[1:].max()
        if stays_short:
            out.append("#   Note: slow stays about as short as a request: the simulator slows "
                       "work only while the stay lasts, so requests that span a switch are "
                       "slowed in part; take the slowdown as approximate.")
        if self.check is not None:
            c = self.check
            verdict = ("it reproduces both" if c.reproduces else
                       "it does not reproduce " + " and ".join(
                           w for w, ok in (("the autocorrelation", c.lag1_ok),
                                           ("the slow-after-slow share", c.next_slow_ok))
                           if not ok)
                       + (": the slowdowns may vary more than the states allow (try --states 3)"
                          if k == 2 else ": the model may not suit these data"))
            spacing = ("back to back, as your requests were" if c.back_to_back
                       else "at your request times")
            out.append(f"# Check: the fitted model simulated {c.runs} times, {spacing}, "
                       f"gives lag-1 autocorrelation {c.lag1_mean:.3f} (95% of runs "
                       f"{c.lag1_range[0]:.3f}-{c.lag1_range[1]:.3f}; data {c.lag1_data:.3f}) "
                       f"and the next request also slow after {_share(c.next_slow_mean)} of "
                       f"slow ones ({_share(c.next_slow_range[0])}-"
                       f"{_share(c.next_slow_range[1])}; data {_share(c.next_slow_data)}): "
                       f"{verdict}.")
        return [w for line in out for w in _wrap_comment(line)]

    def slow_periods_yaml(self) -> list[str]:
        """The ``slow_periods:`` key (under ``serving:``) as YAML lines."""
        k = self.states
        out = ["# Paste under serving: in a scenario. scope: replica when each replica slows on "
               "its own (its container's CPU quota, its own garbage collection); host when the "
               "replicas of one machine slow together (a noisy neighbour, a paused virtual "
               "CPU, a shared GPU). One series cannot tell which: time two replicas side by "
               "side, and use host if their slow stretches coincide."]
        out = [w for line in out for w in _wrap_comment(line)]
        out += ["slow_periods:", "  scope: replica  # or host: see above", "  states:"]
        nxt = self.next_probabilities
        for j in range(k):
            slowdown = 1 if j == 0 else float(f"{self.slowdowns[j]:.3g}")
            item = f"    - {{slowdown: {slowdown:g}, mean: {round_duration(self.mean_stays_s[j])}"
            if k > 2:
                probabilities = _rounded_probabilities(nxt[j], j)
                item += f", next: [{', '.join(f'{p:g}' for p in probabilities)}]"
            out.append(item + "}")
        return out

    def service_time_yaml(self, key: str = "service_time") -> str:
        return (f"{key}: {{lognormal: {{median: {round_duration(self.work_median_s)}, "
                f"p99: {round_duration(self.work_p99_s)}}}}}  # the work at normal speed")


def _state_name(j: int, k: int) -> str:
    return "normal" if j == 0 else ("slow" if k == 2 else f"slow {j}")


def _rounded_probabilities(p: np.ndarray, self_index: int) -> list[float]:
    """Probabilities to 3 decimals, summing to exactly 1 (the remainder on the largest)."""
    r = [0.0 if b == self_index else round(float(x), 3) for b, x in enumerate(p)]
    big = max((b for b in range(len(r)) if b != self_index), key=lambda b: p[b])
    r[big] = round(1.0 - sum(x for b, x in enumerate(r) if b != big), 3)
    return r


def _mixture_em(y: np.ndarray, k: int, slow_above: float, iterations: int = 300):
    """An i.i.d. mixture of ``k`` normals with one common sigma on the log durations (EM);
    returns means (ascending), sigma, weights, log-likelihood, responsibilities."""
    median = float(np.median(y))
    slow = y > median + math.log(slow_above)
    if slow.sum() < 2 or (~slow).sum() < 2:  # the slowest tenth, by rank
        slow = np.zeros(y.size, dtype=bool)
        slow[np.argsort(y, kind="stable")[-max(2, y.size // 10):]] = True
    base = y[~slow]
    if k == 2:
        means = np.array([base.mean(), y[slow].mean()])
    else:
        cuts = np.quantile(y[slow], np.linspace(0, 1, k)[1:-1])
        groups = np.digitize(y[slow], cuts)
        means = np.r_[base.mean(), [y[slow][groups == g].mean() if np.any(groups == g)
                                    else y[slow].mean() + g * 0.1 for g in range(k - 1)]]
    sigma = max(float(base.std()), 1e-6)
    weights = np.r_[1 - slow.mean(), np.full(k - 1, slow.mean() / (k - 1))]
    log_lik = -np.inf
    for _ in range(iterations):
        logp = np.log(weights)[None, :] + _emissions(y, 0.0, sigma, means)
        top = logp.max(axis=1, keepdims=True)
        resp = np.exp(logp - top)
        total = resp.sum(axis=1, keepdims=True)
        norm = np.log(total[:, 0]) + top[:, 0]
        resp /= total
        new = float(norm.sum())
        weights = np.clip(resp.mean(axis=0), 1e-9, None)
        weights /= weights.sum()
        means = (resp * y[:, None]).sum(axis=0) / np.maximum(resp.sum(axis=0), 1e-12)
        sigma = max(math.sqrt(float((resp * (y[:, None] - means[None, :]) ** 2).sum())
                              / y.size), 1e-6)
        if new - log_lik < 1e-8 * abs(new):
            log_lik = new
            break
        log_lik = new
    order = np.argsort(means)
    return means[order], sigma, weights[order], log_lik, resp[:, order]


def _starting_generator(resp: np.ndarray, dt: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Rates from the most likely state of each request: the share of consecutive pairs that
    stay, over the mean gap (an exponential stay seen at that spacing)."""
    k = resp.shape[1]
    label = resp.argmax(axis=1)
    gap = max(float(np.mean(dt)), 1e-9)
    counts = np.ones((k, k)) + np.eye(k) * 0  # +1: no zero counts
    np.add.at(counts, (label[:-1], label[1:]), 1.0)
    p = counts / counts.sum(axis=1, keepdims=True)
    q = np.zeros((k, k))
    for j in range(k):
        # P(still in j after one gap) = w_j + (1 - w_j) exp(-lambda gap), two-state-like
        stay = min(max(p[j, j], weights[j] + 1e-3), 0.999)
        lam = -math.log(max((stay - weights[j]) / (1 - weights[j]), 1e-3)) / gap
        leave = lam * (1 - weights[j])
        others = [b for b in range(k) if b != j]
        split = p[j, others] / p[j, others].sum()
        q[j, others] = leave * split
    np.fill_diagonal(q, -q.sum(axis=1))
    return q


def fit_slow_periods(times_s: np.ndarray, durations_s: np.ndarray, states: int = 2,
                     slow_above: float = SLOW_ABOVE, check_runs: int = CHECK_RUNS,
                     seed: int = 0) -> SlowPeriodFit:
    """Fit the slow-period model (``states`` of 2 or 3) by maximum likelihood to durations at
    request times (ascending, seconds). ``check_runs`` simulated series check the fit (0: none).
    Raises :class:`InputError` for durations that are not > 0 or constant."""
    t = np.asarray(times_s, dtype=float)
    x = np.asarray(durations_s, dtype=float)
    k = int(states)
    if k < 2 or k > 3:
        raise InputError([f"states must be 2 or 3 (got {states})"])
    if x.size < MIN_REQUESTS:
        raise InputError([f"a fit needs at least {MIN_REQUESTS} requests (got {x.size})"])
    if not np.all(x > 0):
        raise InputError([f"{int(np.count_nonzero(x <= 0))} of {x.size} durations are 0; "
                          f"measure with a finer unit"])
    if np.any(np.diff(t) < 0):
        raise InputError(["request times must be in ascending order"])
    if not t[-1] > t[0]:
        raise InputError(["every request has the same time: the stays of slow periods cannot "
                          "be measured; give each request its own start time"])
    y = np.log(x)
    if float(y.std()) == 0:
        raise InputError([f"every duration is {round_duration(float(x[0]))}: nothing to fit"])
    dt = np.diff(t)
    n = y.size
    log_lik_iid = float(np.sum(stats.norm.logpdf(y, y.mean(), y.std())))
    means, sigma0, weights, log_lik_mix, resp = _mixture_em(y, k, slow_above)
    mix_log_s = np.maximum.accumulate(np.maximum(means - means[0], 0)) + 1e-3 * np.arange(k)
    q0 = _starting_generator(resp, dt, weights)
    span = max(float(t[-1] - t[0]), 1e-9)
    low_rate = math.log(0.01 / span)
    high_rate = math.log(1e3 / max(float(np.median(dt[dt > 0])) if np.any(dt > 0) else 1e-6,
                                   1e-9))
    bounds = ([(None, None), (math.log(1e-6), math.log(20.0))] + [(math.log(1e-4), 3.0)] * (k - 1)
              + [(low_rate, high_rate)] * (k * (k - 1)))

    def negative(theta):  # the mean negative log-likelihood and its gradient
        value, g = hmm_log_likelihood_gradient(theta, y, dt, k)
        if not math.isfinite(value):
            return 1e10, np.zeros(theta.size)
        if g is None:  # complex eigenvalues: central differences
            g = np.empty(theta.size)
            for i in range(theta.size):
                h = 1e-5 * max(1.0, abs(theta[i]))
                up, down = theta.copy(), theta.copy()
                up[i] += h
                down[i] -= h
                g[i] = (hmm_log_likelihood(up, y, dt, k) - hmm_log_likelihood(down, y, dt, k)) \
                    / (2 * h)
        return -value / n, -g / n

    lower = np.array([lo if lo is not None else -np.inf for lo, _ in bounds])
    upper = np.array([hi if hi is not None else np.inf for _, hi in bounds])
    def penalized(theta):  # BFGS on the box: the bounds as a quadratic wall
        inside = np.clip(theta, lower, upper)
        value, g = negative(inside)
        excess = theta - inside
        return value + 0.5 * WALL * float(excess @ excess), g + WALL * excess

    best = None
    for factor in (1.0, 0.2, 5.0):  # the rates from the mixture's labels, and slower, faster
        start = np.clip(_pack(means[0], sigma0, mix_log_s, q0 * factor), lower, upper)
        # BFGS, not L-BFGS-B: the latter is many times slower where BLAS runs threads
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            result = optimize.minimize(penalized, start, jac=True, method="BFGS",
                                       options={"maxiter": 1000, "gtol": 1e-7})
        if best is None or result.fun < best.fun:
            best = result
    theta = np.clip(best.x, lower, upper)
    value, g = negative(theta)
    log_lik = -value * n
    at_bound = (theta - lower < 1e-6) | (upper - theta < 1e-6)
    converged = bool(np.all(np.abs(g[~at_bound]) * n < 0.05))
    cov, fixed = _covariance(lambda th: negative(th)[1] * n, theta, lower, upper)
    mu, sigma, log_s, q = _unpack(theta, k)
    tm = _prepare(q, dt)
    alphas, scales = np.empty((n, k)), np.empty(n)
    _forward(y, mu, sigma, log_s, tm, _stationary(q), alphas, scales)
    posterior = _backward(y, mu, sigma, log_s, tm, alphas, scales)
    fit = SlowPeriodFit(n=n, mu=mu, sigma=sigma, slowdowns=np.exp(log_s), generator=q,
                        log_likelihood=log_lik, log_likelihood_iid=log_lik_iid,
                        log_likelihood_mixture=log_lik_mix, theta=theta, cov=cov, fixed=fixed,
                        posterior=posterior, slow_above=slow_above,
                        converged=converged)
    if check_runs:
        fit.check = check_fit(fit, t, x, runs=check_runs, seed=seed)
    return fit


def _covariance(gradient, theta: np.ndarray, lower: np.ndarray,
                upper: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """The inverse of the Hessian of the negative log-likelihood (central differences of its
    ``gradient``) over the parameters not at a bound, and which are at one (their rows and
    columns are 0: their uncertainty is left out). None when the Hessian is not positive
    definite (no standard errors)."""
    p = theta.size
    fixed = (theta - lower < 1e-6) | (upper - theta < 1e-6)
    free = np.flatnonzero(~fixed)
    h = 1e-4 * np.maximum(1.0, np.abs(theta))
    hess = np.empty((free.size, free.size))
    for col, i in enumerate(free):
        up, down = theta.copy(), theta.copy()
        up[i] += h[i]
        down[i] -= h[i]
        hess[:, col] = ((gradient(up) - gradient(down)) / (2 * h[i]))[free]
    hess = (hess + hess.T) / 2
    if not np.all(np.isfinite(hess)):
        return None, fixed
    try:
        np.linalg.cholesky(hess)
    except np.linalg.LinAlgError:
        return None, fixed
    cov = np.zeros((p, p))
    cov[np.ix_(free, free)] = np.linalg.inv(hess)
    return cov, fixed


def back_to_back(times_s: np.ndarray, durations_s: np.ndarray) -> bool:
    """Whether the requests were timed back to back (a loop of calls, a saturated replica):
    they do not overlap (beyond 0.1% of the median duration, for 99% of them) and the median
    idle time between the end of one and the start of the next is under a quarter of the median
    duration. The start of each then depends on how long the one before took."""
    t, d = np.asarray(times_s, dtype=float), np.asarray(durations_s, dtype=float)
    if t.size < 2:
        return False
    idle = np.diff(t) - d[:-1]
    typical = float(np.median(d))
    return bool(np.mean(idle < -1e-3 * typical) < 0.01 and np.median(idle) < 0.25 * typical)


def simulate_durations(fit: SlowPeriodFit, times_s: np.ndarray, durations_s: np.ndarray,
                       runs: int = 1, seed: int = 0) -> np.ndarray:
    """Durations drawn from the fitted model, (runs, n), with requests spaced as measured: at
    the measured start times, or, when they were timed back to back (:func:`back_to_back`),
    each starting the measured idle time after the simulated end of the one before."""
    rng = np.random.default_rng(seed)
    t = np.asarray(times_s, dtype=float)
    d = np.asarray(durations_s, dtype=float)
    w, v = np.linalg.eig(fit.generator)
    vi = np.linalg.inv(v)
    dt = np.diff(t)
    return _simulate(v.astype(np.complex128), w.astype(np.complex128), vi.astype(np.complex128),
                     _stationary(fit.generator), fit.mu, fit.sigma, np.log(fit.slowdowns), dt,
                     np.maximum(dt - d[:-1], 0.0), back_to_back(t, d),
                     rng.random((runs, t.size)), rng.standard_normal((runs, t.size)))


def check_fit(fit: SlowPeriodFit, times_s: np.ndarray, durations_s: np.ndarray,
              runs: int = CHECK_RUNS, seed: int = 0) -> Check:
    """Simulate the fitted model ``runs`` times as the data were measured (see
    :func:`simulate_durations`) and compare the lag-1 autocorrelation of the log durations and
    the slow-after-slow share with the data's."""
    sims = simulate_durations(fit, times_s, durations_s, runs=runs, seed=seed)
    logs = np.log(sims)
    d = logs - logs.mean(axis=1, keepdims=True)
    lag1 = (d[:, :-1] * d[:, 1:]).sum(axis=1) / (d * d).sum(axis=1)
    slow = sims > fit.slow_above * np.median(sims, axis=1, keepdims=True)
    first = slow[:, :-1].sum(axis=1)
    both = (slow[:, :-1] & slow[:, 1:]).sum(axis=1)
    nxt = both[first > 0] / first[first > 0]
    return Check(runs=runs, back_to_back=back_to_back(times_s, durations_s),
                 lag1_data=lag1_autocorrelation(np.log(durations_s)),
                 lag1_mean=float(lag1.mean()),
                 lag1_range=tuple(map(float, np.quantile(lag1, [0.025, 0.975]))),
                 next_slow_data=slow_after_slow(durations_s, fit.slow_above),
                 next_slow_mean=float(nxt.mean()) if nxt.size else math.nan,
                 next_slow_range=tuple(map(float, np.quantile(nxt, [0.025, 0.975])))
                 if nxt.size else (math.nan, math.nan))


# --------------------------------------------------------------------------------------------
# The whole analysis, as printed by predsim calibrate latency
# --------------------------------------------------------------------------------------------

@dataclass
class SeriesAnalysis:
    """The tests, and the slow-period fit (not independent) or the distribution fit
    (independent)."""

    series: Series
    independence: Independence
    fit: SlowPeriodFit | None
    latency: LatencyFit | None

    @property
    def independent(self) -> bool:
        return self.independence.independent

    def header(self) -> list[str]:
        s, x = self.series, self.series.durations_s
        line = (f"# predsim calibrate latency: {Path(s.source).name}, column {s.column} in the "
                f"order of {s.time_column}: {s.n:,} requests over {round_duration(s.span_s)}; "
                f"median {round_duration(float(np.median(x)))}, p99 "
                f"{round_duration(float(np.quantile(x, 0.99)))}.")
        return _wrap_comment(line)

    def to_text(self, key: str = "service_time", normal_out: str | None = None) -> str:
        """What ``predsim calibrate latency`` prints: comments, then YAML."""
        out = self.header() + self.independence.lines()
        if self.fit is None:
            line = "# So no slow periods: the distribution below draws each request on its own."
            if not self.independent:
                line += " It misses the alternation."
            if normal_out:
                line += " (--normal-out not written: there is nothing to divide out.)"
            out += _wrap_comment(line)
            out += self.latency.lines(f"{Path(self.series.source).name}, column "
                                      f"{self.series.column}")
            out.append(self.latency.snippet(key))
        else:
            out += self.fit.lines()
            out += self.fit.slow_periods_yaml()
            if normal_out:
                out += _wrap_comment(f"# Or the measured work itself (each duration divided by "
                                     f"its request's expected slowdown): {key}: {{empirical: "
                                     f"{normal_out}}}")
            out.append(self.fit.service_time_yaml(key))
        return "\n".join(out) + "\n"

    def normal_speed_csv(self) -> str:
        """Each duration divided by its request's posterior-expected slowdown, as a CSV for
        ``{empirical: FILE}`` (time order)."""
        work = self.series.durations_s / np.maximum(self.fit.expected_slowdown, 1.0)
        return "service_time_s\n" + "".join(f"{v:.9g}\n" for v in work)


def analyse_series(series: Series, states: int = 2, slow_above: float = SLOW_ABOVE,
                   alpha: float = ALPHA, check_runs: int = CHECK_RUNS) -> SeriesAnalysis:
    """Test a series for independence; fit slow periods when it is not independent in the way
    they describe (:attr:`Independence.slow_stretches`), else the distributions of
    :func:`sim.inputs.latency_fit.fit_latency`."""
    x = series.durations_s
    if not np.all(x > 0):
        zeros = int(np.count_nonzero(x <= 0))
        first = int(series.lines[np.flatnonzero(x <= 0)[0]])
        raise InputError([f"{series.source}: line {first}: {series.column}: expected a duration "
                          f"> 0 (got 0; {zeros} of {x.size} are 0); measure with a finer unit"])
    test = check_independence(x, slow_above=slow_above, alpha=alpha)
    if not test.slow_stretches:
        return SeriesAnalysis(series, test, None, fit_latency(x))
    fit = fit_slow_periods(series.times_s, x, states=states, slow_above=slow_above,
                           check_runs=check_runs)
    return SeriesAnalysis(series, test, fit, None)
