"""Bursts fitted: a Markov-modulated Poisson process (MMPP) fitted to request times.

:func:`fit_mmpp` fits the scenario's ``arrivals.mmpp`` (:class:`sim.scenario.Mmpp`) to a log's
request times by maximum likelihood: a hidden Markov chain stays in state ``i`` an exponential
time with mean ``d_i``, then jumps to one of the *other* states, each equally likely (for two
states it alternates), and requests arrive at rate ``r_i`` times a known profile ``p(t)`` (1
without one) while it is in state ``i``.

Method: the exact likelihood of the gaps between requests, not counts in intervals. With
``D0 = Q - p Lambda`` and ``D1 = p Lambda`` (``Lambda = diag(r)``), the likelihood of the gaps
``tau_1 .. tau_{n-1}`` after the first request is the forward recursion
``alpha_k = alpha_{k-1} expm(D0 tau_k) D1`` from the chain's state at a request
(``pi * r``, normalised), rescaled every step. The symmetric jump chain makes the chain
reversible, so ``D0`` is similar to a symmetric matrix
(``diag(q)^(1/2) (P - I) diag(q)^(1/2) - p Lambda``, ``q_i = 1 / d_i``): one ``eigh`` per
distinct profile value gives ``expm(D0 tau)`` for every gap (beyond 2,048 values, per 0.2% step
of the value, the rest applied as a symmetric first-order correction), and a compiled loop does
the recursion (about 5 ms per 10^5 requests). Counts in intervals (Baum-Welch on a
Poisson HMM) would need an interval short against the sojourns yet long enough to hold
requests, and would blur switches inside an interval (sojourns biased long, multipliers pulled
together); the gaps have no such choice and no such bias.

The rates and sojourns are optimised on the log scale (SLSQP within bounds, central-difference
gradients; L-BFGS-B is as good but far slower where OpenBLAS threads its tiny matrices)
from the two most likely of several starts: 1-D k-means of the request rate in bins of a few
widths, and for three states the two-state fit with a state split in two. The standard
errors come from the observed information (a numerical Hessian of the log-likelihood),
carried to the normalised multipliers by the delta method; the 95% intervals are on the log
scale. For three states only the scenario's model (equally likely jumps) is fitted.

With a profile (the fitted daily profile evaluated at each request time, or a callable of
time), state ``i``'s rate is ``r_i p(t)``: a daily cycle is then part of the known rate and is
not taken for bursts. ``p`` is held constant over each gap (the mean of its ends, or its value
at the gap's midpoint for a callable).
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from numba import njit
from scipy import optimize

from sim.units import round_duration

MIN_REQUESTS = 50
DISPERSION_INTERVALS_S = (1.0, 10.0, 60.0, 300.0, 900.0, 3600.0)
_INTERVAL_NAMES = {1.0: "second", 10.0: "10 seconds", 60.0: "minute", 300.0: "5 minutes",
                   900.0: "15 minutes", 3600.0: "hour"}
_EXACT_GROUPS = 2048      # distinct profile values used exactly; more are grouped
_GROUP_STEP = 2e-3        # grouping step of log p (the rest is a first-order correction)
_Z95 = 1.959963984540054


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelScore:
    """One model's fit: ``states`` 1 is Poisson (with the profile, if any)."""

    states: int
    parameters: int
    log_likelihood: float
    aic: float
    bic: float


@dataclass(frozen=True)
class DispersionCheck:
    """The index of dispersion of requests per ``interval_s`` around the profile: measured
    (Pearson's X^2 / (intervals - 1)) and what the fitted MMPP predicts (Poisson: 1)."""

    interval_s: float
    intervals: int
    measured: float
    predicted: float


