"""Batch time as measured (``serving.batching.batch_time``): the interpolation, and the engine."""

import copy

import numpy as np
import pytest
from scipy import stats

import sim
from sim.engine.batch_curve import batch_time_at
from sim.scenario import Batching, ScenarioError
from tests.conftest import make_scenario
from tests.test_batching import online_with

# the 6-layer encoder on an H200 (../shared/DATA.md), ms
GPU = {1: 1.26, 8: 1.81, 32: 1.75, 64: 1.84, 128: 2.05, 256: 3.52, 512: 6.83}
SIZES = np.array(list(GPU), float)
TIMES = np.array(list(GPU.values()))


def test_interpolation_by_hand():
    assert batch_time_at(SIZES, TIMES, 1.0) == pytest.approx(1.26)
    assert batch_time_at(SIZES, TIMES, 4.5) == pytest.approx(1.26 + 0.5 * 0.55)  # halfway 1..8
    assert batch_time_at(SIZES, TIMES, 192.0) == pytest.approx((2.05 + 3.52) / 2)
    assert batch_time_at(SIZES, TIMES, 512.0) == pytest.approx(6.83)
    # beyond the largest: the last segment extended, 3.31 ms per 256 more requests
    assert batch_time_at(SIZES, TIMES, 768.0) == pytest.approx(6.83 + 3.31)
    # below the smallest size given: its time
    assert batch_time_at(SIZES[1:], TIMES[1:], 2.0) == pytest.approx(1.81)
    # one size: the same for every batch
    assert batch_time_at(SIZES[:1], TIMES[:1], 40.0) == pytest.approx(1.26)
    # a last segment going down never goes below the largest size's time
    assert batch_time_at(np.array([1.0, 2.0]), np.array([3.0, 2.0]), 10.0) == pytest.approx(2.0)


def test_the_mean_full_batch_sets_the_capacity():
    b = Batching.model_validate({"max_batch": 200, "batch_time": {
        k: f"{v}ms" for k, v in GPU.items()}})
    assert list(b.batch_time) == sorted(GPU)
    assert b.batch_mean_s(200) == pytest.approx((2.05 + (3.52 - 2.05) * 72 / 128) * 1e-3)


def test_batch_time_and_fixed_per_item_are_exclusive():
    with pytest.raises(ScenarioError, match="give batch_time .* or fixed and per_item, not "
                                            "both"):
        make_scenario({"a": online_with({"batching": {
            "max_batch": 4, "fixed": "1ms", "batch_time": {1: "2ms", 4: "3ms"}}})})


def _latencies(scenario, name):
    seen = []

    def observe(arch, outcomes):
        if arch == name:
            seen.append(outcomes)

    sim.simulate(scenario, observe=observe)
    return {k: np.concatenate([getattr(o, k) for o in seen])
            for k in ("t_s", "latency_s", "service_s", "queue_wait_s")}


def test_a_straight_measured_line_is_the_same_as_fixed_plus_per_item():
    linear = {"max_batch": 8, "max_wait": "4ms", "fixed": {"constant": "6ms"},
              "per_item": {"constant": "1.5ms"}}
    table = {"max_batch": 8, "max_wait": "4ms",
             "batch_time": {1: "7.5ms", 3: "10.5ms", 8: "18ms"}}
    scenario = make_scenario({"linear": online_with({"batching": linear}, replicas=1),
                              "table": online_with({"batching": table}, replicas=1)},
                             horizon="10m", warmup="1m", **{"workload.arrivals.rate": "150/s"})
    a, b = _latencies(scenario, "linear"), _latencies(scenario, "table")
    assert np.array_equal(a["t_s"], b["t_s"])
    for key in ("latency_s", "service_s", "queue_wait_s"):
        assert np.allclose(a[key], b[key], rtol=1e-12, atol=1e-12, equal_nan=True), key


def test_a_batch_of_a_measured_size_draws_from_that_sizes_distribution():
    # one request per batch: every batch has size 1, its time a draw from batch_time[1]
    table = {"max_batch": 1, "batch_time": {
        1: {"lognormal": {"median": "4ms", "p99": "20ms"}}, 8: "30ms"}}
    scenario = make_scenario({"t": online_with({"batching": table}, replicas=4)},
                             horizon="10m", warmup="0s", **{"workload.arrivals.rate": "50/s"})
    arch = copy.deepcopy(scenario.architectures["t"])
    lookup = arch.feature_lookup  # exponential 2 ms, added before the batch's time
    out = _latencies(scenario, "t")
    service = out["service_s"][~np.isnan(out["service_s"])]
    rng = np.random.default_rng(0)
    reference = (Batching.model_validate(table).batch_time[1].ppf(rng.random(200_000))
                 + lookup.ppf(rng.random(200_000)))
    assert stats.ks_2samp(service, reference).pvalue > 0.001


