"""The network between clients and the serving tier, and model variants (issue 21): a round trip
adds to latency request by request without occupying a replica; a variant's factors move
service time (and so capacity) and quality as stated; both engines agree."""

from __future__ import annotations

import numpy as np
import pytest

import sim
from sim.scenario import VARIANTS, ScenarioError
from sim.studies.theory import erlang_c
from tests.conftest import ci_half_width, make_scenario, online, replicate
from tests.test_pipelines import assert_same, per_request

BATCH = {"kind": "batch", "every": "6h", "throughput": "1000/s",
         "lookup": {"exponential": {"mean": "2ms"}}}


def scenario(architectures=None, **changes) -> sim.Scenario:
    return make_scenario(architectures or {
        "online": online(replicas=2, timeout="80ms"), "nightly": BATCH}, **changes)


def test_a_constant_round_trip_adds_to_every_requests_latency_and_nothing_else():
    plain, plain_out = per_request(scenario(), "fast")
    slow, slow_out = per_request(scenario(network={"rtt": "30ms"}), "fast")
    for name in ("online", "nightly"):
        a, b = plain_out[name], slow_out[name]
        np.testing.assert_allclose(b["latency_s"], a["latency_s"] + 0.030, atol=1e-12)
        for field in ("queue_wait_s", "busy_s", "quality", "fallback", "timed_out"):
            np.testing.assert_array_equal(a[field], b[field])
    rows = slow.summary.set_index("architecture")
    assert rows.loc["online", "network_ms_mean"] == pytest.approx(30)
    assert plain.summary.set_index("architecture").loc["online", "network_ms_mean"] == 0
    # a timed-out request still travels back: its latency is the timeout plus the round trip
    timed_out = slow_out["online"]["timed_out"]
    if timed_out.any():
        np.testing.assert_allclose(slow_out["online"]["latency_s"][timed_out], 0.110)


def test_the_round_trip_counts_against_the_slo_and_the_latency_penalty():
    base = {"slo__latency_p99": "50ms", "business__value_per_outcome": 1.0,
            "business__latency_penalty__per_100ms": 0.1}
    near = scenario(**base, network={"rtt": "45ms"})
    rows = sim.simulate(near).summary.set_index("architecture")
    far = sim.simulate(scenario(**base)).summary.set_index("architecture")
    assert rows.loc["nightly", "slo_violation_rate"] > 0.05 > far.loc[
        "nightly", "slo_violation_rate"]
    assert rows.loc["online", "value_usd_per_day"] < far.loc["online", "value_usd_per_day"]


def test_users_stay_in_their_region_in_proportion_to_its_share():
    regions = {"regions": [{"name": "near", "share": 0.7, "rtt": "10ms"},
                           {"name": "far", "share": 0.3, "rtt": "150ms"}]}
    _, out = per_request(scenario({"nightly": BATCH}, network=regions,
                                  workload__entities=100_000), "fast")
    extra = out["nightly"]["latency_s"]
    far = extra > 0.100
    assert abs(far.mean() - 0.3) < 0.03
    spec = scenario(network=regions)
    assert spec.network.parts[1][0] == 0.3


def test_fast_and_reference_agree_with_regions_and_variants():
    regions = {"regions": [{"name": "a", "share": 0.5, "rtt": {"exponential": {"mean": "20ms"}}},
                           {"name": "b", "share": 0.5, "rtt": "60ms"}]}
    batched = online(replicas=2, timeout="200ms")
    batched["serving"] = {"replicas": 2, "timeout": "200ms", "batching": {
        "max_batch": 4, "max_wait": "5ms", "fixed": "2ms", "per_item": "3ms"}}
    batched["variant"] = "int8"
    one_at_a_time = {**online(replicas=1, timeout="100ms"), "variant": "distilled"}
    hybrid = {"kind": "hybrid", "head_share": 0.2, "every": "6h", "throughput": "1000/s",
              "variant": {"name": "pruned", "latency": 0.8, "throughput": 1.2,
                          "quality_kept": 0.99},
              **{k: v for k, v in online(replicas=2).items() if k != "kind"}}
    assert_same(scenario({"batched": batched, "single": one_at_a_time, "nightly": BATCH,
                          "hybrid": hybrid}, network=regions,
                         workload__arrivals__rate="40/s"))


def test_a_variants_latency_factor_moves_capacity_as_erlang_c_says():
    """Two replicas, exponential service 40 ms at 40 requests/s (rho 0.8) with int8's 1/7:
    the mean wait is M/M/2's with a 40/7 ms service, which is not the full model's."""
    spec = make_scenario({"online": {**online(replicas=2, service={"exponential": {
        "mean": "40ms"}}), "variant": "int8"}}, workload__arrivals__rate="40/s",
        horizon="2h", warmup="10m")
    waits = replicate(spec, "queue_wait_ms_mean", "online", 8) / 1e3
    expected = erlang_c(40.0, 7 / 0.040, 2)[1]
    assert abs(waits.mean() - expected) <= ci_half_width(waits)
    full = erlang_c(40.0, 1 / 0.040, 2)[1]
    assert abs(waits.mean() - full) > 10 * ci_half_width(waits)


