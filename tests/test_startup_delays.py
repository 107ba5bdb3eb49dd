"""Startup delays as distributions (issue 23): the autoscaler's decision lag, node start and
model load, the warm pool, and the replicas asked for, starting and ready.

The kernel is ``sim.engine.serving.batch_queue`` (``_evaluate`` decides, ``_act`` carries a decision
out); the reference engine's ``sim.engine.reference._Batcher`` does the same with SimPy processes.
Hand-computed traces use one replica at 30 ms a request, offered 50 requests a second (1.5
replicas' worth), so the autoscaler's first look, at 1 s, sees it saturated.
"""

import numpy as np
import pytest

import sim
from sim.engine import run as engine
from sim.engine import serving as kernel
from sim.inputs.explain import explain
from sim.engine.rng import Streams
from sim.scenario import Autoscaling, ScenarioError, Serving
from sim.engine.serving import BatchingPool, StartupDraws
from tests.conftest import make_scenario, online
from tests.test_reference import assert_same


def pool_for(horizon_s=8.0, **auto) -> BatchingPool:
    base = {"min": 1, "max": 2, "target_utilization": 0.5, "every": "1s", "cooldown": "1h"}
    serving = Serving(replicas=1, service_time={"constant": "30ms"},
                      autoscaling={**base, **auto})
    return BatchingPool(serving, eval_until_s=horizon_s)


def run(pool, horizon_s=8.0, rate=50.0, splits=(), t=None):
    """Requests every 1/rate s up to ``horizon_s`` (or at ``t``), 30 ms each, served in
    chunks cut at ``splits``; the outcomes and the autoscaler's log."""
    t = np.arange(0, horizon_s, 1 / rate) if t is None else t
    zeros = np.zeros(t.size)
    arrays = dict(t_s=t, lookup_s=zeros, item_s=np.full(t.size, 0.03), fixed_s=zeros)
    edges = [-np.inf, *splits, np.inf]
    parts = []
    for lo, hi in zip(edges, edges[1:]):
        m = (t >= lo) & (t < hi)
        parts.append(pool.serve({k: v[m] for k, v in arrays.items()}, until_s=hi,
                                final=hi == np.inf))
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return out, pool.log()


def at(log, t_s: float, column: str) -> float:
    return float(log[column][np.flatnonzero(np.isclose(log["t_s"], t_s))[0]])


# -- the scenario -----------------------------------------------------------------------------

def test_delays_are_durations_or_distributions_and_warmup_stays_valid():
    a = Autoscaling(min=1, max=3, target_utilization=0.5, decision_lag="30s",
                    node_start={"lognormal": {"median": "45s", "p99": "5m"}},
                    model_load={"gamma": {"mean": "40s", "cv": 0.5}}, warm_pool=1)
    assert a.decision_lag.mean == 30 and a.warm_pool == 1
    assert a.mean_startup_s == pytest.approx(a.node_start.mean + 40)
    old = Autoscaling(min=1, max=3, target_utilization=0.5, warmup="2m")
    assert old.startup[0].mean == 120 and old.startup[1].is_zero
    assert old.decision_lag.is_zero and old.warm_pool == 0
    with pytest.raises(ValueError, match="give warmup .* or node_start and model_load, not both"):
        Autoscaling(min=1, max=3, target_utilization=0.5, warmup="2m", model_load="30s")


def test_a_resolved_scenario_with_delays_loads_again():
    arch = online(2)
    arch["serving"]["autoscaling"] = {"min": 1, "max": 4, "target_utilization": 0.5,
                                      "decision_lag": {"exponential": {"mean": "40s"}},
                                      "node_start": "1m", "model_load": "20s", "warm_pool": 2}
    scenario = make_scenario({"a": arch})
    again = sim.scenario_from_dict(scenario.to_yaml_dict())
    assert again.architectures["a"].serving.autoscaling == \
        scenario.architectures["a"].serving.autoscaling
    arch["serving"]["autoscaling"]["warmup"] = "1m"
    with pytest.raises(ScenarioError, match="not both"):
        make_scenario({"a": arch})


# -- hand-computed traces ---------------------------------------------------------------------

