"""The first hour with predsim: `predsim init` (sim/inputs/starter.py), `predsim explain`
(sim/inputs/explain.py) and shell completion."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import sim
from sim.cli.main import main
from sim.inputs.explain import explain
from sim.scenario import Scenario, load_scenario, scenario_from_dict
from sim.inputs.starter import (QUESTIONS, StarterError, expected_active, head_request_share,
                         parse_answers, peak_hour_share, peak_to_trough_for_share, plan,
                         starter_yaml, zipf_exponent_for)
from sim.engine.workload import RateProfile, zipf_slots

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = sorted((ROOT / "scenarios").glob("*.yaml"))
PREDSIM = Path(sys.executable).parent / "predsim"
SHORT = {"horizon": "2h", "warmup": "0s"}


def init(*args, input=None, cwd: Path):
    """`predsim init` in ``cwd`` through click's test runner."""
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(main, ["init", *args], input=input)
    finally:
        os.chdir(old)


# --------------------------------------------------------------------------------------------
# predsim init
# --------------------------------------------------------------------------------------------

def test_defaults_write_a_scenario_that_validates_and_runs(tmp_path):
    result = init("svc.yaml", "--defaults", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert "predsim explain svc.yaml" in result.output
    scenario = load_scenario(tmp_path / "svc.yaml")
    assert scenario.name == "svc"
    assert set(scenario.architectures) == {"batch", "online", "streaming"}
    assert [a.kind for a in scenario.architectures.values()] == ["batch", "online", "streaming"]
    short = scenario_from_dict(yaml.safe_load((tmp_path / "svc.yaml").read_text()),
                               overrides=SHORT)
    summary = sim.run(short).summary.set_index("architecture")
    assert (summary["requests"] > 0).all()
    assert summary.loc["streaming", "stream_feature_age_s_mean"] < \
        summary.loc["batch", "feature_age_s_mean"]
    assert [p.name for p in tmp_path.iterdir()] == ["svc.yaml"]  # no temporary file left


def test_the_written_scenario_is_commented_and_accepted_by_the_schema(tmp_path):
    assert init("--defaults", cwd=tmp_path).exit_code == 0
    text = (tmp_path / "scenario.yaml").read_text()  # the default PATH
    assert text.startswith("# scenario: ")
    assert sum("#" in line for line in text.splitlines()) > 30
    jsonschema.validate(yaml.safe_load(text), Scenario.model_json_schema())


def test_pressing_enter_at_every_question_gives_the_defaults(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert init("s.yaml", "--defaults", cwd=tmp_path / "a").exit_code == 0
    asked = init("s.yaml", input="\n" * len(QUESTIONS), cwd=tmp_path / "b")
    assert asked.exit_code == 0, asked.output
    for q in QUESTIONS:
        assert q.text in asked.output
    assert "[2M]" in asked.output and "[24h]" in asked.output  # defaults are shown
    assert (tmp_path / "a" / "s.yaml").read_text() == (tmp_path / "b" / "s.yaml").read_text()


def test_a_bad_answer_is_asked_again(tmp_path):
    answers = ["", "", "", "", "", "every night", "12h"] + [""] * len(QUESTIONS)
    result = init("s.yaml", input="\n".join(answers) + "\n", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert "expected a duration" in result.output
    assert load_scenario(tmp_path / "s.yaml").architectures["batch"].every == 12 * 3600


ALL_FLAGS = ["--name", "fraud", "--requests-per-day", "8.64M", "--peak", "6.5%",
             "--entities", "5M", "--active-per-day", "400k", "--new-per-day", "20k",
             "--batch-every", "6h", "--batch-duration", "20m", "--latency-p50", "8ms",
             "--latency-p99", "40ms", "--slo-p99", "60ms", "--metric", "recall",
             "--fresh", "0.9", "--stale", "0.8", "--half-life", "2h", "--fallback", "0.5",
             "--replica-hour", "0.3", "--batch-node-hour", "2", "--stream-node-hour", "1.1",
             "--value-per-outcome", "12"]


def test_an_option_for_every_answer_asks_nothing_and_is_used(tmp_path):
    assert len(ALL_FLAGS) == 2 * (len(QUESTIONS) + 1)
    result = init("f.yaml", *ALL_FLAGS, input="", cwd=tmp_path)  # a prompt would abort
    assert result.exit_code == 0, result.output
    assert "?" not in result.output and "[" not in result.output
    s = load_scenario(tmp_path / "f.yaml")
    assert s.name == "fraud" and s.quality.metric == "recall"
    assert s.workload.arrivals.rate == pytest.approx(100.0)
    assert s.workload.entities == 5e6 and s.workload.new_entities_per_day == 2e4
    assert s.slo.latency_p99 == pytest.approx(0.06)
    assert s.quality.fresh == 0.9 and s.quality.fallback == 0.5
    assert s.quality.curve("batch").exponential.floor == 0.8
    assert s.quality.curve("batch").exponential.half_life == 7200
    assert s.costs.replica_hour == 0.3 and s.costs.batch_node_hour == 2
    assert s.costs.stream_node_hour == 1.1 and s.business.value_per_outcome == 12
    batch = s.architectures["batch"]
    assert batch.every == 6 * 3600
    assert 5e6 / batch.throughput == pytest.approx(20 * 60, rel=1e-4)
    assert peak_hour_share(s.workload.arrivals.peak_to_trough) == pytest.approx(0.065, rel=1e-3)
    online = s.architectures["online"].serving
    assert online.service_time.params == {"median": 0.008, "p99": 0.04}
    # replicas sized for the peak: busy about 60% at most
    peak = 100.0 * 2 * s.workload.arrivals.peak_to_trough / (s.workload.arrivals.peak_to_trough + 1)
    assert peak * online.service_time.mean / online.replicas <= 0.6


def test_an_existing_file_is_kept_unless_forced(tmp_path):
    (tmp_path / "s.yaml").write_text("mine\n")
    refused = init("s.yaml", "--defaults", cwd=tmp_path)
    assert refused.exit_code == 2
    assert "already exists" in refused.output and "--force" in refused.output
    assert (tmp_path / "s.yaml").read_text() == "mine\n"
    forced = init("s.yaml", "--defaults", "--force", cwd=tmp_path)
    assert forced.exit_code == 0
    load_scenario(tmp_path / "s.yaml")


BAD_ANSWERS = [
    (["--requests-per-day", "lots"], "--requests-per-day: expected a count"),
    (["--peak", "0.5"], "--peak: a peak-to-trough ratio is at least 1"),
    (["--peak", "12%"], "--peak: the busiest hour's share"),
    (["--batch-every", "0s"], "--batch-every: must be > 0"),
    (["--latency-p50", "50ms", "--latency-p99", "20ms"], "--latency-p99: must be at least"),
    (["--entities", "1000", "--active-per-day", "5000"], "--active-per-day: cannot be more"),
    (["--fresh", "0.1", "--fallback", "0.2"], "--fallback: must not exceed --fresh"),
    (["--fresh", "-1"], "--fresh: must be > 0"),
]


@pytest.mark.parametrize("flags, message", BAD_ANSWERS)
def test_bad_answers_exit_2_naming_the_option_and_write_nothing(tmp_path, flags, message):
    result = init("s.yaml", "--defaults", *flags, cwd=tmp_path)
    assert result.exit_code == 2
    assert message in result.output
    assert isinstance(result.exception, SystemExit)  # not an unexpected exception
    assert list(tmp_path.iterdir()) == []


def test_bad_answers_in_a_real_process_print_no_traceback(tmp_path):
    env = {**os.environ, "PREDSIM_NO_PROGRESS": "1"}
    env.pop("PREDSIM_DEBUG", None)
    flags = [f for flags, _ in BAD_ANSWERS[:2] for f in flags]
    result = subprocess.run([str(PREDSIM), "init", "s.yaml", "--defaults", *flags],
                            cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2
    assert BAD_ANSWERS[0][1] in result.stderr and BAD_ANSWERS[1][1] in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert list(tmp_path.iterdir()) == []


def test_a_missing_folder_is_bad_input(tmp_path):
    result = init("no/such/s.yaml", "--defaults", cwd=tmp_path)
    assert result.exit_code == 2 and "does not exist" in result.output


def test_names_that_need_quoting_survive(tmp_path):
    answers = parse_answers({"metric": "yes"}, name="shop: #1")
    s = scenario_from_dict(yaml.safe_load(starter_yaml(answers)))
    assert s.name == "shop: #1" and s.quality.metric == "yes"


def test_more_active_entities_than_any_popularity_gives_uniform():
    answers = parse_answers({"requests_per_day": "1M", "entities": "1M",
                             "active_per_day": "900k"})
    assert plan(answers).exponent is None
    assert "popularity: uniform" in starter_yaml(answers)


@settings(max_examples=25, deadline=None)
@given(requests=st.floats(1e3, 1e9), entities=st.integers(1, 10**8),
       active_share=st.floats(0.001, 1.0), peak=st.floats(1.0, 50.0),
       every_s=st.floats(60, 30 * 86400), duration_share=st.floats(0.001, 3.0),
       p50_ms=st.floats(0.1, 1000), tail=st.floats(1.0, 20.0), fresh=st.floats(1e-4, 1e3))
def test_any_sensible_answers_make_a_valid_scenario(requests, entities, active_share, peak,
                                                    every_s, duration_share, p50_ms, tail,
                                                    fresh):
    active = max(1.0, min(entities, requests) * active_share)
    p50 = f"{p50_ms:.4g}"
    answers = parse_answers({
        "requests_per_day": f"{requests:.6g}", "peak": f"{peak:.4g}",
        "entities": str(entities), "active_per_day": f"{math.floor(active)}",
        "batch_every": f"{every_s:.6g}s", "batch_duration": f"{every_s * duration_share:.6g}s",
        "latency_p50": f"{p50}ms", "latency_p99": f"{float(p50) * tail:.6g}ms",
        "fresh": f"{fresh:.4g}"})
    scenario_from_dict(yaml.safe_load(starter_yaml(answers)))  # raises if not valid


# --------------------------------------------------------------------------------------------
# The arithmetic behind the answers, against the engine's own code
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("share", [1 / 24, 0.05, 0.07, 0.08])
def test_busiest_hour_share_matches_the_engines_rate_profile(share):
    ratio = peak_to_trough_for_share(share)
    assert peak_hour_share(ratio) == pytest.approx(share, rel=1e-9)
    arrivals = scenario_from_dict({"horizon": "1d", "workload": {"entities": 1, "arrivals": {
        "rate": "1/s", "pattern": "diurnal", "peak_to_trough": ratio, "peak_hour": 12}},
        "quality": {"fresh": 1}, "architectures": {"b": {"kind": "batch", "every": "1d",
                                                         "throughput": "1/s"}}}).workload.arrivals
    profile = RateProfile(arrivals)
    day = np.linspace(0, 86400, 864001)[:-1]
    hour = np.linspace(11.5 * 3600, 12.5 * 3600, 36001)
    assert profile(hour).mean() / 24 / profile(day).mean() == pytest.approx(share, rel=1e-4)


@pytest.mark.parametrize("entities, requests, exponent", [(200_000, 100_000, 0.8),
                                                          (200_000, 1_000_000, 1.3),
                                                          (50_000, 5_000, 0.0)])
def test_expected_active_and_head_share_match_the_exact_sums(entities, requests, exponent):
    k = np.arange(1, entities + 1, dtype=float)
    p = k ** -exponent / np.sum(k ** -exponent)
    exact = np.sum(-np.expm1(-requests * p))
    assert expected_active(entities, requests, exponent) == pytest.approx(exact, rel=1e-4)
    head = entities // 20
    assert head_request_share(entities, head, exponent) == pytest.approx(p[:head].sum(),
                                                                         rel=1e-4)


def test_zipf_exponent_gives_the_active_entities_asked_for_when_sampled():
    entities, requests, active = 100_000, 300_000, 30_000
    exponent = zipf_exponent_for(entities, requests, active)
    rng = np.random.default_rng(5)
    days = [np.unique(zipf_slots(rng, entities, exponent, rng.poisson(requests))).size
            for _ in range(3)]
    assert np.mean(days) == pytest.approx(active, rel=0.02)


def test_starter_errors_list_every_problem():
    with pytest.raises(StarterError) as info:
        parse_answers({"entities": "x", "fresh": "y"})
    assert [p.split(":")[0] for p in info.value.problems] == ["--entities", "--fresh"]


# --------------------------------------------------------------------------------------------
# predsim explain
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: p.name)
def test_explain_describes_every_section_and_every_architecture(path):
    scenario = load_scenario(path)
    text = explain(scenario)
    for heading in ("Traffic", "Entities", "Quality", "Retraining", "Drift",
                    "Latency target and value", "Architectures"):
        assert f"\n{heading}" in text
    for name, spec in scenario.architectures.items():
        assert f"\n  {name} ({spec.kind}): " in text
    assert scenario.quality.metric in text
    assert "Cost: about $" in text
    assert all(len(line) <= 100 for line in text.splitlines()[1:])


def test_explain_reflects_overrides_and_rough_costs(tmp_path):
    quick = ROOT / "scenarios" / "quickstart.yaml"
    result = CliRunner().invoke(main, ["explain", str(quick), "--set",
                                       "architectures.online.serving.replicas=8"])
    assert result.exit_code == 0, result.output
    assert "on 8 serving replicas" in result.output
    # 8 replicas x 24 h x $0.50 = $96 a day of serving
    assert "$96.00 serving" in " ".join(result.output.split())


def test_explain_describes_own_training_drift_kinds_batching_and_autoscaling():
    quick = ROOT / "scenarios" / "quickstart.yaml"
    scenario = load_scenario(quick, {
        "architectures.streaming.training": {"policy": "continual", "every": "10m",
                                             "duration": "2m"},
        "drift": [{"at": "1d", "kind": "gradual", "ramp": "6h", "quality_drop": 0.002},
                  {"at": "0s", "kind": "recurring", "period": "1d", "quality_drop": 0.001}],
        "architectures.online.serving.service_time": None,
        "architectures.online.serving.batching": {"max_batch": 8, "max_wait": "5ms",
                                                  "fixed": "8ms", "per_item": "1ms"},
        "architectures.hybrid.serving.autoscaling": {"min": 1, "max": 4,
                                                     "target_utilization": 0.6}})
    text = " ".join(explain(scenario).split())
    assert "A training run (for batch, online, hybrid) starts every week" in text
    assert "streaming has a training section of its own" in text
    assert "updated every 10m" in text
    assert "starts shifting, over 6h" in text and "a cycle of 1d begins" in text
    assert "takes up to 8 of them together" in text
    assert "An autoscaler keeps between 1 and 4 replicas" in text


def test_explain_describes_feature_classes_and_cold_starts():
    quick = ROOT / "scenarios" / "quickstart.yaml"
    scenario = load_scenario(quick, {
        "architectures.streaming.features": {"stream": {"lag": "5s", "window": "1m"},
                                             "request": {"compute": "2ms"}},
        "quality.features.request": {"without": 0.048}})
    text = " ".join(explain(scenario).split())
    assert "Batch features: as batch features age" in text
    assert "Stream features: as stream features age" in text
    assert "without features.request: here batch, online, hybrid) is worth 0.048" in text
    assert "streaming has no batch features: worth 0.04" in text
    assert "a cold start), for every architecture" in text
    assert "Request-time features are computed on the replica in every request (2ms)" in text


def test_explain_describes_slow_periods_and_counts_them_in_the_load():
    quick = ROOT / "scenarios" / "quickstart.yaml"
    plain = " ".join(explain(load_scenario(quick)).split())
    scenario = load_scenario(quick, {"architectures.online.serving.slow_periods": {
        "scope": "replica", "states": [{"slowdown": 1, "mean": "900ms"},
                                       {"slowdown": 4, "mean": "100ms"}]}})
    text = " ".join(explain(scenario).split())
    assert "each replica on its own runs 4 times slower for stretches of 100ms on average " \
           "(10.0% of the time)" in text
    speed = 0.9 + 0.1 / 4
    assert f"gets through {speed:.0%} of the work it would at full speed" in text
    busy = [float(x) for x in re.findall(r"replicas are about (\d+)% busy", text)]
    before = [float(x) for x in re.findall(r"replicas are about (\d+)% busy", plain)]
    assert busy[0] > before[0]  # online's load grew by 1 / 0.925 on its work


def test_explain_of_a_bad_file_is_bad_input(tmp_path):
    (tmp_path / "bad.yaml").write_text("horizon: soon\n")
    result = CliRunner().invoke(main, ["explain", str(tmp_path / "bad.yaml")])
    assert result.exit_code == 2
    assert "horizon" in result.output


def test_explain_without_optional_sections():
    s = scenario_from_dict({"horizon": "1h", "workload": {"entities": 10, "arrivals": {
        "rate": "1/s"}}, "quality": {"fresh": 1}, "architectures": {"only": {
            "kind": "streaming", "features": {"stream": {"window": 0}},
            "serving": {"replicas": 1, "service_time": "2s"}}}})
    text = explain(s)
    assert "never retrained" in text and "No latency target" in text
    assert "No value per outcome" in text and "only (streaming)" in text
    assert "queue grows without bound" in text  # 1/s x 2 s on one replica


# --------------------------------------------------------------------------------------------
# Shell completion
# --------------------------------------------------------------------------------------------

def complete(words: str, cwd: Path, monkeypatch) -> list[str]:
    """What bash completion offers for ``words`` (click's bash_complete protocol)."""
    monkeypatch.chdir(cwd)
    env = {"_PREDSIM_COMPLETE": "bash_complete", "COMP_WORDS": words,
           "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1))}
    result = CliRunner().invoke(main, [], prog_name="predsim", env=env)
    assert result.exit_code == 0, result.output
    return result.output.split()


def test_completion_of_commands_options_and_scenario_files(tmp_path, monkeypatch):
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "scenarios" / "shop.yaml").write_text("")
    (tmp_path / "scenarios" / "notes.txt").write_text("")
    (tmp_path / "local.yml").write_text("")
    (tmp_path / ".hidden.yaml").write_text("")
    assert "plain,explain" in complete("predsim ex", tmp_path, monkeypatch)
    assert "plain,--defaults" in complete("predsim init --def", tmp_path, monkeypatch)
    assert complete("predsim explain ", tmp_path, monkeypatch) == ["plain,local.yml",
                                                                   "plain,scenarios/"]
    assert complete("predsim explain scenarios/", tmp_path, monkeypatch) == [
        "plain,scenarios/shop.yaml"]
    # a lone folder is opened rather than offered, so bash adds no space after it
    assert complete("predsim explain sc", tmp_path, monkeypatch) == ["plain,scenarios/shop.yaml"]
    (tmp_path / "scenarios" / "more").mkdir()
    assert complete("predsim explain sc", tmp_path, monkeypatch) == [
        "plain,scenarios/more/", "plain,scenarios/shop.yaml"]
    assert complete("predsim init scenarios/s", tmp_path, monkeypatch) == [
        "plain,scenarios/shop.yaml"]


def test_the_completion_script_is_printed_by_the_installed_command():
    script = subprocess.run([str(PREDSIM)], env={**os.environ, "_PREDSIM_COMPLETE":
                                                 "bash_source"},
                            capture_output=True, text=True, timeout=120)
    assert script.returncode == 0
    assert "_PREDSIM_COMPLETE=bash_complete" in script.stdout
    assert "complete -o nosort -F" in script.stdout
