"""What streams, storage, spot capacity and consistent pipelines cost, against hand
computations (docs/glossary.md, "Cost per day")."""

from __future__ import annotations

import math

import numpy as np
import pytest

import sim

DAYS_PER_MONTH = 365.25 / 12
N = 4000  # entities, uniform popularity, none created during the run


def _scenario(architectures: dict, costs: dict, rate: str = "10/s", **extra) -> sim.Scenario:
    raw = {"name": "costs", "horizon": "1d", "warmup": "1d", "seed": 5,
           "workload": {"entities": N, "popularity": "uniform", "arrivals": {"rate": rate}},
           "quality": {"fresh": 0.1, "fallback": 0.02},
           "costs": costs, "architectures": architectures, **extra}
    return sim.scenario_from_dict(raw)


def _costs(scenario) -> dict:
    row = sim.simulate(scenario).summary.set_index("architecture")
    return {name: row.loc[name] for name in row.index}


def _streaming(stream: dict) -> dict:
    return {"kind": "streaming", "features": {"stream": stream},
            "serving": {"replicas": 1, "service_time": "1ms"}}


def test_stream_cost_is_nodes_plus_events_plus_state():
    stream = {"lag": "1s", "nodes": 3, "events_per_request": 2, "state_bytes": 5000}
    costs = {"stream_node_hour": 0.8, "stream_per_million_events": 0.4,
             "stream_state_gb_month": 0.3}
    row = _costs(_scenario({"s": _streaming(stream)}, costs))["s"]
    events_per_day = 10 * 2 * 86400
    expected = (3 * 24 * 0.8 + events_per_day / 1e6 * 0.4
                + N * 5000 / 1e9 * 0.3 / DAYS_PER_MONTH)
    assert row["cost_usd_per_day_stream_processing"] == pytest.approx(expected, rel=1e-9)


def test_a_stateless_aggregation_rereads_each_entitys_window_and_holds_no_state():
    # uniform popularity: an event's entity has rate * W / N other events in its window
    base = {"lag": "1s", "nodes": 1, "state_bytes": 5000}
    costs = {"stream_per_million_events": 1.0, "stream_state_gb_month": 0.3}
    stateless = {**base, "aggregation": "stateless", "aggregation_window": "1h"}
    rows = _costs(_scenario({"stateful": _streaming(base),
                             "stateless": _streaming(stateless)}, costs))
    events_per_day = 10 * 86400
    assert rows["stateful"]["cost_usd_per_day_stream_processing"] == pytest.approx(
        events_per_day / 1e6 + N * 5000 / 1e9 * 0.3 / DAYS_PER_MONTH, rel=1e-9)
    per_event = 1 + 3600 * 10 / N
    assert rows["stateless"]["cost_usd_per_day_stream_processing"] == pytest.approx(
        events_per_day * per_event / 1e6, rel=1e-9)


def test_auto_nodes_cover_the_peak_event_rate():
    # diurnal, peak / trough 3: the peak is 1.5x the mean rate of 10/s, 15/s; 4/s a node
    stream = {"lag": "1s", "nodes": "auto", "node_capacity": "4/s"}
    raw_rate = {"rate": "10/s", "pattern": "diurnal", "peak_to_trough": 3}
    scenario = _scenario({"s": _streaming(stream)}, {"stream_node_hour": 1.0})
    scenario = sim.scenario_from_dict({**scenario.to_yaml_dict(),
                                       "workload": {**scenario.to_yaml_dict()["workload"],
                                                    "arrivals": raw_rate}})
    row = _costs(scenario)["s"]
    assert row["cost_usd_per_day_stream_processing"] == pytest.approx(
        math.ceil(15 / 4) * 24 * 1.0)


def test_storage_is_priced_per_gb_month_of_predictions_and_features():
    batch = {"kind": "batch", "every": "1d", "throughput": "1000/s", "prediction_bytes": 2000}
    online = {"kind": "online", "features": {"batch": {"every": "1d", "duration": "1m",
                                                       "bytes_per_entity": 8000}},
              "serving": {"replicas": 1, "service_time": "1ms"}}
    rows = _costs(_scenario({"batch": batch, "online": online}, {"storage_gb_month": 0.25}))
    assert rows["batch"]["cost_usd_per_day_storage"] == pytest.approx(
        N * 2000 / 1e9 * 0.25 / DAYS_PER_MONTH, rel=1e-9)
    assert rows["online"]["cost_usd_per_day_storage"] == pytest.approx(
        N * 8000 / 1e9 * 0.25 / DAYS_PER_MONTH, rel=1e-9)


def test_spot_capacity_is_discounted_and_preemptions_add_run_time():
    job = {"kind": "batch", "every": "6h", "throughput": "1/s"}  # N / 1 = 4000 s a run
    costs = {"batch_node_hour": 2.0}
    rows = _costs(_scenario({
        "on_demand": job,
        "spot": {**job, "spot": {"discount": 0.7}},
        "preempted": {**job, "spot": {"discount": 0.7, "preemptions_per_hour": 1.0}},
    }, costs))
    on_demand = 4 * N / 3600 * 2.0  # four 4000 s runs a day
    assert rows["on_demand"]["cost_usd_per_day_batch_scoring"] == pytest.approx(on_demand)
    assert rows["spot"]["cost_usd_per_day_batch_scoring"] == pytest.approx(0.3 * on_demand)
    # a preempted run is paid for the time it ran and started again: more node-hours
    assert rows["preempted"]["cost_usd_per_day_batch_scoring"] > 0.3 * on_demand
    assert rows["preempted"]["pipeline_failures_per_day"] > 0


