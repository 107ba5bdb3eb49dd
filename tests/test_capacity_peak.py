"""`capacity` and `optimize` judge latency where it binds: at the busiest hour of the arrivals.

Issue 15, item 4: judged over the scenario's own window (for a diurnal pattern, often the night
trough), `capacity` reported a rate at which a whole day misses the SLO. Here a diurnal M/M/c
service is checked three ways: a whole day at the rate found meets the SLO (and at the rate the
old behaviour finds does not); the rate found agrees with Erlang C at the peak rate; and a window
that leaves out the peak is warned about. Tolerances come from the simulation's own confidence
intervals, as in tests/test_search.py, never widened to pass.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import optimize as roots

import sim
from sim.studies.search import capacity, optimize
from sim.studies.windows import SearchError, busiest_window, is_load_metric, judged_window
from sim.studies.theory import erlang_c
from tests.conftest import make_scenario, online
from tests.test_search import ci99

RATE = "workload.arrivals.rate"
REPLICAS = "architectures.online.serving.replicas"
MU_PER_S = 10.0  # exponential service, mean 100 ms: few requests per simulated hour


def diurnal(replicas: int, rate: str, peak_hour: float, peak_to_trough: float, warmup: str,
            horizon: str, timeout: str | None = None, **changes) -> sim.Scenario:
    """An M/M/c online service (no feature lookup) under a diurnal pattern."""
    changes = {"workload__arrivals__pattern": "diurnal", **changes}
    return make_scenario(
        {"online": online(replicas=replicas, service={"exponential": {"mean": "100ms"}},
                          timeout=timeout)},
        horizon=horizon, warmup=warmup, workload__arrivals__rate=rate,
        workload__arrivals__peak_hour=peak_hour,
        workload__arrivals__peak_to_trough=peak_to_trough, costs__replica_hour=1.0, **changes)


def online_row(scenario: sim.Scenario, replications: int, **overrides) -> dict:
    raw = scenario.to_yaml_dict()
    run = sim.scenario_from_dict(raw, overrides=overrides)
    return sim.run(run, replications=replications).summary.set_index("architecture") \
        .loc["online"].to_dict()


# --- where the busiest hour is ---------------------------------------------------------------

def test_the_busiest_hour_of_each_kind_of_pattern(tmp_path):
    base = diurnal(2, "10/s", 20, 4, "1h", "3h")
    b = busiest_window(base)
    assert (b.start_s, b.end_s) == (19.5 * 3600, 20.5 * 3600)  # centred on peak_hour
    a = 3 / 5  # peak / trough = 4
    assert b.window_per_s == pytest.approx(10 * (1 + a * np.sinc(1 / 24)), rel=1e-4)
    assert b.peak_per_s == pytest.approx(10 * (1 + a), rel=1e-6)
    assert "19:30–20:30 on day 1, the busiest hour of the diurnal pattern" in b.describe()
    # A peak within the first hour: its next day's, with an hour simulated before it.
    early = busiest_window(diurnal(2, "10/s", 0.25, 4, "1h", "3h"))
    assert early.start_s == 86400 - 0.25 * 3600
    # Weekly: the busiest weekday's peak (a busier weekend: Saturday, day 6).
    weekend = busiest_window(diurnal(2, "10/s", 20, 4, "1h", "3h",
                                     workload__arrivals__pattern="weekly",
                                     workload__arrivals__weekend_factor=1.5))
    assert weekend.start_s == 5 * 86400 + 19.5 * 3600 and "(Saturday)" in weekend.describe()
    # An hourly profile: its busiest hour.
    profile = [1.0] * 24
    profile[10] = 5.0
    hourly = busiest_window(diurnal(2, "10/s", 20, 1, "1h", "3h",
                                    workload__arrivals__pattern="constant",
                                    workload__arrivals__profile=profile))
    assert (hourly.start_s, hourly.end_s) == (10 * 3600, 11 * 3600)
    # A burst above the daily peak: the hour around it.
    burst = busiest_window(diurnal(2, "10/s", 20, 4, "1h", "3h", workload__arrivals__bursts=[
        {"at": "30h", "duration": "20m", "multiplier": 5}]))
    assert burst.start_s < 30 * 3600 and burst.end_s >= 30 * 3600 + 1200
    assert "burst" in burst.source and burst.period_s is None
    # Constant: none (the scenario's own window is judged).
    constant = diurnal(2, "10/s", 20, 1, "1h", "3h", workload__arrivals__pattern="constant")
    assert busiest_window(constant) is None
    assert judged_window(constant, "peak").is_scenario_window
    # A replayed log: the hour with the most requests, in replayed time.
    times = np.concatenate([np.arange(0, 3600, 1.0), np.arange(3600, 7200, 0.2),
                            np.arange(7200, 10800, 1.0)])
    log = tmp_path / "log.csv"
    log.write_text("timestamp,entity_id\n" + "".join(f"{t},{i % 50}\n"
                                                     for i, t in enumerate(times)))
    replay = make_scenario({"online": online()}, horizon="2h", warmup="10m",
                           workload={"arrivals": {"trace": str(log)}})
    trace = busiest_window(replay)
    assert (trace.start_s, trace.end_s) == (3600, 7200)
    assert trace.window_per_s == pytest.approx(5.0)


def test_the_windows_judged():
    scenario = diurnal(2, "10/s", 20, 4, "1h", "3h")
    peak, day, own = (judged_window(scenario, w) for w in ("peak", "day", "horizon"))
    assert peak.overrides == {"warmup": 70200.0, "horizon": 3600.0}
    assert day.overrides == {"warmup": 3600.0, "horizon": 86400.0}
    assert own.is_scenario_window and own.overrides == {"warmup": 3600.0, "horizon": 10800.0}
    assert day.warning() is None and peak.warning() is None
    assert "01:00 on day 1 – 01:00 on day 2" in day.text
    with pytest.raises(SearchError, match="--window"):
        judged_window(scenario, "busiest")
    assert is_load_metric("latency_ms_p99") and is_load_metric("queue_wait_ms_mean_ci95")
    assert not is_load_metric("cost_usd_per_day") and not is_load_metric("quality_mean")


# --- (3) a warning when the window judged leaves out the peak --------------------------------

def test_a_horizon_that_misses_the_peak_is_warned_about():
    night = diurnal(2, "10/s", 20, 4, "1h", "3h")  # 01:00-04:00, the peak at 20:00
    warning = judged_window(night, "horizon").warning()
    assert warning is not None and warning.startswith("Warning: the window judged, "
                                                      "01:00–04:00 on day 1, does not cover")
    assert "19:30–20:30 on day 1" in warning and "--window peak" in warning
    evening = diurnal(2, "10/s", 20, 4, "1h", "22h")  # 01:00-23:00 covers it
    assert judged_window(evening, "horizon").warning() is None


def test_the_commands_say_where_they_judged(tmp_path, monkeypatch):
    import yaml

    from sim.cli.main import main
    monkeypatch.setenv("PREDSIM_NO_PROGRESS", "1")
    path = tmp_path / "diurnal.yaml"
    path.write_text(yaml.safe_dump(diurnal(2, "5/s", 2, 4, "10m", "20m",
                                           slo__latency_p99="1s").to_yaml_dict()))
    common = ["-r", "1", "-j", "1", "--max-evaluations", "2"]
    out = CliRunner().invoke(main, ["capacity", str(path), *common]).output
    assert "Judged over 01:30–02:30 on day 1, the busiest hour of the diurnal pattern" in out
    assert "Warning" not in out
    out = CliRunner().invoke(main, ["capacity", str(path), "--window", "horizon", *common]).output
    assert "Judged over the scenario's measured window, 00:10–00:30 on day 1" in out
    assert "Warning: the window judged, 00:10–00:30 on day 1, does not cover the busiest " \
           "hour of the diurnal pattern, 01:30–02:30 on day 1" in out
    result = CliRunner().invoke(main, ["optimize", str(path), "--vary", f"{REPLICAS}=1:4",
                                       "--constraint", "latency_p99<=1s", *common])
    assert result.exit_code == 0, result.output
    assert ("Judged latency_p99 over 01:30–02:30 on day 1, the busiest hour of the diurnal "
            "pattern") in result.output
    assert "cost_per_day over the scenario's measured window, 00:10–00:30 on day 1" \
        in result.output
    assert "x 2 windows = 4 simulations" in result.output
    result = CliRunner().invoke(main, ["capacity", str(path), "--window", "noon"])
    assert result.exit_code == 2


# --- (1) a whole day at the rate found meets the SLO -----------------------------------------

def test_a_whole_day_at_the_capacity_found_meets_the_slo():
    # Two M/M/2 replicas (100 ms service), a 4:1 diurnal pattern peaking at 13:00, a 3 s timeout.
    # The scenario's own window, 00:30-01:30, is the night trough.
    slo_ms = 1000.0
    scenario = diurnal(2, "5/s", 13, 4, "30m", "1h", timeout="3s",
                       slo__latency_p99=f"{slo_ms:g}ms")
    result = capacity(scenario, "online", replications=2)
    at_peak = result.rate_per_s
    assert result.low.window.start_s == 12.5 * 3600  # the busiest hour, 12:30-13:30
    assert result.low.row["latency_ms_p99"] <= slo_ms < result.high.row["latency_ms_p99"]
    text = "\n".join(result.lines())
    assert "Judged over 12:30–13:30 on day 1, the busiest hour of the diurnal pattern" in text
    assert f"{RATE}, the mean; " in text and "in the busiest hour" in text
    assert result.busiest_per_s == pytest.approx(at_peak * (1 + 0.6 * np.sinc(1 / 24)),
                                                 rel=1e-4)

    # A whole day (and the hour before it) at that rate: p99 within the SLO, and at most 1% of
    # requests slower than it. Decisive: the day's p99 is below the peak hour's, which met it.
    day = online_row(scenario, 2, **{RATE: at_peak, "warmup": "1h", "horizon": "1d"})
    assert day["latency_ms_p99"] <= slo_ms and day["slo_violation_rate"] <= 0.01

    # The old behaviour, judged over the scenario's window (the trough), finds a rate over
    # twice as high, warns, and a whole day at that rate misses the SLO by far.
    old = capacity(scenario, "online", replications=2, window="horizon")
    assert old.rate_per_s > 2 * at_peak
    assert any(line.startswith("Warning: the window judged") for line in old.lines())
    day = online_row(scenario, 1, **{RATE: old.rate_per_s, "warmup": "1h", "horizon": "1d"})
    assert day["latency_ms_p99"] > 2 * slo_ms and day["slo_violation_rate"] > 0.05


# --- (2) against Erlang C at the peak rate ----------------------------------------------------

A = 0.5  # peak / trough = 3
PEAK_HOUR = 1.5  # busiest hour 01:00-02:00, an hour simulated before it


def window_wait_ms(mean_per_s: float, servers: int) -> float:
    """Erlang C mean wait over the busiest hour of the diurnal pattern at mean rate R: the rate
    moves by 0.4% within the hour and the queue relaxes in seconds, so each moment is in
    equilibrium at its own rate; the window's mean is weighted by arrivals."""
    hours = (np.arange(3600) + 0.5) / 3600 - 0.5
    rate = mean_per_s * (1 + A * np.cos(2 * math.pi * hours / 24))
    wait_s = np.array([erlang_c(r, MU_PER_S, servers)[1] for r in rate])
    return float((rate * wait_s).sum() / rate.sum() * 1e3)