def test_a_variant_loses_its_share_of_quality_and_the_loss_is_reported():
    spec = scenario({"online": {**online(replicas=2), "variant": "distilled"}})
    row = sim.simulate(spec).summary.set_index("architecture").loc["online"]
    assert row["quality_lost_model_variant"] == pytest.approx(0.03 * 0.05)
    plain = sim.simulate(scenario({"online": online(replicas=2)})).summary.set_index(
        "architecture").loc["online"]
    assert row["quality_mean"] == pytest.approx(plain["quality_mean"] - 0.03 * 0.05, rel=1e-6)


def test_a_variant_scales_batching_and_scoring_jobs():
    from sim.scenario import with_variant
    batched = online(replicas=1)
    batched["serving"] = {"replicas": 1, "batching": {"max_batch": 8, "fixed": "8ms",
                                                      "per_item": "4ms"}}
    spec = scenario({"b": {**batched, "variant": "int8"},
                     "j": {**BATCH, "variant": "int8"}})
    b = with_variant(spec.architectures["b"]).serving.batching
    assert b.fixed.mean == pytest.approx(0.008 / 7) and b.per_item.mean == pytest.approx(0.0005)
    assert with_variant(spec.architectures["j"]).throughput == pytest.approx(8000)
    assert spec.architectures["b"].variant == VARIANTS["int8"]


@pytest.mark.parametrize("network, words", [
    ({"rtt": "10ms", "regions": [{"name": "a", "share": 1, "rtt": "1ms"}]}, "not both"),
    ({"regions": [{"name": "a", "share": 0.5, "rtt": "1ms"}]}, "sum to 1"),
])
def test_bad_network_sections_say_what_is_wrong(network, words):
    with pytest.raises(ScenarioError) as error:
        scenario(network=network)
    assert words in str(error.value)


def test_an_unknown_variant_names_the_presets():
    with pytest.raises(ScenarioError) as error:
        scenario({"online": {**online(), "variant": "int4"}})
    assert "distilled" in str(error.value) and "int8" in str(error.value)


def test_optimize_chooses_the_variant_that_meets_the_target_for_least():
    """One replica of a 20 ms model at 40 requests/s is overloaded; int8 (1/7 of the time)
    meets a 100 ms p99 with one replica, so it is the cheapest configuration that does."""
    from sim.studies.search import optimize
    spec = make_scenario({"online": online(replicas=1, service={"exponential": {
        "mean": "20ms"}})}, workload__arrivals__rate="40/s", horizon="30m", warmup="5m",
        costs__replica_hour=1.0)
    result = optimize(spec, ["architectures.online.serving.replicas=1:4"], "min:cost_per_day",
                      ["latency_p99<=100ms"], replications=1,
                      choose=["architectures.online.variant=none,int8"], window="horizon")
    assert result.feasible
    assert result.chosen == {"architectures.online.variant": "int8"}
    assert result.values["architectures.online.serving.replicas"] == 1
    text = "\n".join(result.lines())
    assert "architectures.online.variant = int8  (chosen)" in text
    assert "with architectures.online.variant = none" in text


def test_choose_applies_its_values_to_a_template_too():
    from sim.studies.sweep import Template
    template = Template.of(scenario({"online": {**online(replicas=2), "variant": "int8"}}))
    changed = Template.of(template, {"architectures.online.variant": None})
    assert changed.scenario.architectures["online"].variant is None
    assert template.scenario.architectures["online"].variant is not None


def test_a_bad_choose_option_says_what_it_expects():
    from sim.studies.search import SearchError, optimize
    with pytest.raises(SearchError) as error:
        optimize(scenario(), ["architectures.online.serving.replicas=1:2"],
                 choose=["architectures.online.variant"])
    assert "KEY=A,B" in str(error.value)


def test_a_tests_users_are_spread_over_regions_and_sync_phases_like_everyone():
    """The user hash has one multiplier per use, so the 5% of users in a test's arm are not
    all in one region, nor all syncing at the same point of the cycle."""
    from sim.engine.training import user_bucket
    slots = np.arange(200_000)
    arm = user_bucket(slots, "test") < 0.05
    region = user_bucket(slots, "region") < 0.6
    phase = user_bucket(slots, "sync")
    assert abs(region[arm].mean() - 0.6) < 0.02
    assert abs(phase[arm].mean() - 0.5) < 0.02
