"""Retraining policies (schedule, continual, trigger), stateless vs stateful cost, per-architecture
training, and the staleness reporting: exact event traces on tiny cases (times are exact
arithmetic), the trigger monitor's laws, and both engines agreeing."""

import numpy as np
import pytest
import simpy
from hypothesis import given, settings, strategies as st

import sim
from sim.scenario import ScenarioError
from sim.engine.training import ModelLifecycle
from tests.conftest import make_scenario, online
from tests.test_reference import assert_same

MIN, HOUR, DAY = 60.0, 3600.0, 86400.0
LINEAR = {"linear": {"per_day": -0.01, "floor": 0.0}}


def lifecycle(training, until_s, since_s=-2 * DAY, **changes):
    """A model lifecycle of a small scenario, run alone from ``since_s`` to ``until_s``."""
    scenario = make_scenario({"online": online()}, training=training, **changes)
    model = ModelLifecycle(scenario.training, scenario, sim.engine.rng.Streams(scenario.seed))
    env = simpy.Environment(initial_time=since_s)
    model.start(env, since_s)
    env.run(until=until_s)
    return model


def since_zero(model):
    return [r for r in model.runs if r.start_s >= 0]


# -- schedule -----------------------------------------------------------------------------------

def test_schedule_duration_follows_data_volume_and_throughput():
    training = {"every": "1d", "throughput": "100/s", "overhead": "1m", "data_window": "1d",
                "examples_per_day": 864000, "deploy_delay": "5m"}
    model = lifecycle(training, 3 * DAY)
    runs = since_zero(model)
    assert [(r.start_s, r.duration_s, r.mode, r.examples) for r in runs] == [
        (k * DAY, 8640.0 + MIN, "stateless", 864000.0) for k in range(3)]
    deploys = [(r["visible_at_s"], r["cutoff_s"]) for r in model.deploys.rows
               if r["cutoff_s"] >= 0]
    assert deploys == [(k * DAY + 8640.0 + 6 * MIN, k * DAY) for k in range(3)]


def test_stateful_learns_the_data_since_the_last_update_and_full_retrains_on_a_grid():
    training = {"every": "1d", "mode": "stateful", "throughput": "10/s", "data_window": "7d",
                "examples_per_day": 86400, "full_retrain_every": "7d",
                "architecture_changes": ["2.5d"]}
    model = lifecycle(training, 15 * DAY)
    modes = {r.start_s / DAY: (r.mode, r.examples) for r in since_zero(model)}
    stateless = sorted(day for day, (mode, _) in modes.items() if mode == "stateless")
    assert stateless == [0.0, 3.0, 7.0, 14.0]  # the 7-day grid, and the first run after 2.5d
    assert modes[1.0] == ("stateful", 86400.0)
    assert modes[7.0] == ("stateless", 7 * 86400.0)


def test_old_training_sections_keep_their_meaning_and_cost():
    scenario = make_scenario({"online": online()},
                             training={"every": "6h", "duration": "1h"}, horizon="2d",
                             warmup="0s", **{"costs.training_run": 10})
    t = scenario.training
    assert (t.policy, t.training_mode, t.throughput) == ("schedule", "stateless", None)
    row = sim.run(scenario).summary.iloc[0]
    assert row["cost_usd_per_day_training"] == pytest.approx(40.0)
    assert row["trainings"] == 8


@settings(max_examples=25, deadline=None)
@given(every_h=st.integers(1, 168), window_factor=st.floats(1.0, 10.0),
       throughput=st.floats(10.0, 1e4), nodes=st.integers(1, 8))
def test_stateful_costs_less_than_stateless_at_the_same_cadence(every_h, window_factor,
                                                                 throughput, nodes):
    base = {"every": every_h * HOUR, "throughput": throughput, "nodes": nodes,
            "data_window": every_h * HOUR * window_factor, "examples_per_day": 1e6}
    prices = {"costs.training_node_hour": 3.0, "costs.training_run": 1.0}
    costs = {}
    for mode in ("stateless", "stateful"):
        model = lifecycle({**base, "mode": mode}, 8 * DAY, since_s=-3 * DAY, **prices)
        costs[mode] = model.cost_usd_per_day(model.scenario.costs, 0.0, 7 * DAY)
    assert costs["stateful"] <= costs["stateless"] * (1 + 1e-12)


# -- continual ----------------------------------------------------------------------------------

