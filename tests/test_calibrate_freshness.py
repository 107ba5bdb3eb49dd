"""`predsim calibrate freshness`: staleness curves fitted to a freshness experiment.

The fits recover known parameters of synthetic noisy tables within a confidence interval built
from their own standard errors; the command writes a quality: section that loads in a scenario;
bad rows are reported by file, line and column with exit code 2.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from scipy import stats

from sim.inputs.calibrate import Series, fit_freshness, fit_series, read_freshness
from sim.cli.main import main
from sim.scenario import scenario_from_dict
from tests.conftest import SCENARIOS

HOUR, DAY = 3600.0, 86400.0
EXAMPLE = SCENARIOS / "data" / "ads-ctr-freshness.csv"


def within_ci(estimate: float, truth: float, standard_error: float, dof: int) -> bool:
    """|estimate - truth| inside the two-sided 99.9% Student-t interval."""
    return abs(estimate - truth) <= stats.t.ppf(0.9995, dof) * standard_error


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exponential_parameters_are_recovered_within_their_standard_errors(seed):
    rng = np.random.default_rng(seed)
    ages = np.repeat(np.arange(0, 49, 4) * HOUR, 2)
    truth = {"fresh": 0.050, "floor": 0.035, "half_life_s": 6 * HOUR}
    metric = truth["floor"] + (truth["fresh"] - truth["floor"]) * np.exp2(
        -ages / truth["half_life_s"]) + rng.normal(0, 0.0004, ages.size)
    fit = fit_series(Series("feature", ages, metric, np.arange(ages.size) + 2), False)
    assert fit.chosen == "exponential"
    exponential = fit.best
    for key, value in truth.items():
        assert within_ci(exponential.params[key], value, exponential.errors[key],
                         ages.size - 3), key


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_linear_parameters_are_recovered_within_their_standard_errors(seed):
    rng = np.random.default_rng(seed)
    ages = np.arange(0, 11) * DAY
    metric = 0.05 - 0.0005 * ages / DAY + rng.normal(0, 0.0003, ages.size)
    fit = fit_series(Series("model", ages, metric, np.arange(ages.size) + 2), False)
    linear = fit.fits["linear"]
    assert fit.chosen == "linear"
    assert within_ci(linear.params["per_day"], -0.0005, linear.errors["per_day"], ages.size - 2)
    assert within_ci(linear.params["fresh"], 0.05, linear.errors["fresh"], ages.size - 2)


def test_lower_is_better_metric_becomes_a_quality_relative_to_fresh():
    # the shipped table: NE (lower is better) rising ~0.33% a day, as in scenarios/ads-ctr.yaml
    fitted = fit_freshness(read_freshness(EXAMPLE), fresh=0.02, metric="ctr")
    assert fitted.lower_is_better and "by its name" in fitted.direction_reason
    linear = fitted.fits["model"].fits["linear"]
    slope, error = linear.params["per_day"], linear.errors["per_day"]
    curve = fitted.section()["model_staleness"]["linear"]
    # 1% worse NE costs 1% of the CTR: per_day = -fresh * slope / NE at age 0
    assert curve["per_day"] == pytest.approx(-0.02 * slope / linear.params["fresh"], rel=1e-4)
    # the ads-ctr scenario's hand conversion of the paper (-0.33%/day of 0.02) is in the CI
    assert within_ci(-curve["per_day"] / 0.02, 0.0033, error, 5)


def test_both_experiments_in_one_file_give_both_curves(tmp_path):
    rng = np.random.default_rng(4)
    rows = ["# a comment line before the header", "age,auc,kind"]
    for age_h in range(0, 73, 6):
        rows.append(f"{age_h}h,{0.70 + 0.05 * 2 ** (-age_h / 12) + rng.normal(0, 5e-4):.5f},"
                    f"feature")
    for age_d in range(0, 8):
        rows.append(f"{age_d}d,{0.75 - 0.004 * age_d + rng.normal(0, 5e-4):.5f},model")
    path = tmp_path / "both.csv"
    path.write_text("\n".join(rows) + "\n")
    fitted = fit_freshness(read_freshness(path))
    assert set(fitted.fits) == {"feature", "model"}
    assert not fitted.lower_is_better and "by its name" in fitted.direction_reason
    section = fitted.section()
    assert "exponential" in section["feature_staleness"]
    assert "linear" in section["model_staleness"]
    half_life = fitted.fits["feature"].best
    assert within_ci(half_life.params["half_life_s"], 12 * HOUR, half_life.errors["half_life_s"],
                     10)


def test_the_command_writes_a_quality_section_that_loads_in_a_scenario(tmp_path):
    out = tmp_path / "quality.yaml"
    result = CliRunner().invoke(main, ["calibrate", "freshness", str(EXAMPLE), "--metric", "ctr",
                                       "--fresh", "0.02", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "AICc" in result.stderr and "(chosen)" in result.stderr
    assert result.stdout == out.read_text()
    assert not list(tmp_path.glob(".*.tmp"))
    section = yaml.safe_load(out.read_text())["quality"]
    assert section["metric"] == "ctr" and section["fresh"] == 0.02
    raw = yaml.safe_load((SCENARIOS / "ads-ctr.yaml").read_text())
    for merged in ({**raw["quality"], **section}, section):   # spliced in, or replacing it
        data = copy.deepcopy(raw)
        data["quality"] = merged
        scenario = scenario_from_dict(data, base_dir=SCENARIOS)
        assert scenario.quality.model_staleness.linear.per_day < 0
    # every form the command can write loads too
    for form in ("exponential", "table"):
        result = CliRunner().invoke(main, ["calibrate", "freshness", str(EXAMPLE),
                                           "--form", form, "--fresh", "0.02"])
        assert result.exit_code == 0, result.output
        data = copy.deepcopy(raw)
        data["quality"] = yaml.safe_load(result.stdout)["quality"]
        assert getattr(scenario_from_dict(data).quality.model_staleness, form) is not None


@pytest.mark.parametrize("text, expected", [
    ("age,metric\n1h,0.5\nsoon,0.4\n3h,0.3\n4h,0.2\n",
     "bad.csv: line 3: column age: expected an age such as 6h or 1d (got 'soon')"),
    ("age_hours,metric\n1,0.5\n2,n/a\n3,0.3\n4,0.2\n",
     "bad.csv: line 3: column metric: expected a number (got 'n/a')"),
    ("age,metric\n1,0.5\n2,0.4\n3,0.3\n",
     "bad.csv: line 2: column age: '1' has no unit"),
    ("hours,metric\n1,0.5\n2,0.4\n3,0.3\n", "bad.csv: line 1: no age column"),
    ("age_days,score,other\n1,0.5,1\n2,0.4,1\n3,0.3,1\n",
     "bad.csv: line 1: which column is the metric?"),
    ("# comment\nage_days,metric\n0,0.5\n1,0.4\n", "bad.csv: the model experiment has 2 rows"),
    ("age_days,metric,experiment\n0,0.5,model\n1,0.4,modle\n2,0.3,model\n",
     "bad.csv: line 3: column experiment: expected feature, batch, stream or model (got 'modle')"),
    ("age_days,metric\n0,0.5\n1,0.4,9\n2,0.3\n", "bad.csv: line 3: expected 2 values"),
])
def test_bad_input_names_the_file_line_and_column_with_exit_code_2(tmp_path, text, expected):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    result = CliRunner().invoke(main, ["calibrate", "freshness", str(path)])
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("column, decaying, lower", [
    ("auc", False, False),    # flat and noisy: the name decides, not the noise
    ("ndcg", False, False),
    ("score", True, False),   # an unknown name: the trend decides
    ("score", False, True),
])
def test_which_way_is_better_by_name_then_by_trend(tmp_path, column, decaying, lower):
    rng = np.random.default_rng(9)
    rows = [f"age_days,{column}"]
    for age in range(0, 8):
        trend = (-0.004 if decaying else 0.004) * age if column == "score" else 0.0
        rows.append(f"{age},{0.75 + trend + rng.normal(0, 5e-4):.5f}")
    path = tmp_path / "t.csv"
    path.write_text("\n".join(rows) + "\n")
    assert fit_freshness(read_freshness(path)).lower_is_better is lower
