"""Engine behaviour: determinism, common random numbers, coverage, waste, cost and value."""

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import sim
from sim.engine import run as engine
from tests.conftest import SCENARIOS, ci_half_width, make_scenario, online, replicate

DAY = 86400.0


def row(results, name):
    return results.summary.set_index("architecture").loc[name]


def test_same_seed_same_numbers_and_replications_differ():
    scenario = make_scenario({"online": online(2)})
    first, second = sim.run(scenario).to_dict(), sim.run(scenario).to_dict()
    assert first == second
    other = sim.run(scenario, replication=1).to_dict()
    assert other["architectures"][0]["latency_ms"] != first["architectures"][0]["latency_ms"]


def test_every_architecture_sees_the_same_requests():
    batch = {"kind": "batch", "every": "1h", "throughput": "1000/s"}
    scenario = make_scenario({"a": online(2), "b": online(2), "batch": batch})
    results = sim.run(scenario)
    assert results.summary["requests"].nunique() == 1
    a, b = row(results, "a"), row(results, "b")
    assert a["latency_ms_mean"] == b["latency_ms_mean"]  # identical specs, identical draws


def test_batch_gives_the_fallback_to_entities_created_after_the_last_job():
    batch = {"kind": "batch", "every": "1d", "throughput": "1000/s"}
    steady = sim.run(make_scenario({"batch": batch}))
    assert row(steady, "batch")["coverage"] == 1.0
    growing = sim.run(make_scenario({"batch": batch}, **{"workload.new_entities_per_day": 2000}))
    assert row(growing, "batch")["coverage"] < 1.0
    # online predictions do not depend on a job having seen the entity
    growing_online = sim.run(make_scenario({"online": online(4)},
                                           **{"workload.new_entities_per_day": 2000}))
    assert row(growing_online, "online")["coverage"] == 1.0


def test_wasted_predictions_match_the_chance_an_entity_is_never_requested():
    # Uniform popularity over N entities, R requests while a job's predictions are current:
    # each prediction goes unused with probability (1 - 1/N)^R.
    n, per_day = 5000, 5000
    batch = {"kind": "batch", "every": "1d", "throughput": "10000/s"}
    scenario = make_scenario({"batch": batch}, horizon="4d", warmup="0s",
                             **{"workload.entities": n, "workload.arrivals.rate": f"{per_day}/day",
                                "workload.popularity": "uniform"})
    wasted = replicate(scenario, "wasted_prediction_rate", "batch", n=6)
    # R is Poisson(per_day) per period: E[(1-1/N)^R] = exp(-per_day / N)
    expected = math.exp(-per_day / n)
    assert abs(wasted.mean() - expected) <= ci_half_width(wasted)


def test_an_overloaded_queue_finishes_and_says_it_is_unstable():
    scenario = make_scenario({"online": online(1, {"constant": "200ms"})},
                             **{"workload.arrivals.rate": "10/s"})
    results = sim.run(scenario)
    r = row(results, "online")
    assert r["offered_load"] == pytest.approx(2.0, rel=0.05)
    assert not r["queue_stable"]
    assert any("unstable" in note for note in results.notes)


def test_timeouts_cap_latency_and_give_the_fallback():
    scenario = make_scenario({"online": online(1, {"constant": "150ms"}, timeout="300ms")},
                             **{"workload.arrivals.rate": "10/s"})
    r = row(sim.run(scenario), "online")
    assert r["latency_ms_p99"] <= 300 * 1.005
    assert 0.3 < r["timeout_rate"] < 1.0
    assert r["coverage"] == pytest.approx(1 - r["timeout_rate"])
    assert r["utilization"] <= 1.0


def test_hybrid_reads_the_head_from_the_store_and_serves_the_tail_online():
    arch = online(2, {"constant": "50ms"})
    arch.update(kind="hybrid", head_share=0.1, every="1h", throughput="1000/s", lookup="1ms")
    results = sim.run(make_scenario({"h": arch}, **{"workload.popularity": {"zipf": 1.2}}))
    x, cdf = results.distributions["h"]["latency_s"].cdf()
    fast = cdf[np.searchsorted(x, 0.002) - 1]  # share answered from the store within 2 ms
    # with Zipf(1.2) the top 10% of entities take most of the traffic
    assert 0.5 < fast < 1.0
    assert row(results, "h")["utilization"] > 0  # the tail went through the replicas


def test_value_and_cost_follow_their_definitions():
    scenario = make_scenario(
        {"online": online(3, {"constant": "5ms"}, features_every="1h")},
        costs={"replica_hour": 0.5, "batch_node_hour": 2.0},
        business={"value_per_outcome": 0.4},
        **{"architectures.online.features.batch.duration": "6m"})
    results = sim.run(scenario)
    r = row(results, "online")
    days = scenario.horizon / DAY
    assert r["cost_usd_per_day_serving"] == pytest.approx(3 * 24 * 0.5)
    assert r["cost_usd_per_day_feature_pipeline"] == pytest.approx(24 * 0.1 * 2.0)
    assert r["value_usd_per_day"] == pytest.approx(
        r["quality_mean"] * r["requests"] * 0.4 / days)
    assert r["net_value_usd_per_day"] == pytest.approx(r["value_usd_per_day"] - r["cost_usd_per_day"])


def test_latency_penalty_lowers_value():
    base = dict(business={"value_per_outcome": 1.0})
    arch = {"online": online(2, {"constant": "100ms"})}
    plain = row(sim.run(make_scenario(arch, **base)), "online")
    penalised = row(sim.run(make_scenario(
        arch, business={"value_per_outcome": 1.0, "latency_penalty": {"per_100ms": 0.1}})),
        "online")
    assert penalised["value_usd_per_day"] < plain["value_usd_per_day"]
    # every request takes >= 100 ms, so at least 10% of the value is lost
    assert penalised["value_usd_per_day"] <= 0.9 * plain["value_usd_per_day"] * 1.0001


