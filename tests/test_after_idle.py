"""``serving.after_idle``: a replica's work multiplied by a slowdown read off at the time the
replica stood idle before the request (0 when it waited in the queue; a replica that never
served reads the last point).

Checked here: the scenario key's validation; a timeline computed by hand through the one-at-a-
time kernel and the batching loop; a slowdown of 1 everywhere is today's run, request by
request; the fast engine and the reference engine (which implements the definition on its own,
one SimPy process per request) agree request by request, with one and several replicas, a
timeout, batching, an autoscaler and slow periods; the M/G/1 queue whose first service after an
idle period is exceptional against its closed form (Welch 1964); ``predsim calibrate latency``
finding and fitting it in a time series, and leaving the output as it was when there is none.

One request at a time the fast engine serves through ``ReplicaPool.serve_split``, which
``sim/engine/architectures/parts.py`` calls when ``serving.after_idle`` (or slow periods) is set.
"""

import math

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from scipy import stats

import sim
from sim.cli.main import main as cli
from sim.distributions import ZERO
from sim.engine import run as engine
from sim.engine.serving import BatchingPool, ReplicaPool, idle_factor
from sim.inputs.series import Series, read_series
from sim.inputs.slow_fit import analyse_series, fit_after_idle, idle_before
from sim.scenario.architectures import AfterIdle, Serving
from sim.scenario.fields import ScenarioError
from tests.conftest import ROOT, make_scenario, online
from tests.test_reference import assert_requests_match, assert_same, per_request
from tests.test_slow_periods_reference import serving_case

AFTER_IDLE = {"idle": ["0ms", "5ms", "30ms"], "slowdown": [0.7, 1.0, 1.6]}
ONES = {"idle": ["0ms", "5ms", "30ms"], "slowdown": [1, 1, 1]}
AUTO = {"min": 1, "max": 5, "target_utilization": 0.5, "every": "2s", "tolerance": 0.05,
        "cooldown": "0s"}
SLOW = {"scope": "replica", "states": [{"slowdown": 1, "mean": "400ms"},
                                       {"slowdown": 4, "mean": "60ms"}]}


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(engine, "REQUESTS_PER_CHUNK", 1024)  # several chunks: state carried


# --------------------------------------------------------------------------------------------
# The scenario key
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("after_idle, message", [
    ({"idle": [0, "1ms"], "slowdown": [1.0]},
     "after_idle: give one slowdown per idle time (got 2 idle times and 1 slowdowns)"),
    ({"idle": ["1ms", "1ms"], "slowdown": [1, 1]},
     "after_idle: idle must increase: idle[1] (1ms) is not after idle[0] (1ms)"),
    ({"idle": ["2ms", "1ms"], "slowdown": [1, 1]}, "after_idle: idle must increase"),
    ({"idle": ["-1ms"], "slowdown": [1]}, "after_idle.idle.0: must be >= 0"),
    ({"idle": [0], "slowdown": [0]}, "after_idle: slowdown[0] must be between 0.001 and 1000"),
    ({"idle": [0, "1ms"], "slowdown": [1, -2]}, "after_idle: slowdown[1] must be between"),
    ({"idle": [], "slowdown": []}, "after_idle.idle: List should have at least 1 item"),
    ({"idle": [0]}, "after_idle.slowdown: is required"),
    ({"idle": [0], "slowdown": [1], "scope": "replica"}, "after_idle.scope: unknown key"),
])
def test_bad_after_idle_is_refused_naming_the_key(after_idle, message):
    arch = online(1)
    arch["serving"]["after_idle"] = after_idle
    with pytest.raises(ScenarioError) as err:
        make_scenario({"online": arch})
    assert f"architectures.online.serving.{message}" in str(err.value)


