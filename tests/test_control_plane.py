"""Exact event traces of the control plane on tiny cases (times are exact arithmetic)."""

import numpy as np
import pytest
import simpy

import sim
from sim.engine.architectures import build
from sim.engine.architectures.base import World
from sim.engine.freshness import Timeline
from sim.engine.rng import Streams
from sim.engine.training import ModelLifecycle
from sim.engine.workload import Population
from tests.conftest import make_scenario, online

HOUR, DAY = 3600.0, 86400.0


def start_world(scenario, until_s):
    streams = Streams(scenario.seed)
    population = Population(scenario.workload, scenario.end_s, streams)
    model = ModelLifecycle(scenario.training)
    archs = {name: build(name, spec, scenario) for name, spec in scenario.architectures.items()}
    lead = max([model.lead_s] + [a.lead_s(population.n_slots) for a in archs.values()])
    env = simpy.Environment(initial_time=-lead)
    world = World(scenario, streams, population, model, -lead)
    model.start(env, -lead)
    for a in archs.values():
        a.start(env, world)
    env.run(until=until_s)
    return model, archs, lead


def test_training_deploys_duration_plus_delay_after_each_scheduled_run():
    scenario = make_scenario({"online": online()},
                             training={"every": "1d", "duration": "2h", "deploy_delay": "15m"})
    model, _, lead = start_world(scenario, 3 * DAY)
    deploys = [(r["visible_at_s"], r["cutoff_s"]) for r in model.deploys.rows]
    since_zero = [d for d in deploys if d[0] >= 0]
    assert since_zero == [(k * DAY + 2.25 * HOUR, k * DAY) for k in range(3)]
    assert deploys[0][0] < 0  # a model was already in service at time 0 (steady state)
    assert [r.start_s for r in model.runs if r.start_s >= 0] == [0.0, DAY, 2 * DAY]


def test_without_training_the_model_has_cutoff_zero():
    scenario = make_scenario({"online": online()})
    model, _, _ = start_world(scenario, DAY)
    assert [r["cutoff_s"] for r in model.deploys.rows] == [0.0]


def test_batch_job_duration_is_entities_over_throughput_plus_overhead():
    batch = {"kind": "batch", "every": "6h", "start_at": "1h", "throughput": "100/s",
             "overhead": "5s"}
    scenario = make_scenario({"batch": batch}, **{"workload.entities": 1000})
    _, archs, _ = start_world(scenario, DAY)
    rows = [r for r in archs["batch"].store.jobs.rows if r["cutoff_s"] >= 0]
    assert [(r["cutoff_s"], r["visible_at_s"], r["scored"]) for r in rows] == [
        (h * HOUR, h * HOUR + 15.0, 1000) for h in (1, 7, 13, 19)]


def test_batch_jobs_score_entities_created_before_their_cutoff():
    batch = {"kind": "batch", "every": "1d", "throughput": "1000/s"}
    scenario = make_scenario({"batch": batch}, horizon="3d", warmup="0s",
                             **{"workload.new_entities_per_day": 500})
    _, archs, _ = start_world(scenario, 3 * DAY)
    population = archs["batch"].store.population
    for row in archs["batch"].store.jobs.rows:
        assert row["scored"] == population.count_at(row["cutoff_s"])
    scored = [r["scored"] for r in archs["batch"].store.jobs.rows if r["cutoff_s"] >= 0]
    assert scored == sorted(scored) and scored[-1] > scored[0]


def test_materialisation_becomes_visible_after_its_duration():
    scenario = make_scenario({"online": online(features_every="12h", duration="30m")})
    _, archs, _ = start_world(scenario, DAY)
    rows = [r for r in archs["online"].features.refreshes.rows if r["cutoff_s"] >= 0]
    assert [(r["cutoff_s"], r["visible_at_s"]) for r in rows] == [(0.0, 1800.0),
                                                                  (12 * HOUR, 12 * HOUR + 1800)]


def test_timeline_picks_the_newest_cutoff_even_when_jobs_finish_out_of_order():
    timeline = Timeline("t")
    timeline.append(10.0, 0.0)
    timeline.append(20.0, 15.0)   # newer data, finished first
    timeline.append(25.0, 5.0)    # older data, finished later: must not replace it
    assert timeline.at(np.array([5.0, 10.0, 22.0, 30.0]), "cutoff_s", missing=-1).tolist() == \
        [-1, 0.0, 15.0, 15.0]


def test_drift_hurts_models_trained_before_it_until_a_new_model_is_deployed():
    scenario = make_scenario({"online": online(features_every="1h")}, horizon="2d",
                             warmup="0s", drift=[{"at": "12h", "quality_drop": 0.01}],
                             training={"every": "1d", "duration": "1h"},
                             timeseries_bucket="1h")
    ts = sim.run(scenario).timeseries.set_index("bucket_start_s")["quality_mean"]
    before, during, after = ts.loc[11 * HOUR], ts.loc[13 * HOUR], ts.loc[26 * HOUR]
    assert before == pytest.approx(0.05)
    assert during == pytest.approx(0.04)   # the drop until the model trained at 24h deploys
    assert after == pytest.approx(0.05)    # deployed at 25h with data after the shift