def test_capacity_agrees_with_erlang_c_at_the_peak_rate():
    # M/M/4 at 100 ms service; bound = Erlang C mean wait at a peak rate of 30/s (rho 0.75).
    servers, replications = 4, 6
    bound_ms = erlang_c(30.0, MU_PER_S, servers)[1] * 1e3
    # The scenario's own window, 13:10-13:30, is the trough (x0.5 of the mean).
    scenario = diurnal(servers, "15/s", PEAK_HOUR, 3, "790m", "20m")
    result = capacity(scenario, "online", [f"queue_wait_mean<={bound_ms}ms"],
                      replications=replications)
    low, high = result.bracket
    assert high - low <= 0.01 * low  # the bisection's resolution
    assert result.low.window.start_s == 3600.0
    # Each end was judged on its simulated mean wait, within `half` (the larger 99% CI of the
    # two ends) of the true one. So the truth at `low` is <= bound + half and at `high` is
    # > bound - half: `low` lies below the rate where Erlang C gives bound + half, `high` above
    # the rate where it gives bound - half.
    half = max(ci99(e.row, "queue_wait_ms_mean", replications) for e in
               (result.low, result.high))
    assert half < 0.1 * bound_ms  # precise enough to mean something
    theory = {b: roots.brentq(lambda r: window_wait_ms(r, servers) - b, 5.0, 26.0)
              for b in (bound_ms - half, bound_ms, bound_ms + half)}
    assert low <= theory[bound_ms + half] and high >= theory[bound_ms - half]
    # The windowed closed form is Erlang C at the peak rate: 30/s over 1 + A.
    assert theory[bound_ms] == pytest.approx(30.0 / (1 + A), rel=0.002)
    # Decisive against the old behaviour: judged over the trough, the answer would be about
    # three times higher (Erlang C at the trough rate meets the bound near 30/s / 0.5).
    trough = 1 + A * math.cos(2 * math.pi * (13 + 1 / 3 - PEAK_HOUR) / 24)  # at 13:20
    assert high < 0.5 * 30.0 / trough