@dataclass
class StateFit:
    """One fitted MMPP: rates (per second, in the profile's units) and mean sojourns, states in
    increasing order of rate; ``covariance`` of the log rates then the log sojourns (None when
    the information matrix is not positive definite)."""

    rates: np.ndarray
    sojourn_s: np.ndarray
    log_likelihood: float
    covariance: np.ndarray | None
    on_boundary: bool

    @property
    def states(self) -> int:
        return int(self.rates.size)

    @property
    def parameters(self) -> int:
        return 2 * self.states

    @property
    def stationary(self) -> np.ndarray:
        return self.sojourn_s / self.sojourn_s.sum()

    @property
    def mean_rate(self) -> float:
        return float(self.stationary @ self.rates)

    @property
    def multipliers(self) -> np.ndarray:
        return self.rates / self.mean_rate


@dataclass
class MmppFit:
    """What :func:`fit_mmpp` found: the ``states``-state MMPP (:attr:`multipliers` normalised to
    a long-run mean of 1, :attr:`mean_sojourn_s`), the evidence against Poisson, and a check of
    fit. :meth:`section` is the ``arrivals`` entry, :meth:`lines` the evidence as comments."""

    n_requests: int
    span_s: float
    profile_given: bool
    rate_per_s: float                    # mean rate over the log (with the profile's mean)
    states: int
    multipliers: np.ndarray
    mean_sojourn_s: np.ndarray
    multiplier_se: np.ndarray
    mean_sojourn_se: np.ndarray
    multiplier_ci95: np.ndarray          # (states, 2)
    mean_sojourn_ci95: np.ndarray        # (states, 2)
    log_likelihood: float
    poisson_log_likelihood: float
    scores: dict[int, ModelScore]
    dispersion: list[DispersionCheck]
    bootstrap_draws: int = 0
    bootstrap_p_value: float | None = None
    on_boundary: bool = False
    fits: dict[int, StateFit] = field(default_factory=dict, repr=False)

    @property
    def stationary(self) -> np.ndarray:
        """Long-run share of time in each state."""
        return self.mean_sojourn_s / self.mean_sojourn_s.sum()

    @property
    def lr_statistic(self) -> float:
        """2 x (log-likelihood of this MMPP - that of Poisson). Under Poisson it has no
        chi-square law: the sojourns mean nothing when the rates are equal (they are not
        identified) and the rates sit on the boundary of the model, so neither chi-square with
        2 (states - 1) degrees of freedom nor any fixed mixture applies; use
        :attr:`bootstrap_p_value` (``bootstrap=`` draws) or the BIC."""
        return 2.0 * (self.log_likelihood - self.poisson_log_likelihood)

    @property
    def preferred_states(self) -> int:
        """The number of states with the lowest BIC (1: Poisson)."""
        return min(self.scores.values(), key=lambda s: s.bic).states

    @property
    def bursty(self) -> bool:
        """True when the BIC prefers an MMPP (2 or more states) to Poisson, and a bootstrap,
        when run, rejects Poisson at the 5% level (which needs 19 draws or more)."""
        if self.preferred_states == 1:
            return False
        return self.bootstrap_p_value is None or self.bootstrap_p_value <= 0.05

    def section(self) -> dict:
        """``{"mmpp": {"multipliers": [...], "mean_sojourn": [...]}}``: multipliers to 3
        significant digits, durations rounded to 3 significant digits in scenario syntax."""
        return {"mmpp": {"multipliers": [float(f"{m:.3g}") for m in self.multipliers],
                         "mean_sojourn": [round_duration(d) for d in self.mean_sojourn_s]}}

    def lines(self) -> list[str]:
        """The fit and its evidence in plain language, as ``#`` comment lines."""
        out = []
        gaps = self.n_requests - 1
        basis = ("around the given rate profile (a daily cycle is not a burst)"
                 if self.profile_given else "with no rate profile (a daily cycle or a trend "
                                            "would show as slow states)")
        score = {s: self.scores[s] for s in sorted(self.scores)}
        gain = self.log_likelihood - self.poisson_log_likelihood
        bic = ", ".join(f"{s} state{'s' if s > 1 else ''} {v.bic:,.1f}" for s, v in score.items())
        if self.bootstrap_p_value is not None:
            test = (f"parametric bootstrap p {_p_text(self.bootstrap_p_value)} "
                    f"({self.bootstrap_draws} Poisson logs refitted)")
        else:
            test = ("no p-value: under Poisson this statistic has no chi-square law, the "
                    "states being unidentified; the BIC decides")
        out.append(f"# Bursts: a {self.states}-state MMPP (Markov-modulated Poisson) fitted by "
                   f"maximum likelihood to the {gaps:,} gaps between requests {basis}: "
                   f"log-likelihood {gain:+,.1f} over Poisson (LR {self.lr_statistic:,.1f}; "
                   f"{test}); BIC {bic} (lower is better).")
        if self.bursty:
            states = []
            for i in range(self.states):
                m_ci = _ci(*self.multiplier_ci95[i], lambda x: f"{x:.3g}")
                d_ci = _ci(*self.mean_sojourn_ci95[i], round_duration)
                states.append(f"{self.multipliers[i]:.3g} x the mean rate (95% CI {m_ci}) for "
                              f"{round_duration(self.mean_sojourn_s[i])} at a time (95% CI "
                              f"{d_ci}), {self.stationary[i]:.0%} of the time")
            out.append("# The traffic switches between states at random: " + "; ".join(states)
                       + ". arrivals.mmpp gives that.")
            if self.preferred_states != self.states:
                out.append(f"# The BIC prefers {self.preferred_states} states to the "
                           f"{self.states} fitted here.")
        elif self.preferred_states == 1:
            where = " around the profile" if self.profile_given else ""
            out.append(f"# No bursts beyond Poisson{where}: the BIC prefers Poisson to an MMPP; "
                       f"keep arrivals without mmpp.")
        else:
            smallest = 1 / (self.bootstrap_draws + 1)
            out.append(f"# No clear bursts: the BIC prefers {self.preferred_states} states but "
                       f"the bootstrap does not reject Poisson at the 5% level; keep arrivals "
                       f"without mmpp (or rerun with more bootstrap draws: the smallest p-value "
                       f"{self.bootstrap_draws} draws can give is {smallest:.3g}).")
        if self.on_boundary:
            out.append("# A fitted value reached the edge of its range (a state with almost no "
                       "requests, or sojourns far shorter than the gaps or longer than the "
                       "log): its standard error is not given.")
        if self.dispersion:
            checks = "; ".join(f"per {_INTERVAL_NAMES[d.interval_s]} {d.measured:.3g} (model "
                               f"{d.predicted:.3g})" for d in self.dispersion)
            out.append(f"# Check of fit: index of dispersion of requests measured vs the fitted "
                       f"model (Poisson: 1): {checks}.")
        return [w for line in out for w in _wrap(line)]


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------