def test_constant_delays_without_lag_are_todays_warmup_exactly():
    # warmup 2 s, or node start 1.5 s + model load 0.5 s: the same outcomes and log, bit for
    # bit; and the one new replica asked for at 1 s serves from 3 s
    with_warmup = run(pool_for(warmup="2s"))
    split = run(pool_for(node_start="1.5s", model_load="0.5s"))
    for a, b in zip(with_warmup, split):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    log = split[1]
    assert at(log, 1, "replicas") == 2 and at(log, 1, "ready_replicas") == 1
    assert at(log, 2, "ready_replicas") == 1 and at(log, 3, "ready_replicas") == 2
    assert at(log, 2, "starting_replica_s") == pytest.approx(1.0)  # starting all of (1, 2]
    assert at(log, 2, "replica_s") == pytest.approx(2.0)  # paid for from 1 s
    assert at(log, 3, "ready_replica_s") == pytest.approx(1.0)


def test_a_decision_takes_effect_after_its_lag_and_the_replica_then_starts():
    # decided at 1 s, in effect at 1.5 s (asked for and paid from then), ready at
    # 1.5 + 1 + 0.75 = 3.25 s
    _, log = run(pool_for(decision_lag="0.5s", node_start="1s", model_load="0.75s"))
    assert (at(log, 1, "replicas"), at(log, 1, "asked_replicas")) == (1, 2)  # pending
    assert at(log, 2, "replica_s") == pytest.approx(0.5 * 1 + 0.5 * 2)
    assert at(log, 2, "asked_replica_s") == pytest.approx(2.0)  # asked for since 1 s
    assert at(log, 2, "starting_replica_s") == pytest.approx(0.5)
    assert at(log, 3, "starting_replica_s") == pytest.approx(1.0)
    assert at(log, 3, "ready_replicas") == 1
    assert at(log, 4, "starting_replica_s") == pytest.approx(0.25)
    assert at(log, 4, "ready_replica_s") == pytest.approx(2 - 0.25)
    assert at(log, 4, "ready_replicas") == 2


def test_known_draws_give_known_ready_times():
    # up from 1 to 3 at 1 s (saturated at a 1/3 target), lag 0.4 s: the two replicas draw
    # start-ups of 1 s and 2 s, so they serve from 2.4 s and 3.4 s
    pool = pool_for(max=3, target_utilization=1 / 3,
                    decision_lag={"exponential": {"mean": "1s"}},
                    node_start={"exponential": {"mean": "1s"}})
    pool.draws.lags = np.array([0.4, 9.0, 9.0, 9.0])
    pool.draws.startups = np.array([1.0, 2.0, 9.0, 9.0])
    _, log = run(pool, horizon_s=5.0)
    assert at(log, 1, "asked_replicas") == 3 and at(log, 1, "replicas") == 1
    assert at(log, 2, "starting_replica_s") == pytest.approx(2 * 0.6)
    assert at(log, 3, "starting_replica_s") == pytest.approx(0.4 + 1.0)
    assert at(log, 3, "ready_replicas") == 2
    assert at(log, 4, "starting_replica_s") == pytest.approx(0.4)
    assert at(log, 4, "ready_replicas") == 3


def test_the_draws_come_from_their_own_streams_in_order():
    a = Autoscaling(min=1, max=3, target_utilization=0.5,
                    decision_lag={"exponential": {"mean": "30s"}},
                    node_start={"gamma": {"mean": "1m", "cv": 0.8}}, model_load="10s")
    draws = StartupDraws(a, Streams(7))
    draws.refill(np.zeros(kernel.STATE_SIZE))
    lag_u = Streams(7).fresh("autoscaling/decision_lag").random(draws.lags.size)
    np.testing.assert_array_equal(draws.lags, a.decision_lag.ppf(lag_u))
    start_u = Streams(7).fresh("autoscaling/startup").random((draws.startups.size, 2))
    np.testing.assert_array_equal(draws.startups, a.node_start.ppf(start_u[:, 0]) + 10.0)


def test_distributions_are_drawn_with_their_means():
    a = Autoscaling(min=1, max=3, target_utilization=0.5,
                    decision_lag={"lognormal": {"median": "30s", "p99": "90s"}},
                    node_start={"gamma": {"mean": "2m", "cv": 0.5}},
                    model_load={"exponential": {"mean": "40s"}})
    draws = StartupDraws(a, Streams(3))
    state = np.zeros(kernel.STATE_SIZE)
    lags, startups = [], []
    for _ in range(80):  # 80 blocks of 256: 20,480 draws of each
        draws.refill(state)
        lags.append(draws.lags.copy())
        startups.append(draws.startups.copy())
        state[kernel.LAG_POS], state[kernel.START_POS] = draws.lags.size, draws.startups.size
    lags, startups = np.concatenate(lags), np.concatenate(startups)
    assert lags.mean() == pytest.approx(a.decision_lag.mean, rel=0.02)
    assert startups.mean() == pytest.approx(120 + 40, rel=0.02)
    # the sum of a gamma (sd 60 s) and an exponential (sd 40 s): independent draws
    assert startups.std() == pytest.approx(np.hypot(60, 40), rel=0.04)


