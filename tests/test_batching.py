"""Dynamic batching and autoscaling: hand-computed traces, invariants, chunking, the reference.

The kernel is ``sim.engine.serving.batch_queue`` (through ``BatchingPool``); the reference engine
implements the same rules with SimPy processes (``sim.engine.reference._Batcher``).
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import sim
from sim.engine import run as engine
from sim.scenario import Serving
from sim.engine.serving import BatchingPool, fifo_queue
from tests.conftest import make_scenario, online
from tests.test_reference import assert_same

MS = 1e-3


def pool_for(**serving) -> BatchingPool:
    return BatchingPool(Serving(**serving), eval_until_s=1e9)


def run_pool(pool, t, lookup=None, item=None, fixed=None, splits=()):
    """Serve the requests in chunks cut at ``splits`` (times), then flush; outcomes in order."""
    n = t.size
    arrays = dict(t_s=t, lookup_s=np.zeros(n) if lookup is None else lookup,
                  item_s=np.zeros(n) if item is None else item,
                  fixed_s=np.zeros(n) if fixed is None else fixed)
    edges = [-np.inf, *sorted(splits), np.inf]
    parts = []
    for lo, hi in zip(edges, edges[1:]):
        m = (t >= lo) & (t < hi)
        final = hi == np.inf
        parts.append(pool.serve({k: v[m] for k, v in arrays.items()},
                                until_s=hi, final=final))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def test_batches_follow_a_hand_computed_trace():
    # One replica; a batch leaves when 3 wait or the oldest has waited 10 ms; it takes
    # 5 ms + 1 ms per request.
    pool = pool_for(replicas=1, batching={"max_batch": 3, "max_wait": "10ms",
                                          "fixed": {"constant": "5ms"},
                                          "per_item": {"constant": "1ms"}})
    t = np.array([0, 2, 4, 20, 31, 33, 38, 60]) * MS
    r = run_pool(pool, t, item=np.full(8, MS), fixed=np.full(8, 5 * MS))
    # 0, 2, 4: full at 4 ms -> 4..12.  20: alone, linger to 30 -> 30..36.
    # 31, 33: replica busy until 36, not full, oldest's linger ends at 41; 38 fills it -> 38..46.
    # 60: alone -> 70..76.
    start = np.array([4, 4, 4, 30, 38, 38, 38, 70]) * MS
    occupancy = np.array([8, 8, 8, 6, 8, 8, 8, 6]) * MS
    np.testing.assert_allclose(r["start_s"], start, atol=1e-12)
    np.testing.assert_allclose(r["wait_s"], start - t, atol=1e-12)
    np.testing.assert_allclose(r["occupancy_s"], occupancy, atol=1e-12)
    # replica time is counted once per batch, on its first request
    np.testing.assert_allclose(r["busy_s"], np.array([8, 0, 0, 6, 8, 0, 0, 6]) * MS, atol=1e-12)


def test_a_free_replica_does_not_wait_for_a_full_batch_once_the_oldest_has_lingered():
    # 0 lingers alone until 5 ms and runs 5..15; 6, 7, 8 arrive meanwhile, and when the
    # replica frees at 15 the oldest has waited past max_wait: they go at once (15..45).
    pool = pool_for(replicas=1, batching={"max_batch": 8, "max_wait": "5ms",
                                          "per_item": {"constant": "10ms"}})
    t = np.array([0, 6, 7, 8]) * MS
    r = run_pool(pool, t, item=np.full(4, 10 * MS))
    np.testing.assert_allclose(r["start_s"], np.array([5, 15, 15, 15]) * MS, atol=1e-12)


def test_requests_give_up_before_their_batch_when_the_wait_reaches_the_timeout():
    pool = pool_for(replicas=1, timeout="20ms", batching={"max_batch": 2, "max_wait": "5ms",
                                                          "per_item": {"constant": "30ms"}})
    t = np.array([0, 1, 2, 3, 70]) * MS
    r = run_pool(pool, t, item=np.full(5, 30 * MS))
    # 0, 1 -> 1..61; 2 and 3 wait; 2 gives up at 22, 3 at 23; 70 lingers to 75
    assert r["started"].tolist() == [True, True, False, False, True]
    np.testing.assert_allclose(r["wait_s"], np.array([1, 0, 20, 20, 5]) * MS, atol=1e-12)


def test_one_request_batches_without_linger_are_the_plain_fifo_queue():
    rng = np.random.default_rng(3)
    t = np.cumsum(rng.exponential(1 / 80, 20000))
    s = rng.exponential(0.02, t.size)
    pool = pool_for(replicas=2, timeout="100ms", service_time={"constant": "20ms"})
    r = run_pool(pool, t, item=s, splits=np.linspace(0, t[-1], 9)[1:-1])
    wait, started = np.empty(t.size), np.empty(t.size, bool)
    fifo_queue(t, s, 0.1, np.zeros(2), wait, started)
    np.testing.assert_allclose(r["wait_s"], wait, atol=1e-12)
    assert np.array_equal(r["started"], started)


@st.composite
def batch_cases(draw):
    n = draw(st.integers(1, 300))
    gaps = draw(st.lists(st.floats(0, 0.05), min_size=n, max_size=n))
    t = np.cumsum(gaps)
    serving = {"replicas": draw(st.integers(1, 3)),
               "batching": {"max_batch": draw(st.integers(1, 6)),
                            "max_wait": draw(st.sampled_from(["0s", "5ms", "30ms"])),
                            "fixed": {"constant": "4ms"}, "per_item": {"constant": "3ms"}}}
    if draw(st.booleans()):
        serving["timeout"] = "80ms"
    splits = sorted(draw(st.lists(st.floats(0, float(t[-1]) + 0.01), max_size=5)))
    item = np.array(draw(st.lists(st.floats(0, 0.02), min_size=n, max_size=n)))
    return serving, t, item, splits


@given(case=batch_cases())
@settings(max_examples=60, deadline=None)
def test_batching_invariants_and_chunking_does_not_matter(case):
    serving, t, item, splits = case
    whole = run_pool(pool_for(**serving), t, item=item, fixed=np.full(t.size, 0.004))
    cut = run_pool(pool_for(**serving), t, item=item, fixed=np.full(t.size, 0.004),
                   splits=splits)
    for k in ("wait_s", "start_s", "started", "busy_s"):
        np.testing.assert_array_equal(whole[k], cut[k])
    # every request is decided exactly once, in arrival order
    np.testing.assert_array_equal(whole["t_s"], t)
    assert (whole["wait_s"] >= 0).all()
    served = whole["started"]
    patience = 0.08 if "timeout" in serving else np.inf
    assert (whole["wait_s"][~served] == patience).all()
    # batches: consecutive served requests, the first carrying the batch's replica time
    first = whole["busy_s"][served] > 0  # fixed is 4 ms, so every batch has some
    sizes = np.diff(np.r_[np.flatnonzero(first), served.sum()])
    assert sizes.max(initial=0) <= serving["batching"]["max_batch"]
    starts = whole["start_s"][served]
    assert (starts == np.repeat(starts[first], sizes)).all()
    # replica time is the batch's: fixed + per-item sum, counted once
    assert whole["busy_s"][served].sum() == pytest.approx(
        0.004 * first.sum() + item[served].sum(), rel=1e-9)
    # never more batches in service at once than replicas
    b_start = starts[first]
    b_end = b_start + whole["occupancy_s"][served][first]
    for s in b_start:
        assert ((b_start <= s) & (b_end > s)).sum() <= serving["replicas"]


@pytest.mark.parametrize("max_batch, per_batch_ms, capacity_per_s", [
    (1, 10.0, 100.0), (10, 10.0, 1000.0), (100, 50.0, 2000.0)])
def test_a_saturated_replica_serves_full_batches_at_the_books_throughput(
        max_batch, per_batch_ms, capacity_per_s):
    # Huyen, Designing ML Systems, ch. 1: 10 ms per request -> 100 QPS; 10 per 10 ms batch ->
    # 1,000 QPS; 100 per 50 ms batch -> 2,000 QPS. Offer twice that and count what starts.
    per_item = per_batch_ms / 1e3 / max_batch
    pool = pool_for(replicas=1, batching={"max_batch": max_batch, "max_wait": "1ms",
                                          "per_item": {"constant": per_item}})
    horizon = 10.0
    t = np.arange(0, horizon, 1 / (2 * capacity_per_s))
    r = run_pool(pool, t, item=np.full(t.size, per_item))
    started = (r["start_s"] < horizon).sum()
    assert abs(started / horizon - capacity_per_s) <= max_batch / horizon + 1e-9

# -- autoscaling -------------------------------------------------------------------------------

def test_autoscaler_scales_up_after_warm_up_and_down_after_cool_down():
    # 1 replica, 30 ms per request, 50 requests/s for 20 s (1.5 replicas' worth), then 2/s.
    auto = {"min": 1, "max": 4, "target_utilization": 0.5, "every": "1s", "warmup": "2s",
            "cooldown": "5s"}
    pool = pool_for(replicas=1, service_time={"constant": "30ms"}, autoscaling=auto)
    pool.eval_until_s = 60.0
    t = np.r_[np.arange(0, 20, 0.02), np.arange(20, 60, 0.5)]
    run_pool(pool, t, item=np.full(t.size, 0.03), splits=[7.3, 21.1, 40.0])
    log = pool.log()
    at = dict(zip(np.round(log["t_s"]).astype(int), zip(log["replicas"], log["ready_replicas"])))
    # at 1 s the one replica was saturated: ratio 1/0.5 -> 2 replicas, ready 2 s later
    assert at[1] == (2, 1)
    assert at[2] == (2, 1)
    assert at[3][1] >= 2
    assert log["replicas"].max() <= 4 and log["replicas"].min() >= 1
    # after the load drops at 20 s the autoscaler comes back to 1, never within 5 s of a change
    assert log["replicas"][-1] == 1
    changes = np.flatnonzero(np.diff(log["replicas"]) != 0) + 1
    downs = [k for k in changes if log["replicas"][k] < log["replicas"][k - 1]]
    for k in downs:
        previous = [j for j in changes if j < k]
        if previous:
            assert log["t_s"][k] - log["t_s"][previous[-1]] >= 5 - 1e-9
    # paid-for replica time includes warming up; ready time does not
    assert (log["replica_s"] >= log["ready_replica_s"] - 1e-9).all()
    assert (log["replica_s"] > log["ready_replica_s"] + 0.5).any()


def test_queue_target_scales_with_the_waiting_requests():
    auto = {"min": 1, "max": 8, "target_queue": 1, "every": "2s", "warmup": "0s",
            "cooldown": "0s", "tolerance": 0}
    pool = pool_for(replicas=1, service_time={"constant": "100ms"}, autoscaling=auto)
    pool.eval_until_s = 30.0
    t = np.arange(0, 30, 0.025)  # 40/s against 10/s per replica: needs 4
    r = run_pool(pool, t, item=np.full(t.size, 0.1))
    log = pool.log()
    assert log["replicas"][0] > 1          # the queue grew in the first 2 s
    assert 4 <= log["replicas"][-1] <= 8   # enough replicas to drain it at the end
    assert r["wait_s"][-100:].max() < r["wait_s"][:200].max()


def online_with(serving_changes, replicas=2):
    arch = online(replicas, {"exponential": {"mean": "15ms"}}, timeout="150ms",
                  features_every="10m", feature_lookup={"exponential": {"mean": "2ms"}})
    arch["serving"].update(serving_changes)
    if "batching" in serving_changes:
        del arch["serving"]["service_time"]
    return arch


def test_autoscaled_serving_costs_the_replicas_that_ran():
    scenario = make_scenario(
        {"fixed": online_with({}), "scaled": online_with(
            {"autoscaling": {"min": 1, "max": 6, "target_utilization": 0.3, "every": "30s",
                             "warmup": "1m", "cooldown": "2m"}})},
        horizon="40m", warmup="5m", costs={"replica_hour": 1.0},
        **{"workload.arrivals.rate": "60/s"})
    results = sim.simulate(scenario)
    summary = results.summary.set_index("architecture")
    ts = results.timeseries.set_index("architecture").loc["scaled"]
    # serving cost per day is 24 x the mean replicas paid for
    paid = (ts["replicas"] * ts["bucket_s"]).sum() / ts["bucket_s"].sum()
    assert summary.loc["scaled", "cost_usd_per_day_serving"] == pytest.approx(24 * paid)
    assert summary.loc["fixed", "cost_usd_per_day_serving"] == pytest.approx(48)
    # 60/s x ~17 ms = ~1 busy replica; at a 30% target it runs more than the fixed 2
    assert summary.loc["scaled", "replicas_mean"] > 2
    assert summary.loc["scaled", "utilization"] < summary.loc["fixed", "utilization"]
    assert {"replicas", "utilization", "queue_length_mean"} <= set(results.timeseries.columns)


def test_batching_reports_service_time_separately_from_queue_wait():
    scenario = make_scenario(
        {"batched": online_with({"batching": {"max_batch": 8, "max_wait": "10ms",
                                              "fixed": {"constant": "10ms"},
                                              "per_item": {"constant": "1ms"}}}, replicas=1)},
        horizon="20m", warmup="2m", **{"workload.arrivals.rate": "200/s"})
    row = sim.simulate(scenario).summary.iloc[0]
    # a batch takes 10 ms + 1 ms per request + the slowest lookup: between 11 ms and ~40 ms
    assert 11 <= row["service_ms_mean"] <= 40
    assert row["latency_ms_mean"] == pytest.approx(
        row["queue_wait_ms_mean"] + row["service_ms_mean"], rel=0.02)


SERVING = st.sampled_from([
    {"batching": {"max_batch": 4, "max_wait": "5ms", "fixed": {"constant": "8ms"},
                  "per_item": {"exponential": {"mean": "2ms"}}}},
    {"batching": {"max_batch": 3, "max_wait": "20ms",
                  "fixed": {"lognormal": {"median": "5ms", "p99": "20ms"}},
                  "per_item": {"constant": "3ms"}}},
    {"autoscaling": {"min": 1, "max": 5, "target_utilization": 0.5, "every": "20s",
                     "warmup": "30s", "cooldown": "1m"}},
    {"autoscaling": {"min": 1, "max": 5, "target_queue": 0.05, "every": "15s",
                     "warmup": "0s", "cooldown": "30s"},
     "batching": {"max_batch": 2, "max_wait": "2ms", "per_item": {"constant": "12ms"}}},
    {"batching": {"max_batch": 6, "max_wait": "5ms", "batch_time": {
        2: {"lognormal": {"median": "9ms", "p99": "30ms"}}, 4: "12ms",
        5: {"exponential": {"mean": "11ms"}}}}},
    # start-up delays as distributions (tests/test_startup_delays.py): a decision lag, node
    # start and model load drawn per decision and replica, and a warm pool
    {"autoscaling": {"min": 1, "max": 5, "target_utilization": 0.5, "every": "10s",
                     "decision_lag": {"exponential": {"mean": "8s"}},
                     "node_start": {"lognormal": {"median": "10s", "p99": "40s"}},
                     "model_load": {"gamma": {"mean": "5s", "cv": 0.5}}, "warm_pool": 1,
                     "cooldown": "20s", "tolerance": 0.05}},
    {"autoscaling": {"min": 1, "max": 4, "target_queue": 0.05, "every": "15s",
                     "decision_lag": "5s", "warmup": {"exponential": {"mean": "20s"}},
                     "warm_pool": 2, "cooldown": "0s"},
     "batching": {"max_batch": 3, "max_wait": "2ms", "per_item": {"constant": "10ms"}}},
])


@given(serving=SERVING, rate=st.floats(20, 90), seed=st.integers(0, 2**16),
       hybrid=st.booleans())
@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
def test_batching_and_autoscaling_match_the_reference_engine(serving, rate, seed, hybrid,
                                                             monkeypatch):
    monkeypatch.setattr(engine, "REQUESTS_PER_CHUNK", 1024)
    arch = online_with(serving)
    if hybrid:
        arch.update(kind="hybrid", head_share=0.2, every="15m", throughput="50/s")
    scenario = make_scenario({"a": arch}, horizon="5m", warmup="1m", seed=seed,
                             **{"workload.arrivals.rate": f"{rate}/s"})
    assert_same(scenario)


def test_a_full_autoscaler_log_resumes_with_the_same_outcomes(monkeypatch):
    from sim.engine import serving
    auto = {"min": 1, "max": 6, "target_utilization": 0.5, "every": "1s", "warmup": "2s",
            "cooldown": "3s"}
    t = np.cumsum(np.random.default_rng(2).exponential(1 / 60, 3000))
    item = np.full(t.size, 0.03)

    def run():
        pool = pool_for(replicas=1, service_time={"constant": "30ms"}, autoscaling=auto)
        pool.eval_until_s = float(t[-1]) + 1.0
        return run_pool(pool, t, item=item, splits=[10.0, 25.0]), pool.log()

    (whole, log), _ = run(), monkeypatch.setattr(serving, "LOG_ROWS_PER_CALL", 3)
    resumed, log_resumed = run()
    for k in ("wait_s", "start_s", "started"):
        np.testing.assert_array_equal(whole[k], resumed[k])
    for k in log:
        np.testing.assert_array_equal(log[k], log_resumed[k])


def test_the_autoscaler_keeps_working_while_an_overloaded_queue_drains(monkeypatch):
    # No timeout, overloaded at the end: requests still waiting when arrivals stop are served
    # by the replicas the autoscaler keeps adding, in both engines alike.
    monkeypatch.setattr(engine, "REQUESTS_PER_CHUNK", 2048)
    arch = online(1, {"constant": "40ms"}, features_every="10m",
                  feature_lookup={"exponential": {"mean": "2ms"}})
    arch["serving"]["autoscaling"] = {"min": 1, "max": 10, "target_utilization": 0.9,
                                      "every": "10s", "warmup": "10s", "cooldown": "30s"}
    scenario = make_scenario({"a": arch}, horizon="1m", warmup="10s", seed=1,
                             **{"workload.arrivals.rate": "300/s"})
    assert_same(scenario)


def test_replica_seconds_spread_each_autoscaler_interval_evenly():
    from sim.engine.architectures.parts import _accumulated
    rng = np.random.default_rng(4)
    every = 30.0
    t = every * np.arange(1, 41)
    values = rng.uniform(0, 4 * every, t.size)
    edges = np.sort(rng.uniform(-50, 1300, 12))
    by_brute = [sum(v * max(0.0, min(b, tk) - max(a, tk - every)) / every
                    for tk, v in zip(t, values)) for a, b in zip(edges, edges[1:])]
    np.testing.assert_allclose(np.diff(_accumulated(t, values, every, edges)), by_brute,
                               rtol=1e-12, atol=1e-9)