@dataclass
class _Data:
    t0: float                 # the first request's time, as given
    t: np.ndarray             # times since the first request
    tau: np.ndarray           # gaps (n - 1)
    p_emit: np.ndarray        # profile at each request (n)
    p_gap: np.ndarray         # profile over each gap (n - 1)
    group: np.ndarray         # group of each gap's profile value
    group_p: np.ndarray       # the group's profile value
    dp: np.ndarray            # p_gap - group_p
    exposure: np.ndarray      # integral of the profile from the first request to each (n)
    log_p_sum: float          # sum of log p at requests 2..n
    profile: object           # what was given: None, an array (n) or a callable

    @property
    def n(self) -> int:
        return int(self.t.size)

    @property
    def span_s(self) -> float:
        return float(self.t[-1])

    @property
    def poisson_rate(self) -> float:
        """Maximum-likelihood rate in the profile's units."""
        return (self.n - 1) / float(self.exposure[-1])


def _prepare(times_s, profile) -> _Data:
    t = np.asarray(times_s, dtype=float).ravel()
    if t.size and not np.all(np.isfinite(t)):
        raise ValueError("request times must be finite numbers (got NaN or infinity)")
    if t.size < MIN_REQUESTS:
        raise ValueError(f"an MMPP fit needs at least {MIN_REQUESTS} requests (got {t.size})")
    order = np.argsort(t, kind="stable")
    t = t[order]
    if t[-1] == t[0]:
        raise ValueError(f"all {t.size} requests are at the same time: there are no gaps to fit")
    t0 = float(t[0])
    rel = t - t0
    tau = np.diff(rel)
    if profile is None:
        p_emit, p_gap = np.ones(t.size), np.ones(tau.size)
    elif callable(profile):
        p_emit = np.asarray(profile(t), dtype=float)
        p_gap = np.asarray(profile(t[:-1] + tau / 2), dtype=float)
        if p_emit.shape != t.shape or p_gap.shape != tau.shape:
            raise ValueError("profile(t) must return one multiplier per time")
    else:
        p_emit = np.asarray(profile, dtype=float).ravel()
        if p_emit.size != t.size:
            raise ValueError(f"profile must give one multiplier per request ({t.size}), or be "
                             f"a callable of time (got {p_emit.size} values)")
        p_emit = p_emit[order]
        p_gap = (p_emit[:-1] + p_emit[1:]) / 2
    if not (np.all(np.isfinite(p_emit)) and np.all(np.isfinite(p_gap))):
        raise ValueError("profile multipliers must be finite")
    if np.any(p_emit <= 0) or np.any(p_gap < 0):
        raise ValueError("the profile must be > 0 at every request time (a request where the "
                         "profile says no traffic is impossible)")
    if profile is None:
        group, group_p, dp = np.zeros(tau.size, np.int64), np.ones(1), np.zeros(tau.size)
    else:
        values, inverse = np.unique(p_gap, return_inverse=True)
        if values.size <= _EXACT_GROUPS:
            group, group_p, dp = inverse.astype(np.int64), values, np.zeros(tau.size)
        else:
            key = np.round(np.log(np.maximum(p_gap, 1e-300)) / _GROUP_STEP).astype(np.int64)
            keys, group = np.unique(key, return_inverse=True)
            group_p = np.exp(keys * _GROUP_STEP)
            dp = p_gap - group_p[group]
            group = group.astype(np.int64)
    exposure = np.concatenate([[0.0], np.cumsum(p_gap * tau)])
    if not exposure[-1] > 0:
        raise ValueError("the profile is 0 over the whole log")
    return _Data(t0=t0, t=rel, tau=tau, p_emit=p_emit, p_gap=p_gap, group=group,
                 group_p=np.asarray(group_p, float), dp=dp, exposure=exposure,
                 log_p_sum=float(np.sum(np.log(p_emit[1:]))), profile=profile)


