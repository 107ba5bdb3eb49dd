"""Fitting measured inputs (sim/inputs/fit.py): a workload: section from a request log, latency
distributions from samples, and the {percentiles: ...} distribution.

Synthetic logs come from the simulator's own generators (or numpy) with known parameters; the
fits must recover them within their stated confidence intervals.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from scipy import integrate, special, stats

import sim
from sim.cli.main import main
from sim.distributions import Distribution
from sim.inputs.fit import first_share, fit_workload, zipf_mle
from sim.inputs.latency_fit import fit_latency, read_samples
from sim.inputs.logs import InputError, read_log
from sim.engine.rng import Streams
from sim.scenario import ScenarioError, scenario_from_dict
from sim.engine.workload import Population, RequestSource, zipf_slots
from tests.conftest import BASE, online

ROOT = Path(__file__).resolve().parents[1]
FLIGHTS = ROOT / "tests" / "data" / "nycflights13_sample.csv"
PREDSIM = Path(sys.executable).parent / "predsim"
Z99 = stats.norm.ppf(0.995)
MONDAY = pd.Timestamp("2024-01-01")  # a Monday


def simulated_log(folder: Path, days: float, seed=0, **workload) -> tuple[Path, sim.Scenario]:
    """A log written from the simulator's own arrivals and entities, starting on a Monday."""
    raw = dict(copy.deepcopy(BASE), architectures={"o": online()})
    raw["workload"] = workload
    w = scenario_from_dict(raw).workload
    streams = Streams(seed)
    source = RequestSource(w, Population(w, days * 86400.0, streams), streams)
    chunks = [source.chunk(s, min(s + 21600.0, days * 86400.0))
              for s in np.arange(0, days * 86400.0, 21600.0)]
    t = np.concatenate([c.t_s for c in chunks])
    slot = np.concatenate([c.slot for c in chunks])
    path = folder / "log.csv"
    pd.DataFrame({"timestamp": MONDAY.timestamp() + t, "entity_id": slot}).to_csv(path,
                                                                                 index=False)
    return path, w


# --------------------------------------------------------------------------------------------
# workload fit
# --------------------------------------------------------------------------------------------

def test_the_fitted_rate_recovers_a_known_rate_within_its_ci(tmp_path):
    path, _ = simulated_log(tmp_path, days=3, entities=300,
                            arrivals={"rate": "0.8/s", "pattern": "diurnal",
                                      "peak_to_trough": 3})
    fit = fit_workload(read_log(path))
    lo, hi = fit.rate_ci95
    se = (hi - lo) / 2 / 1.96
    assert abs(fit.rate_per_s - 0.8) < Z99 * se, (fit.rate_per_s, se)
    assert fit.profile_kind == "daily"
    assert fit.dispersion.poisson_fits, fit.dispersion  # the simulator's arrivals are Poisson


@pytest.mark.parametrize("exponent", [0.7, 1.1])
def test_the_zipf_exponent_is_recovered_within_its_ci(exponent):
    counts = np.bincount(zipf_slots(np.random.default_rng(4), 500, exponent, 200_000),
                         minlength=500)
    s, se = zipf_mle(counts)
    assert abs(s - exponent) < Z99 * se, (s, se)
    assert 0 < se < 0.01


def test_an_hourly_profile_round_trips_through_the_simulator(tmp_path):
    profile = list(np.round(1 + 0.8 * np.sin(np.arange(24) / 24 * 2 * np.pi), 3))
    path, w = simulated_log(tmp_path, days=7, entities=50,
                            arrivals={"rate": "0.2/s", "profile": profile})
    fit = fit_workload(read_log(path), profile="daily")
    # the fitted multiplier of each hour is its count over the mean count: chi-square against
    # the counts the true profile expects
    counts = fit.profile * fit.rate_per_s * 3600 * 7
    expected = np.array(profile) / np.mean(profile) * 0.2 * 3600 * 7
    assert stats.chi2.sf(np.sum((counts - expected) ** 2 / expected), 23) > 0.001


