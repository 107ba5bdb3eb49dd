"""Retraining bounded by labels and by testing (issue 20): the data cut-off a label window sets,
tests of new models before they deploy (their length, cost, exposure and what they stop), the
quality effect of how a model was trained, the volume and distribution triggers, and the two
engines agreeing on all of it request by request."""

from __future__ import annotations

import math

import numpy as np
import pytest

import sim
from sim.scenario import ScenarioError
from sim.studies.abtest import sample_size_per_arm
from tests.conftest import make_scenario, online
from tests.test_pipelines import architecture, assert_same, drive

DAY, HOUR = 86400.0, 3600.0
AGING = {"linear": {"per_day": -0.01, "floor": 0.001}}   # 0.05 -> 0.04 after a day


def scenario(training: dict, architectures: dict | None = None, **changes) -> sim.Scenario:
    """One online architecture (unless given) on a model that ages, for 2 days after a day of
    warm-up."""
    changes = {"horizon": "2d", "warmup": "1d", "workload__arrivals__rate": "2/s",
               "quality__model_staleness": AGING, "training": training, **changes}
    return make_scenario(architectures or {"online": online(replicas=2)}, **changes)


def row(results, name="online"):
    return results.summary.set_index("architecture").loc[name]


# --------------------------------------------------------------------------------------------
# Labels: the data cut-off and the mislabelled positives
# --------------------------------------------------------------------------------------------

def test_a_label_window_moves_the_data_cut_off_back_by_the_window():
    """Daily runs at 00:00 taking 2 h, data ending 6 h before the start: the model serving at
    any time was cut off 6 h before the last run that finished, so its age runs from 8 h (at
    02:00) to 32 h (just before the next deploy)."""
    training = {"every": "1d", "duration": "2h", "labels": {"delay": "1h", "wait": "6h"}}
    run, seen = drive(scenario(training))
    out = seen["online"]
    measured = out["t_s"] >= DAY
    t, age = out["t_s"][measured], out["model_age_s"][measured]
    last_run = np.floor((t - 2 * HOUR) / DAY) * DAY        # the run whose model serves
    np.testing.assert_allclose(age, t - (last_run - 6 * HOUR), atol=1e-6)
    assert age.min() >= 8 * HOUR and age.max() < 32 * HOUR
    cutoffs = [r.cutoff_s for r in architecture(run, "online").world.model.runs]
    starts = [r.start_s for r in architecture(run, "online").world.model.runs]
    np.testing.assert_allclose(np.subtract(starts, cutoffs), 6 * HOUR)


def test_a_short_window_mislabels_late_positives_and_costs_their_share():
    """Exponential delay with mean 2 h and a 6 h window: e^-3 of positives come late; each
    model loses mislabel_loss x e^-3, and the loss is reported under model_training."""
    labels = {"delay": {"exponential": {"mean": "2h"}}, "wait": "6h", "mislabel_loss": 0.01}
    spec = scenario({"every": "1d", "duration": "2h", "labels": labels})
    assert spec.training.labels.mislabelled_share == pytest.approx(math.exp(-3), abs=1e-3)
    with_labels = row(sim.simulate(spec))
    assert with_labels["quality_lost_model_training"] == pytest.approx(
        0.01 * spec.training.labels.mislabelled_share, rel=1e-9)
    long_wait = row(sim.simulate(scenario({"every": "1d", "duration": "2h", "labels": {
        **labels, "wait": "2d"}})))
    # waiting 2 days mislabels nothing but serves a model 42 h older on average
    assert long_wait["quality_lost_model_training"] < 1e-5
    assert long_wait["model_age_s_mean"] == pytest.approx(
        with_labels["model_age_s_mean"] + 42 * HOUR, rel=1e-6)


def test_the_window_defaults_to_the_delays_99th_percentile():
    labels = scenario({"every": "1d", "labels": {"delay": {"exponential": {
        "mean": "1h"}}}}).training.labels
    assert labels.wait_s == pytest.approx(-HOUR * math.log(0.01), rel=1e-9)
    assert labels.mislabelled_share == pytest.approx(0.01, abs=1e-3)


# --------------------------------------------------------------------------------------------
# Evaluation: how long a test takes, what it costs, what it stops
# --------------------------------------------------------------------------------------------

def _lifecycle(training, **changes):
    run, seen = drive(scenario(training, **changes))
    return architecture(run, "online").world.model, seen["online"]


