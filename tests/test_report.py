"""The manager's report (sim/report/manager_report.py, `predsim report`): the recommendation, the
tables, the breakeven, the sensitivity, the files and bad input."""

from __future__ import annotations

import base64
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import sim
from sim.report import manager_report as mr
from tests.conftest import make_scenario

ROOT = Path(__file__).resolve().parents[1]
PREDSIM = Path(sys.executable).parent / "predsim"
QUICKSTART = ROOT / "scenarios" / "quickstart.yaml"
# A fixed seed (the scenario's, 7) and a short horizon keep the whole report under ~20 s.
SHORT = ["--set", "horizon=1h", "--set", "warmup=15m"]
PNGS = ["net_value.png", "latency_cdf.png", "feature_age.png", "quality_over_time.png",
        "cost_breakdown.png", "breakeven.png", "tornado.png"]

_RUNS: dict[str, tuple] = {}


def report_run(tmp_path_factory):
    """`predsim report` on quickstart.yaml, short horizon, once per test session (shared with
    tests/test_report_browser.py)."""
    if "quickstart" not in _RUNS:
        out = tmp_path_factory.mktemp("manager-report") / "report"
        result = predsim("report", QUICKSTART, *SHORT, "--out", out)
        _RUNS["quickstart"] = (result, out)
    return _RUNS["quickstart"]


@pytest.fixture(scope="module")
def cli_report(tmp_path_factory):
    return report_run(tmp_path_factory)


