"""Search (sim/studies/search.py, `predsim optimize`, `predsim capacity`) against queueing theory.

Known answers come from Erlang C for M/M/c queues built here. The tolerances come from the
simulation's own confidence intervals (99%, from the 95% ones the search reports, by the ratio
of the t quantiles) plus the histograms' stated resolution for percentiles, never widened to
pass; preconditions check that the cases are decisive at that precision.
"""

from __future__ import annotations

import math

import pytest
from click.testing import CliRunner
from scipy import optimize as roots
from scipy import stats

import sim
from sim.results.metrics import RESOLUTION
from sim.studies.search import Constraint, Objective, SearchError, capacity, optimize
from sim.studies.theory import erlang_c
from tests.conftest import make_scenario, online

REPLICAS = "architectures.online.serving.replicas"
MU_PER_S = 1000.0          # exponential service, mean 1 ms


def mmc(replicas: int, rate: str, horizon: str, **changes) -> sim.Scenario:
    return make_scenario({"online": online(replicas=replicas,
                                           service={"exponential": {"mean": "1ms"}})},
                         horizon=horizon, warmup="2s", workload__arrivals__rate=rate,
                         costs__replica_hour=1.0, **changes)


def ci99(row: dict, column: str, replications: int) -> float:
    """The 99% half-width from the reported 95% one (same sample standard deviation)."""
    ratio = stats.t.ppf(0.995, replications - 1) / stats.t.ppf(0.975, replications - 1)
    return row[f"{column}_ci95"] * ratio


# --- metric names and bounds -----------------------------------------------------------------

def test_metric_names_and_units():
    scenario = mmc(2, "10/s", "1m")
    c = Constraint.parse("latency_p99<=0.1s")
    assert (c.column, c.op, c.bound) == ("latency_ms_p99", "<=", 100.0)
    assert Constraint.parse("latency_p99 <= 100").bound == 100.0  # bare number: the column's unit
    assert Constraint.parse("coverage>=99%").bound == pytest.approx(0.99)
    assert Constraint.parse("cost_per_day<=$50/day").bound == 50.0
    assert Constraint.parse("feature_age_mean<=6h").bound == 21600.0
    assert Constraint.parse("ctr>=0.04", scenario).column == "quality_mean"
    assert Objective.parse("max:net_value_per_day").column == "net_value_usd_per_day"
    assert Objective.parse("min:latency_ms_p99").column == "latency_ms_p99"
    for bad in ("latency_p99=100ms", "latncy_p99<=1s", "latency_p99<=fast", "quality>="):
        with pytest.raises(SearchError, match="--constraint"):
            Constraint.parse(bad)
    with pytest.raises(SearchError, match="--objective"):
        Objective.parse("cost_per_day")


# --- optimize: minimum replicas for a mean-wait bound ----------------------------------------

LAMBDA_PER_S = 6000.0


def _wait_bound_ms() -> tuple[int, float]:
    """Erlang C: the fewest replicas whose mean wait is within a bound set halfway (in log)
    between two neighbours, so that the answer is decisive."""
    waits_ms = {c: erlang_c(LAMBDA_PER_S, MU_PER_S, c)[1] * 1e3 for c in range(7, 16)}
    bound = math.sqrt(waits_ms[9] * waits_ms[10])
    return min(c for c, w in waits_ms.items() if w <= bound), bound


@pytest.mark.parametrize("method", ["bisect", "pattern"])
def test_optimize_finds_the_erlang_c_optimum_with_fewer_runs_than_the_grid(method):
    best_c, bound = _wait_bound_ms()
    replications = 4
    result = optimize(mmc(2, f"{LAMBDA_PER_S}/s", "10s"), [f"{REPLICAS}=1:64"],
                      "min:cost_per_day", [f"queue_wait_mean<={bound}ms"],
                      replications=replications, method=method)
    assert result.values == {REPLICAS: best_c}
    assert result.feasible and result.method == method
    assert len(result.evaluations) < result.grid_configurations == 64
    assert result.simulations < 64 * replications
    # The two neighbours on either side of the boundary were simulated, agree with Erlang C
    # within their 99% CI, and their CIs do not reach the bound (the case is decisive).
    seen = {e.values[REPLICAS]: e.row for e in result.evaluations}
    for c in (best_c - 1, best_c):
        row = seen[c]
        half = ci99(row, "queue_wait_ms_mean", replications)
        expected = erlang_c(LAMBDA_PER_S, MU_PER_S, c)[1] * 1e3
        assert abs(row["queue_wait_ms_mean"] - expected) <= half
        assert abs(row["queue_wait_ms_mean"] - bound) > half
    text = "\n".join(result.lines())
    assert f"{REPLICAS} = {best_c}" in text and f"{result.simulations} simulations" in text


# --- capacity: the highest rate with p99 response time within a bound ------------------------

def _mmc_response_tail(t_s: float, rate: float, servers: int) -> float:
    """P(R > t) for FIFO M/M/c, R = W + S: with theta = c mu - lambda and P(W > x) =
    P(wait) exp(-theta x), P(R > t) = exp(-mu t) + P(wait) mu (exp(-mu t) - exp(-theta t)) /
    (theta - mu)."""
    p_wait, _ = erlang_c(rate, MU_PER_S, servers)
    theta = servers * MU_PER_S - rate
    if abs(theta - MU_PER_S) < 1e-9:
        return math.exp(-MU_PER_S * t_s) * (1 + p_wait * MU_PER_S * t_s)
    return math.exp(-MU_PER_S * t_s) + p_wait * MU_PER_S * (
        math.exp(-MU_PER_S * t_s) - math.exp(-theta * t_s)) / (theta - MU_PER_S)