# --------------------------------------------------------------------------------------------
# Likelihood
# --------------------------------------------------------------------------------------------

def _jump_matrix(k: int) -> np.ndarray:
    """P - I of the symmetric jump chain: to each other state with probability 1 / (k - 1)."""
    return (np.ones((k, k)) - k * np.eye(k)) / (k - 1)


def _log_likelihood(theta: np.ndarray, k: int, data: _Data) -> float:
    """Log-likelihood of the gaps (and of each request after the first) given the first
    request; ``theta`` is the log rates then the log mean sojourns."""
    rates = np.exp(theta[:k])
    q = np.exp(-theta[k:])
    sq = np.sqrt(q)
    base = sq[:, None] * _jump_matrix(k) * sq[None, :]
    h = base[None, :, :] - data.group_p[:, None, None] * np.diag(rates)[None, :, :]
    mu, u = np.linalg.eigh(h)                      # ascending: mu[:, -1] is the largest
    top = mu[:, -1].copy()
    a = sq[None, :, None] * u                      # diag(sqrt q) U
    b = np.transpose(u, (0, 2, 1)) / sq[None, None, :]  # U^T diag(1 / sqrt q)
    pi = 1.0 / q
    alpha0 = pi * rates
    alpha0 /= alpha0.sum()
    value = _forward(data.tau, data.group, data.dp, data.p_emit, a, b, mu - top[:, None], top,
                     rates, alpha0)
    return float(value + data.log_p_sum)


