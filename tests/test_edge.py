"""The edge architecture (issue 21): features as fresh as the device's last sync, models that
reach devices after a rollout delay, a cloud path for slow devices and new users, device costs,
and the two engines agreeing request by request."""

from __future__ import annotations

import math

import numpy as np
import pytest

import sim
from sim.engine.architectures.edge import device_uniform, device_uniform_one, salts
from sim.engine.rng import Streams
from sim.engine.training import BUCKET_MULTIPLIERS
from sim.scenario import ScenarioError
from tests.conftest import ci_half_width, make_scenario, online, replicate
from tests.test_pipelines import architecture, assert_same, drive

HOUR, DAY = 3600.0, 86400.0
DEVICE = {"lognormal": {"median": "30ms", "p99": "120ms"}}


def edge(**changes) -> dict:
    return {"kind": "edge", "device_time": DEVICE, "sync": {"every": "6h"}, **changes}


def cloud(**changes) -> dict:
    return {"features": {"batch": {"every": "1h"}},
            "serving": {"replicas": 2, "service_time": {"exponential": {"mean": "10ms"}}},
            **changes}


def scenario(architectures, **changes):
    changes = {"horizon": "1d", "warmup": "1d", "workload__arrivals__rate": "2/s", **changes}
    return make_scenario(architectures, **changes)


def test_the_hash_is_the_same_in_both_forms_and_spread_evenly():
    slots = np.arange(2000)
    u = device_uniform(slots, np.full(2000, -3), 12345)
    assert [device_uniform_one(int(s), -3, 12345) for s in slots[:50]] == list(u[:50])
    assert abs(u.mean() - 0.5) < 0.02 and u.min() >= 0 and u.max() < 1


def test_a_devices_features_are_as_old_as_its_last_sync_that_happened():
    """One device by hand: its syncs are at phase + k x 6h, those the hash marks offline are
    skipped, and each request's feature age is the time since the last one that happened."""
    spec = scenario({"edge": edge(sync={"every": "6h", "offline": 0.5})},
                    workload__entities=20)
    run, seen = drive(spec)
    model = architecture(run, "edge")
    out = seen["edge"]
    sync_salt, _ = salts(Streams(spec.seed), "edge")
    assert model.sync_salt == sync_salt
    slots = _slots(spec)
    checked = 0
    for slot in range(5):
        phase = ((slot * BUCKET_MULTIPLIERS["sync"] + 0.5) % 1.0) * 6 * HOUR
        happened = [phase + k * 6 * HOUR for k in range(-20, 12)
                    if device_uniform_one(slot, k, sync_salt) >= 0.5]
        mine = np.flatnonzero(slots == slot)
        for i in mine:
            t = out["t_s"][i]
            last = max(s for s in happened if s <= t)
            assert out["batch_age_s"][i] == pytest.approx(t - last)
            checked += 1
    assert checked > 100


def _slots(spec):
    """The entity of every request of a run, in arrival order (the request source replayed)."""
    from sim.engine.run import Run
    fresh = Run(spec)
    return np.concatenate([fresh.source.chunk(a, b).slot for a, b in fresh.chunk_bounds()])


def test_mean_feature_age_with_missed_syncs_matches_its_closed_form():
    """Syncs every T, each missed with probability p, phases spread evenly: the age since the
    last sync that happened has mean T / 2 + T p / (1 - p)."""
    spec = scenario({"edge": edge(sync={"every": "2h", "offline": 0.4})},
                    workload__entities=5000, horizon="2d")
    ages = replicate(spec, "batch_feature_age_s_mean", "edge", 6)
    expected = 2 * HOUR / 2 + 2 * HOUR * 0.4 / 0.6
    assert abs(ages.mean() - expected) <= ci_half_width(ages)


def test_a_new_model_reaches_devices_as_its_rollout_distribution_says():
    """Deploys at 00:00 (runs start 22:00 and take 2 h) with an exponential rollout of mean
    6 h: at 06:00 a share 1 - e^-1 of devices has the new model."""
    spec = scenario({"edge": edge(rollout={"exponential": {"mean": "6h"}})},
                    workload__entities=20_000, workload__arrivals__rate="10/s",
                    training={"every": "1d", "start_at": "22h", "duration": "2h"})
    _, seen = drive(spec)
    out = seen["edge"]
    around = (out["t_s"] > DAY + 5.5 * HOUR) & (out["t_s"] < DAY + 6.5 * HOUR)
    new = out["model_age_s"][around] < (out["t_s"][around] - (DAY - 2 * HOUR)) + 1
    assert abs(new.mean() - (1 - math.exp(-1))) < 0.03