def mmc_p99_ms(rate: float, servers: int) -> float:
    return roots.brentq(lambda t: _mmc_response_tail(t, rate, servers) - 0.01, 0, 1e3) * 1e3


def theory_capacity(p99_ms: float, servers: int) -> float:
    """The rate at which the M/M/c p99 response time equals ``p99_ms``."""
    return roots.brentq(lambda r: mmc_p99_ms(r, servers) - p99_ms, 1.0,
                        servers * MU_PER_S * 0.9999)


def test_capacity_agrees_with_the_mmc_response_time_distribution():
    servers, slo_ms, replications = 2, 10.0, 6
    scenario = mmc(servers, "1000/s", "90s", slo__latency_p99=f"{slo_ms}ms")
    result = capacity(scenario, "online", replications=replications, tolerance=0.01)
    low, high = result.bracket
    assert low is not None and high is not None and high - low <= 0.01 * low
    assert result.low.row["latency_ms_p99"] <= slo_ms < result.high.row["latency_ms_p99"]
    # How far the simulated p99 may be from the closed form at the bracket's ends: the 99% CI
    # of the replications there plus the histogram's resolution.
    tolerance_ms = max(ci99(e.row, "latency_ms_p99", replications) for e in
                       (result.low, result.high)) + RESOLUTION * slo_ms
    assert tolerance_ms < 0.1 * slo_ms  # precise enough for the check to mean something
    for e in (result.low, result.high):
        rate = e.values["workload.arrivals.rate"]
        assert abs(e.row["latency_ms_p99"] - mmc_p99_ms(rate, servers)) <= tolerance_ms
    # The bracket is where the closed form crosses the SLO, within that tolerance.
    assert low <= theory_capacity(slo_ms + tolerance_ms, servers)
    assert high >= theory_capacity(slo_ms - tolerance_ms, servers)
    assert result.simulations == len(result.evaluations) * replications < 20 * replications


def test_capacity_with_a_mean_wait_constraint_agrees_with_erlang_c():
    servers, bound_ms, replications = 4, 0.5, 4
    expected = roots.brentq(lambda r: erlang_c(r, MU_PER_S, servers)[1] * 1e3 - bound_ms,
                            100.0, servers * MU_PER_S * 0.9999)
    result = capacity(mmc(servers, "2000/s", "10s"), "online",
                      [f"queue_wait_mean<={bound_ms}ms"], replications=replications)
    low, high = result.bracket
    half = max(ci99(e.row, "queue_wait_ms_mean", replications) for e in
               (result.low, result.high))
    wait_ms = lambda r: erlang_c(r, MU_PER_S, servers)[1] * 1e3  # noqa: E731
    assert low <= roots.brentq(lambda r: wait_ms(r) - (bound_ms + half), 100.0, 3999.0)
    assert high >= roots.brentq(lambda r: wait_ms(r) - (bound_ms - half), 100.0, 3999.0)
    assert low <= expected * 1.05 and high >= expected * 0.95


# --- the commands ------------------------------------------------------------------------------

def _scenario_file(tmp_path):
    import yaml
    path = tmp_path / "mmc.yaml"
    path.write_text(yaml.safe_dump(mmc(2, "1000/s", "5s", slo__latency_p99="10ms")
                                   .to_yaml_dict()))
    return str(path)


def test_optimize_and_capacity_commands(tmp_path, monkeypatch):
    from sim.cli.main import main
    monkeypatch.setenv("PREDSIM_NO_PROGRESS", "1")
    path = _scenario_file(tmp_path)
    result = CliRunner().invoke(main, ["optimize", path, "--vary", f"{REPLICAS}=1:16",
                                       "--constraint", "latency_p99<=10ms", "-r", "2", "-j", "1"])
    assert result.exit_code == 0, result.output
    assert f"{REPLICAS} = " in result.output and "simulations" in result.output
    assert "full grid would need 16 configurations" in result.output
    result = CliRunner().invoke(main, ["capacity", path, "-r", "2", "-j", "1"])
    assert result.exit_code == 0, result.output
    assert "sustains" in result.output and "bracket [" in result.output


@pytest.mark.parametrize("args, message", [
    (["optimize", "{path}", "--vary", f"{REPLICAS}=8:1"], "--vary"),
    (["optimize", "{path}", "--vary", f"{REPLICAS}=1:8", "--objective", "min:speed"],
     "--objective 'min:speed': unknown metric"),
    (["optimize", "{path}", "--vary", f"{REPLICAS}=1:8", "--constraint", "p99<100"],
     "--constraint 'p99<100': unknown metric"),
    (["optimize", "{path}", "--vary", f"{REPLICAS}=1:8", "--arch", "nope"], "--arch 'nope'"),
    (["optimize", "{path}", "--vary", "architectures.online.serving.replcas=1:8"],
     "unknown key (did you mean 'replicas'?)"),
    (["capacity", "{path}", "--set", "slo.latency_p99=null"], "no slo.latency_p99"),
    (["capacity", "{path}", "--constraint", "latency_p99<=soon"], "--constraint"),
])
def test_bad_search_input_exits_2(tmp_path, args, message):
    from sim.cli.main import main
    path = _scenario_file(tmp_path)
    result = CliRunner().invoke(main, [a.format(path=path) for a in args])
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert message in result.output
