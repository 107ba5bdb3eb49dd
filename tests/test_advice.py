"""Retraining advice: it picks the optimum of a scenario whose net value per interval is known in
closed form, tries every policy, and the `predsim retrain-advice` command (subprocess)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import sim
from sim.studies.advice import AdviceError, advise, parse_intervals
from sim.results.replications import t_half_width

BIN = Path(sys.executable).parent
DAY = 86400.0

# Linear model staleness, no other loss: with a run every T (days), no run time, requests at R
# per day each worth V x quality, the model's age is uniform on [0, T), so
#   net value(T) = R V (fresh - slope T / 2) - C / T,   best at T* = sqrt(2 C / (R V slope)).
FRESH, SLOPE, RATE_PER_S, V, C = 0.5, 0.02, 1.0, 1.0, 864.0
R = RATE_PER_S * DAY
HAND = {
    "name": "hand", "horizon": "7d", "seed": 3,
    "workload": {"entities": 1000, "arrivals": {"rate": f"{RATE_PER_S}/s"}},
    "quality": {"fresh": FRESH, "model_staleness": {"linear": {"per_day": -SLOPE, "floor": 0}}},
    "training": {"every": "1d"},
    "costs": {"training_run": C},
    "business": {"value_per_outcome": V},
    "architectures": {"online": {"kind": "online", "features": {"batch": {"every": "1d"}},
                                 "serving": {"replicas": 2, "service_time": "1ms"}}},
}


def closed_form(t_days: float) -> float:
    return R * V * (FRESH - SLOPE * t_days / 2) - C / t_days


def test_advice_picks_the_optimum_computed_by_hand():
    best_days = math.sqrt(2 * C / (R * V * SLOPE))
    assert best_days == pytest.approx(1.0)  # the numbers are chosen so that T* = 1d
    advice = advise(sim.scenario_from_dict(HAND), ["1h", "6h", "1d", "7d"], replications=3)
    table = advice.table.set_index("candidate")
    assert advice.best["candidate"].tolist() == ["schedule every 1d"]
    for label, days in (("schedule every 1h", 1 / 24), ("schedule every 6h", 0.25),
                        ("schedule every 1d", 1.0), ("schedule every 7d", 7.0)):
        row = table.loc[label]
        assert abs(row["net_value_usd_per_day"] - closed_form(days)) <= \
            row["net_value_usd_per_day_ci95"], label
        assert row["cost_usd_per_day_training"] == pytest.approx(C / days)
    assert "Best for online: schedule every 1d" in advice.lines()[0]
    # every candidate runs on the same requests: the gap is judged by its paired interval,
    # narrower than the two candidates' own intervals together
    assert "paired 95% CI" in advice.lines()[0]
    by_rep = advice.net_by_replication
    paired = t_half_width(by_rep[("schedule every 1d", "online")] -
                          by_rep[("schedule every 6h", "online")])
    assert paired < (table.loc["schedule every 1d", "net_value_usd_per_day_ci95"] +
                     table.loc["schedule every 6h", "net_value_usd_per_day_ci95"])


def test_every_policy_can_be_tried():
    raw = {**HAND, "horizon": "1d", "training": {
        "policy": "trigger", "duration": "10m",
        "trigger": {"label_delay": "5m", "window": "2h", "check_every": "30m", "drop": 0.01}}}
    advice = advise(sim.scenario_from_dict(raw), ["1h", "6h"],
                    ["schedule", "continual", "trigger"], replications=2)
    assert advice.table["candidate"].tolist() == [
        "schedule every 1h", "schedule every 6h", "continual every 1h", "continual every 6h",
        "trigger"]
    assert advice.table["trainings_per_day"].notna().all()
    data = advice.to_dict()
    assert data["best"]["online"] in advice.table["candidate"].tolist()
    json.dumps(data, allow_nan=False)


def test_trigger_needs_a_trigger_section_and_intervals_must_be_durations():
    with pytest.raises(AdviceError, match="training.trigger: policy trigger needs"):
        advise(sim.scenario_from_dict(HAND), ["1d"], ["trigger"], replications=1)
    with pytest.raises(AdviceError, match="'soon' is not a duration"):
        parse_intervals("1h,soon")


def predsim(*args, cwd):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "PREDSIM_NO_PROGRESS": "1", "MPLBACKEND": "Agg"}
    return subprocess.run(["predsim", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_command_prints_the_best_and_writes_table_json_and_plot(tmp_path):
    path = tmp_path / "hand.yaml"
    path.write_text(yaml.safe_dump(HAND))
    result = predsim("retrain-advice", str(path), "--intervals", "6h,1d,7d", "-r", "2",
                     "--out", "advice", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Best for online: schedule every 1d" in result.stdout
    for name in ("advice.csv", "advice.json", "net_value_vs_interval.png"):
        assert (tmp_path / "advice" / name).stat().st_size > 0
    data = json.loads((tmp_path / "advice" / "advice.json").read_text())
    assert data["best"] == {"online": "schedule every 1d"}
    assert not [p for p in (tmp_path / "advice").iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("args, message", [
    (["--intervals", "6h,soon"], "--intervals: 'soon' is not a duration"),
    (["--policies", "nightly"], "--policies: 'nightly' is not a policy"),
    (["--policies", "trigger"], "hand.yaml: training.trigger: policy trigger needs"),
    (["--set", "training.every=-1h"], "hand.yaml: training.every: must be > 0"),
])
def test_bad_input_exits_2_with_a_plain_message(tmp_path, args, message):
    path = tmp_path / "hand.yaml"
    path.write_text(yaml.safe_dump(HAND))
    result = predsim("retrain-advice", str(path), *args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
