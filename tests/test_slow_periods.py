"""Slow periods in the fast engine: the speed path, when work finishes, and the pools."""

import copy

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from sim.engine.run import simulate
from sim.engine.rng import Streams
from sim.scenario import SlowPeriods, scenario_from_dict
from sim.engine.serving import BatchingPool, ReplicaPool
from sim.engine.slow_periods import SlowPath, finish_at

TWO_STATES = {"states": [{"slowdown": 1, "mean": "2s"}, {"slowdown": 3.5, "mean": "50ms"}]}


def _path(spec=TWO_STATES, paths=1, seed=1, start_s=0.0) -> SlowPath:
    return SlowPath(SlowPeriods.model_validate(spec), paths, Streams(seed), start_s)


def _hand_path(paths, breakpoints, slowdowns):
    """A SlowPath whose every path is the hand-made one given (ending well after the tests)."""
    path = _path(paths=paths)
    t = np.array(breakpoints, float)
    s = np.array(slowdowns + [1.0], float)
    w = np.r_[0.0, np.cumsum(np.diff(t) / s[:-1])]
    path.t = np.tile(t, (paths, 1))
    path.w = np.tile(w, (paths, 1))
    path.s = np.tile(s, (paths, 1))
    path.n = np.full(paths, t.size, dtype=np.int64)
    return path


# -- when work finishes ------------------------------------------------------------------------

def test_finish_by_hand():
    # normal speed on [0, 1), half speed on [1, 2), normal again on [2, 3)
    t = np.array([0.0, 1.0, 2.0, 3.0])
    s = np.array([1.0, 2.0, 1.0, 1.0])
    w = np.array([0.0, 1.0, 1.5, 2.5])
    assert finish_at(t, w, s, 4, 0.5, 0.25) == pytest.approx(0.75)  # all at normal speed
    assert finish_at(t, w, s, 4, 0.5, 1.0) == pytest.approx(2.0)    # 0.5 + 0.5 of work in 1 s
    assert finish_at(t, w, s, 4, 1.5, 0.5) == pytest.approx(2.25)   # 0.25 slow, 0.25 normal
    assert finish_at(t, w, s, 4, 1.0, 0.0) == 1.0
    assert np.isnan(finish_at(t, w, s, 4, 2.5, 1.0))                 # past the drawn end


@settings(max_examples=200, deadline=None)
@given(start=st.floats(0, 100), work=st.floats(0, 5), more=st.floats(0, 5),
       seed=st.integers(0, 50))
def test_work_is_stretched_between_the_fastest_and_slowest_speed(start, work, more, seed):
    path = _path(seed=seed)
    end = path.finish(0, start, work)
    assert start + work * 1.0 - 1e-9 <= end <= start + work * 3.5 + 1e-9
    assert path.finish(0, start, work + more) >= end  # more work never finishes sooner


def test_the_path_spends_the_long_run_shares_of_time_in_each_state():
    path = _path(paths=1, seed=7)
    path.extend(4000.0)  # about 2,000 cycles of 2.05 s
    t, _, s = path.segments(0)
    inside = (t[:-1] >= 0) & (t[1:] <= 4000)
    slow_time = np.sum(np.diff(t)[inside & (s[:-1] > 1)])
    share = slow_time / np.sum(np.diff(t)[inside])
    m0, m1 = 2.0, 0.05
    expected = m1 / (m0 + m1)
    assert SlowPeriods.model_validate(TWO_STATES).time_shares()[1] == pytest.approx(expected)
    # delta method for A / (A + B), sums of N exponential stays: sd^2 = 2 m0^2 m1^2 / N (m0+m1)^4
    n_cycles = 4000 / (m0 + m1)
    sd = np.sqrt(2 * m0**2 * m1**2 / n_cycles) / (m0 + m1) ** 2
    assert abs(share - expected) < 4 * sd


def test_three_states_follow_their_next_probabilities_and_lengths():
    spec = {"states": [{"slowdown": 1, "mean": "1s", "next": [0, 0.8, 0.2]},
                       {"slowdown": 2, "length": {"constant": "100ms"}, "next": [1, 0, 0]},
                       {"slowdown": 5, "length": {"constant": "300ms"}, "next": [1, 0, 0]}]}
    path = _path(spec, seed=3)
    path.extend(3000.0)
    t, _, s = path.segments(0)
    stays = np.diff(t)
    assert np.allclose(stays[s[:-1] == 2], 0.1)
    assert np.allclose(stays[s[:-1] == 5], 0.3)
    after_normal = s[1:-1][s[:-2] == 1]
    share_to_2 = np.mean(after_normal == 2)  # binomial, about 2,400 draws
    assert abs(share_to_2 - 0.8) < 4 * np.sqrt(0.8 * 0.2 / after_normal.size)
    shares = SlowPeriods.model_validate(spec).time_shares()
    assert shares == pytest.approx(np.array([1, 0.08, 0.06]) / 1.14)


