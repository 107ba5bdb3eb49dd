"""Drift: sudden, gradual and recurring shifts, recovery data, and shifts visible in features.

Exact values on tiny cases of ``drift_loss``, the scenario's validation of the new keys, an
end-to-end run where stream features recover before nightly batch features and both before the
model, and the fast path against the reference engine with every kind of drift.
"""

from __future__ import annotations

import numpy as np
import pytest

import sim
from sim.engine import run as engine
from sim.engine.freshness import drift_loss
from sim.scenario import Drift, ScenarioError
from tests.conftest import make_scenario, online
from tests.test_reference import assert_same

HOUR = 3600.0
DROP = 0.01


def drift(**fields) -> Drift:
    return Drift.model_validate({"quality_drop": DROP, **fields})


def loss(d: Drift, t, model_cutoff, feature_cutoff=None) -> list[float]:
    feature = None if feature_cutoff is None else np.array(feature_cutoff, dtype=float)
    return drift_loss([d], np.array(t, dtype=float), np.array(model_cutoff, dtype=float),
                      feature).tolist()


def test_sudden_hurts_models_with_a_cutoff_before_it_once_it_has_happened():
    d = drift(at=100)
    #          before      at it     model older   model newer
    assert loss(d, [50, 100, 150, 150], [0, 0, 99, 100]) == [0, DROP, DROP, 0]


def test_the_defaults_give_the_numbers_of_the_old_rule_bit_for_bit():
    rng = np.random.default_rng(3)
    t = np.sort(rng.uniform(0, 1000, 500))
    cutoff = t - rng.uniform(0, 400, 500)
    drifts = [drift(at=300), Drift(at=600, quality_drop=0.003)]
    old = sum(np.where((t >= d.at) & (cutoff < d.at), d.quality_drop, 0.0) for d in drifts)
    new = drift_loss(drifts, t, cutoff, t - rng.uniform(0, 10, 500))
    assert np.array_equal(new, old)


def test_gradual_loss_is_the_part_of_the_ramp_since_the_models_cutoff():
    d = drift(at=100, kind="gradual", ramp=100)
    # the ramp's midpoint, a model from before it: half the drop; the end: all of it
    assert loss(d, [150, 200, 500], [0, 0, 0]) == pytest.approx([DROP / 2, DROP, DROP])
    # a model trained a quarter of the way up has only the rest to lose
    assert loss(d, [150, 500], [125, 125]) == pytest.approx([DROP / 4, DROP * 3 / 4])
    assert loss(d, [90, 500], [0, 200]) == [0, 0]


def test_recurring_loss_peaks_half_a_period_from_the_training_data():
    d = drift(at=0, kind="recurring", period="1d")
    cutoff = 2 * 86400.0
    t = cutoff + np.array([0, 6, 12, 18, 24]) * HOUR
    assert loss(d, t, [cutoff] * 5) == pytest.approx([0, DROP / 2, DROP, DROP / 2, 0], abs=1e-15)
    # before the cycle starts the world stands at the cycle's start
    late = drift(at="1d", kind="recurring", period="1d")
    assert loss(late, [86400 + 12 * HOUR, 12 * HOUR], [0, 0]) == pytest.approx([DROP, 0])


def test_recovery_data_a_model_needs_that_much_data_after_the_shift():
    d = drift(at=100, recovery_data=50)
    assert loss(d, [300, 300, 300], [120, 149, 150]) == [DROP, DROP, 0]


def test_visible_in_features_stream_features_recover_their_share_batch_features_do_not():
    d = drift(at=100, visible_in_features=0.75)
    t, stale_model = [200] * 4, [0] * 4
    #                  stream (seconds old)  nightly batch  unknown  exactly at the shift
    features = [199.9, 90.0, np.nan, 100.0]
    assert loss(d, t, stale_model, features) == pytest.approx([DROP / 4, DROP, DROP, DROP / 4])
    assert loss(d, [200], [150], [90.0]) == [0]   # a recovered model needs no help
    gradual = drift(at=100, kind="gradual", ramp=100, visible_in_features=0.5)
    # features from the ramp's midpoint have seen half of it: half of the visible share back
    assert loss(gradual, [200], [0], [150]) == pytest.approx([DROP * (0.5 + 0.5 * 0.5)])


