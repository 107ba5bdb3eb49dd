"""Feature classes and cold starts: each class of features ages on its own schedule, every
architecture pays for entities that have no features yet, and the losses add up as DESIGN.md
says (checked against closed forms where they exist)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml

import sim
from sim.scenario import ScenarioError
from tests.conftest import SCENARIOS, ci_half_width, make_scenario, online, replicate

QUICKSTART = SCENARIOS / "quickstart.yaml"
SHORT = {"horizon": "6h", "warmup": "1d"}


def _summary(path, **changes):
    raw = yaml.safe_load(path.read_text())
    del raw["architectures"]["hybrid"]  # batch, online and streaming are the cases here
    scenario = sim.scenario_from_dict(raw, base_dir=path.parent, overrides={**SHORT, **changes})
    return sim.simulate(scenario).summary.set_index("architecture")


def test_streaming_quality_depends_on_its_batch_schedule():
    # The review's case: a streaming architecture's batch features age with their own schedule,
    # so materialising them weekly instead of nightly must cost quality (it did not before).
    daily = _summary(QUICKSTART)
    weekly = _summary(QUICKSTART, **{"architectures.streaming.features.batch.every": "7d"})
    assert weekly.loc["streaming", "batch_feature_age_s_mean"] > \
        1.5 * daily.loc["streaming", "batch_feature_age_s_mean"]
    assert weekly.loc["streaming", "quality_mean"] < daily.loc["streaming", "quality_mean"] - 1e-3
    # the stream features themselves are as fresh either way, and batch is untouched
    assert weekly.loc["streaming", "stream_feature_age_s_mean"] == pytest.approx(
        daily.loc["streaming", "stream_feature_age_s_mean"], rel=1e-9)
    assert weekly.loc["batch", "quality_mean"] == daily.loc["batch", "quality_mean"]


def test_new_users_cost_online_quality_too():
    # Online used to serve a user created after the last materialisation at full quality.
    none = _summary(QUICKSTART, **{"workload.new_entities_per_day": 0})
    many = _summary(QUICKSTART, **{"workload.new_entities_per_day": 25000})
    for name in ("batch", "online", "streaming"):
        assert none.loc[name, "cold_start_rate"] == 0
        assert many.loc[name, "cold_start_rate"] > 0.001
        assert many.loc[name, "quality_mean"] < none.loc[name, "quality_mean"]
    # online predicts for them (no fallback), batch has nothing to read
    assert many.loc["online", "coverage"] > 0.999
    assert many.loc["batch", "coverage"] == pytest.approx(
        1 - many.loc["batch", "cold_start_rate"], abs=1e-3)


def test_online_cold_starts_match_new_entities_since_the_last_refresh():
    # Uniform popularity over N(t) = N0 + r t entities, features materialised at each midnight
    # (duration 0): a request at t finds its entity without features with probability
    # r (t mod 1 day) / N(t). Replications give the CI the check is judged with.
    n0, per_day = 2000, 1000
    scenario = make_scenario({"online": online(4, {"constant": "1ms"})}, horizon="2d",
                             warmup="1d", **{"workload.entities": n0,
                                             "workload.new_entities_per_day": per_day,
                                             "workload.arrivals.rate": "1/s"})
    t = np.linspace(scenario.warmup, scenario.end_s, 200001)
    rate = per_day / 86400
    expected = float(np.mean(rate * (t % 86400) / (n0 + rate * t)))
    values = replicate(scenario, "cold_start_rate", "online", 8)
    assert abs(values.mean() - expected) <= ci_half_width(values), (values.mean(), expected)


def test_cold_start_quality_is_the_level_the_scenario_sets():
    # Every request is a cold start when entities are created faster than features refresh:
    # one entity at the start, thousands a day, features once a week. Their quality is then
    # the cold-start level exactly (no staleness curve, no model loss).
    arch = online(2, {"constant": "1ms"}, features_every="7d")
    for level, expected in ((None, 0.02), (0.031, 0.031)):
        features = {"batch": {"cold_start": level}} if level is not None else None
        scenario = make_scenario({"online": arch}, horizon="1h", warmup="0s",
                                 **{"workload.entities": 1,
                                    "workload.new_entities_per_day": 1e7,
                                    "quality.features": features})
        row = sim.simulate(scenario).summary.iloc[0]
        assert row["cold_start_rate"] > 0.99
        assert row["quality_mean"] == pytest.approx(expected, abs=0.05 * (0.05 - expected) + 1e-6)


def test_feature_losses_add_up_to_the_closed_form():
    # Online, features every hour visible at their cut-off, no new entities: batch-feature age
    # is U(0, 1h). Quality = fresh - E[(fresh - floor_b)(1 - 2^(-U/h))] - (fresh - without
    # stream) - (fresh - without request), with E[2^(-U/h)] = (h / (T ln 2))(1 - 2^(-T/h)).
    fresh, floor_b, half_life, period = 0.05, 0.03, 1800.0, 3600.0
    without_stream, without_request = 0.046, 0.049
    scenario = make_scenario(
        {"online": online(4, {"constant": "1ms"}, features_every="1h")},
        horizon="6h", warmup="1h",
        **{"quality.features": {
            "batch": {"staleness": {"exponential": {"half_life": "30m", "floor": floor_b}}},
            "stream": {"without": without_stream},
            "request": {"without": without_request}}})
    decay = half_life / (period * math.log(2)) * (1 - 2 ** (-period / half_life))
    expected = fresh - (fresh - floor_b) * (1 - decay) - (fresh - without_stream) - \
        (fresh - without_request)
    values = replicate(scenario, "quality_mean", "online", 6)
    assert abs(values.mean() - expected) <= ci_half_width(values) + 1e-12
    row = sim.simulate(scenario).summary.iloc[0]
    assert row["quality_lost_missing_features"] == pytest.approx(
        (fresh - without_stream) + (fresh - without_request), rel=1e-9)
    assert row["quality_lost_cold_start"] == 0


def test_request_time_features_add_latency_on_the_replica_and_keep_quality():
    base = online(1, {"constant": "10ms"})
    with_request = online(1, {"constant": "10ms"})
    with_request["features"]["request"] = {"compute": "5ms"}
    scenario = make_scenario({"without": base, "with": with_request}, horizon="1h",
                             **{"workload.arrivals.rate": "20/s",
                                "quality.features": {"request": {"without": 0.045}}})
    rows = sim.simulate(scenario).summary.set_index("architecture")
    # 15 ms of replica time instead of 10 ms: busier, and slower even without a queue
    assert rows.loc["with", "service_ms_mean"] == pytest.approx(15.0, rel=1e-6)
    assert rows.loc["with", "utilization"] == pytest.approx(1.5 * rows.loc["without",
                                                                         "utilization"], rel=0.02)
    assert rows.loc["with", "latency_ms_p50"] >= rows.loc["without", "latency_ms_p50"] + 4.9
    # without them the prediction is worth 0.045: 0.005 less
    assert rows.loc["with", "quality_mean"] - rows.loc["without", "quality_mean"] == \
        pytest.approx(0.005, rel=1e-6)


def test_online_without_stream_features_pays_for_them():
    stream = {"staleness": {"exponential": {"half_life": "10m", "floor": 0.04}}}
    scenario = make_scenario({"online": online(2, {"constant": "1ms"})}, horizon="1h",
                             **{"quality.features": {"stream": stream}})
    row = sim.simulate(scenario).summary.iloc[0]
    assert row["quality_lost_missing_features"] == pytest.approx(0.01, rel=1e-9)
    assert np.isnan(row["stream_feature_age_s_mean"])


@pytest.mark.parametrize("quality, message", [
    ({"feature_staleness": {"exponential": {"half_life": "1h", "floor": 0.03}},
      "features": {"batch": {"staleness": {"exponential": {"half_life": "1h", "floor": 0.03}}}}},
     "give the batch features' curve once"),
    ({"features": {"stream": {"without": 0.08}}}, "features.stream.without (0.08) must not exceed"),
    ({"features": {"batch": {"cold_start": -1}}}, "features.batch.cold_start"),
    ({"features": {"request": {"staleness": {"exponential": {"half_life": "1h", "floor": 0.03}}}}},
     "features.request.staleness"),
])
def test_bad_feature_classes_name_the_key(quality, message):
    with pytest.raises(ScenarioError) as info:
        make_scenario({"online": online()}, **{f"quality.{k}": v for k, v in quality.items()})
    assert message in str(info.value)