def test_fresher_features_give_better_quality():
    curve = {"exponential": {"half_life": "6h", "floor": 0.03}}
    daily = online(4, features_every="1d")
    hourly = online(4, features_every="1h")
    results = sim.run(make_scenario({"daily": daily, "hourly": hourly}, horizon="2d",
                                    **{"quality.feature_staleness": curve}))
    assert row(results, "hourly")["quality_mean"] > row(results, "daily")["quality_mean"]
    assert row(results, "hourly")["feature_age_s_mean"] < row(results, "daily")["feature_age_s_mean"]


# -- invariants over generated scenarios ------------------------------------------------------

@st.composite
def serving_scenarios(draw):
    replicas = draw(st.integers(1, 6))
    rate = draw(st.floats(0.5, 200))
    mean_ms = draw(st.floats(0.5, 400))
    timeout = draw(st.one_of(st.none(), st.floats(5, 1000)))
    arch = online(replicas, {"exponential": {"mean": f"{mean_ms}ms"}},
                  timeout=None if timeout is None else f"{timeout}ms")
    batch = {"kind": "batch", "every": "30m", "throughput": "500/s",
             "lookup": {"lognormal": {"median": "2ms", "p99": "10ms"}}}
    return make_scenario({"online": arch, "batch": batch}, horizon="20m", warmup="2m",
                         seed=draw(st.integers(0, 2**31)),
                         **{"workload.arrivals.rate": f"{rate}/s",
                            "workload.new_entities_per_day": draw(st.integers(0, 50000)),
                            "quality.feature_staleness": {"linear": {"per_day": -0.01,
                                                                     "floor": 0.01}}})


@given(serving_scenarios())
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_invariants_hold_for_any_scenario(scenario):
    # Arrivals counted from the request source itself (the same streams), independently of
    # any architecture; every architecture must answer each of them exactly once, by a real
    # prediction or by the fallback.
    run = engine.Run(scenario)
    arrived = sum(int(np.count_nonzero(run.source.chunk(a, b).t_s >= scenario.warmup))
                  for a, b in run.chunk_bounds())
    answered = {}

    def count(name, out):
        measured = out.t_s >= scenario.warmup
        served = int(np.count_nonzero(measured & ~out.fallback))
        fallbacks = int(np.count_nonzero(measured & out.fallback))
        previous = answered.get(name, (0, 0))
        answered[name] = (previous[0] + served, previous[1] + fallbacks)

    results = sim.simulate(scenario, observe=count)
    for r in results.summary.to_dict("records"):
        served, fallbacks = answered[r["architecture"]]
        assert served + fallbacks == arrived == r["requests"]
        assert r["coverage"] == pytest.approx(served / arrived if arrived else float("nan"),
                                              nan_ok=True)
        assert 0 <= r["coverage"] <= 1 or not arrived
        if r["requests"]:
            assert r["latency_ms_mean"] >= 0
            assert 0 <= r["quality_mean"] <= scenario.quality.fresh + 1e-12
        if r["kind"] == "online":
            assert r["utilization"] <= 1 + 1e-9
            timeout = scenario.architectures["online"].serving.timeout
            if timeout is not None and r["requests"]:
                assert r["latency_ms_p99"] <= timeout * 1e3 * 1.005
    ts = results.timeseries
    assert ts.groupby("architecture")["requests"].sum().eq(results.summary.set_index(
        "architecture")["requests"]).all()


@given(st.integers(1, 5), st.integers(1, 5))
@settings(max_examples=10, deadline=None)
def test_cost_never_falls_when_replicas_rise(a, b):
    low, high = sorted((a, b))
    costs = []
    for replicas in (low, high):
        scenario = make_scenario({"online": online(replicas)}, horizon="10m", warmup="0s",
                                 costs={"replica_hour": 0.7})
        costs.append(row(sim.run(scenario), "online")["cost_usd_per_day"])
    assert costs[0] <= costs[1]


def test_every_scenario_kind_has_one_registry_entry_that_builds_it():
    from sim.engine.architectures import KINDS as REGISTRY
    from sim.scenario import ARCHITECTURE_SPECS, KINDS
    assert list(REGISTRY) == list(KINDS)
    assert [k.spec for k in REGISTRY.values()] == list(ARCHITECTURE_SPECS)
    for k in REGISTRY.values():  # the traits say what each kind has, consistently
        assert k.stores_predictions or k.predicts_online or k.on_device
        assert ("every" in k.spec.model_fields) == k.stores_predictions
        assert ("serving" in k.spec.model_fields) == k.predicts_online


@pytest.mark.parametrize("kind", ["batch", "online", "streaming", "hybrid", "edge"])
def test_every_kind_implements_the_architecture_protocol(kind):
    import inspect

    from sim.engine.architectures import Architecture, build

    path = "mobile-ranking.yaml" if kind == "edge" else "quickstart.yaml"
    scenario = sim.load_scenario(SCENARIOS / path)
    name = next(n for n, spec in scenario.architectures.items() if spec.kind == kind)
    model = build(name, scenario.architectures[name], scenario)
    declared = [m for m in dir(Architecture) if not m.startswith("_")]
    for member in declared:
        assert hasattr(model, member), f"{kind} lacks {member}"
        expected = getattr(Architecture, member)
        if callable(expected):
            want = list(inspect.signature(expected).parameters)[1:]
            have = list(inspect.signature(getattr(model, member)).parameters)
            assert have == want, (kind, member, have, want)
    for attribute in Architecture.__annotations__:
        assert hasattr(model, attribute), f"{kind} lacks {attribute}"