def test_paths_are_the_same_however_they_are_drawn():
    a, b = _path(paths=3, seed=5), _path(paths=3, seed=5)
    a.extend(500.0)
    for until in np.arange(10.0, 510.0, 10.0):  # in many small extensions, with trims
        b.extend(until)
        b.trim(until - 100.0)
    for p in range(3):
        ta, wa, sa = a.segments(p)
        tb, wb, sb = b.segments(p)
        k = np.searchsorted(ta, tb[0])
        m = min(ta.size - k, tb.size)
        assert np.array_equal(ta[k:k + m], tb[:m]) and np.array_equal(sa[k:k + m], sb[:m])
        assert np.array_equal(wa[k:k + m], wb[:m])
    assert not np.array_equal(a.segments(0)[0][:50], a.segments(1)[0][:50])  # own streams


# -- the pools ----------------------------------------------------------------------------------

def test_one_replica_by_hand():
    # speed halves on [1, 3); requests at 0 and 0.5 with 1 s of work each
    pool = ReplicaPool(1, None, slow=_hand_path(1, [-1.0, 1.0, 3.0, 100.0], [1.0, 2.0, 1.0]))
    wait, started, occupancy = pool.serve_split(np.array([0.0, 0.5]), np.zeros(2),
                                               np.array([1.0, 1.0]))
    # the first does 1 s of work by 1.0; the second starts at 1.0 and needs 2 s of slow time
    assert wait.tolist() == [0.0, 0.5]
    assert occupancy.tolist() == pytest.approx([1.0, 2.0])
    assert started.all()


def test_the_lookup_is_not_slowed():
    pool = ReplicaPool(1, None, slow=_hand_path(1, [-1.0, 0.0, 100.0], [1.0, 2.0]))
    _, _, occupancy = pool.serve_split(np.array([0.0]), np.array([0.5]), np.array([1.0]))
    assert occupancy[0] == pytest.approx(0.5 + 2.0)


def test_each_replica_meets_its_own_slow_periods_and_the_one_free_longest_serves():
    path = _hand_path(2, [-1.0, 0.0, 100.0], [1.0, 1.0])
    path.s[1, 1] = 4.0           # replica 1 works four times slower from 0 on
    path.w[1] = np.r_[0.0, 1.0, 1.0 + 100.0 / 4.0]
    pool = ReplicaPool(2, None, slow=path, host=False)
    # at 0 both are free since 0: the lower number (0) takes the first; 1 takes the second;
    # the third waits for replica 0 (free at 1), not replica 1 (free at 4)
    wait, _, occupancy = pool.serve_split(np.array([0.0, 0.0, 0.0]), np.zeros(3), np.ones(3))
    assert occupancy.tolist() == pytest.approx([1.0, 4.0, 1.0])
    assert wait.tolist() == pytest.approx([0.0, 0.0, 1.0])
    host = ReplicaPool(2, None, slow=path, host=True)  # path 0 for both: nobody is slowed
    _, _, occupancy = host.serve_split(np.array([0.0, 0.0, 0.0]), np.zeros(3), np.ones(3))
    assert occupancy.tolist() == pytest.approx([1.0, 1.0, 1.0])


def test_a_request_that_gives_up_does_not_take_a_replica():
    pool = ReplicaPool(1, 0.5, slow=_hand_path(1, [-1.0, 100.0], [2.0]))
    wait, started, occupancy = pool.serve_split(np.array([0.0, 0.1, 3.0]), np.zeros(3),
                                               np.ones(3))
    assert started.tolist() == [True, False, True]
    assert wait.tolist() == pytest.approx([0.0, 0.5, 0.0])
    assert occupancy[0] == pytest.approx(2.0) and np.isnan(occupancy[1])


# -- the whole engine ---------------------------------------------------------------------------

BASE = {
    "name": "slow periods", "seed": 11, "horizon": "20m", "warmup": "1m",
    "workload": {"arrivals": {"rate": "60/s"}, "entities": 10_000},
    "quality": {"metric": "auc", "fresh": 0.8, "fallback": 0.5},
    "architectures": {},
}


def _online(serving: dict) -> dict:
    return {"kind": "online", "features": {"batch": {"every": "1d", "duration": "1h"}},
            "serving": serving}


SERVINGS = {
    "one at a time": {"replicas": 2, "service_time": {"exponential": {"mean": "25ms"}},
                      "timeout": "400ms"},
    "batching": {"replicas": 2, "batching": {"max_batch": 4, "max_wait": "5ms",
                                             "fixed": "10ms", "per_item": "8ms"}},
    "autoscaling": {"replicas": 1, "service_time": {"exponential": {"mean": "25ms"}},
                    "autoscaling": {"min": 1, "max": 4, "target_utilization": 0.5,
                                    "every": "30s", "warmup": "20s", "cooldown": "1m"}},
}