def test_an_ab_test_lasts_its_sample_size_over_the_traffic_in_it():
    """p 0.05 against 0.055 (min_effect 10%), half the traffic of 2/s: the test lasts
    2 n / (0.5 x 2) seconds, and the model deploys when it ends (plus deploy_delay)."""
    evaluation = {"method": "ab", "share": 0.5, "min_effect": 0.1}
    model, _ = _lifecycle({"every": "3d", "duration": "1h", "deploy_delay": "10m",
                           "evaluation": evaluation})
    n = sample_size_per_arm(0.05, 0.055, 0.05, 0.8)
    expected = 2 * n / (0.5 * 2.0)
    assert model.tests, "a run was tested"
    for test in model.tests:
        assert test.end_s - test.start_s == pytest.approx(expected, rel=1e-12)
    run = model.runs[0]
    test = model.tests[0]
    assert test.start_s == pytest.approx(run.start_s + HOUR)
    deployed = [r["visible_at_s"] for r in model.deploys.rows if r["cutoff_s"] == run.cutoff_s]
    assert deployed == [pytest.approx(test.end_s + 600)]


def test_a_bandit_lasts_thompson_samplings_samples_over_its_traffic():
    from sim.studies.testplan import thompson
    evaluation = {"method": "bandit", "share": 0.5, "min_effect": 0.3}
    model, _ = _lifecycle({"every": "2d", "duration": "1h", "evaluation": evaluation})
    outcome = thompson(0.05, 0.065, confidence=0.95)
    assert model.tests
    for test in model.tests:
        assert test.end_s - test.start_s == pytest.approx(outcome.samples / (0.5 * 2.0))
        assert test.steps == ((test.start_s, pytest.approx(0.5 * outcome.challenger_share)),)


def test_a_shadow_test_doubles_inference_on_what_it_scores():
    """Shadow: predictions / (share x rate) long; its extra cost is its predictions at the
    architecture's serving cost per request, and nobody is served by the candidate."""
    evaluation = {"method": "shadow", "share": 0.25, "predictions": "20k"}
    spec = scenario({"every": "1d", "duration": "1h", "evaluation": evaluation},
                    costs__replica_hour=1.0)
    model, out = _lifecycle(spec.training.model_dump(mode="json"), costs__replica_hour=1.0)
    for test in model.tests:
        assert test.end_s - test.start_s == pytest.approx(20_000 / (0.25 * 2.0))
        assert test.steps == ()
    r = row(sim.simulate(spec))
    per_prediction = r["cost_usd_per_day_serving"] / (2.0 * DAY)
    # one test a day, each spread over its own run
    assert r["cost_usd_per_day_evaluation"] == pytest.approx(20_000 * per_prediction, rel=1e-6)
    plain = row(sim.simulate(scenario({"every": "1d", "duration": "1h"},
                                      costs__replica_hour=1.0)))
    assert r["cost_usd_per_day_evaluation"] > 0 == plain["cost_usd_per_day_evaluation"]


def test_users_in_a_tests_share_are_served_by_the_candidate_and_always_the_same_users():
    evaluation = {"method": "canary", "steps": [0.2, 0.6], "step_duration": "3h"}
    model, out = _lifecycle({"every": "1d", "duration": "1h", "evaluation": evaluation})
    test = next(x for x in model.tests if x.start_s >= 0)
    first = (out["t_s"] >= test.start_s) & (out["t_s"] < test.start_s + 3 * HOUR)
    second = (out["t_s"] >= test.start_s + 3 * HOUR) & (out["t_s"] < test.end_s)
    candidate_age = out["t_s"] - test.cutoff_s
    on_candidate = np.isclose(out["model_age_s"], candidate_age)
    # a share of requests close to the step (the hash spreads entities evenly; Zipf-free BASE)
    assert abs(on_candidate[first].mean() - 0.2) < 0.05
    assert abs(on_candidate[second].mean() - 0.6) < 0.05
    assert not on_candidate[out["t_s"] < test.start_s].any()


def test_bad_models_are_stopped_by_a_test_and_served_without_one():
    """Every run produces a bad model: without a test each deploys and loses bad_models.loss;
    a canary stops each after its first step, so only the canary's users ever see one."""
    bad = {"share": 0.999999, "loss": 0.01}
    untested = row(sim.simulate(scenario({"every": "1d", "duration": "1h", "bad_models": bad})))
    assert untested["quality_lost_model_training"] > 0.009
    evaluation = {"method": "canary", "steps": [0.05, 0.5], "step_duration": "2h"}
    spec = scenario({"every": "1d", "duration": "1h", "bad_models": bad,
                     "evaluation": evaluation})
    tested = row(sim.simulate(spec))
    assert tested["evaluations_stopped_rate"] == 1.0
    assert tested["deploys_per_day"] == 0
    assert tested["evaluation_s_mean"] == pytest.approx(2 * HOUR)
    # 5% of users for 2 h of each day see the bad model: about 0.05 x 2/24 x 0.01 on average
    assert 0 < tested["quality_lost_model_training"] < 0.05 * 2 / 24 * 0.01 * 2