def test_optimize_finds_the_fewest_replicas_for_erlang_c_at_the_peak():
    # 1 s service (mu = 1/s), a peak rate of 6/s; the bound halfway (in log) between the Erlang
    # C mean waits of two neighbours at the peak rate, so that the answer is decisive.
    peak_per_s, mu = 6.0, 1.0
    waits_ms = {c: erlang_c(peak_per_s, mu, c)[1] * 1e3 for c in range(7, 14)}
    bound_ms = math.sqrt(waits_ms[8] * waits_ms[9])
    best = min(c for c, w in waits_ms.items() if w <= bound_ms)
    # The scenario's own window, 13:10-13:30, is the trough: judged there (the old behaviour),
    # fewer replicas would do.
    trough = min(c for c in range(3, 14) if erlang_c(peak_per_s / 3, mu, c)[1] * 1e3 <= bound_ms)
    assert trough < best
    scenario = make_scenario(
        {"online": online(replicas=1, service={"exponential": {"mean": "1s"}})},
        horizon="20m", warmup="790m", workload__arrivals__rate=f"{peak_per_s / (1 + A)}/s",
        workload__arrivals__pattern="diurnal", workload__arrivals__peak_hour=PEAK_HOUR,
        workload__arrivals__peak_to_trough=3, costs__replica_hour=1.0)
    result = optimize(scenario, [f"{REPLICAS}=1:16"], "min:cost_per_day",
                      [f"queue_wait_mean<={bound_ms}ms"], replications=3)
    assert result.values == {REPLICAS: best}
    assert result.simulations == 2 * len(result.evaluations) * 3  # two windows each
    # The cost is the scenario's window's (fixed replicas: 1 $/replica-hour), not the hour's.
    assert result.best.row["cost_usd_per_day"] == pytest.approx(24.0 * best)
