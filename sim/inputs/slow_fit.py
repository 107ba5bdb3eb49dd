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
- :func:`fit_after_idle` asks whether a duration depends on how long the replica stood idle
  before the request (its start minus the end of the one before: a CPU whose caches went cold
  while idle, a power state to leave): Spearman's rank correlation of the durations with
  those idle times, two-sided, at ``alpha``; and fits ``serving.after_idle``, the multiplier
  at a few idle times (0 and quantiles of the idle times), straight lines between them as the
  simulator reads it, by least squares on the durations over their mean, each with a 95%
  confidence interval (heteroscedasticity-robust standard errors). The multipliers are
  relative to the series' own mix of idle times (their mean over its requests is 1), so the
  durations divided by theirs are the work at the series' average. A series timed back to
  back (idle times that barely vary against the durations) or on several replicas at once
  (requests that overlap) cannot tell, and is not tested.
- :func:`analyse_series` does all three and :meth:`SeriesAnalysis.to_text` prints the result:
  ``after_idle:`` when the idle time matters (the tests and fits below are then on the
  durations divided by their multiplier), the ``slow_periods:`` and ``service_time:`` keys with
  the evidence as comments, or (independent) today's distribution fit
  (:func:`sim.inputs.latency_fit.fit_latency`).

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
from scipy import optimize, special, stats

from sim.distributions import Z_99
from sim.inputs.fit import _p_text, _wrap_comment
from sim.inputs.latency_fit import LatencyFit, fit_latency
from sim.inputs.logs import InputError
from sim.inputs.hmm import (_backward, _emissions, _forward, _pack, _prepare, _simulate,
                            _stationary, _unpack, hmm_log_likelihood,
                            hmm_log_likelihood_gradient)
from sim.inputs.series import (ALPHA, MIN_REQUESTS, SLOW_ABOVE, Z_95, Independence, Series,
                               SpeedWander, check_independence, lag1_autocorrelation,
                               slow_after_slow, speed_wander)
from sim.units import parse_duration, round_duration
from sim.units import share_rounded as _share

CHECK_RUNS = 200         # simulated series in the check of a fit
WALL = 10.0              # the slope of the quadratic wall at the bounds of the parameters
STATE_WORDS = {2: "two", 3: "three"}


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
# The idle time before each request (serving.after_idle)
# --------------------------------------------------------------------------------------------

IDLE_LEVELS = (0.25, 0.5, 0.75, 0.9, 0.99)  # quantiles of the idle times at the points fitted
IDLE_LEVELS_FEW = (0.5, 0.9)                # ... with fewer than IDLE_MANY requests
IDLE_MANY = 1000
IDLE_SHORTEST = 0.01  # the shortest idle times measured: this quantile (the first point, unless
                      # it is short enough against the durations to read as 0)
IDLE_SPREAD = 0.25  # testable when the idle times' 10-90% range is at least this x the median
                    # duration (back-to-back timing: microseconds of jitter, nothing to tell)
IDLE_KNOT_GAP = 0.05  # a point at least this x the median duration after the one before: under
                      # load a quarter or more of the idle times are a worker's own microsecond
                      # between two queued requests, and points 0.4 us apart would fit noise


def idle_before(times_s: np.ndarray, durations_s: np.ndarray) -> np.ndarray:
    """The idle time before each request of a series timed on one replica, in time order: its
    start minus the end (start + duration) of the one before; ``inf`` for the first (not known:
    counted as a replica that never served, as the simulator does)."""
    t = np.asarray(times_s, dtype=float)
    d = np.asarray(durations_s, dtype=float)
    idle = np.full(t.size, np.inf)
    idle[1:] = t[1:] - t[:-1] - d[:-1]
    return idle


