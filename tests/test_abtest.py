"""The A/B test planner (sim/abtest.py, `predsim abtest`) against textbook sample sizes."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

import sim
from sim import abtest
from sim.cli import main
from tests.conftest import make_scenario

# Per-arm sample sizes of the two-sided two-proportion z-test without continuity correction,
# worked by hand from n = (z_{1-a/2} sqrt(2 pbar qbar) + z_{1-b} sqrt(p1 q1 + p2 q2))^2 / d^2
# with z_0.975 = 1.959964 and z_0.8 = 0.841621 (z_0.9 = 1.281552, z_0.995 = 2.575829):
TEXTBOOK = [
    # p1,   p2,   alpha, power, n per arm (the formula's value before rounding up)
    (0.10, 0.12, 0.05, 0.80, 3841),    # 3840.85: the usual "about 3,841 per arm"
    (0.05, 0.10, 0.05, 0.80, 435),     # 434.43
    (0.50, 0.60, 0.05, 0.80, 388),     # 387.34
    (0.10, 0.12, 0.05, 0.90, 5142),    # 5141.31
    (0.10, 0.12, 0.01, 0.80, 5716),    # 5715.42
]


@pytest.mark.parametrize("p1, p2, alpha, power, expected", TEXTBOOK)
def test_sample_size_matches_hand_computed_values(p1, p2, alpha, power, expected):
    assert abtest.sample_size_per_arm(p1, p2, alpha, power) == expected


def test_sample_size_is_symmetric_and_one_sided_is_smaller():
    assert abtest.sample_size_per_arm(0.12, 0.10) == abtest.sample_size_per_arm(0.10, 0.12)
    # One-sided at 0.05 uses z_0.95 = 1.644854 instead of z_0.975.
    one = abtest.sample_size_per_arm(0.10, 0.12, two_sided=False)
    assert one == 3026 and one < 3841


@pytest.mark.parametrize("p1, p2, alpha, power, expected", TEXTBOOK)
def test_sample_size_matches_statsmodels(p1, p2, alpha, power, expected):
    """statsmodels implements the same formula independently; Cohen's h (NormalIndPower, an
    arcsine approximation) lands within 3% of it."""
    proportion = pytest.importorskip("statsmodels.stats.proportion")
    power_module = pytest.importorskip("statsmodels.stats.power")
    same = proportion.samplesize_proportions_2indep_onetail(
        p2 - p1, p1, power, ratio=1, alpha=alpha, alternative="two-sided")
    assert abtest.required_n(p1, p2, alpha, power) == pytest.approx(same, rel=1e-9)
    assert math.ceil(same) == expected
    cohen = power_module.NormalIndPower().solve_power(
        proportion.proportion_effectsize(p2, p1), alpha=alpha, power=power, ratio=1)
    assert expected == pytest.approx(cohen, rel=0.03)


def test_plan_days_of_traffic():
    plan = abtest.plan(0.10, 0.02, daily_traffic=1000)
    assert plan.treatment_rate == pytest.approx(0.12)
    assert plan.n_per_arm == 3841 and plan.total == 7682
    assert plan.days == pytest.approx(7.682) and plan.whole_days == 8
    half = abtest.plan(0.10, 0.02, daily_traffic=1000, traffic_share=0.5)
    assert half.days == pytest.approx(2 * 7.682)
    relative = abtest.plan(0.10, 0.2, relative=True)
    assert relative.treatment_rate == pytest.approx(0.12) and relative.n_per_arm == 3841
    assert relative.days is None


def test_plan_states_the_formula_and_the_numbers():
    lines = abtest.plan(0.05, 0.03, relative=True, daily_traffic=1e6).lines()
    text = "\n".join(lines)
    assert "336,102 requests per arm" in text
    assert "16.1h of traffic" in text and "at least a full week" in text   # 0.672 days
    assert abtest.FORMULA in text


@pytest.mark.parametrize("kwargs, field", [
    ({"baseline_rate": 1.5, "uplift": 0.1}, "baseline_rate"),
    ({"baseline_rate": 0.1, "uplift": 0.0}, "uplift"),
    ({"baseline_rate": 0.9, "uplift": 0.5, "relative": True}, "uplift"),
    ({"baseline_rate": 0.1, "uplift": 0.01, "daily_traffic": 0}, "daily_traffic"),
    ({"baseline_rate": 0.1, "uplift": 0.01, "power": 1.0}, "power"),
])
def test_plan_rejects_impossible_inputs(kwargs, field):
    with pytest.raises(abtest.PlanError) as info:
        abtest.plan(**kwargs)
    assert info.value.field == field


def test_plan_from_a_simulation():
    online = {"kind": "online", "features": {"batch": {"every": "1d"}},
              "serving": {"replicas": 2, "service_time": "5ms"}}
    scenario = make_scenario(
        {"nightly": {"kind": "batch", "every": "1d", "start_at": "12h", "throughput": "1000/s"},
         "online": {**online, "features": {"batch": {"every": "1h"}}}},
        quality={"metric": "ctr", "fresh": 0.05, "fallback": 0.02,
                 "feature_staleness": {"exponential": {"half_life": "2h", "floor": 0.03}}})
    results = sim.run(scenario, 2)
    plan = abtest.plan_from_results(results, "online")
    summary = results.summary.set_index("architecture")
    assert plan.baseline_rate == summary.loc["nightly", "quality_mean"]
    assert plan.treatment_rate == summary.loc["online", "quality_mean"]
    assert plan.daily_traffic == pytest.approx(10 * 86400)   # BASE: 10/s
    assert plan.n_per_arm == abtest.sample_size_per_arm(plan.baseline_rate, plan.treatment_rate)
    assert plan.metric == "ctr" and "online vs nightly" in plan.source
    with pytest.raises(abtest.PlanError):
        abtest.plan_from_results(results, "nightly")   # the baseline against itself


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------

def invoke(*args):
    return CliRunner().invoke(main, ["abtest", *map(str, args)])


def test_cli_rates_mode():
    result = invoke("--baseline-rate", "0.10", "--uplift", "0.02", "--daily-traffic", "1k")
    assert result.exit_code == 0, result.output
    assert "3,841 requests per arm, 7,682 in all" in result.output
    assert "run it for 8 days" in result.output
    data = json.loads(invoke("--baseline-rate", "0.05", "--uplift", "0.03", "--relative",
                             "--daily-traffic", "1e6", "--json").output)
    assert data["n_per_arm"] == 336102 and data["days"] == pytest.approx(0.672204)
    assert data["formula"] == abtest.FORMULA


def test_cli_scenario_mode():
    result = invoke("scenarios/quickstart.yaml", "--set", "horizon=1h", "--set", "warmup=15m",
                    "--arch", "streaming", "--replications", "2")
    assert result.exit_code == 0, result.output
    assert "from the simulation of quickstart (streaming vs batch)" in result.output
    assert "requests per arm" in result.output


@pytest.mark.parametrize("args, message", [
    ([], "give --baseline-rate and --uplift"),
    (["--baseline-rate", "1.5", "--uplift", "0.1"], "--baseline-rate: baseline rate must be"),
    (["--baseline-rate", "0.1", "--uplift", "0"], "--uplift: uplift must be a number other"),
    (["--baseline-rate", "0.1", "--uplift", "0.1", "--daily-traffic", "lots"],
     "--daily-traffic: expected a number of requests"),
    (["--baseline-rate", "0.1", "--uplift", "0.1", "--arch", "x"], "--arch: only with a SCENARIO"),
    (["scenarios/quickstart.yaml", "--uplift", "0.1"], "--uplift: not with a SCENARIO"),
    (["scenarios/missing.yaml"], "scenarios/missing.yaml: file not found"),
    (["scenarios/quickstart.yaml", "--arch", "nope"], "--arch 'nope' is not an architecture"),
    (["--baseline-rate", "0.1", "--uplift", "0.1", "--power", "1.5"], "'--power'"),
])
def test_cli_bad_input_exits_2(args, message):
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output