def test_a_warm_pool_replica_serves_once_the_decision_takes_effect():
    # one replica standing by: the scale-up decided at 1 s takes it, serving from 1.5 s; its
    # replacement takes 5 s to start and load; the pool is paid for all along
    auto = dict(max=3, decision_lag="0.5s", node_start="4s", model_load="1s", tolerance=0.05)
    out, log = run(pool_for(horizon_s=10.0, warm_pool=1, **auto), horizon_s=6.0, rate=80)
    assert at(log, 1, "asked_replicas") == 2 and at(log, 1, "replicas") == 1
    assert at(log, 2, "ready_replicas") == 2
    assert at(log, 2, "starting_replica_s") == 0
    assert at(log, 2, "replica_s") == pytest.approx(0.5 * 1 + 0.5 * 2 + 1)
    # 80/s x 30 ms = 2.4 replicas' worth: the next scale-up, decided at 2 s, finds the pool
    # refilling (until 6.5 s) and starts a replica of its own, ready at 2.5 + 5 = 7.5 s
    assert at(log, 2, "asked_replicas") == 3
    assert at(log, 7, "ready_replicas") == 2 and at(log, 8, "ready_replicas") == 3
    assert at(log, 8, "starting_replica_s") == pytest.approx(0.5)
    np.testing.assert_allclose(log["replica_s"] - log["ready_replica_s"] -
                               log["starting_replica_s"], 1.0, atol=1e-9)  # the pool
    # without the pool the first scale-up waits for its start: ready at 6.5 s, not 1.5 s
    plain, plain_log = run(pool_for(horizon_s=10.0, **auto), horizon_s=6.0, rate=80)
    assert at(plain_log, 2, "ready_replicas") == 1 and at(plain_log, 6, "ready_replicas") == 1
    assert at(plain_log, 7, "ready_replicas") == 2
    assert at(plain_log, 7, "starting_replica_s") == pytest.approx(0.5)
    np.testing.assert_allclose(plain_log["replica_s"], plain_log["ready_replica_s"] +
                               plain_log["starting_replica_s"], atol=1e-9)
    assert out["wait_s"].mean() < 0.7 * plain["wait_s"].mean()


def test_chunks_a_full_log_and_short_draws_change_nothing(monkeypatch):
    auto = dict(max=4, tolerance=0.05, cooldown="0s",
                decision_lag={"exponential": {"mean": "0.7s"}},
                node_start={"gamma": {"mean": "1s", "cv": 0.7}},
                model_load={"exponential": {"mean": "0.5s"}}, warm_pool=1)
    # busy for 10 s, then quiet: the autoscaler goes up, then down
    t = np.r_[np.arange(0, 10, 1 / 60), np.arange(10, 20, 1 / 5)]
    whole = run(pool_for(horizon_s=20.0, **auto), t=t)
    monkeypatch.setattr(kernel, "LOG_ROWS_PER_CALL", 2)
    monkeypatch.setattr(StartupDraws, "BLOCK", 1)
    cut = run(pool_for(horizon_s=20.0, **auto), t=t, splits=[2.3, 7.0, 7.01, 13.5])
    for a, b in zip(whole, cut):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    steps = np.diff(whole[1]["replicas"])
    assert (steps > 0).any() and (steps < 0).any()


# -- the engines and the results --------------------------------------------------------------

AUTO = {"min": 1, "max": 5, "target_utilization": 0.5, "every": "5s", "tolerance": 0.05,
        "cooldown": "0s", "decision_lag": {"exponential": {"mean": "3s"}},
        "node_start": {"lognormal": {"median": "4s", "p99": "20s"}},
        "model_load": {"gamma": {"mean": "3s", "cv": 0.5}}, "warm_pool": 1}


def _scenario(auto=AUTO, rate="60/s", seed=4, horizon="3m"):
    """Busy and quiet spells (a Markov-modulated rate), so the autoscaler goes up and down."""
    arch = online(2, {"exponential": {"mean": "20ms"}}, timeout="200ms",
                  feature_lookup={"exponential": {"mean": "2ms"}})
    arch["serving"]["autoscaling"] = auto
    fixed = online(2, {"exponential": {"mean": "20ms"}}, timeout="200ms")
    return make_scenario({"scaled": arch, "fixed": fixed}, horizon=horizon, warmup="1m",
                         seed=seed, timeseries_bucket="20s", costs={"replica_hour": 1.0},
                         **{"workload.arrivals.rate": rate,
                            "workload.arrivals.mmpp": {"multipliers": [0.3, 2.0],
                                                       "mean_sojourn": ["30s", "20s"]}})