def test_continual_updates_one_at_a_time_and_skip_ticks_while_busy():
    training = {"policy": "continual", "every": "15m", "duration": "20m", "deploy_delay": "5m",
                "examples_per_day": 86400}
    model = lifecycle(training, 2 * HOUR, since_s=0.0, **{"costs.training_run": 1.0})
    assert [r.start_s for r in model.runs] == [0.0, 1800.0, 3600.0, 5400.0]
    # four updates in two hours, $1 each: $48 a day (skipped ticks cost nothing)
    assert model.cost_usd_per_day(model.scenario.costs, 0.0, 2 * HOUR) == pytest.approx(48.0)
    assert model.skipped == [900.0, 2700.0, 4500.0, 6300.0]
    assert [r.mode for r in model.runs] == ["stateful"] * 4
    assert [r.examples for r in model.runs[1:]] == [1800.0] * 3  # the data since the last one
    # the model the updates had produced before they began (one tick earlier), then each one
    assert [(r["visible_at_s"], r["cutoff_s"]) for r in model.deploys.rows] == [
        (0.0, -900.0)] + [(s + 1500.0, s) for s in (0.0, 1800.0, 3600.0, 5400.0)]


# -- trigger ------------------------------------------------------------------------------------

def trigger(**monitor):
    return {"policy": "trigger", "duration": "30m", "deploy_delay": "30m",
            "trigger": {"label_delay": "1h", "window": "2h", "check_every": "1h",
                        "noise": False, **monitor}}


def test_trigger_retrains_when_the_labelled_window_falls_below_the_level():
    # Labels 1h late: at a check at t the window holds the labels of predictions made in
    # [t-3h, t-1h], of mean model age t - c - 2h; 0.05 - 0.01 * age / 1d < 0.0449 first at
    # t - c = 15h (checks on the hour).
    model = lifecycle(trigger(below=0.0449), 6 * DAY, **{"quality.model_staleness": LINEAR})
    starts = [r.start_s for r in model.runs]
    assert np.allclose(np.diff(starts), 15 * HOUR)
    assert {r.reason for r in model.runs} == {"trigger"}
    deploys = [(r["visible_at_s"], r["cutoff_s"]) for r in model.deploys.rows[1:]]
    assert deploys == [(s + HOUR, s) for s in starts]
    fired = [c for c in model.checks if c.fired]
    assert [c.at_s for c in fired] == starts
    assert all(c.measured < 0.0449 for c in fired)
    assert all(c.measured >= 0.0449 for c in model.checks if not c.fired and c.labels > 0)


def test_drop_is_relative_to_fresh():
    by_level = lifecycle(trigger(below=0.0449), 4 * DAY, **{"quality.model_staleness": LINEAR})
    by_drop = lifecycle(trigger(drop=0.102), 4 * DAY, **{"quality.model_staleness": LINEAR})
    assert [r.start_s for r in by_level.runs] == [r.start_s for r in by_drop.runs]


@settings(max_examples=10, deadline=None)
@given(delay_h=st.floats(0.5, 30.0), drift_h=st.floats(2.0, 40.0), window_m=st.integers(5, 600),
       seed=st.integers(0, 1000))
def test_a_trigger_never_fires_before_labels_could_have_arrived(delay_h, drift_h, window_m, seed):
    # Without sampling noise: with it, a small window (100 labels at a CTR of 0.05) falls below
    # 0.03 by chance about one check in eight, drift or not; those false alarms are
    # count_alarms' subject below. Here: the drift itself is never seen before its labels.
    monitor = {"policy": "trigger", "trigger": {
        "label_delay": delay_h * HOUR, "window": window_m * MIN, "check_every": "10m",
        "below": 0.03, "noise": False}}
    model = lifecycle(monitor, drift_h * HOUR + delay_h * HOUR + window_m * MIN + HOUR,
                      since_s=0.0, seed=seed,
                      drift=[{"at": drift_h * HOUR, "quality_drop": 0.04}])
    fired = [c.at_s for c in model.checks if c.fired]
    assert fired, "the drift is never detected"
    assert fired[0] >= drift_h * HOUR + delay_h * HOUR


def count_alarms(window, seed=1, min_labels=300):
    """Triggered runs over two days of a model that never gets worse (every alarm is false)."""
    monitor = {"policy": "trigger", "trigger": {"label_delay": "1m", "window": window,
                                                "check_every": "10m", "below": 0.048,
                                                "min_labels": min_labels}}
    model = lifecycle(monitor, 2 * DAY, since_s=0.0, seed=seed)
    return sum(c.fired for c in model.checks), len(model.checks)