def test_slow_devices_and_new_users_go_to_the_cloud():
    """Device times over 60 ms go to the cloud (P = 1 - Phi(ln(2)/sigma) for a lognormal of
    median 30 ms, p99 120 ms), through the network; the rest answer on the device."""
    spec = scenario({"edge": edge(cloud=cloud(slower_than="60ms", cold=False))},
                    network={"rtt": "40ms"})
    _, seen = drive(spec)
    out = seen["edge"]
    sigma = math.log(4) / 2.3263478740408408
    slow = 1 - 0.5 * (1 + math.erf(math.log(2) / sigma / math.sqrt(2)))
    to_cloud = ~np.isnan(out["service_s"])  # the cloud's replica served it
    assert abs(to_cloud.mean() - slow) < 0.02
    assert (out["latency_s"][to_cloud] >= 0.040).all()
    assert (out["latency_s"][~to_cloud] <= 0.060).all()
    row = sim.simulate(spec).summary.set_index("architecture").loc["edge"]
    assert row["network_ms_mean"] == pytest.approx(40 * slow, rel=0.1)


def test_device_costs_follow_syncs_and_downloads():
    spec = scenario({"edge": edge(sync={"every": "6h", "offline": 0.25})},
                    workload__entities=10_000, costs__device_sync=0.001,
                    costs__device_download=0.01,
                    training={"every": "1d", "duration": "1h"})
    row = sim.simulate(spec).summary.set_index("architecture").loc["edge"]
    syncs = 10_000 * 0.75 * 4 * 0.001
    downloads = 10_000 * 1 * 0.01
    assert row["cost_usd_per_day_devices"] == pytest.approx(syncs + downloads, rel=1e-9)
    assert row["cost_usd_per_day_serving"] == 0


@pytest.mark.parametrize("serving", [
    {"replicas": 2, "service_time": {"exponential": {"mean": "10ms"}}, "timeout": "50ms"},
    {"replicas": 1, "timeout": "80ms",
     "batching": {"max_batch": 4, "max_wait": "5ms", "fixed": "2ms", "per_item": "3ms"}},
])
def test_fast_and_reference_agree_on_the_edge(serving):
    spec = scenario({
        "edge": edge(sync={"every": "3h", "offline": 0.3},
                     rollout={"exponential": {"mean": "4h"}},
                     request_features={"compute": "2ms"},
                     cloud=cloud(slower_than="70ms", serving=serving), variant="distilled"),
        "plain_edge": edge(),
        "online": online(replicas=2)},
        training={"every": "6h", "duration": "1h"}, network={"rtt": "30ms"},
        workload__new_entities_per_day=2000, workload__arrivals__rate="3/s")
    assert_same(spec)


def test_a_device_runs_the_newest_model_it_has_even_when_an_older_one_deploys_later():
    """A long full retrain (older cut-off) deploys after a quick stateful update: a device, as
    the cloud, serves the newest cut-off it has, in both engines."""
    training = {"every": "2h", "mode": "stateful", "full_retrain_every": "1d",
                "data_window": "7d", "throughput": 35}
    assert_same(scenario({"edge": edge(), "slow_rollout": edge(rollout="30m")},
                         training=training, workload__arrivals__rate="1/s"))


def test_bad_edge_sections_say_what_is_wrong():
    with pytest.raises(ScenarioError) as error:
        scenario({"edge": edge(cloud=cloud(cold=False))})
    assert "slower_than" in str(error.value)
    with pytest.raises(ScenarioError) as error:
        scenario({"edge": edge(cloud={**cloud(), "features": {}})})
    assert "features.batch" in str(error.value)
    sized = cloud()
    sized["serving"] = {**sized["serving"], "time_per_size": "1ms"}
    with pytest.raises(ScenarioError) as error:
        scenario({"edge": edge(cloud=sized)})
    assert "architectures.edge.cloud.serving.time_per_size" in str(error.value)