def test_the_factor_is_straight_lines_flat_beyond_the_ends():
    spec = AfterIdle.model_validate({"idle": ["1ms", "3ms", "10ms"], "slowdown": [0.5, 1, 3]})
    knots, factors = spec.arrays()
    idle = [0.0, 0.5e-3, 1e-3, 2e-3, 3e-3, 6.5e-3, 10e-3, 1.0, math.inf]
    want = [0.5, 0.5, 0.5, 0.75, 1.0, 2.0, 3.0, 3.0, 3.0]
    assert [idle_factor(x, knots, factors) for x in idle] == pytest.approx(want, abs=1e-12)
    assert spec.factor(idle) == pytest.approx(want, abs=1e-12)
    one = AfterIdle.model_validate({"idle": ["4ms"], "slowdown": [1.3]})
    assert [idle_factor(x, *one.arrays()) for x in (0.0, 1.0, math.inf)] == [1.3] * 3


def test_no_after_idle_is_none_and_the_occupancy_at_saturation_uses_the_first():
    arch = online(2, {"constant": "10ms"})
    plain = make_scenario({"online": arch}).architectures["online"].serving
    assert plain.after_idle is None
    arch["serving"]["after_idle"] = {"idle": [0, "10ms"], "slowdown": [0.9, 1.2]}
    spec = make_scenario({"online": arch}).architectures["online"].serving
    assert spec.mean_occupancy_s(ZERO) == pytest.approx(0.009)
    assert plain.mean_occupancy_s(ZERO) == pytest.approx(0.010)


# --------------------------------------------------------------------------------------------
# By hand, through the kernels
# --------------------------------------------------------------------------------------------

HAND = AfterIdle.model_validate({"idle": [0, "10ms"], "slowdown": [0.5, 2.0]})
HAND_T = np.array([0.0, 2e-3, 17e-3, 40e-3])
HAND_LOOKUP, HAND_WORK = 1e-3, 4e-3


def test_one_replica_by_hand():
    """Work 4 ms and lookup 1 ms each, slowdown 0.5 back to back up to 2 after 10 ms idle:
    the first finds a replica that never served (x2: 1 + 8 = 9 ms); the second waits (idle 0,
    x0.5: 3 ms, free at 12 ms); the third comes 5 ms after that (x1.25: 6 ms); the fourth
    17 ms after the third left (x2: 9 ms)."""
    pool = ReplicaPool(1, None, after_idle=HAND)
    wait, started, occupancy = pool.serve_split(HAND_T, HAND_LOOKUP, HAND_WORK)
    assert started.all()
    np.testing.assert_allclose(wait, [0.0, 7e-3, 0.0, 0.0], atol=1e-15)
    np.testing.assert_allclose(occupancy, [9e-3, 3e-3, 6e-3, 9e-3], atol=1e-15)
    assert pool.free_at_s.tolist() == pytest.approx([49e-3], abs=1e-15)


def test_one_replica_by_hand_with_a_give_up():
    """Patience 5 ms: the second gives up after waiting (it never holds the replica), so the
    third finds it idle since 9 ms: 8 ms, x(0.5 + 0.8 x 1.5) = x1.7, 1 + 6.8 ms."""
    pool = ReplicaPool(1, 5e-3, after_idle=HAND)
    wait, started, occupancy = pool.serve_split(HAND_T, HAND_LOOKUP, HAND_WORK)
    assert started.tolist() == [True, False, True, True]
    np.testing.assert_allclose(wait, [0.0, 5e-3, 0.0, 0.0], atol=1e-15)
    np.testing.assert_allclose(occupancy[[0, 2, 3]], [9e-3, 7.8e-3, 9e-3], atol=1e-15)
    assert np.isnan(occupancy[1])


def test_the_batching_loop_gives_the_same_timeline():
    """Batches of one without linger are the one-at-a-time queue, after_idle included."""
    spec = Serving.model_validate({"replicas": 1, "batching": {"max_batch": 1, "per_item": 0},
                                   "after_idle": HAND.model_dump(mode="json")})
    pool = BatchingPool(spec, eval_until_s=np.inf)
    n = HAND_T.size
    out = pool.serve({"t_s": HAND_T, "lookup_s": np.full(n, HAND_LOOKUP),
                      "item_s": np.full(n, HAND_WORK), "fixed_s": np.zeros(n)},
                     until_s=np.inf, final=True)
    np.testing.assert_allclose(out["wait_s"], [0.0, 7e-3, 0.0, 0.0], atol=1e-15)
    np.testing.assert_allclose(out["occupancy_s"], [9e-3, 3e-3, 6e-3, 9e-3], atol=1e-15)


