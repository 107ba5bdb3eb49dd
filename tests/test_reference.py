"""The fast path against the reference engine (one SimPy process per request), request by request.

Same scenario and seed must give the same latency, queue wait, feature ages, cold starts, model
age, quality and fallback for every request, to 1e-9, and the same summary, whose wasted
predictions, serving cost, replicas and utilisation each engine computes from its own records.
"""

from collections import defaultdict

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import sim
from sim.engine import run as engine
from sim.scenario import SlowPeriods
from tests.conftest import SCENARIOS, make_scenario, online

pytestmark = pytest.mark.slow  # a minute or more on 2 cores; still in make test

FIELDS = ("t_s", "latency_s", "queue_wait_s", "feature_age_s", "model_age_s", "quality",
          "fallback", "timed_out", "service_s", "busy_s", "batch_age_s", "stream_age_s",
          "cold_start")


def _field(outcomes, field):
    """A field of a chunk's outcomes; an age the architecture does not have is all NaN."""
    value = getattr(outcomes, field)
    return np.full(outcomes.t_s.size, np.nan) if value is None else value


def per_request(scenario, which):
    seen = defaultdict(list)
    results = sim.simulate(scenario, engine=which,
                           observe=lambda name, out: seen[name].append(out))
    arrays = {name: {f: np.concatenate([_field(o, f) for o in outs]).astype(float)
                     for f in FIELDS} for name, outs in seen.items()}
    # With batching or autoscaling a request's outcome may come a chunk after it arrives (and a
    # hybrid's stored-prediction reads first): compare in arrival order.
    for columns in arrays.values():
        order = np.argsort(columns["t_s"], kind="stable")
        for f in FIELDS:
            columns[f] = columns[f][order]
    return results, arrays


def assert_requests_match(results_a, requests_a, results_b, requests_b):
    """Every request's fields (``per_request``) within 1e-9, NaN where the other is NaN, and
    the numeric summaries within 1e-9."""
    assert requests_a.keys() == requests_b.keys()
    for name in requests_a:
        for field in FIELDS:
            a, b = requests_a[name][field], requests_b[name][field]
            assert a.shape == b.shape, (name, field)
            assert np.array_equal(np.isnan(a), np.isnan(b)), (name, field)
            ok = ~np.isnan(a)
            np.testing.assert_allclose(a[ok], b[ok], rtol=0, atol=1e-9, err_msg=f"{name} {field}")
    numeric = results_a.summary.select_dtypes("number").columns
    np.testing.assert_allclose(results_a.summary[numeric].to_numpy(float),
                               results_b.summary[numeric].to_numpy(float), rtol=1e-9, atol=1e-9)


def assert_same(scenario):
    assert_requests_match(*per_request(scenario, "fast"), *per_request(scenario, "reference"))


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.yaml")), ids=lambda p: p.stem)
def test_bundled_scenarios_match_request_by_request(path, monkeypatch):
    monkeypatch.setattr(engine, "REQUESTS_PER_CHUNK", 2048)  # several chunks even when short
    scenario = sim.load_scenario(path, {"horizon": "4m", "warmup": "1m"})
    if scenario.workload.arrivals.rate * 300 > 40000:  # keep the reference run short
        scenario = sim.load_scenario(path, {"horizon": "4m", "warmup": "1m",
                                            "workload.arrivals.rate": "100/s"})
    assert_same(scenario)


@st.composite
def slow_periods(draw):
    """Stretches of slower work: two or three states, stays from a few ms to a second."""
    n = draw(st.integers(2, 3))
    states = []
    for k in range(n):
        state = {"slowdown": 1.0 if k == 0 else draw(st.floats(0.5, 6))}
        if draw(st.booleans()):
            state["mean"] = draw(st.sampled_from(["5ms", "40ms", "300ms", "1s"]))
        else:
            state["length"] = draw(st.sampled_from([{"constant": "25ms"},
                                                     {"gamma": {"mean": "40ms", "cv": 2}},
                                                     {"exponential": {"mean": "200ms"}}]))
        states.append(state)
    return {"scope": draw(st.sampled_from(["replica", "host"])), "states": states}