@pytest.mark.parametrize("fields, expected", [
    ({"at": "1d", "kind": "gradual"}, "kind gradual needs ramp (e.g. ramp: 6h)"),
    ({"at": "1d", "kind": "recurring"}, "kind recurring needs period (e.g. period: 1d)"),
    ({"at": "1d", "ramp": "6h"}, "ramp applies only to kind gradual (this drift is sudden)"),
    ({"at": "1d", "kind": "gradual", "ramp": "6h", "period": "1d"},
     "period applies only to kind recurring"),
    ({"at": "1d", "visible_in_features": 1.5}, "visible_in_features: must be <= 1"),
    ({"at": "1d", "recovery_data": "-1h"}, "recovery_data: must be >= 0"),
    ({"at": "1d", "kind": "seasonal"}, "drift.0.kind: expected 'sudden', 'gradual' or "
                                       "'recurring'"),
])
def test_bad_drift_keys_are_explained(fields, expected):
    with pytest.raises(ScenarioError) as err:
        make_scenario({"online": online()}, drift=[{"quality_drop": DROP, **fields}])
    assert expected in str(err.value)


def test_stream_features_recover_before_batch_features_and_both_before_the_model():
    streaming = online(features_every="1d")
    streaming["kind"] = "streaming"
    streaming["features"]["stream"] = {"lag": {"exponential": {"mean": "10s"}}, "window": "1m"}
    scenario = make_scenario(
        {"online": online(features_every="1d"), "streaming": streaming},
        horizon="3d", warmup="0s", timeseries_bucket="1h",
        training={"every": "1d", "duration": "1h"},
        drift=[{"at": "12h", "quality_drop": DROP, "recovery_data": "1d",
                "visible_in_features": 0.8}],
        **{"workload.arrivals.rate": "1/s"})
    ts = sim.run(scenario).timeseries.pivot(index="bucket_start_s", columns="architecture",
                                            values="quality_mean")
    fresh = 0.05
    before, stream_only, both, recovered = (ts.loc[h * HOUR] for h in (11, 14, 30, 50))
    assert before.tolist() == pytest.approx([fresh, fresh])
    # 12h-24h: stream features have seen the shift, the nightly batch features have not
    assert stream_only["streaming"] == pytest.approx(fresh - 0.2 * DROP)
    assert stream_only["online"] == pytest.approx(fresh - DROP)
    # 24h-49h: the batch job at 24h has seen it too; the model trained at 24h has only 12h of
    # post-shift data (recovery_data 1d), so the invisible share stays lost
    assert both.tolist() == pytest.approx([fresh - 0.2 * DROP] * 2)
    # the model trained at 48h (deployed at 49h) has a day of post-shift data
    assert recovered.tolist() == pytest.approx([fresh, fresh])


def test_fast_path_matches_the_reference_engine_with_every_kind_of_drift(monkeypatch):
    monkeypatch.setattr(engine, "REQUESTS_PER_CHUNK", 1024)
    streaming = online(2, features_every="5m", duration="30s")
    streaming["kind"] = "streaming"
    streaming["features"]["stream"] = {"lag": {"exponential": {"mean": "3s"}}, "window": "20s"}
    hybrid = online(2, features_every="4m")
    hybrid.update(kind="hybrid", head_share=0.3, every="6m", throughput="50/s")
    scenario = make_scenario(
        {"online": online(2, features_every="5m", duration="30s"), "streaming": streaming,
         "hybrid": hybrid, "batch": {"kind": "batch", "every": "5m", "throughput": "100/s"}},
        horizon="12m", warmup="2m", seed=11,
        training={"every": "4m", "duration": "1m", "deploy_delay": "10s"},
        drift=[{"at": "5m", "quality_drop": 0.004, "recovery_data": "3m",
                "visible_in_features": 0.5},
               {"at": "6m", "quality_drop": 0.003, "kind": "gradual", "ramp": "3m",
                "visible_in_features": 1},
               {"at": "1m", "quality_drop": 0.002, "kind": "recurring", "period": "7m",
                "visible_in_features": 0.3, "recovery_data": "30s"}],
        **{"workload.arrivals.rate": "20/s",
           "quality.feature_staleness": {"exponential": {"half_life": "5m", "floor": 0.03}}})
    assert_same(scenario)