def test_a_week_gives_an_hour_of_week_profile_that_runs(tmp_path):
    path, _ = simulated_log(tmp_path, days=14, entities=2000,
                            arrivals={"rate": "0.05/s", "pattern": "weekly",
                                      "weekend_factor": 0.4, "peak_to_trough": 2},
                            popularity={"zipf": 0.9})
    fit = fit_workload(read_log(path))
    assert fit.profile_kind == "weekly" and fit.profile.size == 168
    days = fit.profile.reshape(7, 24).mean(axis=1)
    assert days[5:].mean() / days[:5].mean() == pytest.approx(0.4, rel=0.15)
    section = yaml.safe_load(fit.to_yaml())
    assert list(section) == ["workload"]
    raw = dict(copy.deepcopy(BASE), architectures={"o": online()}, workload=section["workload"])
    s = scenario_from_dict(raw, overrides={"horizon": "2h", "warmup": "0s"})
    assert s.workload.arrivals.profile is not None
    assert sim.simulate(s).summary["requests"].iloc[0] > 0


def test_new_and_active_entities_per_day(tmp_path):
    # 100 entities every day, each asking 50 times a day; entity k >= 100 appears on day k - 99
    rng = np.random.default_rng(2)
    rows = []
    for day in range(6):
        for e in list(range(100)) + list(range(100, 100 + day)):
            rows += [(day * 86400 + x, e) for x in np.sort(rng.random(50) * 86400)]
    frame = pd.DataFrame(rows, columns=["t", "who"]).sort_values("t")
    path = tmp_path / "log.csv"
    frame.to_csv(path, index=False)
    fit = fit_workload(read_log(path, "t", "who"))
    assert fit.new_entities_per_day == pytest.approx(1.0, abs=0.35)
    shares = [(100 + d) / 105 for d in range(1, 5)]  # the whole days inside the log
    assert fit.active_share_per_day == pytest.approx(np.mean(shares), rel=0.01)


def test_the_first_week_share_is_recovered_from_a_log(tmp_path):
    # 16 days of the simulator's requests, new entities placed so that a week of them makes 5%
    # of the requests; the truth is counted from their creation times, which the log lacks
    raw = dict(copy.deepcopy(BASE), architectures={"o": online()})
    raw["workload"] = {"entities": 1000, "new_entities_per_day": 50,
                       "new_entities": {"first_week_share": 0.05},
                       "popularity": {"zipf": 1.0}, "arrivals": {"rate": "0.25/s"}}
    w = scenario_from_dict(raw).workload
    days = 16
    streams = Streams(3)
    population = Population(w, days * 86400.0, streams)
    source = RequestSource(w, population, streams)
    chunks = [source.chunk(s, s + 86400.0) for s in np.arange(0, days * 86400.0, 86400.0)]
    t = np.concatenate([c.t_s for c in chunks])
    slot = np.concatenate([c.slot for c in chunks])
    path = tmp_path / "log.csv"
    pd.DataFrame({"timestamp": MONDAY.timestamp() + t, "entity_id": slot}).to_csv(path,
                                                                                 index=False)
    fit = fit_workload(read_log(path))
    week = fit.first_week
    counted = t - t[0] >= 14 * 86400.0  # the log's clock starts at its first request
    age = t[counted] - population.created_at_s(slot[counted])
    truth = float(np.mean(age < 7 * 86400.0))
    assert week.requests == int(counted.sum())
    se = math.sqrt(truth * (1 - truth) / week.requests)
    # A week from the first request, not from creation: the entities created a little over a
    # week before a request but first asked about since also count, about (mean wait for a first
    # request, ~8 h here) / 7 days = 5% more than the truth.
    assert truth - 4 * se < week.share < truth * 1.1 + 4 * se, (week.share, truth, se)
    assert truth == pytest.approx(0.05, rel=0.25)
    assert 0 < fit.first_day.share < week.share
    section = yaml.safe_load(fit.to_yaml())["workload"]
    assert section["new_entities"] == {"first_week_share": float(f"{week.share:.3g}")}
    again = scenario_from_dict(dict(raw, workload=section))  # it pastes
    assert again.workload.new_entities.first_week_share == pytest.approx(week.share, rel=1e-2)