@njit(cache=True, nogil=True)
def _forward(tau, group, dp, p_emit, a, b, mu, top, rates, alpha0):
    """Sum of the log scale factors of the forward recursion (without the profile's log p)."""
    k = rates.shape[0]
    alpha = alpha0.copy()
    v = np.empty(k)
    w = np.empty(k)
    total = 0.0
    for j in range(tau.shape[0]):
        g = group[j]
        t = tau[j]
        if dp[j] != 0.0:  # half the profile's correction before the gap, half after
            for i in range(k):
                alpha[i] *= math.exp(-0.5 * dp[j] * rates[i] * t)
        for c in range(k):
            s = 0.0
            for i in range(k):
                s += alpha[i] * a[g, i, c]
            v[c] = s * math.exp(mu[g, c] * t)
        norm = 0.0
        for c in range(k):
            s = 0.0
            for i in range(k):
                s += v[i] * b[g, i, c]
            s *= rates[c]
            if dp[j] != 0.0:
                s *= math.exp(-0.5 * dp[j] * rates[c] * t)
            if s < 0.0:
                s = 0.0
            w[c] = s
            norm += s
        if not norm > 0.0:
            return -np.inf
        total += math.log(norm) + top[g] * t
        for c in range(k):
            alpha[c] = w[c] / norm
    return total


def _poisson_log_likelihood(data: _Data) -> float:
    c = data.poisson_rate
    return (data.n - 1) * math.log(c) - c * float(data.exposure[-1]) + data.log_p_sum


# --------------------------------------------------------------------------------------------
# Fitting
# --------------------------------------------------------------------------------------------

def _bounds(data: _Data, k: int) -> list[tuple[float, float]]:
    c = math.log(data.poisson_rate)
    mean_gap = data.span_s / (data.n - 1)
    return ([(c - math.log(1e4), c + math.log(1e4))] * k
            + [(math.log(mean_gap / 100), math.log(10 * data.span_s))] * k)


