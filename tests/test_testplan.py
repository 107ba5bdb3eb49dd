"""Ways to test a new model (sim/studies/testplan.py, `predsim abtest --methods`): the
Thompson-sampling bandit against bandit theory, each method's days, cost and value lost against
its definition, a case worked by hand, and the command."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from sim.cli.main import main
from sim.studies import abtest
from sim.studies import testplan as tp

# --------------------------------------------------------------------------------------------
# The bandit
# --------------------------------------------------------------------------------------------


def lai_robbins(p_worse: float, p_better: float, n: float) -> float:
    """The asymptotic lower bound on the worse arm's pulls in n rounds (Lai & Robbins 1985):
    log(n) / KL(p_worse, p_better). Thompson sampling attains it asymptotically (Agrawal &
    Goyal 2012; Kaufmann, Korda & Munos 2012)."""
    return math.log(n) / tp.kl_bernoulli(p_worse, p_better)


@pytest.mark.parametrize("p_worse, p_better, n", [(0.1, 0.2, 1e5), (0.05, 0.06, 1e6),
                                                   (0.05, 0.06, 1e7)])
@pytest.mark.parametrize("challenger_better", [True, False])
def test_worse_arm_pulls_are_near_the_lai_robbins_bound(p_worse, p_better, n,
                                                        challenger_better):
    """At a fixed horizon (confidence 1: no early stop) the worse arm's mean pulls lie within a
    factor of the bound: at least a quarter of it, at most 1.5 times. The bound is asymptotic,
    and Thompson sampling's finite-horizon pulls stay below it and approach it (0.4 to 0.7 of
    it here; Chapelle & Li 2011 saw the same). Sending traffic evenly would pull the worse arm
    n / 2 times (150 to 3,000 times the bound); a posterior whose tail is too light locks onto
    the worse arm in some runs (3 times the bound at 10^7)."""
    arms = (p_worse, p_better) if challenger_better else (p_better, p_worse)
    r = tp.thompson(*arms, confidence=1.0, max_samples=n)
    assert r.decided == 0 and r.samples == n
    bound = lai_robbins(p_worse, p_better, n)
    assert 0.25 * bound <= r.worse_pulls <= 1.5 * bound
    # Regret is |Δ| x the worse arm's pulls.
    assert r.regret == pytest.approx((p_better - p_worse) * r.worse_pulls, rel=1e-9)


def test_worse_arm_pulls_grow_like_log_n():
    """Ten times the horizon adds about log(10) / KL pulls of the worse arm (the bound's slope),
    not ten times as many."""
    short = tp.thompson(0.06, 0.05, confidence=1.0, max_samples=1e6)
    long = tp.thompson(0.06, 0.05, confidence=1.0, max_samples=1e7)
    slope = math.log(10) / tp.kl_bernoulli(0.05, 0.06)
    assert 0.5 * slope <= long.worse_pulls - short.worse_pulls <= 1.5 * slope


def test_the_bandit_picks_the_better_arm_and_moves_traffic_to_it():
    better = tp.thompson(0.1, 0.2)
    worse = tp.thompson(0.2, 0.1)
    assert better.decided == 1 and worse.decided == 1
    assert better.picks_challenger >= 0.95 and worse.picks_challenger <= 0.05
    assert better.challenger_share > 0.6 and worse.challenger_share < 0.4
    assert better.regret == pytest.approx(0.1 * better.samples * (1 - better.challenger_share))
    assert worse.regret == pytest.approx(0.1 * worse.samples * worse.challenger_share)


@pytest.mark.parametrize("p1, p2", [(0.1, 0.2), (0.05, 0.06)])
def test_the_bandit_is_symmetric_in_the_arms(p1, p2):
    """Swapping champion and challenger mirrors the outcome (to within the noise of 1,000 runs:
    a few per cent between seeds)."""
    a = tp.thompson(p1, p2, runs=1000)
    b = tp.thompson(p2, p1, runs=1000)
    assert a.samples == pytest.approx(b.samples, rel=0.1)
    assert a.regret == pytest.approx(b.regret, rel=0.1)
    assert a.challenger_share == pytest.approx(1 - b.challenger_share, abs=0.02)
    assert a.picks_better == pytest.approx(b.picks_better, abs=0.05)


def test_the_bandit_is_deterministic_for_a_seed():
    tp._thompson_runs.cache_clear()
    first = tp.thompson(0.05, 0.06, seed=3)
    tp._thompson_runs.cache_clear()
    assert tp.thompson(0.05, 0.06, seed=3) == first
    assert tp.thompson(0.05, 0.06, seed=4) != first


def test_equal_arms_lose_nothing_and_say_how_often_they_decide_anyway():
    r = tp.thompson(0.05, 0.05)
    assert r.regret == 0 and r.worse_pulls == 0 and r.picks_better is None
    # Half the traffic to each on average; the share is weighted by samples, so the few runs
    # that never decide (10^8 samples each, often leaning one way) dominate it.
    assert r.challenger_share == pytest.approx(0.5, abs=0.15)
    # A posterior checked after every batch crosses 95% sooner or later for most runs.
    assert 0 < r.decided < 1 and r.picks_challenger <= r.decided
    note = tp.compare_methods(0.05, 0.05, 1e6).row("bandit").note
    assert f"decided in {r.decided:.0%}" in note


@pytest.mark.parametrize("kwargs, field", [
    ({"p_champion": 0}, "p_champion"), ({"p_challenger": 1.2}, "p_challenger"),
    ({"confidence": 0.4}, "bandit_confidence"), ({"max_samples": 0}, "max_samples"),
    ({"runs": 0}, "runs"),
])
def test_the_bandit_rejects_bad_inputs(kwargs, field):
    args = {"p_champion": 0.1, "p_challenger": 0.2, **kwargs}
    with pytest.raises(abtest.PlanError) as caught:
        tp.thompson(args.pop("p_champion"), args.pop("p_challenger"), **args)
    assert caught.value.field == field


# --------------------------------------------------------------------------------------------
# The comparison
# --------------------------------------------------------------------------------------------

P1, P2, DAILY, SHARE = 0.02, 0.0202, 1e6, 0.1


@pytest.fixture(scope="module")
def better():
    return tp.compare_methods(P1, P2, DAILY, share=SHARE, cost_per_prediction=2e-5,
                              value_per_outcome=0.4)


def test_rows_come_in_order(better):
    assert [r.method for r in better.rows] == list(tp.METHODS)
    assert tp.METHODS == ("ab", "shadow", "canary", "interleaving", "bandit")


def test_days_of_each_method_follow_their_definition(better):
    n = abtest.sample_size_per_arm(P1, P2)
    ab = better.row("ab")
    assert ab.days == pytest.approx(2 * n / (SHARE * DAILY), rel=1e-12)
    inter = better.row("interleaving")
    assert inter.requests == math.ceil(2 * n / 10)
    assert inter.days == pytest.approx(ab.days / 10, rel=1e-6)      # within rounding
    assert better.row("shadow").days == pytest.approx(100_000 / (SHARE * DAILY))
    assert better.row("canary").days == pytest.approx(4 / 24)
    bandit = better.row("bandit")
    assert bandit.days == pytest.approx(better.bandit.samples / (SHARE * DAILY))
    other = tp.compare_methods(P1, P2, DAILY, canary_steps=(0.05, 0.5), canary_step_days=0.5,
                               interleaving_speedup=4, shadow_predictions=3e6)
    assert other.row("canary").days == pytest.approx(1.0)
    assert other.row("interleaving").requests == math.ceil(2 * n / 4)
    assert other.row("shadow").days == pytest.approx(3e6 / (SHARE * DAILY))


def test_extra_cost_is_the_challengers_predictions_beside_the_champions(better):
    assert better.row("shadow").extra_cost_usd == pytest.approx(100_000 * 2e-5)
    inter = better.row("interleaving")
    assert inter.extra_cost_usd == pytest.approx(inter.requests * 2e-5)
    for method in ("ab", "canary", "bandit"):
        assert better.row(method).extra_cost_usd == 0


def test_value_lost_when_the_challenger_is_better(better):
    """Everyone waits for the better model: the share of all traffic on the champion loses Δ on
    every request while the test runs."""
    d = P2 - P1
    for r in better.rows:
        expected = DAILY * r.days * d * (1 - r.exposure)
        assert r.outcomes_lost == pytest.approx(expected, rel=1e-9), r.method
        assert r.value_lost_usd == pytest.approx(0.4 * expected, rel=1e-9), r.method
    assert better.row("shadow").outcomes_lost == pytest.approx(DAILY * 1.0 * d)
    bandit = better.row("bandit")
    rest = (1 - SHARE) * DAILY * bandit.days * d
    assert bandit.outcomes_lost == pytest.approx(better.bandit.regret + rest, rel=1e-9)


def test_value_lost_when_the_challenger_is_worse():
    """Only the requests the challenger serves lose; the shadow test shows it to nobody."""
    worse = tp.compare_methods(P2, P1, DAILY, share=SHARE, value_per_outcome=0.4)
    d = P2 - P1
    for r in worse.rows:
        assert r.outcomes_lost == pytest.approx(DAILY * r.days * d * r.exposure, rel=1e-9)
    assert worse.row("shadow").outcomes_lost == 0
    assert worse.row("bandit").outcomes_lost == pytest.approx(worse.bandit.regret, rel=1e-9)
    assert worse.row("ab").exposure == SHARE / 2
    assert worse.row("canary").exposure == pytest.approx(0.2025)


def test_nothing_is_lost_between_equal_models():
    same = tp.compare_methods(0.05, 0.05, DAILY, value_per_outcome=1.0)
    assert all(r.outcomes_lost == 0 and r.value_lost_usd == 0 for r in same.rows)
    assert math.isinf(same.row("ab").days) and math.isinf(same.row("interleaving").days)
    assert "never ends" in same.row("ab").note
    json.dumps(same.to_dict(), allow_nan=False)      # no Infinity in the JSON
    sized = tp.compare_methods(0.05, 0.05, DAILY, min_effect=0.02)
    assert sized.row("ab").days == pytest.approx(
        2 * abtest.sample_size_per_arm(0.05, 0.051) / (0.1 * DAILY))
    assert sized.row("ab").outcomes_lost == 0


def test_min_effect_sizes_the_tests_for_that_difference():
    sized = tp.compare_methods(0.02, 0.03, DAILY, min_effect=0.01)
    assert sized.row("ab").days == pytest.approx(
        2 * abtest.sample_size_per_arm(0.02, 0.0202) / (0.1 * DAILY))
    assert sized.bandit.p_challenger == pytest.approx(0.0202)
    down = tp.compare_methods(0.03, 0.02, DAILY, min_effect=0.01)
    assert down.bandit.p_challenger == pytest.approx(0.0297)


def test_the_canary_says_whether_it_could_measure_the_difference(better):
    assert better.canary_power < 0.8
    assert "too little traffic to measure this difference" in better.row("canary").note
    big = tp.compare_methods(0.02, 0.03, DAILY)
    assert big.canary_power > 0.8 and "enough to measure" in big.row("canary").note


def test_a_case_worked_by_hand():
    """p 0.10 -> 0.12, 1,000 requests a day, half of them in the test, $2 an outcome.

    A/B: 3,841 per arm (tests/test_abtest.py), 7,682 requests at 500 a day = 15.364 days; the
    champion serves 1 - 0.25 of all traffic: 1000 x 15.364 x 0.02 x 0.75 = 230.46 outcomes,
    $460.92. Shadow, 2,000 predictions: 4 days, 1000 x 4 x 0.02 = 80 outcomes, $160; at $0.01 a
    prediction it costs $20 more. Canary 10% then 50%, a day each: 2 days, exposure 0.3:
    1000 x 2 x 0.02 x 0.7 = 28 outcomes, $56. The other way round (0.12 -> 0.10) the challenger
    is the worse: A/B 1000 x 15.364 x 0.02 x 0.25 = 76.82, shadow 0, canary 1000 x 2 x 0.02 x
    0.3 = 12.
    """
    kwargs = dict(share=0.5, shadow_predictions=2000, canary_steps=(0.1, 0.5),
                  canary_step_days=1.0, value_per_outcome=2.0, cost_per_prediction=0.01)
    up = tp.compare_methods(0.10, 0.12, 1000, **kwargs)
    assert up.row("ab").days == pytest.approx(15.364)
    assert up.row("ab").outcomes_lost == pytest.approx(230.46)
    assert up.row("ab").value_lost_usd == pytest.approx(460.92)
    assert up.row("shadow").days == pytest.approx(4)
    assert up.row("shadow").value_lost_usd == pytest.approx(160)
    assert up.row("shadow").extra_cost_usd == pytest.approx(20)
    assert up.row("canary").days == pytest.approx(2)
    assert up.row("canary").value_lost_usd == pytest.approx(56)
    down = tp.compare_methods(0.12, 0.10, 1000, **kwargs)
    assert down.row("ab").outcomes_lost == pytest.approx(76.82)
    assert down.row("shadow").outcomes_lost == 0
    assert down.row("canary").outcomes_lost == pytest.approx(12)


def test_splitting_users_multiplies_the_ab_and_interleaving_samples():
    plain = tp.compare_methods(0.10, 0.12, 1000)
    users = tp.compare_methods(0.10, 0.12, 1000, unit="user", icc=0.05, requests_per_user=10,
                               cv=1.2)
    # 8,335 per arm with the design effect (tests/test_abtest.py) instead of 3,841.
    assert users.row("ab").requests == 2 * 8335 and plain.row("ab").requests == 2 * 3841
    assert users.row("interleaving").requests == math.ceil(2 * 8335 / 10)


@pytest.mark.parametrize("kwargs, field", [
    ({"daily_traffic": 0}, "daily_traffic"), ({"share": 1.5}, "share"),
    ({"canary_steps": (0.5, 0.1)}, "canary_steps"), ({"canary_steps": (0.1, 2)}, "canary_steps"),
    ({"canary_steps": ()}, "canary_steps"), ({"canary_step_days": 0}, "canary_step_days"),
    ({"shadow_predictions": 0}, "shadow_predictions"),
    ({"interleaving_speedup": 0.5}, "interleaving_speedup"), ({"min_effect": 0}, "min_effect"),
    ({"cost_per_prediction": -1}, "cost_per_prediction"),
    ({"value_per_outcome": float("nan")}, "value_per_outcome"),
    ({"bandit_confidence": 0.3}, "bandit_confidence"), ({"unit": "session"}, "unit"),
])
def test_the_comparison_rejects_bad_inputs(kwargs, field):
    args = {"daily_traffic": 1e6, **kwargs}
    with pytest.raises(abtest.PlanError) as caught:
        tp.compare_methods(0.02, 0.03, args.pop("daily_traffic"), **args)
    assert caught.value.field == field


def test_lines_and_json_carry_every_method(better):
    text = "\n".join(better.lines())
    for label in ("A/B test", "shadow", "canary", "interleaving", "bandit"):
        assert f"{label}: " in text
    assert "everyone waits" in text
    data = json.loads(json.dumps(better.to_dict(), allow_nan=False))
    assert [r["method"] for r in data["rows"]] == list(tp.METHODS)
    assert data["rows"][0]["days"] == pytest.approx(better.row("ab").days)


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------

MANUAL = ["--baseline-rate", "0.02", "--uplift", "0.01", "--relative", "--daily-traffic", "1M",
          "--methods"]


def invoke(*args):
    return CliRunner().invoke(main, ["abtest", *map(str, args)])


def test_cli_methods_prints_all_five():
    result = invoke(*MANUAL, "--cost-per-prediction", "2e-5", "--value-per-outcome", "0.4")
    assert result.exit_code == 0, result.output
    for label in ("A/B test", "shadow", "canary", "interleaving", "bandit"):
        assert label in result.output
    # The plan above the comparison uses the comparison's share (10% by default).
    assert "10% of traffic in the test" in result.output


def test_cli_methods_json():
    result = invoke(*MANUAL, "--canary-steps", "2%,20%", "--canary-step", "30m",
                    "--shadow-predictions", "50k", "--speedup", "5", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["n_per_arm"] == abtest.sample_size_per_arm(0.02, 0.0202)
    rows = {r["method"]: r for r in data["methods"]["rows"]}
    assert list(rows) == list(tp.METHODS)
    assert rows["canary"]["days"] == pytest.approx(2 * 30 / 1440)
    assert rows["shadow"]["days"] == pytest.approx(50e3 / 1e5)
    assert rows["interleaving"]["requests"] == math.ceil(2 * data["n_per_arm"] / 5)
    assert "methods" not in json.loads(invoke(*MANUAL[:-1], "--json").output)


@pytest.mark.parametrize("args, message", [
    (["--canary-steps", "1%,lots"], "--canary-steps: expected shares of traffic"),
    (["--canary-steps", "50%,5%"], "--canary-steps: the canary's steps must grow"),
    (["--canary-steps", "150%"], "--canary-steps: the canary's steps must be shares"),
    (["--canary-step", "soon"], "--canary-step: expected a duration > 0"),
    (["--shadow-predictions", "many"], "--shadow-predictions: expected a count"),
    (["--confidence", "0.2"], "--confidence: the bandit's confidence must be above 0.5"),
    (["--speedup", "0.5"], "--speedup: interleaving's speedup"),
    (["--min-effect", "-1"], "--min-effect: the smallest effect"),
    (["--value-per-outcome", "-2"], "--value-per-outcome: the value per outcome must be"),
])
def test_cli_bad_method_options_exit_2(args, message):
    result = invoke(*MANUAL, *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_cli_method_options_need_methods():
    result = invoke(*MANUAL[:-1], "--speedup", "5", "--canary-step", "1h")
    assert result.exit_code == 2
    assert "--canary-step, --speedup: only with --methods" in result.stderr
    result = invoke("--baseline-rate", "0.02", "--uplift", "0.01", "--methods")
    assert result.exit_code == 2 and "--methods: give --daily-traffic" in result.stderr


def test_cli_scenario_mode_takes_prices_and_evaluation_from_the_scenario():
    result = invoke("scenarios/quickstart.yaml", "--set", "horizon=1h", "--set", "warmup=15m",
                    "--replications", "1", "--arch", "streaming", "--methods",
                    "--set", "training.evaluation.method=canary",
                    "--set", "training.evaluation.step_duration=30m", "--json")
    assert result.exit_code == 0, result.output
    methods = json.loads(result.output)["methods"]
    assert methods["value_per_outcome"] == 0.40          # business.value_per_outcome
    assert methods["cost_per_prediction"] > 0            # streaming's serving per request
    rows = {r["method"]: r for r in methods["rows"]}
    assert rows["canary"]["days"] == pytest.approx(4 * 30 / 1440)   # the evaluation's step
    assert methods["source"] == "the simulation of quickstart (streaming vs batch)"


def test_the_manager_report_has_the_ways_to_test():
    """The report's section comes from the results it already has (no extra simulation)."""
    import sim
    from sim.report.manager_report import Analysis, build_report

    scenario = sim.load_scenario("scenarios/quickstart.yaml",
                                 overrides={"horizon": "1h", "warmup": "15m"})
    results = sim.run(scenario, 2)
    report = build_report(results, analysis=Analysis(breakeven=False, sensitivity=False))
    markdown = report.to_markdown()
    section = markdown[markdown.index("## Testing the next model"):
                       markdown.index("## Assumptions")]
    for label in ("A/B test", "shadow", "canary", "interleaving", "bandit"):
        assert f"| {label} |" in section
    rec = report.recommendation
    assert rec.compared in section and rec.baseline in section
    # All traffic in the test, as in the A/B section above it.
    assert report.methods.share == 1.0
    assert report.methods.row("ab").requests == report.abtest.total