def test_a_short_log_has_no_first_share():
    log = read_log(FLIGHTS, entity_column="tailnum")
    short = dataclasses.replace(log, times_s=log.times_s[log.times_s < 1.9 * 86400.0],
                                slot=log.slot[log.times_s < 1.9 * 86400.0])
    assert first_share(short, 1) is None and first_share(log, 7) is None
    assert first_share(log, 1).share > 0


def test_bursty_traffic_is_told_apart_from_poisson(tmp_path):
    path, _ = simulated_log(tmp_path, days=2, entities=10,
                            arrivals={"rate": "0.5/s", "mmpp": {"multipliers": [0.2, 5],
                                                                "mean_sojourn": ["20m", "5m"]}})
    fit = fit_workload(read_log(path), profile="none")
    assert fit.dispersion.index > 2 and not fit.dispersion.poisson_fits
    assert "arrivals.mmpp" in fit.to_yaml()


def test_the_bundled_flights_log_fits(tmp_path):
    log = read_log(FLIGHTS, entity_column="tailnum")
    assert log.n_requests == 4697 and log.clock == "as written"
    fit = fit_workload(log)
    assert fit.profile_kind == "weekly"
    assert fit.rate_per_s * 86400 == pytest.approx(4697 / 14, rel=0.05)
    assert 0.3 < fit.zipf_exponent < 0.8
    out = tmp_path / "workload.yaml"
    result = subprocess.run([str(PREDSIM), "workload", "fit", str(FLIGHTS), "--entity-column",
                             "tailnum", "--out", str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert out.read_text() == result.stdout == fit.to_yaml()
    # 13.7 days: a first-day share but no first-week one (that needs more than two weeks)
    assert fit.first_week is None and 0 < fit.first_day.share < 1
    assert "First-week share: the log is too short" in result.stdout
    assert "# First-day share: " in result.stdout
    section = yaml.safe_load(result.stdout)["workload"]
    share = section["new_entities"]["first_day_share"]
    assert 0 < share <= fit.first_day.share
    raw = dict(copy.deepcopy(BASE), architectures={"o": online()}, workload=section)
    assert scenario_from_dict(raw).workload.new_entities.first_day_share == share


@pytest.mark.parametrize("content, message", [
    ("", "cannot read"),
    ("timestamp,entity_id\n1,a\n", "at least two requests"),
    ("time,user\n1,a\n2,b\n", "no column 'timestamp'"),
    ("timestamp,entity_id\n1,a\n2,b\nnope,c\n", "line 4: timestamp: expected epoch seconds"),
])
def test_bad_logs_are_reported(tmp_path, content, message):
    (tmp_path / "log.csv").write_text(content)
    with pytest.raises(InputError) as info:
        read_log(tmp_path / "log.csv")
    assert any(message in p and "log.csv" in p for p in info.value.problems), info.value.problems


def test_every_bad_row_is_counted_and_none_dropped(tmp_path):
    rows = ["timestamp,entity_id"] + [f"{i},u{i}" if i % 3 else f"x{i},u{i}" for i in range(1, 60)]
    (tmp_path / "log.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(InputError) as info:
        read_log(tmp_path / "log.csv")
    problems = info.value.problems
    assert "line 4:" in problems[0]  # value 3 is on line 4 (the header is line 1)
    assert "and 9 more bad rows" in problems[-1]  # 19 bad rows: 10 shown, 9 counted


# --------------------------------------------------------------------------------------------
# calibrate latency and {percentiles: ...}
# --------------------------------------------------------------------------------------------

def test_calibrate_recovers_lognormal_parameters():
    mu, sigma, n = math.log(0.015), 0.6, 20_000
    x = np.random.default_rng(7).lognormal(mu, sigma, n)
    fit = fit_latency(x)
    assert fit.best.name == "lognormal"
    p = fit.best.parameters
    assert abs(p["mu"] - mu) < Z99 * sigma / math.sqrt(n)
    assert abs(p["sigma"] - sigma) < Z99 * sigma / math.sqrt(2 * n)
    assert fit.best.ks_p_value > 0.01 and abs(fit.best.quantile_errors["p99"]) < 0.05
    assert fit.candidates[1].ks_statistic > fit.best.ks_statistic


def test_calibrate_prefers_gamma_for_gamma_samples():
    shape, n = 2.5, 20_000
    x = np.random.default_rng(8).gamma(shape, 0.004, n)
    fit = fit_latency(x)
    assert fit.best.name == "gamma"
    se = 1 / math.sqrt(n * (special.polygamma(1, shape) - 1 / shape))  # the shape MLE's
    assert abs(fit.best.parameters["shape"] - shape) < Z99 * se


def test_calibrate_latency_prints_a_snippet_that_pastes(tmp_path):
    x = np.random.default_rng(1).lognormal(math.log(12), 0.5, 3000)  # milliseconds
    pd.DataFrame({"request": range(3000), "latency_ms": x}).to_csv(tmp_path / "s.csv",
                                                                  index=False)
    result = subprocess.run([str(PREDSIM), "calibrate", "latency", "s.csv"], cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    snippet = yaml.safe_load(result.stdout)  # the comments are YAML comments
    assert list(snippet) == ["service_time"] and "lognormal" in snippet["service_time"]
    arch = online(service=snippet["service_time"])
    s = scenario_from_dict(dict(copy.deepcopy(BASE), architectures={"o": arch}))
    assert s.architectures["o"].serving.service_time.params["median"] == pytest.approx(
        0.012, rel=0.05)


@pytest.mark.parametrize("content, args, message", [
    ("latency_ms\n5\n-1\n", [], "line 3"),
    ("latency\n5\n6\n", ["--column", "latency"], "unit"),
    ("latency_ms\n0\n6\n", [], "samples > 0"),
    ("a_ms,b_ms\n1,2\n", [], "one column"),
])
def test_calibrate_latency_bad_input_exits_2(tmp_path, content, args, message):
    (tmp_path / "s.csv").write_text(content)
    result = CliRunner().invoke(main, ["calibrate", "latency", str(tmp_path / "s.csv"), *args])
    assert result.exit_code == 2 and result.exception is not None  # SystemExit, no traceback
    assert message in result.output and "s.csv" in result.output


def test_read_samples_column_and_unit(tmp_path):
    (tmp_path / "s.csv").write_text("id,took\n1,5\n2,7\n")
    values, column = read_samples(tmp_path / "s.csv", column="took", unit="ms")
    assert column == "took" and values == pytest.approx([0.005, 0.007])


def test_two_percentiles_give_the_lognormal_through_them():
    d = Distribution.percentiles({"p50": 0.012, "p99": 0.080})
    u = np.random.default_rng(0).random(1000)
    assert np.allclose(d.ppf(u), Distribution.lognormal(0.012, 0.080).ppf(u), rtol=1e-12)
    assert d.mean == pytest.approx(Distribution.lognormal(0.012, 0.080).mean)


def test_more_percentiles_pass_through_every_one():
    points = {"p50": 0.010, "p90": 0.020, "p99": 0.090, "p99.9": 0.3}
    d = Distribution.percentiles(points)
    q = np.array([0.5, 0.9, 0.99, 0.999])
    assert d.ppf(q) == pytest.approx(list(points.values()), rel=1e-9)
    # the closed-form moments against the integral of the quantile function
    for order, closed in ((1, d.mean), (2, d.second_moment)):
        value, _ = integrate.quad(lambda u: d.ppf(np.array([u]))[0] ** order, 0, 1,
                                  points=list(q), limit=500)
        assert closed == pytest.approx(value, rel=1e-6)


@pytest.mark.parametrize("value, message", [
    ({"p50": "12ms"}, "at least two"),
    ({"p50": "12ms", "p99": "5ms"}, "must not decrease"),
    ({"p50": "12ms", "q99": "50ms"}, "p50, p95"),
    ({"p50": "12ms", "p100": "50ms"}, "p50, p95"),
    ({"p50": "0ms", "p99": "50ms"}, "> 0"),
])
def test_bad_percentiles_name_the_key(value, message):
    arch = online(service={"percentiles": value})
    with pytest.raises(ScenarioError) as info:
        scenario_from_dict(dict(copy.deepcopy(BASE), architectures={"o": arch}))
    (line,) = info.value.problems
    assert "architectures.o.serving.service_time" in line and message in line
