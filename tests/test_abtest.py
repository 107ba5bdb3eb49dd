"""The A/B test planner (sim/studies/abtest.py, `predsim abtest`) against textbook sample sizes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats

import sim
from sim.studies import abtest
from sim.cli.main import main
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
# Splitting by user: the design effect
# --------------------------------------------------------------------------------------------

def test_design_effect_equal_requests_per_user_by_hand():
    # 1 + (m - 1) ICC = 1 + 9 x 0.05 = 1.45; 3840.85 x 1.45 = 5569.23 -> 5,570 requests per arm,
    # from 5569.23 / 10 -> 557 users per arm; 2 x 5569.23 / 1000 a day = 11.14 days.
    assert abtest.design_effect(0.05, 10) == pytest.approx(1.45)
    plan = abtest.plan(0.10, 0.02, daily_traffic=1000, unit="user", icc=0.05,
                       requests_per_user=10)
    assert plan.unit == "user" and plan.cv == 0 and plan.design_effect == pytest.approx(1.45)
    assert plan.n_independent == 3841
    assert plan.n_per_arm == 5570 and plan.users_per_arm == 557 and plan.total_users == 1114
    assert plan.days == pytest.approx(11.14) and plan.whole_days == 12
    text = "\n".join(plan.lines())
    assert "Unit of randomisation: the user" in text
    assert "the design effect is 1 + ((0² + 1)·10 − 1)·0.05 = 1.45" in text
    assert "3,841 requests per arm if requests were independent; × 1.45 = 5,570" in text
    assert abtest.DESIGN_EFFECT_FORMULA in text


def test_design_effect_unequal_requests_per_user_by_hand():
    # Eldridge et al.: 1 + ((cv^2 + 1) m - 1) ICC = 1 + ((1.44 + 1) x 10 - 1) x 0.05
    # = 1 + 23.4 x 0.05 = 2.17; 3840.85 x 2.17 = 8334.6 -> 8,335 per arm, 834 users per arm.
    assert abtest.design_effect(0.05, 10, cv=1.2) == pytest.approx(2.17)
    plan = abtest.plan(0.10, 0.02, unit="user", icc=0.05, requests_per_user=10, cv=1.2)
    assert plan.design_effect == pytest.approx(2.17)
    assert plan.n_per_arm == 8335 and plan.users_per_arm == 834 and plan.days is None
    # cv 0 is the textbook 1 + (m - 1) ICC; ICC 0 or one request per user and cv 0: no effect.
    for m, icc in ((2, 0.1), (25, 0.01), (100, 0.3)):
        assert abtest.design_effect(icc, m) == pytest.approx(1 + (m - 1) * icc)
    assert abtest.design_effect(0.0, 50, cv=3) == 1.0 and abtest.design_effect(0.5, 1) == 1.0


def _poisson_moments(lam):
    """E[1{X >= 1}], E[X], E[X^2] of Poisson(lam), summed over the pmf term by term."""
    x = np.arange(0, int(lam.max() + 40 * math.sqrt(lam.max()) + 60))
    pmf = stats.poisson.pmf(x[None, :], lam[:, None])
    return pmf[:, 1:].sum(), (pmf * x).sum(), (pmf * x ** 2).sum()


@pytest.mark.parametrize("entities, exponent, requests", [(20, 1.1, 60.0), (30, 0.0, 45.0),
                                                          (12, 2.0, 500.0)])
def test_user_spread_matches_a_direct_sum_over_the_poisson_pmf(entities, exponent, requests):
    weights = np.arange(1, entities + 1, dtype=float) ** -exponent
    lam = requests * weights / weights.sum()
    active, total, squares = _poisson_moments(lam)
    mean = total / active
    cv = math.sqrt(squares / active / mean ** 2 - 1)
    spread = abtest.user_spread(requests, entities, exponent)
    assert spread.active_users == pytest.approx(active, rel=1e-9)
    assert spread.mean == pytest.approx(mean, rel=1e-9)
    assert spread.cv == pytest.approx(cv, rel=1e-9)
    # (cv^2 + 1) m = 1 + N sum p^2: what makes the days' equation linear in the test's length
    p = weights / weights.sum()
    assert (spread.cv ** 2 + 1) * spread.mean == pytest.approx(1 + requests * np.dot(p, p))
    assert abtest.Population(entities, exponent).concentration() == pytest.approx(np.dot(p, p))


@pytest.mark.parametrize("exponent", [1.1, 0.0])
def test_user_spread_matches_a_monte_carlo_of_the_simulators_sampler(exponent):
    """Draw Poisson(N) requests many times with the simulator's own Zipf sampler, count the
    users who show up, their requests and the squares of those, and compare the ratio estimates
    of m and cv with the exact values within 4 standard errors (delta method)."""
    from sim.engine.workload import zipf_slots

    entities, requests, reps = 50, 100.0, 20000
    rng = np.random.default_rng(2024)
    totals = rng.poisson(requests, size=reps)
    slots = zipf_slots(rng, entities, exponent, int(totals.sum()))
    rep = np.repeat(np.arange(reps), totals)
    counts = np.bincount(rep * entities + slots, minlength=reps * entities).reshape(reps, entities)
    u = (counts > 0).sum(axis=1).astype(float)
    s_ = counts.sum(axis=1).astype(float)
    q = (counts.astype(float) ** 2).sum(axis=1)
    ub, sb, qb = u.mean(), s_.mean(), q.mean()
    mean_mc = sb / ub
    cv_mc = math.sqrt(qb * ub / sb ** 2 - 1)
    # Linearised (influence) values of the two ratio estimators, one per replicate.
    infl_mean = (s_ - mean_mc * u) / ub
    d_q, d_u, d_s = ub / sb ** 2, qb / sb ** 2, -2 * qb * ub / sb ** 3
    infl_cv = (d_q * (q - qb) + d_u * (u - ub) + d_s * (s_ - sb)) / (2 * cv_mc)
    se_mean = infl_mean.std(ddof=1) / math.sqrt(reps)
    se_cv = infl_cv.std(ddof=1) / math.sqrt(reps)
    spread = abtest.user_spread(requests, entities, exponent)
    assert abs(spread.mean - mean_mc) < 4 * se_mean
    assert abs(spread.cv - cv_mc) < 4 * se_cv
    assert abs(spread.active_users - ub) < 4 * u.std(ddof=1) / math.sqrt(reps)


def test_user_split_days_are_the_shortest_whole_number_that_reaches_the_sample():
    population = abtest.Population(100_000, 0.5, description="Zipf 0.5 over 100k users")
    kwargs = dict(daily_traffic=20_000, traffic_share=0.5)
    by_request = abtest.plan(0.10, 0.01, **kwargs)
    plan = abtest.plan(0.10, 0.01, unit="user", icc=0.02, population=population, **kwargs)
    n_raw = abtest.required_n(0.10, 0.11)
    d = plan.solved_days
    assert plan.days == d and plan.whole_days == d and d > by_request.whole_days

    def reaches(days):
        spread = population.spread(20_000 * days)
        de = abtest.design_effect(0.02, spread.mean, spread.cv)
        return 0.5 * 20_000 * days >= 2 * n_raw * de, spread, de

    ok, spread, de = reaches(d)
    assert ok and not reaches(d - 1)[0]
    assert plan.requests_per_user == spread.mean and plan.cv == spread.cv
    assert plan.design_effect == de and plan.n_per_arm == math.ceil(n_raw * de)
    text = "\n".join(plan.lines())
    assert f"run it for {d} days" in text and "found by trying whole days" in text
    assert "computed from Zipf 0.5 over 100k users" in text
    # ICC 0: no design effect, the same days as splitting requests.
    flat = abtest.plan(0.10, 0.01, unit="user", icc=0.0, population=population, **kwargs)
    assert flat.design_effect == 1 and flat.whole_days == by_request.whole_days
    assert flat.n_per_arm == by_request.n_per_arm


def test_user_split_says_when_no_length_is_enough():
    # One user in ten makes most requests: the effective sample has a ceiling.
    population = abtest.Population(1000, 1.5, description="Zipf 1.5 over 1000 users")
    with pytest.raises(abtest.PlanError, match="no test length is enough.*heaviest user"):
        abtest.plan(0.10, 0.01, daily_traffic=1e6, unit="user", icc=0.05,
                    population=population)


def test_unit_request_is_unchanged():
    default = abtest.plan(0.10, 0.02, daily_traffic=1000)
    explicit = abtest.plan(0.10, 0.02, daily_traffic=1000, unit="request")
    assert default == explicit
    assert default.n_per_arm == default.n_independent == 3841 and default.days == 7.682
    assert default.design_effect == 1 and default.icc is None and default.users_per_arm is None
    text = "\n".join(default.lines())
    assert "3,841 requests per arm, 7,682 in all" in text
    assert "Unit of randomisation: the request" in text and "--unit user" in text
    data = default.to_dict()
    assert data["unit"] == "request" and data["method"].startswith("independent requests")


@pytest.mark.parametrize("kwargs, field", [
    ({"unit": "user"}, "icc"),
    ({"unit": "user", "icc": 0.1}, "requests_per_user"),
    ({"unit": "user", "icc": 1.5, "requests_per_user": 5}, "icc"),
    ({"unit": "user", "icc": -0.1, "requests_per_user": 5}, "icc"),
    ({"unit": "user", "icc": 0.1, "requests_per_user": 0.5}, "requests_per_user"),
    ({"unit": "user", "icc": 0.1, "requests_per_user": 5, "cv": -1}, "cv"),
    ({"icc": 0.1}, "icc"),
    ({"unit": "users", "icc": 0.1}, "unit"),
])
def test_plan_rejects_impossible_unit_inputs(kwargs, field):
    with pytest.raises(abtest.PlanError) as info:
        abtest.plan(0.10, 0.02, **kwargs)
    assert info.value.field == field


def test_plan_from_a_simulation_split_by_user():
    scenario = make_scenario(
        {"nightly": {"kind": "batch", "every": "1d", "start_at": "12h", "throughput": "1000/s"},
         "online": {"kind": "online", "features": {"batch": {"every": "1h"}},
                    "serving": {"replicas": 2, "service_time": "5ms"}}},
        quality={"metric": "ctr", "fresh": 0.05, "fallback": 0.02,
                 "feature_staleness": {"exponential": {"half_life": "2h", "floor": 0.03}}})
    results = sim.run(scenario, 1)
    plan = abtest.plan_from_results(results, "online", unit="user", icc=0.001)
    # BASE: 1000 entities, uniform popularity, 10/s
    spread = abtest.user_spread(10 * 86400 * plan.solved_days, 1000)
    assert plan.requests_per_user == pytest.approx(spread.mean)
    assert plan.cv == pytest.approx(spread.cv)
    assert plan.design_effect == pytest.approx(abtest.design_effect(0.001, spread.mean, spread.cv))
    assert "uniform popularity over the scenario's 1,000 entities" in plan.spread_source
    hint = abtest.plan_from_results(results, "online")
    assert hint.unit == "request" and hint.design_effect == 1 and hint.requests_per_user > 1
    assert "so even an ICC of 0.01 would make the design effect" in "\n".join(hint.lines())
    given = abtest.plan_from_results(results, "online", unit="user", icc=0.001,
                                     requests_per_user=20, cv=1)
    assert given.spread_method == "given"
    assert given.design_effect == pytest.approx(1 + (2 * 20 - 1) * 0.001)


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


def test_cli_unit_user():
    args = ["--baseline-rate", "0.10", "--uplift", "0.02", "--daily-traffic", "1k",
            "--unit", "user", "--icc", "0.05", "--requests-per-user", "10", "--cv", "1.2"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert "Unit of randomisation: the user" in result.output
    assert "the design effect is 1 + ((1.2² + 1)·10 − 1)·0.05 = 2.17" in result.output
    assert "8,335 requests per arm, 16,670 in all, from about 834 users per arm" in result.output
    data = json.loads(invoke(*args, "--json").output)
    assert data["unit"] == "user" and data["icc"] == 0.05 and data["cv"] == 1.2
    assert data["requests_per_user"] == 10 and data["design_effect"] == pytest.approx(2.17)
    assert data["n_independent"] == 3841 and data["n_per_arm"] == 8335
    assert data["users_per_arm"] == 834 and data["spread_method"] == "given"
    assert data["design_effect_formula"] == abtest.DESIGN_EFFECT_FORMULA
    assert "design effect" in data["method"]


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
    (["--baseline-rate", "0.1", "--uplift", "0.1", "--unit", "user", "--icc", "1.5",
      "--requests-per-user", "5"], "--icc: the intra-user correlation (ICC) must be between 0"),
    (["--baseline-rate", "0.1", "--uplift", "0.1", "--unit", "user", "--icc", "-0.2",
      "--requests-per-user", "5"], "--icc: the intra-user correlation (ICC) must be between 0"),
    (["--baseline-rate", "0.1", "--uplift", "0.1", "--unit", "user", "--requests-per-user", "5"],
     "--icc: needed when the test splits by user"),
    (["--baseline-rate", "0.1", "--uplift", "0.1", "--unit", "user", "--icc", "0.1"],
     "--requests-per-user: needed when the test splits by user without a scenario"),
    (["--baseline-rate", "0.1", "--uplift", "0.1", "--icc", "0.1"],
     "--icc: only when the test splits by user"),
    (["scenarios/quickstart.yaml", "--unit", "user", "--icc", "2"],
     "--icc: the intra-user correlation (ICC) must be between 0"),
    (["scenarios/quickstart.yaml", "--unit", "user", "--icc", "0.1", "--cv", "2"],
     "--cv: give it together with the requests per user"),
])
def test_cli_bad_input_exits_2(args, message):
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output