def test_a_batch_takes_the_idle_time_of_its_replica_linger_included():
    """max_batch 2, linger 4 ms, lookup 1 ms, fixed 1 ms, per_item 2 ms: the first request (at
    0) leaves alone at 4 ms on a replica that never served (work 3 ms x2: 7 ms, free at 11 ms,
    the 4 ms of linger counted as idling); the next two (at 20 and 21 ms) leave together at
    21 ms: 10 ms idle, work 5 ms x2 (11 ms, free at 32 ms); a last pair at 30 and 31 ms waits
    for it: back to back, x0.5 (3.5 ms)."""
    spec = Serving.model_validate({
        "replicas": 1, "batching": {"max_batch": 2, "max_wait": "4ms", "fixed": "1ms",
                                    "per_item": "2ms"},
        "after_idle": HAND.model_dump(mode="json")})
    t = np.array([0.0, 20e-3, 21e-3, 30e-3, 31e-3])
    pool = BatchingPool(spec, eval_until_s=np.inf)
    out = pool.serve({"t_s": t, "lookup_s": np.full(t.size, 1e-3),
                      "item_s": np.full(t.size, 2e-3), "fixed_s": np.full(t.size, 1e-3)},
                     until_s=np.inf, final=True)
    np.testing.assert_allclose(out["start_s"], [4e-3, 21e-3, 21e-3, 32e-3, 32e-3], atol=1e-15)
    np.testing.assert_allclose(out["occupancy_s"], [7e-3, 11e-3, 11e-3, 3.5e-3, 3.5e-3],
                               atol=1e-15)


def test_chunks_carry_the_replicas_idle_times():
    rng = np.random.default_rng(4)
    t = np.cumsum(rng.exponential(0.01, 5000))
    lookup, work = rng.exponential(0.001, t.size), rng.exponential(0.02, t.size)
    whole = ReplicaPool(3, 0.05, after_idle=AfterIdle.model_validate(AFTER_IDLE))
    a = whole.serve_split(t, lookup, work)
    pieces = ReplicaPool(3, 0.05, after_idle=AfterIdle.model_validate(AFTER_IDLE))
    cuts = [0, 7, 1000, 1001, 3500, t.size]
    b = [pieces.serve_split(t[i:j], lookup[i:j], work[i:j]) for i, j in zip(cuts, cuts[1:])]
    for k in range(3):
        np.testing.assert_array_equal(a[k], np.concatenate([x[k] for x in b]))


# --------------------------------------------------------------------------------------------
# A slowdown of 1 everywhere is today's run
# --------------------------------------------------------------------------------------------

def test_ones_in_the_kernel_are_today_to_the_bit():
    rng = np.random.default_rng(5)
    t = np.cumsum(rng.exponential(0.01, 20000))
    lookup, work = rng.exponential(0.002, t.size), rng.exponential(0.025, t.size)
    today = ReplicaPool(3, 0.08)
    wait, started = today.serve(t, lookup + work)
    pool = ReplicaPool(3, 0.08, after_idle=AfterIdle.model_validate(ONES))
    wait1, started1, occupancy1 = pool.serve_split(t, lookup, work)
    assert 0.01 < np.mean(~started) < 0.5  # some give up: the case says something
    np.testing.assert_array_equal(wait, wait1)
    np.testing.assert_array_equal(started, started1)
    np.testing.assert_array_equal(np.where(started, lookup + work, np.nan), occupancy1)
    # without after_idle, serve_split is serve of lookup + work
    plain = ReplicaPool(3, 0.08).serve_split(t, lookup, work)
    np.testing.assert_array_equal(plain[0], wait)
    np.testing.assert_array_equal(plain[2], occupancy1)