def test_a_gpu_curve_batches_more_and_waits_less_than_its_linear_fit():
    """The point of the table: a linear fit through the flat part overstates large batches."""
    curve = {"max_batch": 64, "max_wait": "2ms", "batch_time": {1: "1.26ms", 8: "1.81ms",
                                                                  64: "1.84ms", 128: "2.05ms"}}
    fit = {"max_batch": 64, "max_wait": "2ms", "fixed": {"constant": "1.2ms"},
           "per_item": {"constant": "0.05ms"}}  # 1.25 ms at 1, 4.4 ms at 64
    archs = {"curve": online_with({"batching": curve}, replicas=1),
             "fit": online_with({"batching": fit}, replicas=1)}
    for arch in archs.values():
        arch["feature_lookup"] = 0
    scenario = make_scenario(archs, horizon="2m", warmup="20s",
                             **{"workload.arrivals.rate": "8000/s"})
    summary = sim.simulate(scenario).summary.set_index("architecture")
    assert summary.loc["curve", "utilization"] < summary.loc["fit", "utilization"]
    assert summary.loc["curve", "latency_ms_p99"] < summary.loc["fit", "latency_ms_p99"]


# -- calibrate latency on (batch size, duration) pairs ------------------------------------------

def _batches(curve: dict, n=40, noise=0.05, seed=0):
    rng = np.random.default_rng(seed)
    sizes = np.repeat(np.array(list(curve), float), n)
    times = np.repeat(np.array(list(curve.values())), n) * np.exp(rng.normal(0, noise,
                                                                             sizes.size))
    return sizes, times


def test_a_gpu_curve_is_given_as_measured_and_the_table_loads():
    from sim.engine.batch_curve import fit_batch_curve
    import yaml
    sizes, times = _batches({k: v * 1e-3 for k, v in GPU.items()})
    fit = fit_batch_curve(sizes, times)
    assert fit.best == "table"
    assert np.max(np.abs(fit.line_errors)) > 0.2  # the line misses the knee by far
    section = yaml.safe_load(fit.snippet())["batching"]
    batching = Batching.model_validate({"max_batch": 512, **section})
    for k, v in GPU.items():  # each size's median, to the noise of 40 draws (sd 5% / sqrt 40)
        assert batching.batch_time[k].ppf(np.array([0.5]))[0] == pytest.approx(v * 1e-3,
                                                                                rel=0.04)


def test_a_straight_line_is_given_as_fixed_and_per_item():
    from sim.engine.batch_curve import fit_batch_curve
    curve = {k: 2e-3 + 0.25e-3 * k for k in (1, 2, 4, 8, 16, 32)}
    sizes, times = _batches(curve, noise=0.03, seed=1)
    fit = fit_batch_curve(sizes, times)
    assert fit.best == "line"
    (slope, intercept), cov = np.polyfit(sizes, times, 1, cov=True)
    se_slope, se_intercept = np.sqrt(np.diag(cov))
    assert abs(fit.per_item_s - 0.25e-3) < 4 * se_slope
    assert abs(fit.fixed_s - 2e-3) < 4 * se_intercept


def test_calibrate_latency_reads_batch_sizes_and_names_a_bad_row(tmp_path):
    from click.testing import CliRunner
    from sim.cli.main import main
    sizes, times = _batches({k: v * 1e-3 for k, v in GPU.items()}, n=25)
    path = tmp_path / "batches.csv"
    rows = "\n".join(f"{int(k)},{t * 1e3:.6f}" for k, t in zip(sizes, times))
    path.write_text("batch_size,batch_ms\n" + rows + "\n")
    result = CliRunner().invoke(main, ["calibrate", "latency", str(path)])
    assert result.exit_code == 0, result.output
    assert "best: the table" in result.output and "batch_time:" in result.output
    path.write_text("batch_size,batch_ms\n1,1.2\n2.5,1.3\n4,1.5\n")
    result = CliRunner().invoke(main, ["calibrate", "latency", str(path)])
    assert result.exit_code == 2
    assert "line 3: batch_size must be a whole number of requests" in result.output