@st.composite
def scenarios(draw):
    replicas = draw(st.integers(1, 4))
    rate = draw(st.floats(1, 80))
    service = draw(st.sampled_from([{"exponential": {"mean": "20ms"}}, {"constant": "30ms"},
                                    {"lognormal": {"median": "10ms", "p99": "90ms"}},
                                    {"gamma": {"mean": "25ms", "cv": 0.5}}]))
    timeout = draw(st.one_of(st.none(), st.sampled_from(["40ms", "100ms", "1s"])))
    streaming = online(replicas, service, timeout=timeout, features_every="10m",
                       duration="1m", feature_lookup={"exponential": {"mean": "2ms"}})
    streaming["kind"] = "streaming"
    streaming["features"]["stream"] = {"lag": {"exponential": {"mean": "3s"}},
                                       "window": draw(st.sampled_from(
                                           ["0s", "10s", "1m", {"exponential": {"mean": "20s"}}]))}
    if draw(st.booleans()):  # request-time features, computed on the replica
        streaming["features"]["request"] = {"compute": {"exponential": {"mean": "4ms"}}}
    if not draw(st.booleans()):  # streaming with stream features only
        del streaming["features"]["batch"]
    hybrid = online(replicas, service, timeout=timeout)
    hybrid.update(kind="hybrid", head_share=draw(st.floats(0.01, 0.9)), every="15m",
                  throughput="50/s", lookup={"lognormal": {"median": "1ms", "p99": "5ms"}})
    archs = {"online": online(replicas, service, timeout=timeout, features_every="5m",
                              duration="30s"),
             "streaming": streaming, "hybrid": hybrid,
             "batch": {"kind": "batch", "every": "20m", "throughput": "100/s",
                       "lookup": {"exponential": {"mean": "3ms"}},
                       "timeout": draw(st.sampled_from([None, "5ms"]))}}
    if archs["batch"]["timeout"] is None:
        del archs["batch"]["timeout"]
    slow = draw(st.one_of(st.none(), slow_periods()))
    if slow is not None:  # every online-serving architecture's replicas meet them
        for arch in (archs["online"], streaming, hybrid):
            arch["serving"]["slow_periods"] = slow
        # Keep the replicas about 70% busy at most: the engines stretch work with different
        # arithmetic (each exact to rounding), and in an overloaded queue whose busy period
        # runs to tens of thousands of requests those roundings add up past 1e-9.
        stretch = 1 / SlowPeriods.model_validate(slow).mean_speed
        rate = min(rate, 0.7 * replicas / (0.036 * stretch))
    training = {"every": "7m", "duration": "1m", "deploy_delay": "30s"}
    extra = {}
    if draw(st.booleans()):  # label windows, tests of new models and bad models (issue 20)
        training["labels"] = {"delay": {"exponential": {"mean": "20s"}}, "wait": "1m",
                              "mislabel_loss": 0.01}
        training["evaluation"] = draw(st.sampled_from([
            {"method": "canary", "steps": [0.2, 0.6], "step_duration": "1m"},
            {"method": "ab", "share": 0.5, "min_effect": 1.0},
            {"method": "offline", "duration": "2m"}]))
        training["bad_models"] = {"share": 0.5, "loss": 0.01}
    if draw(st.booleans()):  # the network, model variants and an edge architecture (issue 21)
        extra["network"] = {"regions": [
            {"name": "near", "share": 0.5, "rtt": {"exponential": {"mean": "10ms"}}},
            {"name": "far", "share": 0.5, "rtt": "60ms"}]}
        archs["online"]["variant"] = draw(st.sampled_from(["int8", "distilled"]))
        hybrid["variant"] = {"name": "pruned", "latency": 0.8, "throughput": 1.2,
                             "quality_kept": 0.99}
        archs["edge"] = {"kind": "edge", "device_time": {"lognormal": {"median": "30ms",
                                                                        "p99": "150ms"}},
                         "sync": {"every": "3m", "offline": draw(st.sampled_from([0.0, 0.4]))},
                         "rollout": draw(st.sampled_from(["0s", {"exponential": {
                             "mean": "2m"}}])),
                         "cloud": {"slower_than": "80ms", "cold": True,
                                   "features": {"batch": {"every": "5m"}},
                                   "serving": {"replicas": replicas, "service_time": service,
                                               **({"timeout": timeout} if timeout else {})}}}
    return make_scenario(
        archs, horizon="10m", warmup="2m", seed=draw(st.integers(0, 2**20)),
        training=training, **extra,
        drift=[{"at": "5m", "quality_drop": 0.005}],
        **{"workload.arrivals.rate": f"{rate}/s",
           "workload.arrivals.pattern": draw(st.sampled_from(["constant", "diurnal"])),
           "workload.new_entities_per_day": draw(st.sampled_from([0, 100000])),
           "workload.popularity": draw(st.sampled_from(["uniform", {"zipf": 1.1}])),
           "quality.features": {
               "batch": {"staleness": {"exponential": {"half_life": "5m", "floor": 0.03}},
                         "cold_start": draw(st.sampled_from([None, 0.025]))},
               "stream": {"staleness": {"exponential": {"half_life": "30s", "floor": 0.04}}},
               "request": {"without": 0.048}},
           "quality.model_staleness": {"table": [["0s", 0.05], ["5m", 0.045], ["1h", 0.04]]}})


@given(scenario=scenarios())
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
def test_generated_scenarios_match_request_by_request(scenario, monkeypatch):
    monkeypatch.setattr(engine, "REQUESTS_PER_CHUNK", 1024)
    assert_same(scenario)