def test_short_noisy_windows_raise_false_alarms_and_long_ones_do_not():
    # 10 requests/s: a 2-minute window holds ~1,200 labels, so the measured CTR has a standard
    # deviation of ~0.0063 around 0.05, and falls below 0.048 at ~37% of checks; a day's window
    # holds ~860,000 (sd ~0.00023: 8.6 sd away) once it is full, which min_labels waits for.
    short, checks = count_alarms("2m")
    assert short > 0.2 * checks
    assert count_alarms("1d", min_labels=500_000)[0] == 0


def detection_delay(window):
    monitor = {"policy": "trigger", "trigger": {"label_delay": 0, "window": window,
                                                "check_every": "10m", "drop": 0.1,
                                                "noise": False}}
    model = lifecycle(monitor, 3 * DAY, since_s=0.0, drift=[{"at": "1d", "quality_drop": 0.01}])
    return next(c.at_s for c in model.checks if c.fired) - DAY


def test_detection_delay_is_about_half_the_window():
    # After the drift the window mixes 0.05 and 0.04; the mean falls below 0.045 once more than
    # half of it is after the drift: a delay of window / 2, rounded up to the next check.
    for window in (HOUR, 12 * HOUR):
        delay = detection_delay(window)
        assert window / 2 <= delay <= window / 2 + 10 * MIN
    assert detection_delay(HOUR) < detection_delay(12 * HOUR)


def test_the_monitor_is_deterministic_per_seed():
    a, b = count_alarms("2m", seed=5), count_alarms("2m", seed=5)
    assert a == b and count_alarms("2m", seed=6) != a


# -- per architecture, reporting, both engines -----------------------------------------------

def per_arch_scenario(**changes):
    own = online()
    own["training"] = {"every": "6h", "duration": "10m"}
    watched = online()
    watched["training"] = trigger(below=0.0475)
    watched["training"]["trigger"]["noise"] = True
    return make_scenario({"shared": online(), "own": own, "watched": watched},
                         training={"every": "1d"}, **{"quality.model_staleness": LINEAR,
                                                      "drift": [{"at": "20m",
                                                                 "quality_drop": 0.004}],
                                                      **changes})


def test_an_architecture_with_its_own_training_uses_its_own_model_history():
    scenario = per_arch_scenario(horizon="2d", warmup="0s", **{"workload.arrivals.rate": "1/s"})
    summary = sim.run(scenario).summary.set_index("architecture")
    assert summary.loc["shared", "trainings"] == 2
    assert summary.loc["own", "trainings"] == 8
    assert summary.loc["own", "model_age_s_mean"] < summary.loc["shared", "model_age_s_mean"]
    assert summary.loc["watched", "trainings"] >= 1


def test_losses_by_cause_add_up_to_the_quality_lost():
    scenario = per_arch_scenario(horizon="2d", warmup="1h", **{
        "workload.arrivals.rate": "1/s",
        "quality.feature_staleness": {"exponential": {"half_life": "1d", "floor": 0.03}}})
    summary = sim.run(scenario).summary
    lost = summary[[f"quality_lost_{k}" for k in ("feature_staleness", "model_staleness",
                                                  "drift")]].sum(axis=1)
    assert np.allclose(summary["quality_mean"], 0.05 - lost, rtol=0, atol=1e-12)
    assert (summary["quality_lost_model_staleness"] > 0).all()
    # The shared model (retrained daily at 0:00) was trained before the drift at 0:20 until the
    # run at 1d: requests in [1h, 1d) of the measured [1h, 49h) lose 0.004 each. Tolerance:
    # four binomial standard deviations of that share of requests.
    shared = summary.set_index("architecture").loc["shared"]
    share = 23 / 48
    sd = np.sqrt(share * (1 - share) / shared["requests"])
    assert abs(shared["quality_lost_drift"] - 0.004 * share) <= 0.004 * 4 * sd


def test_fast_and_reference_engines_agree_with_policies_and_own_training(monkeypatch):
    from sim.engine import run as engine
    monkeypatch.setattr(engine, "REQUESTS_PER_CHUNK", 1024)
    assert_same(per_arch_scenario(horizon="3h", warmup="30m", **{"workload.arrivals.rate": "2/s"}))


