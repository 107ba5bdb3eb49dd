"""Slow periods, fast engine against the reference engine, request by request.

The reference engine walks each replica's speed path a segment at a time in simulated time,
with replicas known by number (a ``simpy.PriorityStore`` of idle ones, or the batcher's own
books with the autoscaler's numbering); the fast kernels look the finish up on the path with
two binary searches. They must agree on every request's latency, queue wait, service time and
time-out, and on the summary (each engine keeping its own replica books), for each scope, with
several replicas, a timeout, batching and an autoscaler that adds, removes and renumbers.
"""

import copy

import numpy as np
import pytest
import simpy
from hypothesis import given, settings, strategies as st

from sim.engine import run as engine
from sim.engine.reference import _Speed
from sim.engine.rng import Streams
from sim.scenario import SlowPeriods
from sim.engine.slow_periods import SlowPath
from tests.conftest import make_scenario, online
from tests.test_reference import assert_requests_match, assert_same, per_request

pytestmark = pytest.mark.slow  # runs the reference engine: about 25 s on 2 cores

# a slow state that comes often and lasts a few requests long, so that work often
# straddles a change of speed; three states, one with a drawn length, for the last cases
TWO = [{"slowdown": 1, "mean": "400ms"}, {"slowdown": 4, "mean": "60ms"}]
THREE = [{"slowdown": 1, "mean": "300ms", "next": [0, 0.7, 0.3]},
         {"slowdown": 2.5, "length": {"constant": "45ms"}},
         {"slowdown": 0.8, "mean": "100ms"}]
AUTO = {"min": 1, "max": 5, "target_utilization": 0.5, "every": "2s", "tolerance": 0.05,
        "cooldown": "0s"}


def serving_case(replicas, timeout=None, batching=None, autoscaling=None) -> dict:
    """An online architecture of exponential 20 ms service and 2 ms lookups, one at a time or
    with ``batching`` (overriding a 4 / 5 ms batcher) and ``autoscaling``."""
    arch = online(replicas, {"exponential": {"mean": "20ms"}}, timeout=timeout,
                  feature_lookup={"exponential": {"mean": "2ms"}})
    serving = arch["serving"]
    if batching is not None:
        del serving["service_time"]
        serving["batching"] = {"max_batch": 4, "max_wait": "5ms", "fixed": {"constant": "6ms"},
                               "per_item": {"exponential": {"mean": "5ms"}}, **batching}
    if autoscaling is not None:
        serving["autoscaling"] = autoscaling
    return arch


def _scenario(scope, states=TWO, replicas=3, timeout=None, batching=None, autoscaling=None,
              rate="60/s", seed=3, slow=True):
    arch = serving_case(replicas, timeout, batching, autoscaling)
    serving = arch["serving"]
    if slow:
        serving["slow_periods"] = {"scope": scope, "states": states}
    streaming = copy.deepcopy(arch)  # request-time features are replica work, slowed too
    streaming["kind"] = "streaming"
    streaming["features"] = {"stream": {"lag": {"exponential": {"mean": "2s"}}, "window": "0s"},
                             "request": {"compute": {"exponential": {"mean": "3ms"}}}}
    return make_scenario({"online": arch, "streaming": streaming}, horizon="100s",
                         warmup="20s", seed=seed, **{"workload.arrivals.rate": rate})


CASES = {
    "several_replicas": dict(),
    "one_replica": dict(replicas=1, rate="25/s"),
    "timeout": dict(timeout="60ms", rate="90/s"),
    "batching": dict(batching={}, replicas=2, rate="150/s", timeout="150ms"),
    "autoscaling": dict(replicas=2, autoscaling=AUTO, rate="80/s"),
    "autoscaling_batching_warmup": dict(replicas=2, batching={"max_batch": 3},
                                        autoscaling={**AUTO, "warmup": "2s"}, rate="150/s",
                                        timeout="200ms"),
    "three_states": dict(states=THREE, timeout="100ms", rate="80/s"),
    "autoscaling_delays_pool": dict(  # start-up delays drawn, a warm pool renumbered
        replicas=2, rate="80/s", autoscaling={
            **AUTO, "decision_lag": {"exponential": {"mean": "1s"}},
            "node_start": {"exponential": {"mean": "1.5s"}}, "model_load": "0.5s",
            "warm_pool": 1}),
}