def _hat_basis(x: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """Each value of ``x`` as weights on ``knots``: straight lines between them, flat beyond
    (the simulator's reading of ``after_idle``), so that ``basis @ factors`` is the factor."""
    x = np.clip(x, knots[0], knots[-1])
    basis = np.zeros((x.size, knots.size))
    if knots.size == 1:
        basis[:, 0] = 1.0
        return basis
    j = np.clip(np.searchsorted(knots, x, side="right") - 1, 0, knots.size - 2)
    share = (x - knots[j]) / (knots[j + 1] - knots[j])
    rows = np.arange(x.size)
    basis[rows, j] = 1.0 - share
    basis[rows, j + 1] += share
    return basis


@dataclass
class IdleBin:
    """The requests whose idle time before them lies in ``[low_s, high_s)``: how many, and their
    mean duration over the series' mean with its 95% confidence interval."""

    low_s: float
    high_s: float
    n: int
    ratio: float
    half_width: float


@dataclass
class AfterIdleFit:
    """Whether a series' durations depend on the idle time before each request, and the
    ``serving.after_idle`` that fits them (see :func:`fit_after_idle`)."""

    n: int                       # requests with a known idle time before them
    spearman: float              # rank correlation of duration with the idle time before it
    partial: float               # ... given the duration of the request before (the test)
    p: float                     # of the partial correlation, two-sided
    alpha: float
    knots_s: np.ndarray          # the idle times of the points, as printed
    knot_text: list[str]
    factors: np.ndarray          # the multiplier at each, relative to the series' average
    half_widths: np.ndarray      # their 95% half-widths
    bins: list[IdleBin]
    idle_s: np.ndarray = field(repr=False)   # before each request (inf: the first)
    normalised: bool = False     # fitted to duration / expected (given per request)

    @property
    def found(self) -> bool:
        """Whether the durations depend on the idle time (at the test's ``alpha``)."""
        return bool(self.p < self.alpha)

    def factor(self, idle_s) -> np.ndarray:
        """The fitted multiplier at each idle time (seconds; ``inf``: the last)."""
        x = np.atleast_1d(np.asarray(idle_s, dtype=float))
        return _hat_basis(np.where(np.isfinite(x), x, self.knots_s[-1]), self.knots_s) \
            @ self.factors

    @property
    def per_request(self) -> np.ndarray:
        """Each request's multiplier (divide a duration by it for the work at the series'
        average)."""
        return self.factor(self.idle_s)

    def spec(self) -> dict:
        """The scenario's ``serving.after_idle``, as printed (rounded)."""
        return {"idle": list(self.knot_text),
                "slowdown": [float(f"{f:.3g}") for f in self.factors]}

    def lines(self) -> list[str]:
        """The test and the fit as comment lines."""
        verdict = ("Yes" if self.found else "Not as far as this test can tell")
        noun = "duration over the one its size predicts" if self.normalised else "duration"
        out = [f"# Does a service time depend on how long the replica was idle before it (its "
               f"start minus the end of the one before)? {verdict}: Spearman rank correlation "
               f"of the {noun} with that idle time {self.spearman:+.3f} over {self.n:,} "
               f"requests, {self.partial:+.3f} given the duration of the one before (so that "
               f"start times fixed in advance do not pass the durations' own dependence off as "
               f"idling), p {_p_text(self.p)} (two-sided; at most {self.alpha:.0%} of series "
               f"without it are judged to have it).",
               "#   Mean service time over the series' mean, by idle time before it: " +
               "; ".join(f"{_idle_range(b)} {b.ratio:.3f} ± {b.half_width:.3f} "
                         f"({b.n:,})" for b in self.bins) + " (95% CI, requests)."]
        if self.found:
            out.append("#   Fitted: the work multiplied by " + ", ".join(
                f"{f:.3g} ± {h:.2g} after {k}" for f, h, k in
                zip(self.factors, self.half_widths, self.knot_text)) +
                " of idling (95% CI; straight lines between, flat beyond; relative to this "
                "series' mix of idle times: a replica busy back to back works at the first, "
                "one idle for long at the last).")
        return [w for line in out for w in _wrap_comment(line)]

    def yaml(self) -> list[str]:
        """The ``after_idle:`` key (under ``serving:``) as YAML lines."""
        out = _wrap_comment("# Paste under serving: in a scenario: the work multiplied by how "
                            "long its replica was idle before it (0 when it waited in the "
                            "queue); the service_time below is the durations divided by "
                            "theirs.")
        spec = self.spec()
        out += ["after_idle:", f"  idle: [{', '.join(spec['idle'])}]",
                f"  slowdown: [{', '.join(f'{f:g}' for f in spec['slowdown'])}]"]
        return out


def _idle_range(b: IdleBin) -> str:
    if b.low_s <= 0:
        return f"under {round_duration(b.high_s, 2)}"
    if not math.isfinite(b.high_s):
        return f"over {round_duration(b.low_s, 2)}"
    return f"{round_duration(b.low_s, 2)}-{round_duration(b.high_s, 2)}"


def fit_after_idle(times_s: np.ndarray, durations_s: np.ndarray,
                   expected_s: np.ndarray | None = None,
                   alpha: float = ALPHA) -> AfterIdleFit | None:
    """Test whether the durations of a series timed on one replica (starts ``times_s``,
    ascending, and ``durations_s``) depend on the idle time before each (:func:`idle_before`),
    and fit ``serving.after_idle``.

    The test is Spearman's rank correlation of the durations (over ``expected_s``, when given:
    what each should take for its size, so that a size that happens to follow long pauses is
    not taken for the pause) with the idle times, partial given the duration of the request
    before (the partial correlation of the three ranks, against Student's t with n - 3
    degrees of freedom, two-sided): when start times were fixed in advance, the idle time is
    the gap less the duration before, and durations that depend on each other (slow
    stretches, long and short alternating) would otherwise pass for an effect of idling. The
    cleanest series for it pauses a random time after each answer (as
    ``benchmarks/fidelity``'s calibration does). The fit: the multiplier at 0 and
    at the idle times' quantiles :data:`IDLE_LEVELS` (two significant digits; a quantile less
    than :data:`IDLE_KNOT_GAP` x the median duration past the point before is left out, as
    under load, where many idle times are a microsecond), straight lines
    between them and flat beyond, by least squares of the durations over their mean, with
    heteroscedasticity-robust (HC0) 95% intervals; then scaled so that its mean over the
    series' requests is 1. When the shortest idle times are long against the durations (the
    1% quantile a quarter of the median duration or more) the first point is that quantile
    rather than 0, flat below: what a replica does back to back was not measured, and is not
    extrapolated.

    Returns None when the series cannot tell: fewer than :data:`MIN_REQUESTS` requests, some
    overlapping (more than 1% start before the one before ends: several replicas, or not
    service times), or idle times that barely vary (their 10-90% range under
    :data:`IDLE_SPREAD` times the median duration, as when timed back to back).
    """
    t = np.asarray(times_s, dtype=float)
    d = np.asarray(durations_s, dtype=float)
    if d.size < MIN_REQUESTS + 1:
        return None
    idle = idle_before(t, d)
    typical = float(np.median(d))
    known = idle[1:]
    if np.mean(known < -1e-3 * typical) > 0.01:
        return None
    lo, hi = np.quantile(known, [0.1, 0.9])
    if hi - lo < IDLE_SPREAD * typical:
        return None
    y = d / (np.asarray(expected_s, dtype=float) if expected_s is not None else 1.0)
    y = y / y.mean()
    x = np.maximum(known, 0.0)
    z = y[1:]
    before = stats.rankdata(y[:-1])
    r_xz = stats.spearmanr(x, z).statistic
    r_xb = stats.spearmanr(x, before).statistic
    r_zb = stats.spearmanr(z, before).statistic
    denominator = math.sqrt(max((1 - r_xb ** 2) * (1 - r_zb ** 2), 1e-300))
    partial = float(np.clip((r_xz - r_xb * r_zb) / denominator, -1.0, 1.0))
    dof = x.size - 3
    p = 0.0 if abs(partial) >= 1 else \
        float(2 * stats.t.sf(abs(partial) * math.sqrt(dof / (1 - partial ** 2)), dof))
    levels = IDLE_LEVELS if x.size >= IDLE_MANY else IDLE_LEVELS_FEW
    shortest = float(np.quantile(x, IDLE_SHORTEST))
    first = 0.0 if shortest < IDLE_SPREAD * typical else shortest
    text = [round_duration(first, 2)] if first > 0 else ["0ms"]
    knots = [parse_duration(text[0])]
    for q in levels:
        word = round_duration(float(np.quantile(x, q)), 2)
        value = parse_duration(word)
        if value > knots[-1] + IDLE_KNOT_GAP * typical and value > 0:
            text.append(word)
            knots.append(value)
    knots = np.array(knots)
    basis = _hat_basis(x, knots)
    coef, *_ = np.linalg.lstsq(basis, z, rcond=None)
    resid = z - basis @ coef
    bread = np.linalg.pinv(basis.T @ basis)
    cov = bread @ ((basis * resid[:, None] ** 2).T @ basis) @ bread
    every = _hat_basis(np.where(np.isfinite(idle), np.maximum(idle, 0.0), knots[-1]), knots)
    scale = float(np.mean(every @ coef))
    factors = coef / scale
    half = Z_95 * np.sqrt(np.maximum(np.diag(cov), 0.0)) / scale
    edges = np.r_[0.0, knots[1:], np.inf] if knots[0] == 0 else np.r_[0.0, knots, np.inf]
    bins = []
    for a, b in zip(edges[:-1], edges[1:]):
        inside = (x >= a) & (x < b)
        m = int(inside.sum())
        if m >= 2:
            v = z[inside]
            bins.append(IdleBin(float(a), float(b), m, float(v.mean()),
                                float(Z_95 * v.std(ddof=1) / math.sqrt(m))))
    return AfterIdleFit(n=int(x.size), spearman=float(r_xz), partial=partial, p=p,
                        alpha=alpha, knots_s=knots, knot_text=text, factors=factors,
                        half_widths=half, bins=bins, idle_s=idle,
                        normalised=expected_s is not None)


# --------------------------------------------------------------------------------------------
# The whole analysis, as printed by predsim calibrate latency
# --------------------------------------------------------------------------------------------

@dataclass
class SeriesAnalysis:
    """The tests, and the slow-period fit (not independent) or the distribution fit
    (independent); with ``idle`` (its :attr:`AfterIdleFit.found`) both are of the work: each
    duration divided by its ``after_idle`` multiplier."""

    series: Series
    independence: Independence
    fit: SlowPeriodFit | None
    latency: LatencyFit | None
    idle: AfterIdleFit | None = None
    wander: SpeedWander | None = None

    @property
    def independent(self) -> bool:
        return self.independence.independent

    @property
    def after_idle(self) -> bool:
        """Whether the durations depend on the idle time before them (``after_idle:``)."""
        return self.idle is not None and self.idle.found

    @property
    def work_s(self) -> np.ndarray:
        """The durations the tests and fits are of: each divided by its ``after_idle``
        multiplier when the idle time matters, else as measured."""
        x = self.series.durations_s
        return x / self.idle.per_request if self.after_idle else x

    def header(self) -> list[str]:
        s, x = self.series, self.series.durations_s
        line = (f"# predsim calibrate latency: {Path(s.source).name}, column {s.column} in the "
                f"order of {s.time_column}: {s.n:,} requests over {round_duration(s.span_s)}; "
                f"median {round_duration(float(np.median(x)))}, p99 "
                f"{round_duration(float(np.quantile(x, 0.99)))}.")
        return _wrap_comment(line)

    def to_text(self, key: str = "service_time", normal_out: str | None = None) -> str:
        """What ``predsim calibrate latency`` prints: comments, then YAML."""
        out = self.header()
        if self.after_idle:
            out += self.idle.lines() + self.idle.yaml()
            out += _wrap_comment("# Below, each service time divided by its after_idle "
                                 "multiplier: the work at this series' average.")
        out += self.independence.lines()
        if self.wander is not None:
            out += self.wander.lines()
        if self.fit is None:
            line = "# So no slow periods: the distribution below draws each request on its own."
            if not self.independent:
                line += " It misses the alternation."
            if normal_out:
                line += (" (--normal-out not written: it holds the work at normal speed, with "
                         "slow periods only.)" if self.after_idle else
                         " (--normal-out not written: there is nothing to divide out.)")
            out += _wrap_comment(line)
            label = (f"{Path(self.series.source).name}, column {self.series.column}"
                     + (" over its after_idle multiplier" if self.after_idle else ""))
            out += self.latency.lines(label)
            out.append(self.latency.snippet(key) +
                       ("  # the work at this series' average" if self.after_idle else ""))
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
        work = self.work_s / np.maximum(self.fit.expected_slowdown, 1.0)
        return "service_time_s\n" + "".join(f"{v:.9g}\n" for v in work)


def analyse_series(series: Series, states: int = 2, slow_above: float = SLOW_ABOVE,
                   alpha: float = ALPHA, check_runs: int = CHECK_RUNS) -> SeriesAnalysis:
    """Test whether the durations depend on the idle time before them
    (:func:`fit_after_idle`; when they do, what follows is of each divided by its multiplier);
    test the series for independence, and whether its mean holds still over seconds
    (:func:`sim.inputs.series.speed_wander`, when it spans enough windows); fit slow periods
    when it is not independent in the way they describe
    (:attr:`Independence.slow_stretches`), else the distributions of
    :func:`sim.inputs.latency_fit.fit_latency`."""
    x = series.durations_s
    if not np.all(x > 0):
        zeros = int(np.count_nonzero(x <= 0))
        first = int(series.lines[np.flatnonzero(x <= 0)[0]])
        raise InputError([f"{series.source}: line {first}: {series.column}: expected a duration "
                          f"> 0 (got 0; {zeros} of {x.size} are 0); measure with a finer unit"])
    idle = fit_after_idle(series.times_s, x, alpha=alpha)
    if idle is not None and idle.found:
        x = x / idle.per_request
    test = check_independence(x, slow_above=slow_above, alpha=alpha)
    wander = speed_wander(series.times_s, x, alpha=alpha)
    if not test.slow_stretches:
        return SeriesAnalysis(series, test, None, fit_latency(x), idle, wander)
    fit = fit_slow_periods(series.times_s, x, states=states, slow_above=slow_above,
                           check_runs=check_runs)
    return SeriesAnalysis(series, test, fit, None, idle, wander)