def test_a_cadence_shorter_than_the_test_deploys_once_per_test():
    """Runs every 6 h, each needing a 1-day offline test: one test at a time, the newest
    waiting candidate goes next and older waiting ones are dropped."""
    evaluation = {"method": "offline", "duration": "1d"}
    r = row(sim.simulate(scenario({"every": "6h", "duration": "1h",
                                   "evaluation": evaluation})))
    assert r["trainings_per_day"] == pytest.approx(4)
    assert r["deploys_per_day"] == pytest.approx(1, abs=0.5)
    assert r["candidates_superseded_per_day"] == pytest.approx(3, abs=0.5)  # 4 = 1 + 3


# --------------------------------------------------------------------------------------------
# How a model was trained: stateful lift and forgetting
# --------------------------------------------------------------------------------------------

def test_stateful_updates_carry_their_lift_and_forgetting_until_a_full_retrain():
    """Stateful runs daily, a full retrain every 4 days: the k-th update since a stateless run
    loses k x forgetting - lift; a stateless one loses nothing."""
    training = {"every": "1d", "duration": "1h", "mode": "stateful", "full_retrain_every": "4d",
                "stateful": {"lift": 0.002, "forgetting": 0.001}}
    model, _ = _lifecycle(training)
    k = 0
    for run in model.runs:
        k = 0 if run.mode == "stateless" else k + 1
        expected = 0.0 if run.mode == "stateless" else k * 0.001 - 0.002
        assert run.quality_loss == pytest.approx(expected)
    assert {r.mode for r in model.runs} == {"stateless", "stateful"}


# --------------------------------------------------------------------------------------------
# Triggers: volume and distribution
# --------------------------------------------------------------------------------------------

def test_a_volume_trigger_retrains_after_its_number_of_new_labels():
    """2 requests/s, every example labelled, a 1 h label window: 72k new labels take 10 h of
    data after the last run's cut-off, so a run starts every 10 h (each run's cut-off is 1 h
    before its start, and so is the data counted)."""
    trigger = {"kind": "volume", "new_labels": "72k", "check_every": "1h"}
    model, _ = _lifecycle({"policy": "trigger", "duration": "30m", "trigger": trigger,
                           "labels": {"delay": "10m", "wait": "1h"}})
    starts = np.array([r.start_s for r in model.runs])
    assert len(starts) >= 3
    np.testing.assert_allclose(np.diff(starts), 10 * HOUR)


def test_a_distribution_trigger_without_drift_fires_at_its_false_alarm_rate():
    trigger = {"kind": "distribution", "check_every": "10m", "false_alarm_rate": 0.05}
    model, _ = _lifecycle({"policy": "trigger", "trigger": trigger})
    fired = np.array([c.fired for c in model.checks])
    assert len(fired) > 200
    assert abs(fired.mean() - 0.05) < 3 * math.sqrt(0.05 * 0.95 / len(fired))


def test_a_distribution_trigger_catches_a_shift_soon_after_it():
    trigger = {"kind": "distribution", "check_every": "10m", "false_alarm_rate": 1e-9,
               "detection": 0.5}
    model, _ = _lifecycle({"policy": "trigger", "trigger": trigger},
                          drift=[{"at": "30h", "quality_drop": 0.01}])
    starts = [r.start_s for r in model.runs if r.reason == "trigger"]
    assert starts and 30 * HOUR <= starts[0] <= 32 * HOUR


# --------------------------------------------------------------------------------------------
# Both engines, request by request
# --------------------------------------------------------------------------------------------

BATCH = {"kind": "batch", "every": "6h", "start_at": "1h", "throughput": "1000/s"}
HYBRID = {"kind": "hybrid", "head_share": 0.1, "every": "6h", "throughput": "1000/s",
          **{k: v for k, v in online(replicas=2).items() if k != "kind"}}


@pytest.mark.parametrize("evaluation", [
    {"method": "canary", "steps": [0.1, 0.5], "step_duration": "2h"},
    {"method": "ab", "share": 0.6, "min_effect": 0.2},
    {"method": "bandit", "share": 0.5, "min_effect": 0.3},
])
def test_fast_and_reference_agree_with_labels_tests_and_bad_models(evaluation):
    training = {"every": "12h", "duration": "1h", "labels": {
        "delay": {"exponential": {"mean": "1h"}}, "wait": "2h", "mislabel_loss": 0.02},
        "bad_models": {"share": 0.4, "loss": 0.005}, "evaluation": evaluation}
    spec = scenario(training, {"online": online(replicas=2), "nightly": BATCH,
                               "hybrid": HYBRID}, workload__arrivals__rate="1/s")
    assert_same(spec)