def _scenario(replicas=2, after_idle=AFTER_IDLE, timeout=None, batching=None, autoscaling=None,
              slow=None, rate="60/s", seed=3, horizon="80s"):
    arch = serving_case(replicas, timeout, batching, autoscaling)
    serving = arch["serving"]
    if after_idle is not None:
        serving["after_idle"] = after_idle
    if slow is not None:
        serving["slow_periods"] = slow
    streaming = {**arch, "kind": "streaming", "serving": dict(serving),
                 "features": {"stream": {"lag": {"exponential": {"mean": "2s"}}, "window": "0s"},
                              "request": {"compute": {"exponential": {"mean": "3ms"}}}}}
    return make_scenario({"online": arch, "streaming": streaming}, horizon=horizon,
                         warmup="10s", seed=seed, **{"workload.arrivals.rate": rate})


CASES = {
    "one_replica": dict(replicas=1, rate="25/s"),
    "several_replicas_timeout": dict(replicas=3, timeout="60ms", rate="90/s"),
    "batching": dict(batching={}, rate="150/s", timeout="150ms"),
    "autoscaling_batching": dict(batching={"max_batch": 3}, rate="150/s",
                                 autoscaling={**AUTO, "warmup": "2s"}),
    "autoscaling_one_at_a_time": dict(autoscaling=AUTO, rate="80/s"),
    "slow_periods": dict(replicas=3, slow=SLOW, rate="60/s", timeout="100ms"),
    "slow_periods_batching": dict(batching={}, slow={**SLOW, "scope": "host"}, rate="150/s"),
    "batch_curve": dict(batching={"fixed": 0, "per_item": 0, "batch_time": {
        1: {"exponential": {"mean": "8ms"}}, 4: {"exponential": {"mean": "20ms"}}}},
        rate="150/s", timeout="150ms"),
}


@pytest.mark.slow
@pytest.mark.parametrize("which", ["fast", "reference"])
@pytest.mark.parametrize("case", ["one_replica", "several_replicas_timeout",
                                  "autoscaling_batching", "slow_periods"])
def test_ones_everywhere_are_the_run_without_after_idle(case, which, small_chunks):
    assert_requests_match(*per_request(_scenario(after_idle=None, **CASES[case]), which),
                          *per_request(_scenario(after_idle=ONES, **CASES[case]), which))


# --------------------------------------------------------------------------------------------
# Fast engine = reference engine, request by request
# --------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_fast_and_reference_agree_request_by_request(case, small_chunks):
    assert_same(_scenario(**CASES[case]))


@pytest.mark.parametrize("case", ["one_replica", "batching"])
def test_the_cases_exercise_what_they_are_meant_to(case, small_chunks):
    """after_idle changes service times both ways (so agreeing says something): faster back
    to back, slower after long idling."""
    with_idle = per_request(_scenario(**CASES[case]), "fast")[1]["online"]
    without = per_request(_scenario(after_idle=None, **CASES[case]), "fast")[1]["online"]
    both = ~np.isnan(with_idle["service_s"]) & ~np.isnan(without["service_s"])
    ratio = with_idle["service_s"][both] / without["service_s"][both]
    assert np.mean(ratio < 0.95) > 0.05 and np.mean(ratio > 1.05) > 0.05


def test_parts_py_serves_one_request_at_a_time_with_after_idle(small_chunks):
    """The end-to-end check of parts.py's wiring: through sim.simulate, against the
    reference, and different from the run without after_idle."""
    scenario = _scenario(**CASES["several_replicas_timeout"], horizon="30s")
    assert_same(scenario)
    plain = sim.simulate(_scenario(after_idle=None, **CASES["several_replicas_timeout"],
                                   horizon="30s"))
    idle = sim.simulate(scenario)
    assert (idle.summary["service_ms_mean"] != plain.summary["service_ms_mean"]).all()


# --------------------------------------------------------------------------------------------
# M/G/1 with an exceptional first service (Welch 1964)
# --------------------------------------------------------------------------------------------

def welch_mean_wait(lam: float, b1: float, b2: float, a1: float, a2: float) -> float:
    """Mean wait in queue of an M/G/1 queue whose customers arriving to an empty system have
    service moments (a1, a2), the others (b1, b2) (Welch 1964). By PASTA the mean wait is
    the time-average work, lam E[S W + S^2 / 2]; a customer served exceptionally had no wait,
    so E[S W] = b1 E[W]; the share p0 of customers that find the system empty is the idle
    share, 1 - lam (p0 a1 + (1 - p0) b1). Hence
    W = lam b2 / (2 (1 - rho)) + lam (a2 - b2) / (2 (1 - rho + lam a1)), rho = lam b1."""
    rho = lam * b1
    return lam * b2 / (2 * (1 - rho)) + lam * (a2 - b2) / (2 * (1 - rho + lam * a1))