def test_json_reports_trainings_model_age_and_losses():
    scenario = per_arch_scenario(horizon="6h", warmup="0s", **{"workload.arrivals.rate": "1/s"})
    arch = sim.run(scenario).to_dict()["architectures"][1]
    assert arch["trainings"] == 1  # the 6h schedule's run at 0 (the one at 6h is past the end)
    assert set(arch["model_age_s"]) >= {"mean", "p50", "p95", "max"}
    assert set(arch["quality_lost"]) == {"feature_staleness", "cold_start", "expired_features",
                                         "missing_features", "model_staleness", "drift", "skew",
                                         "model_variant", "model_training"}


# -- validation ---------------------------------------------------------------------------------

@pytest.mark.parametrize("training, message", [
    ({"policy": "trigger"}, "training: policy trigger needs a trigger section"),
    ({"policy": "schedule"}, "training: every is required with policy schedule"),
    ({"every": "1d", "throughput": "10/s"}, "training: training with throughput needs "
                                            "data_window"),
    ({"every": "1d", "throughput": "10/s", "duration": "1h", "data_window": "1d"},
     "give either duration or throughput"),
    ({"policy": "continual", "every": "5m", "mode": "stateless"}, "stateful"),
    ({"policy": "trigger", "every": "1d", "trigger": {"window": "1h", "below": 0.04}},
     "every: not with policy trigger"),
    ({"policy": "trigger", "trigger": {"window": "1h"}}, "give exactly one of below"),
    ({"every": "1d", "full_retrain_every": "7d"}, "only with mode stateful"),
])
def test_bad_training_sections_are_explained(training, message):
    with pytest.raises(ScenarioError) as info:
        make_scenario({"online": online()}, training=training)
    assert message in str(info.value)


def test_monitor_noise_needs_a_rate_metric():
    monitor = {"policy": "trigger", "trigger": {"window": "1h", "below": 1.5}}
    with pytest.raises(ScenarioError, match="training.trigger.noise: .* rate between 0 and 1"):
        make_scenario({"online": online()}, training=monitor, **{"quality.fresh": 2.0})


# -- found in review ----------------------------------------------------------------------------

def test_a_triggered_models_numbers_do_not_depend_on_other_architectures():
    # The first model of a trigger policy starts from the policy's own lead, not from the
    # longest lead of every architecture in the scenario.
    def run(batch_every):
        scenario = make_scenario(
            {"online": online(features_every="1h"),
             "batch": {"kind": "batch", "every": batch_every, "throughput": "100/s"}},
            training=trigger(below=0.0449), horizon="1d", warmup="1d",
            **{"quality.model_staleness": LINEAR})
        return sim.simulate(scenario).summary.set_index("architecture").loc["online"]

    a, b = run("1d"), run("7d")
    assert a["model_age_s_mean"] == b["model_age_s_mean"]
    assert a["quality_mean"] == b["quality_mean"]


def test_the_monitor_counts_labels_from_requests_not_from_the_training_data():
    plain = lifecycle(trigger(below=0.0449), 2 * DAY, **{"quality.model_staleness": LINEAR})
    with_volume = lifecycle({**trigger(below=0.0449), "examples_per_day": 1000}, 2 * DAY,
                            **{"quality.model_staleness": LINEAR})
    assert [c.labels for c in plain.checks] == [c.labels for c in with_volume.checks]


def test_a_continual_tick_is_not_skipped_for_a_deploy_still_in_progress():
    # each update trains 50 min and deploys 15 min later: the next tick (at 60 min) finds no
    # update training, so none is skipped
    training = {"policy": "continual", "every": "1h", "duration": "50m", "deploy_delay": "15m",
                "examples_per_day": 86400}
    model = lifecycle(training, 12 * HOUR, since_s=0.0)
    assert model.skipped == []
    assert [r.start_s for r in model.runs] == [k * HOUR for k in range(12)]


def test_model_ages_of_rare_retraining_are_measured_not_capped():
    # runs every 180 days; measured 160-162 days after one (ages ~1.4e7 s, past 10^7 s)
    scenario = make_scenario({"online": online()}, training={"every": "180d"}, horizon="2d",
                             warmup="340d", **{"workload.arrivals.rate": "0.02/s"})
    row = sim.simulate(scenario).summary.iloc[0]
    assert row["model_age_s_max"] >= row["model_age_s_mean"] >= row["model_age_s_p50"] * 0.9
    assert row["model_age_s_max"] > 1e7


def test_a_trigger_level_at_or_above_fresh_is_refused():
    with pytest.raises(ScenarioError, match=r"training.trigger.below \(0.05\) must be below"):
        make_scenario({"online": online()}, training=trigger(below=0.05))