def test_when_tests_stop_every_run_the_model_trained_before_keeps_serving():
    """Every candidate is bad and stopped: the model the schedule had made before the run
    began keeps serving (it ages), in both engines, instead of no model at all."""
    training = {"every": "1d", "duration": "1h", "bad_models": {"share": 0.999999,
                                                                "loss": 0.01},
                "evaluation": {"method": "offline", "duration": "1h"}}
    out = assert_same(scenario(training))["online"]
    assert not np.isnan(out["model_age_s"]).any()
    assert out["model_age_s"].min() > 2 * DAY  # no run since before the lead
    assert (out["quality"] < 0.05).all()


def test_a_triggered_run_never_shares_the_first_models_cut_off():
    """A trigger that checks daily, and another architecture whose own schedule starts the
    control plane earlier: the first check comes after the first model's own start, so no run
    has its cut-off (both engines then look up the same model's loss)."""
    other = online(replicas=2)
    other["training"] = {"every": "7d", "duration": "1h"}
    for seed in range(3):
        spec = scenario({"policy": "trigger", "trigger": {
            "kind": "distribution", "check_every": "1d", "false_alarm_rate": 0.5},
            "bad_models": {"share": 0.9, "loss": 0.02}},
            {"online": online(replicas=2), "other": other}, seed=seed, horizon="1d",
            warmup="1h", workload__arrivals__rate="1/s")
        run, _ = drive(spec)
        cutoffs = architecture(run, "online").world.model._loss_cutoffs
        assert len(cutoffs) == len(set(cutoffs))
    assert_same(spec)


def test_fast_and_reference_agree_with_stateful_lift():
    training = {"policy": "continual", "every": "2h", "duration": "20m",
                "full_retrain_every": "1d", "stateful": {"lift": 0.004, "forgetting": 0.0005}}
    assert_same(scenario(training, {"online": online(replicas=2), "nightly": BATCH},
                         workload__arrivals__rate="1/s"))


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("training, words", [
    ({"every": "1d", "evaluation": {"method": "shadow"}}, "predictions"),
    ({"every": "1d", "evaluation": {"method": "ab", "steps": [0.1]}}, "not used by method ab"),
    ({"every": "1d", "evaluation": {"method": "canary", "step_duration": "1h",
                                    "steps": [0.5, 0.1]}}, "must grow"),
    ({"every": "1d", "stateful": {"lift": 0.1}}, "only with mode stateful"),
    ({"every": "1d", "evaluation": {"method": "ab", "min_effect": 30}}, "between 0 and 1"),
    ({"every": "1d", "evaluation": {"method": "canary", "steps": [], "step_duration": "1h"}},
     "steps"),
    ({"every": "1d", "evaluation": {"method": "shadow", "predictions": 0}}, "at least 1"),
    ({"policy": "trigger", "trigger": {"kind": "volume"}}, "new_labels"),
    ({"policy": "trigger", "trigger": {"kind": "volume", "new_labels": 10, "window": "1h"}},
     "only with kind performance"),
    ({"policy": "trigger", "trigger": {"window": "1h", "drop": 0.1,
                                       "false_alarm_rate": 0.1}}, "only with kind distribution"),
])
def test_bad_training_sections_say_what_is_wrong(training, words):
    with pytest.raises(ScenarioError) as error:
        scenario(training)
    assert words in str(error.value)


# --------------------------------------------------------------------------------------------
# In words: explain and retrain-advice
# --------------------------------------------------------------------------------------------

def test_explain_says_where_the_data_ends_how_models_are_tested_and_what_bad_ones_cost():
    from sim.inputs.explain import explain
    text = " ".join(explain(sim.load_scenario("scenarios/ads-ctr.yaml")).split())
    assert "on data up to 1h before its start" in text
    assert "2.2% of positives are still unlabelled" in text
    assert "canary" in text and "tested for 3h" in text
    assert "5.0% of runs produce a bad model" in text and "the test stops them" in text
    slow = scenario({"every": "6h", "duration": "1h",
                     "evaluation": {"method": "offline", "duration": "1d"}})
    assert "only one model per test is deployed" in " ".join(explain(slow).split())


def test_retrain_advice_says_when_a_cadence_outruns_the_test():
    from sim.studies.advice import advise
    spec = scenario({"every": "1d", "duration": "1h",
                     "evaluation": {"method": "offline", "duration": "12h"}},
                    workload__arrivals__rate="0.5/s")
    advice = advise(spec, ["4h", "1d"], replications=1)
    lines = " ".join(advice.lines())
    assert "schedule every 4h (online)" in lines and "dropped unused" in lines
    assert "schedule every 1d (online)" not in lines
    rows = advice.table.set_index("candidate")
    assert rows.loc["schedule every 4h", "deploys_per_day"] == pytest.approx(2, abs=0.5)