@pytest.mark.parametrize("kernel", ["one_at_a_time", "batching"])
@pytest.mark.parametrize("c", [1.6, 0.5])
def test_exceptional_first_service_matches_welch(c, kernel):
    """Exponential service (mean 1), Poisson arrivals at 0.5: a request that finds the replica
    idle (by more than a nanosecond: for Poisson arrivals, always) works c times as long.
    Twenty independent runs of 100,000 requests; the mean wait within their 99% interval of
    the closed form (1.6 for c = 1.6, 0.5 for c = 0.5; 1.0 without)."""
    lam, runs, n = 0.5, 20, 100_000
    spec = {"idle": [0, 1e-9], "slowdown": [1.0, c]}
    means = []
    for r in range(runs):
        rng = np.random.default_rng(100 + r)
        t = np.cumsum(rng.exponential(1 / lam, n))
        work = rng.exponential(1.0, n)
        if kernel == "one_at_a_time":
            wait = ReplicaPool(1, None, after_idle=AfterIdle.model_validate(spec)).serve_split(
                t, 0.0, work)[0]
        else:
            serving = Serving.model_validate({"replicas": 1, "batching": {"max_batch": 1,
                                                                          "per_item": 0},
                                              "after_idle": spec})
            wait = BatchingPool(serving, eval_until_s=np.inf).serve(
                {"t_s": t, "lookup_s": np.zeros(n), "item_s": work, "fixed_s": np.zeros(n)},
                until_s=np.inf, final=True)["wait_s"]
        means.append(wait[n // 10:].mean())
    means = np.array(means)
    half = stats.t.ppf(0.995, runs - 1) * means.std(ddof=1) / math.sqrt(runs)
    want = welch_mean_wait(lam, 1.0, 2.0, c, 2.0 * c * c)
    assert abs(means.mean() - want) <= half, (means.mean(), want, half)
    assert abs(want - 1.0) > 4 * half  # and the plain M/M/1 (1.0) is told apart


# --------------------------------------------------------------------------------------------
# predsim calibrate latency: the idle time before each request
# --------------------------------------------------------------------------------------------

TRUTH = {"idle": [0.0, 5e-3, 20e-3], "slowdown": [0.9, 1.0, 1.3]}


def _closed_loop(n=3000, seed=11, truth=TRUTH):
    """A calibration like benchmarks/fidelity's: one replica, each request an exponential pause
    (mean 4 ms) after the one before ends, work lognormal (median 1.5 ms) times the true
    slowdown at that pause (or 1 everywhere with ``truth`` None)."""
    rng = np.random.default_rng(seed)
    pause = rng.exponential(4e-3, n)
    pause[0] = 1.0
    work = 1.5e-3 * np.exp(0.4 * rng.standard_normal(n))
    factor = (np.interp(np.minimum(pause, truth["idle"][-1]), truth["idle"], truth["slowdown"])
              if truth else np.ones(n))
    d = work * factor
    t = np.empty(n)
    t[0] = 0.0
    t[1:] = np.cumsum(d[:-1] + pause[1:])
    return t, d


def test_idle_before_is_start_minus_the_end_before():
    idle = idle_before(np.array([0.0, 3.0, 4.0, 10.0]), np.array([1.0, 1.0, 2.0, 1.0]))
    assert idle.tolist() == [math.inf, 2.0, 0.0, 4.0]


def test_the_fit_finds_the_slowdown_it_was_made_with():
    t, d = _closed_loop()
    fit = fit_after_idle(t, d)
    assert fit is not None and fit.found and fit.p < 1e-6 and fit.spearman > 0
    assert fit.knot_text[0] == "0ms" and len(fit.knot_text) == 6
    # relative to the series' average: compare shapes, each point within its interval
    truth = np.interp(np.minimum(fit.knots_s, 20e-3), TRUTH["idle"], TRUTH["slowdown"])
    scale = np.mean(fit.factor(fit.idle_s)) / np.mean(np.interp(
        np.minimum(np.where(np.isfinite(fit.idle_s), fit.idle_s, 20e-3), 20e-3),
        TRUTH["idle"], TRUTH["slowdown"]))
    assert np.mean(fit.per_request) == pytest.approx(1.0, abs=1e-12)
    inside = np.abs(fit.factors - truth * scale) <= fit.half_widths
    assert inside.sum() >= len(inside) - 1, (fit.factors, truth * scale, fit.half_widths)
    assert fit.factors[0] < 0.97 and fit.factors[-1] > 1.1


def test_no_effect_is_rarely_found_and_leaves_the_output_as_it_was():
    """At most 1% of series without the effect judged to have it (here 200 small ones; a
    binomial 99% bound), and when it is not found, the printed analysis is the one without
    the test."""
    found = sum(fit_after_idle(*_closed_loop(n=300, seed=s, truth=None)).found
                for s in range(200))
    assert found <= stats.binom.ppf(0.99, 200, 0.01)
    t, d = _closed_loop(seed=3, truth=None)
    series = Series("plain.csv", "t_s", "service_time_s", t, d, np.arange(t.size) + 2)
    analysis = analyse_series(series)
    assert not analysis.after_idle and analysis.idle is not None
    text = analysis.to_text()
    assert "after_idle" not in text and "idle before" not in text
    analysis.idle = None
    assert analysis.to_text() == text


def test_slow_stretches_on_a_fixed_schedule_are_not_taken_for_idling():
    """Requests started every 10 ms whatever happened (the idle time is then 10 ms less the
    duration before), durations in slow stretches: the idle time and the duration are
    strongly correlated through the duration before, and the test, given it, finds nothing."""
    rng = np.random.default_rng(7)
    n = 2000
    slow = np.zeros(n, dtype=bool)
    for i in range(1, n):
        slow[i] = slow[i - 1] if rng.random() < 0.95 else not slow[i - 1]
    d = np.where(slow, 6e-3, 2e-3) * rng.lognormal(0, 0.2, n)
    fit = fit_after_idle(np.arange(n) * 0.01, d)
    assert fit.spearman < -0.5 and abs(fit.partial) < 0.05 and not fit.found


def test_series_that_cannot_tell_are_not_tested():
    """Back to back (the recorded matmul series: microseconds between calls of 1.8 ms) and
    overlapping requests (several replicas) say nothing about idling; the output is as it
    was."""
    recorded = read_series(ROOT / "tests" / "data" / "slow_matmul_cpu.csv")
    assert fit_after_idle(recorded.times_s, recorded.durations_s) is None
    analysis = analyse_series(recorded, check_runs=20)
    assert analysis.idle is None and "after_idle" not in analysis.to_text()
    t, d = _closed_loop()
    assert fit_after_idle(t, d * 10) is None  # each starts before the one before ends


def test_the_analysis_divides_the_work_out(tmp_path):
    t, d = _closed_loop()
    series = Series("idle.csv", "start_s", "service_time_s", t, d, np.arange(t.size) + 2)
    analysis = analyse_series(series)
    assert analysis.after_idle
    np.testing.assert_allclose(analysis.work_s, d / analysis.idle.per_request)
    assert analysis.latency.samples_s == pytest.approx(analysis.work_s)


def test_calibrate_latency_prints_after_idle_that_a_scenario_takes(tmp_path):
    t, d = _closed_loop()
    path = tmp_path / "calibration.csv"
    path.write_text("start_s,service_time_s\n" +
                    "".join(f"{a:.9f},{b:.9f}\n" for a, b in zip(t, d)))
    result = CliRunner().invoke(cli, ["calibrate", "latency", str(path)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Does a service time depend on how long the replica was idle before it" in out
    assert "Yes: Spearman rank correlation" in out
    pasted = yaml.safe_load("\n".join(line for line in out.splitlines()
                                      if not line.startswith("#")))
    assert set(pasted) == {"after_idle", "service_time"}
    arch = online(1, pasted["service_time"])
    arch["serving"]["after_idle"] = pasted["after_idle"]
    spec = make_scenario({"online": arch}).architectures["online"].serving.after_idle
    assert spec.slowdown[0] < 0.97 and spec.slowdown[-1] > 1.1
    assert spec.idle[0] == 0 and list(spec.idle) == sorted(spec.idle)


def test_explain_describes_after_idle():
    from sim.inputs.explain import explain
    arch = online(1, {"exponential": {"mean": "2ms"}})
    arch["serving"]["after_idle"] = {"idle": [0, "1ms", "10ms"], "slowdown": [0.96, 1.0, 1.13]}
    text = " ".join(explain(make_scenario({"online": arch})).split())
    assert ("How long the replica stood idle before a request changes its work (not the "
            "feature lookup): 4% faster when it follows the previous one at once") in text
    assert "13% slower after 10ms or more, and for a replica that has not served yet" in text


def _open_loop(rate_per_s, n, seed, truth=TRUTH, gap_s=0.4e-6):
    """A server's log under load, as a production log is: Poisson arrivals at ``rate_per_s``,
    one replica, FIFO; a request that waited starts ``gap_s`` after the one before ends (the
    worker's own fraction of a microsecond between two queued requests), its work lognormal
    (median 1.5 ms) times the true slowdown at the idle time before it. Returns the starts,
    the durations and the idle times."""
    rng = np.random.default_rng(seed)
    arrive = np.cumsum(rng.exponential(1 / rate_per_s, n))
    work = 1.5e-3 * np.exp(0.4 * rng.standard_normal(n))
    start, duration, idle = np.empty(n), np.empty(n), np.empty(n)
    end = -math.inf
    for i in range(n):
        start[i] = max(arrive[i], end + gap_s)
        idle[i] = start[i] - end
        duration[i] = work[i] * np.interp(min(idle[i], truth["idle"][-1]), truth["idle"],
                                          truth["slowdown"])
        end = start[i] + duration[i]
    return start, duration, idle


def test_a_log_under_load_predicts_the_service_at_a_higher_load():
    """Fitted on a log at utilisation 0.5, where half the requests follow the one before by a
    fraction of a microsecond, the points stay IDLE_KNOT_GAP x the median duration apart (not
    0.4 us, where the multiplier at 0, which the simulator reads for every queued request, would
    rest on no data), and the work times the multiplier at the idle times the simulator reads
    (0 for a request that waited) gives the mean service time of the same server at 0.85,
    within the 99% bound of the sampling errors: the log's mean, the fitted point at 0 and the
    loaded run's mean."""
    from sim.inputs.slow_fit import IDLE_KNOT_GAP
    mean_work = 1.5e-3 * math.exp(0.08)
    gap = 0.4e-6
    t, d, _ = _open_loop(0.5 / mean_work, 10_000, seed=5, gap_s=gap)
    fit = fit_after_idle(t, d)
    assert fit is not None and fit.found and fit.knots_s[0] == 0
    assert np.all(np.diff(fit.knots_s) >= IDLE_KNOT_GAP * np.median(d))
    work = d / fit.per_request
    _, d_high, idle_high = _open_loop(0.85 / mean_work, 40_000, seed=6, gap_s=gap)
    read = np.where(idle_high <= 2 * gap, 0.0, idle_high)  # queued: the simulator reads 0
    predicted = work.mean() * np.mean(fit.factor(read))
    spec = AfterIdle.model_validate(fit.spec())  # as a scenario reads the printed YAML
    assert np.mean(spec.factor(read)) == pytest.approx(np.mean(fit.factor(read)), rel=2e-3)
    se = math.sqrt((work.std() / math.sqrt(work.size) / work.mean()) ** 2
                   + (fit.half_widths[0] / stats.norm.ppf(0.975)) ** 2
                   + (d_high.std() / math.sqrt(d_high.size) / d_high.mean()) ** 2)
    assert abs(predicted / d_high.mean() - 1) <= stats.norm.ppf(0.995) * se, (
        predicted, d_high.mean(), fit.knot_text, fit.factors)