def test_consistent_pipelines_cost_what_they_say_and_dual_ones_lose_quality():
    base = {"kind": "online", "features": {"batch": {"every": "1d", "duration": "1m"}},
            "serving": {"replicas": 1, "service_time": "1ms"}}
    rows = _costs(_scenario({
        "plain": base,
        "unified": {**base, "pipelines": {"kind": "unified", "cost_per_day": 150}},
        "dual": {**base, "pipelines": {"kind": "dual", "skew_loss": 0.004,
                                       "skewed_share": 0.5}},
    }, {}))
    assert rows["unified"]["cost_usd_per_day_skew_prevention"] == 150
    assert rows["unified"]["cost_usd_per_day"] == pytest.approx(
        rows["plain"]["cost_usd_per_day"] + 150)
    assert rows["dual"]["quality_lost_skew"] == pytest.approx(0.002)
    assert rows["dual"]["quality_mean"] == pytest.approx(rows["plain"]["quality_mean"] - 0.002)


def test_a_stream_slower_than_its_events_says_so():
    slow = {"lag": "1s", "nodes": 2, "node_capacity": "4/s"}   # 8/s against 10/s
    fast = {"lag": "1s", "nodes": 3, "node_capacity": "4/s"}   # 12/s
    results = sim.simulate(_scenario({"slow": _streaming(slow), "fast": _streaming(fast)}, {}))
    behind = [n for n in results.notes if "falls behind" in n]
    assert len(behind) == 1 and behind[0].startswith("slow:") and "2 node(s)" in behind[0]
    ages = results.summary.set_index("architecture")["stream_feature_age_s_mean"]
    assert ages["slow"] > 100 * ages["fast"]


def test_explain_estimates_the_stream_cost_the_run_reports():
    from sim.inputs.explain import _stream_usage_usd
    stream = {"lag": "1s", "nodes": 1, "state_bytes": 5000, "aggregation": "stateless",
              "aggregation_window": "30m", "events_per_request": 3}
    costs = {"stream_per_million_events": 0.4, "stream_state_gb_month": 0.3}
    scenario = _scenario({"s": _streaming(stream)}, costs)
    run = _costs(scenario)["s"]["cost_usd_per_day_stream_processing"]
    spec = scenario.architectures["s"].features.stream
    assert _stream_usage_usd(spec, scenario.workload, scenario.costs) == pytest.approx(run,
                                                                                        rel=1e-6)


def test_a_stateless_windowed_stream_rereads_the_aggregation_window_at_each_close():
    # 1-minute windows aggregating the last hour: each close reads 60 windows' events again
    stream = {"lag": "1s", "window": "1m", "nodes": 1, "aggregation": "stateless",
              "aggregation_window": "1h"}
    row = _costs(_scenario({"s": _streaming(stream)}, {"stream_per_million_events": 1.0}))["s"]
    assert row["cost_usd_per_day_stream_processing"] == pytest.approx(10 * 86400 * 60 / 1e6,
                                                                      rel=1e-9)


def test_a_stream_with_capacity_to_spare_is_never_behind_even_when_no_events_come():
    # events only in the first 12 hours of each day: with ample capacity there is no backlog,
    # so the newest processed event is "now" at every hour, quiet ones included
    from sim.engine.architectures.backlog import StreamFlow
    from sim.engine.rng import Streams
    raw_stream = {"lag": "1s", "node_capacity": "1000/s"}
    scenario = sim.scenario_from_dict({
        "name": "gaps", "horizon": "1d", "warmup": "0s", "quality": {"fresh": 0.1},
        "workload": {"entities": 100, "arrivals": {"rate": "10/s",
                                                   "profile": [1] * 12 + [0] * 12}},
        "architectures": {"s": _streaming(raw_stream)}})
    flow = StreamFlow(scenario.architectures["s"].features.stream, scenario.workload,
                      -3600.0, 86400.0, Streams(0))
    t = np.arange(0.0, 86400.0, 900.0)
    assert np.allclose(flow.processed_until(t), t)


def test_stateless_rereads_follow_the_rate_each_event_arrives_at():
    # a diurnal day: events bunch at the peak, so the average event sees E[r^2] / E[r]
    stream = {"lag": "1s", "nodes": 1, "aggregation": "stateless", "aggregation_window": "1h"}
    scenario = _scenario({"s": _streaming(stream)}, {"stream_per_million_events": 1.0})
    raw = scenario.to_yaml_dict()
    raw["workload"]["arrivals"] = {"rate": "10/s", "pattern": "diurnal", "peak_to_trough": 3}
    row = _costs(sim.scenario_from_dict(raw))["s"]
    a = 0.5  # (3 - 1) / (3 + 1): the rate is 10 (1 + a cos)
    seen = 10 * (1 + a * a / 2)
    expected = 10 * 86400 * (1 + 3600 * seen / N) / 1e6
    assert row["cost_usd_per_day_stream_processing"] == pytest.approx(expected, rel=1e-4)