def _starts(data: _Data, k: int) -> list[np.ndarray]:
    """Starting points: for bins of a few widths, 1-D k-means of each bin's rate; the rate of
    each cluster and its mean run length."""
    out = []
    mean_gap = data.span_s / (data.n - 1)
    bounds = np.array(_bounds(data, k))
    for per_bin in (3.0, 10.0, 30.0, 100.0):
        width = per_bin * mean_gap
        bins = int(data.span_s // width)
        if bins < 10 * k:
            continue
        edges = np.arange(bins + 1) * width
        counts = np.bincount(np.minimum((data.t // width).astype(np.int64), bins),
                             minlength=bins + 1)[:bins].astype(float)
        exposure = np.diff(np.interp(edges, data.t, data.exposure))
        ok = exposure > 0
        if ok.sum() < 10 * k:
            continue
        x = counts[ok] / exposure[ok]
        centres = np.quantile(x, np.linspace(0.15, 0.95, k))
        for _ in range(50):
            label = np.argmin(np.abs(x[:, None] - centres[None, :]), axis=1)
            new = np.array([x[label == i].mean() if np.any(label == i) else centres[i]
                            for i in range(k)])
            if np.allclose(new, centres):
                break
            centres = new
        if np.unique(label).size < k:
            continue
        rates = np.array([counts[ok][label == i].sum() / exposure[ok][label == i].sum()
                          for i in range(k)])
        runs = np.flatnonzero(np.diff(label)) + 1
        starts_at = np.concatenate([[0], runs])
        lengths = np.diff(np.concatenate([starts_at, [label.size]]))
        sojourn = np.array([lengths[label[starts_at] == i].mean() * width for i in range(k)])
        theta = np.concatenate([np.log(np.maximum(rates, 1e-3 * data.poisson_rate)),
                                np.log(sojourn)])
        out.append(np.clip(theta, bounds[:, 0] + 1e-6, bounds[:, 1] - 1e-6))
    spread = np.geomspace(0.5, 3.0, k) if k > 1 else np.ones(1)
    fallback = np.concatenate([np.log(data.poisson_rate * spread),
                               np.log(np.full(k, data.span_s / 50))])
    out.append(np.clip(fallback, bounds[:, 0] + 1e-6, bounds[:, 1] - 1e-6))
    return out


def _fit_states(data: _Data, k: int, smaller: StateFit | None = None, runs: int = 2,
                information: bool = True) -> StateFit:
    """The maximum-likelihood ``k``-state MMPP: SLSQP from the ``runs`` starting points
    (:func:`_starts`, and for three states the two-state fit ``smaller`` with a state split in
    two) with the highest likelihood; with ``information``, the covariance from the observed
    information."""
    bounds = _bounds(data, k)
    scale = max(1.0, float(data.n))

    def objective(theta):
        value = _log_likelihood(theta, k, data)
        return -value / scale if np.isfinite(value) else 1e10

    def gradient(theta, h=1e-5):
        g = np.empty_like(theta)
        for i in range(theta.size):
            e = np.zeros_like(theta)
            e[i] = h
            g[i] = (objective(theta + e) - objective(theta - e)) / (2 * h)
        return g

    starts = _starts(data, k)
    if smaller is not None and smaller.states == k - 1:
        starts += _split_starts(smaller, bounds)
    ranked = sorted(starts, key=objective)[:runs]
    best = None
    for start in ranked:
        result = optimize.minimize(objective, start, jac=gradient, method="SLSQP",
                                   bounds=bounds, options={"maxiter": 500, "ftol": 1e-10})
        if best is None or result.fun < best.fun:
            best = result
    theta = best.x
    order = np.argsort(theta[:k], kind="stable")
    theta = np.concatenate([theta[:k][order], theta[k:][order]])
    lows, highs = np.array(bounds).T
    boundary = bool(np.any(theta - lows < 1e-3) or np.any(highs - theta < 1e-3))
    covariance = None
    if information and not boundary:
        hess = _hessian(lambda th: _log_likelihood(th, k, data), theta)
        try:
            info = -hess
            np.linalg.cholesky(info)
            covariance = np.linalg.inv(info)
        except np.linalg.LinAlgError:
            covariance = None
    return StateFit(rates=np.exp(theta[:k]), sojourn_s=np.exp(theta[k:]),
                    log_likelihood=_log_likelihood(theta, k, data), covariance=covariance,
                    on_boundary=boundary)


def _split_starts(fit: StateFit, bounds) -> list[np.ndarray]:
    """Starting points for one more state: each state of ``fit`` split in two with rates 0.8
    and 1.25 times its own and half its mean sojourn each (with equal rates that split is the
    same process as ``fit``, since the time spent in the pair is then exponential with the
    state's mean)."""
    out = []
    lows, highs = np.array(bounds).T
    for i in range(fit.states):
        rates = np.concatenate([np.delete(fit.rates, i), fit.rates[i] * np.array([0.8, 1.25])])
        sojourn = np.concatenate([np.delete(fit.sojourn_s, i), np.full(2, fit.sojourn_s[i] / 2)])
        theta = np.log(np.concatenate([rates, sojourn]))
        out.append(np.clip(theta, lows + 1e-6, highs - 1e-6))
    return out


def _hessian(f: Callable[[np.ndarray], float], x: np.ndarray, h: float = 2e-3) -> np.ndarray:
    """Central-difference Hessian."""
    n = x.size
    f0 = f(x)
    hess = np.empty((n, n))
    e = np.eye(n) * h
    plus = np.array([f(x + e[i]) for i in range(n)])
    minus = np.array([f(x - e[i]) for i in range(n)])
    for i in range(n):
        hess[i, i] = (plus[i] - 2 * f0 + minus[i]) / h ** 2
        for j in range(i + 1, n):
            value = (f(x + e[i] + e[j]) - f(x + e[i] - e[j]) - f(x - e[i] + e[j])
                     + f(x - e[i] - e[j])) / (4 * h ** 2)
            hess[i, j] = hess[j, i] = value
    return hess


def _normalised_multipliers(theta: np.ndarray, k: int) -> np.ndarray:
    rates, sojourn = np.exp(theta[:k]), np.exp(theta[k:])
    return rates / float(sojourn @ rates / sojourn.sum())


def _uncertainty(fit: StateFit):
    """Standard errors and 95% intervals (log scale) of the multipliers and mean sojourns."""
    k = fit.states
    m, d = fit.multipliers, fit.sojourn_s
    if fit.covariance is None:
        nan = np.full(k, np.nan)
        return nan, nan, np.full((k, 2), np.nan), np.full((k, 2), np.nan)
    theta = np.concatenate([np.log(fit.rates), np.log(d)])
    jac = np.empty((k, 2 * k))  # d log m / d theta
    for i in range(2 * k):
        e = np.zeros(2 * k)
        e[i] = 1e-6
        jac[:, i] = (np.log(_normalised_multipliers(theta + e, k))
                     - np.log(_normalised_multipliers(theta - e, k))) / 2e-6
    se_log_m = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", jac, fit.covariance, jac), 0))
    se_log_d = np.sqrt(np.maximum(np.diag(fit.covariance)[k:], 0))
    m_ci = np.column_stack([m * np.exp(-_Z95 * se_log_m), m * np.exp(_Z95 * se_log_m)])
    d_ci = np.column_stack([d * np.exp(-_Z95 * se_log_d), d * np.exp(_Z95 * se_log_d)])
    return m * se_log_m, d * se_log_d, m_ci, d_ci


def _dispersion_checks(data: _Data, fit: StateFit) -> list[DispersionCheck]:
    """Index of dispersion of counts per interval (of 1s .. 1h, those expecting at least 5
    requests and with at least 30 whole intervals in the log) around the Poisson fit's expected
    counts, and the fitted MMPP's prediction: ``1 + p V(w) / (lambda w)`` averaged over the
    intervals, ``V(w) = 2 sum_l a_l^2 (e^(nu_l w) - 1 - nu_l w) / nu_l^2`` from the eigenvalues
    ``nu_l`` of the chain's (symmetrised) generator."""
    k = fit.states
    q = 1.0 / fit.sojourn_s
    sq = np.sqrt(q)
    nu, v = np.linalg.eigh(sq[:, None] * _jump_matrix(k) * sq[None, :])
    a = v.T @ (np.sqrt(fit.stationary) * fit.rates)
    keep = nu < -1e-12 * q.max()
    lam = fit.mean_rate
    c = data.poisson_rate
    out = []
    for width in DISPERSION_INTERVALS_S:
        intervals = int(data.span_s // width)
        if intervals < 30 or c * float(data.exposure[-1]) / data.span_s * width < 5:
            continue
        edges = np.arange(intervals + 1) * width
        counts = np.bincount((data.t // width).astype(np.int64),
                             minlength=intervals + 1)[:intervals]
        p_int = np.diff(np.interp(edges, data.t, data.exposure)) / width
        expected = c * p_int * width
        ok = expected > 0
        if ok.sum() < 30:
            continue
        measured = float(np.sum((counts[ok] - expected[ok]) ** 2 / expected[ok]) / (ok.sum() - 1))
        x = nu[keep] * width
        variance = 2 * float(np.sum(a[keep] ** 2 * (np.expm1(x) - x) / nu[keep] ** 2))
        predicted = 1.0 + float(np.mean(p_int[ok])) * variance / (lam * width)
        out.append(DispersionCheck(interval_s=width, intervals=int(ok.sum()), measured=measured,
                                   predicted=predicted))
    return out


def fit_mmpp(times_s, states: int | str = 2, profile=None, max_states: int = 3,
             bootstrap: int = 0, seed: int = 0) -> MmppFit:
    """Fit a ``states``-state MMPP (2 or 3; ``"auto"``: the one of 2 and 3 with the lower BIC)
    to request times (seconds, any origin) by maximum likelihood.

    ``profile``: None, one rate multiplier per request time (e.g. the fitted daily profile at
    each request), or a callable of the same times returning multipliers; the MMPP then
    modulates that known profile. Poisson and MMPPs of up to ``max_states`` states are fitted
    for the AIC/BIC table. ``bootstrap``: that many Poisson logs (same number of requests, same
    profile) are simulated and refitted for a p-value of the likelihood-ratio statistic (each
    costs about a fit). Raises ValueError for fewer than 50 requests, all requests at one time,
    non-finite times, or a profile that is not > 0 at the requests.
    """
    if states not in (2, 3, "auto"):
        raise ValueError(f"states must be 2, 3 or 'auto' (got {states!r})")
    data = _prepare(times_s, profile)
    wanted = (2, 3) if states == "auto" else (states,)
    fits: dict[int, StateFit] = {}
    for k in range(2, max(max_states, *wanted) + 1):
        fits[k] = _fit_states(data, k, fits.get(k - 1))
    poisson = _poisson_log_likelihood(data)
    n = data.n - 1
    scores = {1: _score(1, 1, poisson, n)}
    for k, f in fits.items():
        scores[k] = _score(k, f.parameters, f.log_likelihood, n)
    chosen = min(wanted, key=lambda k: scores[k].bic)
    fit = fits[chosen]
    m_se, d_se, m_ci, d_ci = _uncertainty(fit)
    p_value = None
    if bootstrap > 0:
        lr = 2 * (fit.log_likelihood - poisson)
        draws = _bootstrap_lr(data, chosen, bootstrap, seed)
        p_value = float((1 + np.sum(draws >= lr)) / (bootstrap + 1))
    profile_mean = float(data.exposure[-1]) / data.span_s
    return MmppFit(n_requests=data.n, span_s=data.span_s, profile_given=profile is not None,
                   rate_per_s=fit.mean_rate * profile_mean, states=chosen,
                   multipliers=fit.multipliers, mean_sojourn_s=fit.sojourn_s,
                   multiplier_se=m_se, mean_sojourn_se=d_se, multiplier_ci95=m_ci,
                   mean_sojourn_ci95=d_ci, log_likelihood=fit.log_likelihood,
                   poisson_log_likelihood=poisson, scores=scores,
                   dispersion=_dispersion_checks(data, fit), bootstrap_draws=int(bootstrap),
                   bootstrap_p_value=p_value, on_boundary=fit.on_boundary, fits=fits)


def _score(states: int, parameters: int, log_likelihood: float, n: int) -> ModelScore:
    return ModelScore(states=states, parameters=parameters, log_likelihood=log_likelihood,
                      aic=2 * parameters - 2 * log_likelihood,
                      bic=parameters * math.log(n) - 2 * log_likelihood)


def _bootstrap_lr(data: _Data, k: int, draws: int, seed: int) -> np.ndarray:
    """Likelihood-ratio statistics of ``draws`` Poisson logs with the same number of requests
    and the same profile: the first request where the log's is, the others placed by the
    inverse of the profile's integral; each fitted as the log was (no standard errors)."""
    rng = np.random.default_rng(seed)
    out = np.empty(draws)
    for b in range(draws):
        u = np.sort(rng.uniform(0.0, float(data.exposure[-1]), data.n - 1))
        rel = np.concatenate([[0.0], np.interp(u, data.exposure, data.t)])
        times = data.t0 + rel
        if data.profile is None:
            prof = None
        elif callable(data.profile):
            prof = data.profile
        else:
            prof = np.interp(rel, data.t, data.p_emit)
        sim = _prepare(times, prof)
        fit = _fit_states(sim, k, information=False)
        out[b] = 2 * (fit.log_likelihood - _poisson_log_likelihood(sim))
    return out


# --------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------

def _p_text(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"= {p:.3f}"


def _ci(lo: float, hi: float, fmt: Callable[[float], str]) -> str:
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "not estimable"
    return f"{fmt(lo)} to {fmt(hi)}"


def _wrap(line: str, width: int = 100) -> list[str]:
    return textwrap.wrap(line, width=width, subsequent_indent="#   ",
                         break_on_hyphens=False) or [line]


__all__ = ["fit_mmpp", "MmppFit", "ModelScore", "DispersionCheck", "StateFit"]