def fast_log(scenario) -> dict:
    """The fast engine's autoscaler log for the architecture ``scaled``."""
    run_ = engine.Run(scenario)
    arch = next(a for a in run_.architectures if a.name == "scaled")
    for start_s, end_s in run_.chunk_bounds():
        run_.env.run(until=end_s)
        arch.serve(run_.source.chunk(start_s, end_s))
    arch.finish()
    return arch.serving.pool.log()


@pytest.mark.parametrize("auto", [
    AUTO,
    {**AUTO, "warm_pool": 3, "decision_lag": "4s", "node_start": "0s",
     "model_load": {"exponential": {"mean": "6s"}}},
    {**AUTO, "warm_pool": 0, "decision_lag": {"constant": "0s"}}],
    ids=["distributions_and_pool", "big_pool_constant_lag", "no_lag_no_pool"])
def test_fast_and_reference_engines_agree_request_by_request(auto, monkeypatch):
    monkeypatch.setattr(engine, "REQUESTS_PER_CHUNK", 1024)
    scenario = _scenario(auto)
    assert_same(scenario)
    # the case does what it is meant to: up and down, replicas starting, decisions waiting
    log = fast_log(scenario)
    steps = np.diff(log["replicas"])
    assert (steps > 0).sum() >= 3 and (steps < 0).sum() >= 3
    assert (log["starting_replica_s"] > 0).any() == (auto["warm_pool"] < 3)
    lagged = not Autoscaling(**auto).decision_lag.is_zero
    assert (log["asked_replicas"] > log["replicas"]).any() == lagged


def test_the_time_series_has_replicas_asked_for_starting_and_ready():
    results = sim.simulate(_scenario(rate="90/s"))
    ts = results.timeseries.set_index("architecture")
    scaled, fixed = ts.loc["scaled"], ts.loc["fixed"]
    eps = 1e-9
    assert (scaled["replicas_ready"] <= scaled["replicas_ready"] +
            scaled["replicas_starting"] + eps).all()
    assert (scaled["replicas_ready"] + scaled["replicas_starting"] <=
            scaled["replicas_asked"] + eps).all()
    # paid for: those running (ready or starting) and the warm pool of one
    np.testing.assert_allclose(scaled["replicas"],
                               scaled["replicas_ready"] + scaled["replicas_starting"] + 1,
                               atol=1e-9)
    assert (scaled["replicas_starting"] > 0).any()
    assert (scaled["replicas_asked"] > scaled["replicas_ready"] + scaled["replicas_starting"]
            + 1e-6).any()  # a scale-up within its decision lag
    # the summary: ready replicas on average, and the cost of those paid for
    summary = results.summary.set_index("architecture")
    width = scaled["bucket_s"]
    assert summary.loc["scaled", "replicas_mean"] == pytest.approx(
        (scaled["replicas_ready"] * width).sum() / width.sum())
    assert summary.loc["scaled", "cost_usd_per_day_serving"] == pytest.approx(
        24 * (scaled["replicas"] * width).sum() / width.sum())
    # fixed replicas: all asked for and ready, none starting
    assert (fixed["replicas_asked"] == 2).all() and (fixed["replicas_ready"] == 2).all()
    assert (fixed["replicas_starting"] == 0).all()
    figure = results.plot.replicas()
    assert len(figure.axes) == 1 and figure.axes[0].get_title(loc="left") == "scaled"
    results.plot.serving_load()
    import matplotlib.pyplot as plt
    plt.close("all")


def test_explain_says_the_delays_in_plain_words():
    text = " ".join(explain(_scenario()).split())
    assert "A decision takes effect after a lag (exponential, mean 3s" in text
    assert "its node has started (lognormal, median 4s, p99 20s)" in text
    assert "its model has loaded (gamma, mean 3s, cv 0.5)" in text
    assert "1 more replica stands by, started and loaded" in text
    assert "replicas asked for, starting and ready" in text
    constant = " ".join(explain(_scenario({**AUTO, "decision_lag": 0, "node_start": 0,
                                             "model_load": 0, "warm_pool": 0,
                                             "warmup": "2m"})).split())
    assert "A new replica serves 2min after it is asked for." in constant
    assert "decision takes effect" not in constant and "stands by" not in constant
