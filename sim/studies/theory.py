"""Closed forms the simulator is checked against (queueing theory, age of information)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def erlang_c(arrival_per_s: float, service_per_s: float, servers: int) -> tuple[float, float]:
    """M/M/c: (probability that a request waits, mean wait in seconds). Requires rho < 1."""
    a = arrival_per_s / service_per_s
    rho = a / servers
    if rho >= 1:
        raise ValueError("unstable queue: offered load per server must be < 1")
    # Erlang B by the stable recursion, then C = B / (1 - rho (1 - B))
    b = 1.0
    for k in range(1, servers + 1):
        b = a * b / (k + a * b)
    p_wait = b / (1 - rho * (1 - b))
    return p_wait, p_wait / (servers * service_per_s - arrival_per_s)


def mm1_response_quantile(arrival_per_s: float, service_per_s: float, q: float) -> float:
    """M/M/1: the response time (wait + service) is exponential with rate mu - lambda."""
    return -math.log(1 - q) / (service_per_s - arrival_per_s)


def pollaczek_khinchine_wait(arrival_per_s: float, service_mean_s: float,
                             service_second_moment_s2: float) -> float:
    """M/G/1 mean wait: lambda E[S^2] / (2 (1 - rho))."""
    rho = arrival_per_s * service_mean_s
    if rho >= 1:
        raise ValueError("unstable queue: rho must be < 1")
    return arrival_per_s * service_second_moment_s2 / (2 * (1 - rho))


def periodic_age(period_s: float, lag_s: float) -> tuple[float, float]:
    """Refresh every T, visible L after its cut-off: (mean, maximum) age seen by Poisson
    requests = (L + T/2, L + T)."""
    return lag_s + period_s / 2, lag_s + period_s


def renewal_age_mean(lag_mean_s: float, interval_mean_s: float,
                     interval_second_moment_s2: float) -> float:
    """Renewal refreshes with intervals X: mean age E[L] + E[X^2] / (2 E[X])
    (age of information; Kaul, Yates and Gruteser, INFOCOM 2012)."""
    return lag_mean_s + interval_second_moment_s2 / (2 * interval_mean_s)


def failing_refresh_age(period_s: float, lag_s: float, failure_probability: float) -> float:
    """Refreshes scheduled every T, each visible L after its cut-off (its scheduled start),
    each failing independently with probability p and then lost (no retries): the mean age
    seen by Poisson requests, L + T (1 + p) / (2 (1 - p)).

    Age of information: between the moments two consecutive successful refreshes become
    visible, a time G apart, the age climbs from L to L + G (every refresh takes the same L, so
    they become visible in the order of their cut-offs and G is also the gap between the
    cut-offs). G = (K + 1) T, with K, the failures before the next success, geometric:
    P(K = k) = p^k (1 - p). So E[G] = T / (1 - p) and E[G^2] = T^2 E[(K + 1)^2] =
    T^2 (1 + p) / (1 - p)^2, and by renewal reward the time-average age is
    (E[L G] + E[G^2] / 2) / E[G] = L + E[G^2] / (2 E[G]) = L + T (1 + p) / (2 (1 - p)),
    which Poisson requests see (PASTA). At p = 0 this is :func:`periodic_age`'s L + T/2; the
    run time of a failed run does not matter, since nothing of it becomes visible.
    """
    _check_probability(failure_probability)
    p = failure_probability
    return lag_s + period_s * (1 + p) / (2 * (1 - p))


def failing_refresh_age_survival(period_s: float, lag_s: float, failure_probability: float,
                                 age_s: float) -> float:
    """P(age > a) for :func:`failing_refresh_age`'s refreshes: 1 below L, and with
    a - L = m T + r (m a whole number, 0 <= r < T), p^m (1 - r (1 - p) / T).

    In a gap G between visible refreshes the age exceeds L + y for a time (G - y)^+, so the
    share of time is E[(G - y)^+] / E[G]. G >= (m + 1) T exactly when the first m refreshes
    fail (probability p^m), and then, by the geometric's lack of memory, G - m T is distributed
    as G: E[(G - y)^+] = p^m (E[G] - r). In particular P(age > L + m T) = p^m: the share of
    requests whose features come from before the last m scheduled refreshes.
    """
    _check_probability(failure_probability)
    y = age_s - lag_s
    if y < 0:
        return 1.0
    m = math.floor(y / period_s)
    r = y - m * period_s
    p = failure_probability
    return p ** m * (1 - r * (1 - p) / period_s)


def outage_age(up_mean_s: float, outage_s: float, lag_s: float = 0.0) -> float:
    """Features of a stream processor where every event is its own update (window 0) seen a
    constant ``lag`` after the event, with outages of a fixed length D separated by up times of
    mean U (any distribution): the mean age seen by Poisson requests, L + (D^2 / 2) / (U + D).

    Outside outages the newest processed event is the one just in, so the age is L; during an
    outage nothing is processed and the age is L plus the time since the outage began, climbing
    from L to L + D. By renewal reward over cycles of an up time and an outage (mean length
    U + D, excess age D^2 / 2 per cycle) the time-average is L + (D^2 / 2) / (U + D), which
    Poisson requests see (PASTA).
    """
    return lag_s + outage_s ** 2 / 2 / (up_mean_s + outage_s)


def outage_age_survival(up_mean_s: float, outage_s: float, age_s: float,
                        lag_s: float = 0.0) -> float:
    """P(age > a) for :func:`outage_age`'s features: 1 below L, else (D - (a - L))^+ / (U + D),
    the share of each cycle spent more than a - L into an outage."""
    if age_s < lag_s:
        return 1.0
    return max(0.0, outage_s - (age_s - lag_s)) / (up_mean_s + outage_s)


def _check_probability(p: float) -> None:
    if not 0 <= p < 1:
        raise ValueError(f"the failure probability must be in [0, 1) (got {p:g}): at 1 no "
                         f"refresh ever succeeds and the age grows without bound")


def gated_batch_wait(arrival_per_s: float, batch_time_s: float) -> float:
    """One server that, whenever it is free, takes every waiting request as one batch of fixed
    duration D (no batch limit, no linger), Poisson arrivals: the mean wait.

    At the end of a batch another starts at once if anyone arrived during it (probability
    1 - e^{-lambda D}), so a busy period is a geometric number of batches with mean e^{lambda D}
    and the server is busy a share p = lambda D e^{lambda D} / (lambda D e^{lambda D} + 1) of the
    time. By PASTA an arrival finds it busy with probability p and then waits for the rest of
    the batch in service, D/2 on average; an arrival to an idle server starts at once. So
    E[W] = p D / 2. Stable at every load: batches grow with the queue.
    """
    x = arrival_per_s * batch_time_s * math.exp(arrival_per_s * batch_time_s)
    return batch_time_s / 2 * x / (x + 1)


@dataclass(frozen=True)
class RandomEnvironmentQueue:
    """Stationary means of an M/M/1 queue in a random environment (see
    :func:`mm1_random_environment`); times in seconds."""

    mean_number: float    # E[N], requests in the system (waiting or in service)
    mean_response: float  # E[T] = E[N] / lambda
    mean_wait: float      # E[W] = E[N_queue] / lambda
    busy: float           # P(server busy) = lambda x mean service time
    idle_by_state: np.ndarray  # P(empty system, environment in state i)


def _stationary(generator: np.ndarray) -> np.ndarray:
    """The stationary distribution p of an irreducible generator: p Q = 0, p 1 = 1."""
    n = generator.shape[0]
    a = np.vstack([generator.T, np.ones(n)])
    b = np.r_[np.zeros(n), 1.0]
    return np.linalg.lstsq(a, b, rcond=None)[0]


def qbd_rate_matrix(up: np.ndarray, local: np.ndarray, down: np.ndarray,
                    tolerance: float = 1e-16, max_steps: int = 64) -> np.ndarray:
    """The minimal nonnegative solution R of ``up + R local + R^2 down = 0`` of a positive
    recurrent level-independent QBD, by logarithmic reduction (Latouche and Ramaswami, 1993):
    first G, the minimal solution of ``down + local G + up G^2 = 0`` (stochastic when the QBD is
    recurrent), then ``R = up (-local - up G)^-1``. Quadratic convergence: each step doubles the
    number of levels accounted for."""
    n = local.shape[0]
    eye = np.eye(n)
    inv = np.linalg.inv(-local)
    b_up, b_down = inv @ up, inv @ down
    g, t = b_down.copy(), b_up.copy()
    for _ in range(max_steps):
        u = b_up @ b_down + b_down @ b_up
        m = np.linalg.inv(eye - u)
        b_up, b_down = m @ (b_up @ b_up), m @ (b_down @ b_down)
        g = g + t @ b_down
        t = t @ b_up
        # what later steps can still add to G is at most t's row sums (quadratically to 0)
        if np.max(t.sum(axis=1)) < tolerance:
            break
    if not np.max(np.abs(1.0 - g.sum(axis=1))) < 1e-9:
        raise ValueError("logarithmic reduction did not converge to a stochastic G (is the QBD "
                         "positive recurrent?)")
    return up @ np.linalg.inv(-local - up @ g)


def mm1_random_environment(arrival_per_s: float, service_per_s, generator
                           ) -> RandomEnvironmentQueue:
    """M/M/1 in a random environment: Poisson arrivals at a constant rate lambda, one server
    whose service rate is mu_i while an independent continuous-time Markov chain (generator Q)
    is in state i. Exponential work done at a speed that varies is this queue: a replica with
    slowdown f_i serves exponential work of rate mu at rate mu / f_i.

    The level (requests in system) and the environment form a level-independent
    quasi-birth-death process: up A0 = lambda I, local A1 = Q - lambda I - diag(mu), down
    A2 = diag(mu); level 0 has no service (local Q - lambda I). Then pi_n = pi_0 R^n with R the
    minimal nonnegative solution of A0 + R A1 + R^2 A2 = 0 (:func:`qbd_rate_matrix`), pi_0
    solves pi_0 (Q - lambda I + R A2) = 0 with pi_0 (I - R)^-1 1 = 1, and
    E[N] = pi_0 R (I - R)^-2 1. Stable if and only if lambda < sum_i p_i mu_i, p the
    environment's stationary distribution (the mean-speed condition; Neuts, 1981).
    """
    q = np.atleast_2d(np.asarray(generator, dtype=float))
    mu = np.atleast_1d(np.asarray(service_per_s, dtype=float))
    lam = float(arrival_per_s)
    n = q.shape[0]
    if q.shape != (n, n) or mu.shape != (n,):
        raise ValueError(f"generator must be square with one service rate per state; got "
                         f"{q.shape} and {mu.shape}")
    if np.any(q - np.diag(np.diag(q)) < 0) or np.max(np.abs(q.sum(axis=1))) > 1e-9 * max(
            1.0, float(np.max(np.abs(q)))):
        raise ValueError("generator must have nonnegative off-diagonal rates and rows "
                         "summing to 0")
    if lam <= 0 or np.any(mu < 0):
        raise ValueError("the arrival rate must be > 0 and the service rates >= 0")
    shares = _stationary(q)
    mean_rate = float(shares @ mu)
    if lam >= mean_rate:
        raise ValueError(f"unstable queue: arrival rate {lam:g}/s must be below the mean "
                         f"service rate sum_i p_i mu_i = {mean_rate:g}/s")
    eye = np.eye(n)
    up, down = lam * eye, np.diag(mu)
    r = qbd_rate_matrix(up, q - lam * eye - down, down)
    # boundary: pi_0 (Q - lambda I + R A2) = 0, then normalise pi_0 (I - R)^-1 1 = 1
    inv = np.linalg.inv(eye - r)
    a = np.vstack([(q - lam * eye + r @ down).T, (inv @ np.ones(n))[None, :]])
    b = np.r_[np.zeros(n), 1.0]
    pi0 = np.linalg.lstsq(a, b, rcond=None)[0]
    ones = np.ones(n)
    mean_number = float(pi0 @ r @ inv @ inv @ ones)
    busy = 1.0 - float(pi0.sum())
    return RandomEnvironmentQueue(mean_number=mean_number, mean_response=mean_number / lam,
                                  mean_wait=(mean_number - busy) / lam, busy=busy,
                                  idle_by_state=pi0)


def two_state_generator(mean_stay_s: tuple[float, float]) -> np.ndarray:
    """The generator of an environment alternating between two states with exponential stays
    of the given means."""
    a, b = 1.0 / mean_stay_s[0], 1.0 / mean_stay_s[1]
    return np.array([[-a, a], [b, -b]])
