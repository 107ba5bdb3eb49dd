"""Closed forms the simulator is checked against (queueing theory, age of information)."""

from __future__ import annotations

import math


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