@settings(max_examples=60, deadline=None)
@given(starts=st.lists(st.floats(0, 900), min_size=1, max_size=4),
       work=st.floats(0, 3), scope=st.sampled_from(["replica", "host"]),
       seed=st.integers(0, 100))
def test_walking_the_path_finishes_where_the_path_says(starts, work, scope, seed):
    """The reference engine's walk through a speed path, segment by segment in simulated time,
    ends where the path's work integral says (work started past what is drawn so far too)."""
    spec = SlowPeriods.model_validate({"scope": scope, "states": THREE})
    env = simpy.Environment()
    speed = _Speed(spec, 3, Streams(seed))
    finished = []

    def one(start, number):
        yield env.timeout(start)
        finished.append((number, start, (yield from speed.work(env, number, start, work)),
                         env.now))

    for k, start in enumerate(starts):
        env.process(one(start, k % 3))
    env.run()
    expected = SlowPath(spec, speed.paths.paths, Streams(seed), start_s=0.0)
    for number, start, finish, now in finished:
        want = expected.finish(0 if scope == "host" else number, start, work)
        assert finish == pytest.approx(want, rel=0, abs=1e-9)
        assert now == pytest.approx(finish, rel=0, abs=1e-9)


@pytest.fixture(autouse=True)
def _small_chunks(monkeypatch):
    monkeypatch.setattr(engine, "REQUESTS_PER_CHUNK", 1024)  # several chunks, paths resumed


@pytest.mark.parametrize("scope", ["host", "replica"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_fast_and_reference_agree_request_by_request(case, scope):
    assert_same(_scenario(scope, **CASES[case]))


@pytest.mark.parametrize("case", ["timeout", "autoscaling"])
def test_the_cases_exercise_what_they_are_meant_to(case):
    """Slow periods change the outcomes (so agreeing says something), time-outs happen, and
    the autoscaler both adds and removes replicas (so numbers are handed back and reused)."""
    with_slow = per_request(_scenario("replica", **CASES[case]), "fast")[1]["online"]
    without = per_request(_scenario("replica", slow=False, **CASES[case]), "fast")[1]["online"]
    started = ~np.isnan(with_slow["service_s"]) & ~np.isnan(without["service_s"])
    assert np.mean(with_slow["service_s"][started] > without["service_s"][started] + 1e-9) > 0.1
    if case == "timeout":  # some give up in the queue, some answer too late
        assert 0.01 < np.mean(with_slow["timed_out"]) < 0.5
        assert np.isnan(with_slow["service_s"][with_slow["timed_out"] == 1]).any()
        assert (~np.isnan(with_slow["service_s"][with_slow["timed_out"] == 1])).any()
    else:  # the autoscaler's log, from the fast engine's pool
        run = engine.Run(_scenario("replica", **CASES[case]))
        arch = run.architectures[0]
        for start_s, end_s in run.chunk_bounds():
            run.env.run(until=end_s)
            arch.serve(run.source.chunk(start_s, end_s))
        steps = np.diff(arch.serving.pool.log()["replicas"])
        assert (steps > 0).sum() >= 5 and (steps < 0).sum() >= 5


@pytest.mark.parametrize("which", ["fast", "reference"])
@pytest.mark.parametrize("case", ["several_replicas", "timeout", "autoscaling_batching_warmup"])
def test_slowdown_one_everywhere_is_the_run_without_slow_periods(case, which):
    ones = [{"slowdown": 1, "mean": "50ms"}, {"slowdown": 1, "mean": "20ms"}]
    assert_requests_match(*per_request(_scenario("replica", slow=False, **CASES[case]), which),
                          *per_request(_scenario("replica", states=ones, **CASES[case]), which))
