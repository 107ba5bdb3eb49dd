"""The engine against queueing theory and age-of-information closed forms.

Each check runs independent replications of the *whole engine* and requires the closed form to
lie within the 99% Student-t confidence interval of the simulated mean. The seeds are fixed, so
the outcome is deterministic; a failure is a bug to find, not a tolerance to widen.
"""

import math

import numpy as np
import pytest

from tests.conftest import ci_half_width, make_scenario, online, replicate


def erlang_c(arrival_rate: float, service_rate: float, servers: int) -> tuple[float, float]:
    """(probability of waiting, mean wait) of an M/M/c queue."""
    a = arrival_rate / service_rate
    rho = a / servers
    top = a ** servers / math.factorial(servers) / (1 - rho)
    p_wait = top / (sum(a ** k / math.factorial(k) for k in range(servers)) + top)
    return p_wait, p_wait / (servers * service_rate - arrival_rate)


def assert_within_ci(values: np.ndarray, expected: float):
    half = ci_half_width(values)
    mean = float(values.mean())
    assert abs(mean - expected) <= half, (
        f"simulated {mean:.5g} ± {half:.3g} (99% CI) does not contain the theory {expected:.5g}")


def test_mm1_mean_wait():
    # lambda = 800/s, mu = 1000/s (rho = 0.8): Wq = lambda / (mu (mu - lambda)) = 4 ms
    scenario = make_scenario({"online": online(1, {"exponential": {"mean": "1ms"}})},
                             horizon="5m", warmup="10s",
                             **{"workload.arrivals.rate": "800/s"})
    waits = replicate(scenario, "queue_wait_ms_mean", "online", n=8)
    assert_within_ci(waits, 4.0)


def test_mmc_mean_wait_and_probability_of_waiting():
    # lambda = 3000/s, mu = 1000/s, c = 4 (rho = 0.75)
    p_wait, mean_wait_s = erlang_c(3000, 1000, 4)
    scenario = make_scenario({"online": online(4, {"exponential": {"mean": "1ms"}})},
                             horizon="2m", warmup="5s",
                             **{"workload.arrivals.rate": "3000/s"})

    def waited(results):
        counts = results.distributions["online"]["queue_wait_s"].counts
        return 1 - counts[0] / counts.sum()  # bin 0 holds waits under 1 microsecond: no wait

    assert_within_ci(replicate(scenario, "queue_wait_ms_mean", "online", n=8), mean_wait_s * 1e3)
    assert_within_ci(replicate(scenario, None, "online", n=8, extract=waited), p_wait)


def test_erlang_c_worked_example():
    # 100 calls per 30 minutes, 3-minute mean handling time, 14 agents:
    # P(wait) = 0.17413 and mean wait 7.84 s, as printed by two independent calculators.
    p_wait, mean_wait_s = erlang_c(100 / 1800, 1 / 180, 14)
    assert p_wait == pytest.approx(0.17413, abs=5e-5)
    assert mean_wait_s == pytest.approx(7.84, abs=0.005)
    scenario = make_scenario({"online": online(14, {"exponential": {"mean": "3m"}})},
                             horizon="60d", warmup="1d", **{"workload.arrivals.rate": "200/h"})
    assert_within_ci(replicate(scenario, "queue_wait_ms_mean", "online", n=10),
                     mean_wait_s * 1e3)


def test_md1_pollaczek_khinchine():
    # M/D/1 with rho = 0.7: Wq = lambda E[S^2] / (2 (1 - rho)) = rho S / (2 (1 - rho))
    service_s, rho = 0.001, 0.7
    expected_ms = rho * service_s / (2 * (1 - rho)) * 1e3
    scenario = make_scenario({"online": online(1, {"constant": "1ms"})},
                             horizon="3m", warmup="5s",
                             **{"workload.arrivals.rate": "700/s"})
    assert_within_ci(replicate(scenario, "queue_wait_ms_mean", "online", n=8), expected_ms)


def test_periodic_batch_features_age():
    # Materialisation every T = 1h, visible D = 10 min after its cut-off: age = D + U(0, T)
    scenario = make_scenario({"online": online(8, {"constant": "1ms"}, features_every="1h",
                                               duration="10m")},
                             horizon="1d", warmup="2h", **{"workload.arrivals.rate": "5/s"})
    ages = replicate(scenario, "feature_age_s_mean", "online", n=6)
    assert_within_ci(ages, 600 + 3600 / 2)
    results = __import__("sim").run(scenario)
    oldest = results.distributions["online"]["feature_age_s"].quantile(1.0)
    assert oldest <= (600 + 3600) * 1.005  # never older than D + T (histogram resolution 0.5%)
    assert oldest >= (600 + 3600) * 0.99


def test_stream_window_age():
    # Tumbling windows of W = 1 min, each visible L = 5 s after it closes: age = L + U(0, W)
    arch = online(8, {"constant": "1ms"})
    arch["kind"] = "streaming"
    arch["features"]["stream"] = {"lag": "5s", "window": "1m"}
    scenario = make_scenario({"streaming": arch}, horizon="6h", warmup="10m",
                             **{"workload.arrivals.rate": "5/s"})
    ages = replicate(scenario, "feature_age_s_mean", "streaming", n=6)
    assert_within_ci(ages, 5 + 60 / 2)
