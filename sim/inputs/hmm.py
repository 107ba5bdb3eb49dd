"""The slow-period model as a continuous-time hidden Markov model of service times: its
transition matrices over the gaps between requests, the forward and backward algorithms, the
log-likelihood and its gradient (numba kernels), and simulation of a series from a fit. Used by
:mod:`sim.inputs.slow_fit`.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

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