def _scenario(serving: dict, slow: dict | None, **changes):
    d = copy.deepcopy(BASE)
    d.update(changes)
    plain = _online(copy.deepcopy(serving))
    slowed = _online(copy.deepcopy(serving))
    if slow is not None:
        slowed["serving"]["slow_periods"] = slow
    d["architectures"] = {"plain": plain, "slowed": slowed}
    return scenario_from_dict(d)


def _requests(scenario):
    seen = {}

    def observe(name, outcomes):
        seen.setdefault(name, []).append(outcomes)

    results = simulate(scenario, observe=observe)
    return results, {name: {k: np.concatenate([getattr(o, k) for o in chunks])
                            for k in ("t_s", "latency_s", "queue_wait_s", "service_s")}
                     for name, chunks in seen.items()}


@pytest.mark.parametrize("kind", list(SERVINGS))
@pytest.mark.parametrize("scope", ["replica", "host"])
def test_slowdown_one_everywhere_changes_nothing(kind, scope):
    same = {"scope": scope, "states": [{"slowdown": 1, "mean": "100ms"},
                                       {"slowdown": 1, "mean": "20ms"}]}
    _, requests = _requests(_scenario(SERVINGS[kind], same))
    plain, slowed = requests["plain"], requests["slowed"]
    for key in ("t_s", "latency_s", "queue_wait_s", "service_s"):
        assert np.allclose(plain[key], slowed[key], rtol=1e-9, atol=1e-12, equal_nan=True), key


@pytest.mark.parametrize("kind", list(SERVINGS))
def test_slow_periods_lengthen_service_and_latency_as_the_mean_speed_says(kind):
    slow = {"scope": "host", "states": [{"slowdown": 1, "mean": "300ms"},
                                        {"slowdown": 4, "mean": "100ms"}]}
    results, requests = _requests(_scenario(SERVINGS[kind], slow, horizon="40m"))
    plain, slowed = requests["plain"], requests["slowed"]
    assert np.all(slowed["service_s"][~np.isnan(slowed["service_s"])] >= 0)
    # Replica time per request is stretched by the slowdown the requests meet: at least
    # 1 / (mean speed) (what a replica busy all the time meets; a replica is busier in slow
    # stretches, not less), at most the time-average slowdown (what requests arriving at random
    # on an idle replica meet, their work being short against the stays).
    shares = SlowPeriods.model_validate(slow).time_shares()
    speed = SlowPeriods.model_validate(slow).mean_speed
    assert speed == pytest.approx(0.75 * 1 + 0.25 * 0.25)
    ratio = np.nanmean(slowed["service_s"]) / np.nanmean(plain["service_s"])
    if kind != "batching":  # batches differ in size once they are slowed
        assert 0.97 / speed < ratio < 1.03 * float(shares @ np.array([1.0, 4.0]))
    assert np.nanpercentile(slowed["latency_s"], 99) > np.nanpercentile(plain["latency_s"], 99)


def test_the_same_seed_gives_the_same_slow_periods_and_other_architectures_are_untouched():
    slow = {"states": [{"slowdown": 1, "mean": "1s"}, {"slowdown": 3, "mean": "100ms"}]}
    scenario = _scenario(SERVINGS["one at a time"], slow)
    _, first = _requests(scenario)
    _, again = _requests(scenario)
    assert np.array_equal(first["slowed"]["latency_s"], again["slowed"]["latency_s"])
    _, without = _requests(_scenario(SERVINGS["one at a time"], None))
    assert np.array_equal(first["plain"]["latency_s"], without["plain"]["latency_s"])


def test_autoscaled_replicas_keep_distinct_numbers():
    slow = {"scope": "replica", "states": [{"slowdown": 1, "mean": "1s"},
                                           {"slowdown": 3, "mean": "100ms"}]}
    serving = SERVINGS["autoscaling"]
    scenario = _scenario(serving, slow, workload={"arrivals": {
        "rate": "60/s", "pattern": "constant"}, "entities": 10_000})
    from sim.engine.run import Run
    run = Run(scenario)
    arch = run.architectures[1]
    for start_s, end_s in run.chunk_bounds():
        run.env.run(until=end_s)
        arch.serve(run.source.chunk(start_s, end_s))
    pool = arch.serving.pool
    assert isinstance(pool, BatchingPool)
    assert sorted(pool.ids.tolist()) == list(range(serving["autoscaling"]["max"]))
    assert pool.slow.paths == serving["autoscaling"]["max"]