def predsim(*args) -> subprocess.CompletedProcess:
    """Run the console script as a user would, without a progress bar."""
    env = {**os.environ, "PREDSIM_NO_PROGRESS": "1"}
    env.pop("PREDSIM_DEBUG", None)
    return subprocess.run([str(PREDSIM), *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)


def assert_no_traceback(result: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in result.stdout + result.stderr


def _section(markdown: str, title: str) -> str:
    """The text of a '## title' section, up to the next '## ' heading."""
    start = markdown.index(f"## {title}")
    end = markdown.find("\n## ", start + 3)
    return markdown[start:end if end >= 0 else None]


NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")


# --------------------------------------------------------------------------------------------
# The command and its files
# --------------------------------------------------------------------------------------------

def test_report_writes_html_markdown_and_pngs(cli_report):
    result, out = cli_report
    assert result.returncode == 0, result.stderr
    assert_no_traceback(result)
    for name in ["report.html", "report.md", *PNGS]:
        assert (out / name).is_file(), name
    assert "report.html" in result.stdout
    assert not list(out.glob(".*.tmp")), "a temporary file was left behind"


def test_markdown_images_are_the_pngs_next_to_it(cli_report):
    _, out = cli_report
    markdown = (out / "report.md").read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert sorted(images) == sorted(PNGS)
    for name in images:
        assert (out / name).read_bytes().startswith(b"\x89PNG")


def test_html_is_self_contained(cli_report):
    _, out = cli_report
    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page and "<link" not in page
    assert "http://" not in page and "https://" not in page   # nothing to fetch, opens offline
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) == len(PNGS)
    embedded = []
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        embedded.append(base64.b64decode(src.split(",", 1)[1]))
    # The same images as the PNG files, byte for byte.
    assert sorted(embedded) == sorted((out / name).read_bytes() for name in PNGS)


def test_report_has_every_section(cli_report):
    _, out = cli_report
    markdown = (out / "report.md").read_text()
    for title in ("Comparison", "Latency, freshness and quality", "How robust is the decision?",
                  "Breakeven", "Sensitivity", "The A/B test", "Assumptions"):
        assert f"## {title}" in markdown, title
    robust = _section(markdown, "How robust is the decision?")
    assert "shorter runs" in robust and "1 replication" in robust
    money = markdown[markdown.index("Money per day"):]
    for header in ("serving", "stream processing", "training", "total cost", "value",
                   "net value \\$/day", "net value \\$/month"):
        assert header in money.split("\n\n")[1], header
    service = markdown[markdown.index("*Service"):]
    for header in ("ctr (mean)", "coverage", "feature age", "p50 latency", "p99 latency",
                   "over the SLO", "wasted predictions"):
        assert header in service.split("\n\n")[1], header
    assert "Two-proportion z-test" in _section(markdown, "The A/B test")
    assert "requests per arm" in _section(markdown, "The A/B test")
    assumptions = _section(markdown, "Assumptions")
    assert "| workload.arrivals.rate | 20/s |" in assumptions
    assert "| horizon | 1h | set on the command line (--set) |" in assumptions
    # The comments of the scenario file become the notes.
    assert "users the requests are about" in assumptions


def test_every_number_of_the_recommendation_is_in_the_tables(cli_report):
    result, out = cli_report
    markdown = (out / "report.md").read_text().replace("\\$", "$")
    sentence = re.search(r"^\*\*(.+)\*\*$", markdown, re.M).group(1)
    assert sentence in result.stdout
    assert sentence.startswith("Move from nightly batch prediction to streaming prediction:")
    tables = _section(markdown, "Comparison")
    numbers = NUMBER.findall(sentence)
    assert len(numbers) >= 7   # uplift and its CI, net value and its CI, p99, the SLO
    for number in numbers:
        assert re.search(rf"(?<![\d.,]){re.escape(number)}(?![\d,]|\.\d)", tables), number


def test_the_report_repeats_a_run_with_the_same_seed(cli_report):
    """Same scenario, same seed: the numbers of the report are those of sim.run in-process."""
    _, out = cli_report
    scenario = sim.load_scenario(QUICKSTART, {"horizon": "1h", "warmup": "15m"})
    recommendation = mr.recommend(sim.run(scenario, 3))
    markdown = (out / "report.md").read_text().replace("\\$", "$")
    assert f"**{recommendation.sentence}**" in markdown
    assert recommendation.choice == "streaming" and recommendation.baseline == "batch"


# --------------------------------------------------------------------------------------------
# The recommendation sentence
# --------------------------------------------------------------------------------------------

def _online(replicas=2):
    return {"kind": "online", "features": {"batch": {"every": "1d"}},
            "serving": {"replicas": replicas,
                        "service_time": {"exponential": {"mean": "10ms"}}}}


def test_no_detectable_difference_is_said_plainly():
    # Two identical architectures on the same requests: every paired difference is exactly 0.
    scenario = make_scenario({"current": _online(), "candidate": _online()},
                             costs={"replica_hour": 0.5},
                             business={"value_per_outcome": 1.0})
    results = sim.run(scenario, 3, baseline="current")
    rec = mr.recommend(results)
    assert rec.choice is None and rec.compared == "candidate"
    assert rec.sentence.startswith("Stay with online prediction (current) for now: no "
                                   "alternative is detectably better on net value with 3 "
                                   "replications")
    assert "$0.00/day net (95% CI $0.00–$0.00)" in rec.sentence
    table = mr.ManagerReport(results, rec, mr.Analysis()).difference_table()
    assert table.rows[0][-1] == "no detectable difference"


def test_an_alternative_that_loses_is_not_recommended():
    # candidate has the same predictions and four times the replicas: it only costs more.
    scenario = make_scenario({"current": _online(1), "candidate": _online(4)},
                             costs={"replica_hour": 5.0},
                             business={"value_per_outcome": 0.0})
    rec = mr.recommend(sim.run(scenario, 3, baseline="current"))
    assert rec.choice is None
    assert rec.sentence.startswith("Stay with online prediction (current): every alternative "
                                   "loses net value")


def test_a_single_replication_recommends_nothing():
    scenario = make_scenario({"current": _online(), "candidate": _online()})
    rec = mr.recommend(sim.run(scenario, 1, baseline="current"))
    assert rec.choice is None and "single replication" in rec.sentence


# --------------------------------------------------------------------------------------------
# Breakeven and sensitivity on a scenario whose answer is known
# --------------------------------------------------------------------------------------------

def _flip_scenario():
    """Batch vs streaming where the flip is known: streaming's predictions are worth
    $0.02 more per request (stream features seconds old, where batch has none: without them
    ctr is the curve's floor, 0.03), and it costs $1,728/day more (one stream node at $72/h);
    nothing else differs. Flip: 1,728 / (0.02 x 86,400) = 1.00 requests/s."""
    return make_scenario(
        {"batch": {"kind": "batch", "every": "1d", "start_at": "12h", "throughput": "1000/s"},
         "streaming": {"kind": "streaming",
                       "features": {"stream": {"lag": "1s", "window": "10s"}},
                       "serving": {"replicas": 1, "service_time": "1ms"}}},
        horizon="1h", warmup="10m",
        workload={"entities": 1000, "arrivals": {"rate": "4/s"}},
        quality={"metric": "ctr", "fresh": 0.05, "fallback": 0.02,
                 "features": {"stream": {"staleness": {"exponential": {"half_life": "1h",
                                                                       "floor": 0.03}}}}},
        costs={"stream_node_hour": 72.0}, business={"value_per_outcome": 1.0})


def test_breakeven_finds_the_known_flip():
    scenario = _flip_scenario()
    analysis = mr.Analysis(horizon_s=scenario.horizon)
    with mr._Runner(1, None, 10) as runner:
        found = mr.breakeven(scenario, "streaming", "batch", analysis, runner)
    assert len(found.flips) == 1
    rate, below, above = found.flips[0]
    assert (below, above) == ("batch", "streaming")
    assert rate == pytest.approx(1.00, rel=0.1)
    assert found.flip_per_s == rate
    text = " ".join(found.sentences())
    assert "The decision flips at about" in text
    # Batch stores a prediction per entity: the share of active entities is reported.
    assert set(found.active_share) == {4.0, rate}
    assert "of entities make a request on a given day" in text


def test_breakeven_says_when_there_is_no_flip():
    scenario = _flip_scenario()
    analysis = mr.Analysis(horizon_s=scenario.horizon, breakeven_factor=2.0)  # 2/s to 8/s
    with mr._Runner(1, None, 10) as runner:
        found = mr.breakeven(scenario, "streaming", "batch", analysis, runner)
    assert found.flips == [] and found.flip_per_s is None
    assert found.sentences()[0].startswith("No flip between 2/s")


def test_active_share_against_direct_sums():
    scenario = _flip_scenario()   # uniform popularity, 1,000 entities
    assert mr.active_share(scenario, 0.01) == pytest.approx(1 - math.exp(-864 / 1000))
    zipf = sim.scenario_from_dict({**scenario.to_yaml_dict(),
                                   "workload": {"entities": 500, "popularity": {"zipf": 1.2},
                                                "arrivals": {"rate": "1/min"}}})
    p = np.arange(1, 501, dtype=float) ** -1.2
    p /= p.sum()
    assert mr.active_share(zipf, 1 / 60) == pytest.approx(np.mean(1 - np.exp(-1440 * p)))


def test_sensitivity_is_linear_where_the_model_is():
    """Value is linear in value_per_outcome and cost in stream_node_hour: +-20% of either moves
    the difference by exactly 20% of the value difference or of the stream cost."""
    scenario = _flip_scenario()
    analysis = mr.Analysis(horizon_s=scenario.horizon)
    inputs = [i for i in mr.numeric_inputs(scenario, ("streaming", "batch"))
              if i.label in ("business.value_per_outcome", "costs.stream_node_hour",
                             "streaming.serving.replicas")]
    assert len(inputs) == 3
    with mr._Runner(1, None, 10) as runner:
        found = mr.sensitivity(scenario, "streaming", "batch", analysis, runner, inputs)
    rows = found.frame.set_index("label")
    value = rows.loc["business.value_per_outcome"]
    gain = value["high_usd"] - found.base_usd            # 20% of the value difference
    assert value["low_usd"] - found.base_usd == pytest.approx(-gain, rel=1e-9)
    cost = rows.loc["costs.stream_node_hour"]
    assert cost["low_usd"] - found.base_usd == pytest.approx(0.2 * 1728, rel=1e-6)
    assert cost["high_usd"] - found.base_usd == pytest.approx(-0.2 * 1728, rel=1e-6)
    # Whole numbers move by one when 20% would not change them (1 replica -> 2; 0 is invalid).
    replicas = rows.loc["streaming.serving.replicas"]
    assert replicas["high_label"] == "2" and math.isnan(replicas["low_usd"])
    assert list(found.frame["effect_usd"]) == sorted(found.frame["effect_usd"], reverse=True)


def test_numeric_inputs_leave_out_instants_and_other_architectures():
    scenario = sim.load_scenario(QUICKSTART)
    labels = {i.label for i in mr.numeric_inputs(scenario, ("streaming", "batch"))}
    assert {"workload.arrivals.rate", "quality.fresh", "streaming.serving.service_time",
            "batch.every", "costs.stream_node_hour", "drift[0].quality_drop"} <= labels
    assert not any(label.startswith(("online.", "hybrid.")) for label in labels)
    assert not any(label.endswith(("start_at", "peak_hour", ".at", "seed", "horizon"))
                   for label in labels)


# --------------------------------------------------------------------------------------------
# Bad input: exit code 2, a message naming the file or option, no traceback
# --------------------------------------------------------------------------------------------

def test_bad_input_exits_2_with_a_clear_message(tmp_path):
    """In-process through click (fast); the console script itself is checked below."""
    from click.testing import CliRunner

    from sim.cli.main import main

    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    cases = [
        (["--set", "architectures.online.serving.replicas=0"],
         "architectures.online.serving.replicas: must be >= 1"),
        (["--baseline", "nope"], "--baseline 'nope' is not an architecture"),
        (["--analysis-horizon", "soon"], "--analysis-horizon: expected a duration"),
        (["--out", str(a_file)], f"--out {a_file}: exists and is not a folder"),
    ]
    for extra, message in cases:
        out = tmp_path / "out"
        result = CliRunner().invoke(main, ["report", str(QUICKSTART), "--out", str(out), *extra])
        assert result.exit_code == 2, (extra, result.output)
        assert message in result.stderr, (message, result.stderr)
        assert not out.exists()   # nothing written on bad input
    result = CliRunner().invoke(main, ["report", str(QUICKSTART)])
    assert result.exit_code == 2 and "Missing option '--out'" in result.stderr


def test_console_script_bad_scenario_exits_2(tmp_path):
    result = predsim("report", "scenarios/missing.yaml", "--out", tmp_path / "r")
    assert result.returncode == 2
    assert result.stderr.strip() == "scenarios/missing.yaml: file not found"
    assert_no_traceback(result)
