"""End-to-end tests of the ``predsim`` command, run in a subprocess as a user would run it."""

from __future__ import annotations

import json
import math
import os
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from sim.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "scenarios" / "example.yaml"
QUICKSTART = ROOT / "scenarios" / "quickstart.yaml"
PREDSIM = Path(sys.executable).parent / "predsim"
# A couple of seconds per run: a short horizon and a single replication.
SHORT = ["--set", "horizon=2h", "--set", "warmup=30m", "--replications", "1"]

PNGS = ["latency_cdf.png", "feature_age.png", "quality_over_time.png",
        "freshness_over_time.png", "serving_load.png", "cost_breakdown.png", "net_value.png"]
OUT_FILES = ["summary.csv", "timeseries.csv", "incidents.csv", "results.json",
             "scenario.resolved.yaml", *PNGS]


def predsim(*args, cwd: Path | None = None, umask: int = -1) -> subprocess.CompletedProcess:
    env = {**os.environ, "PREDSIM_NO_PROGRESS": "1"}
    env.pop("PREDSIM_DEBUG", None)
    return subprocess.run([str(PREDSIM), *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=env, timeout=120, umask=umask)


def assert_no_traceback(result: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in result.stdout
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="session", autouse=True)
def _predsim_is_installed():
    assert PREDSIM.exists(), f"console script not found at {PREDSIM}"


@pytest.fixture(scope="module")
def json_run() -> subprocess.CompletedProcess:
    """quickstart.yaml, short horizon, scenario seed, --json."""
    return predsim("run", QUICKSTART, *SHORT, "--json")


@pytest.fixture(scope="module")
def out_run(tmp_path_factory):
    """The same run with --json and --out into a fresh folder (umask 022)."""
    out = tmp_path_factory.mktemp("run") / "results"
    return predsim("run", QUICKSTART, *SHORT, "--json", "--out", out, umask=0o022), out


# --------------------------------------------------------------------------------------------
# run
# --------------------------------------------------------------------------------------------


def test_run_example_prints_a_table():
    result = predsim("run", EXAMPLE, *SHORT)
    assert result.returncode == 0, result.stderr
    assert_no_traceback(result)
    assert "architecture" in result.stdout
    for name in ("batch", "online", "streaming"):
        assert name in result.stdout
    assert "seed 7" in result.stdout   # the title says which seed produced the numbers


def test_run_json_prints_one_json_object(json_run):
    assert json_run.returncode == 0, json_run.stderr
    assert_no_traceback(json_run)
    data = json.loads(json_run.stdout)   # the whole of stdout is one JSON document
    assert isinstance(data, dict)
    assert data["seed"] == 7
    assert isinstance(data["architectures"], list)


ARCH_KEYS = {
    "name", "kind", "requests", "coverage", "latency_ms", "queue_wait_ms", "feature_age_s",
    "model_age_s", "quality", "slo_violation_rate", "wasted_prediction_rate", "utilization",
    "cost_per_day", "value_per_day", "net_value_per_day", "service_ms", "replicas_mean",
    "trainings", "trainings_per_day", "quality_lost",
}
NESTED_KEYS = {
    "latency_ms": {"mean", "p50", "p95", "p99"},
    "queue_wait_ms": {"mean", "p99"},
    "service_ms": {"mean", "p99"},
    "feature_age_s": {"mean", "p50", "p95"},
    "model_age_s": {"mean", "p50", "p95", "max"},
    "quality": {"mean"},
    "quality_lost": {"feature_staleness", "model_staleness", "drift"},
}


def _number_or_null(x) -> bool:
    return x is None or (isinstance(x, (int, float)) and not isinstance(x, bool)
                         and math.isfinite(x))


def test_run_json_architectures_have_the_documented_keys(json_run):
    data = json.loads(json_run.stdout)
    archs = data["architectures"]
    expected = load_scenario(QUICKSTART).architectures
    assert [a["name"] for a in archs] == list(expected)
    for arch in archs:
        assert ARCH_KEYS <= set(arch), ARCH_KEYS - set(arch)
        assert arch["kind"] == expected[arch["name"]].kind
        for key, inner in NESTED_KEYS.items():
            assert isinstance(arch[key], dict)
            assert inner <= set(arch[key]), (key, inner - set(arch[key]))
            assert all(_number_or_null(v) for v in arch[key].values())
        assert "total" in arch["cost_per_day"] and len(arch["cost_per_day"]) > 1
        for key in ("coverage", "slo_violation_rate", "wasted_prediction_rate", "utilization",
                    "value_per_day", "net_value_per_day"):
            assert _number_or_null(arch[key]), (key, arch[key])


def test_run_json_numbers_are_consistent(json_run):
    for arch in json.loads(json_run.stdout)["architectures"]:
        assert isinstance(arch["requests"], int) and arch["requests"] > 0
        assert 0 <= arch["coverage"] <= 1
        lat = arch["latency_ms"]
        assert 0 <= lat["p50"] <= lat["p95"] <= lat["p99"]
        assert lat["mean"] > 0
        assert 0 <= arch["slo_violation_rate"] <= 1
        assert 0 < arch["quality"]["mean"] <= 0.05 + 1e-12    # never above `fresh`
        costs = arch["cost_per_day"]
        parts = [v for k, v in costs.items() if k != "total"]
        assert all(v >= 0 for v in parts)
        assert costs["total"] == pytest.approx(sum(parts), rel=1e-9)
        assert arch["net_value_per_day"] == pytest.approx(
            arch["value_per_day"] - costs["total"], rel=1e-9, abs=1e-9)
        if arch["kind"] in ("online", "streaming", "hybrid"):
            assert 0 < arch["utilization"] < 1
    # common random numbers: every architecture sees the same requests
    assert len({a["requests"] for a in json.loads(json_run.stdout)["architectures"]}) == 1


def test_same_seed_gives_byte_identical_json(json_run, out_run):
    again, out = out_run   # a second, separate process with the same scenario and seed
    assert again.returncode == 0, again.stderr
    assert again.stdout == json_run.stdout
    assert (out / "results.json").read_text() == json_run.stdout   # (echo adds the newline)


def test_different_seed_gives_different_numbers(json_run):
    other = predsim("run", QUICKSTART, *SHORT, "--json", "--seed", "8")
    assert other.returncode == 0, other.stderr
    first, second = json.loads(json_run.stdout), json.loads(other.stdout)
    assert second["seed"] == 8
    assert [a["name"] for a in first["architectures"]] == [a["name"] for a in
                                                           second["architectures"]]
    for a, b in zip(first["architectures"], second["architectures"]):
        assert (a["requests"], a["latency_ms"]["mean"], a["quality"]["mean"]) != \
               (b["requests"], b["latency_ms"]["mean"], b["quality"]["mean"]), a["name"]


def test_out_writes_every_file(out_run):
    result, out = out_run
    assert result.returncode == 0, result.stderr
    assert_no_traceback(result)
    for name in OUT_FILES:
        assert (out / name).is_file(), name
        assert (out / name).stat().st_size > 0, name
    for name in PNGS:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def test_out_results_json_matches_stdout(out_run):
    result, out = out_run
    assert json.loads((out / "results.json").read_text()) == json.loads(result.stdout)


def test_out_summary_and_timeseries_csv(out_run):
    import pandas as pd

    _, out = out_run
    summary = pd.read_csv(out / "summary.csv")
    names = list(load_scenario(QUICKSTART).architectures)
    assert list(summary["architecture"]) == names
    timeseries = pd.read_csv(out / "timeseries.csv")
    assert set(timeseries["architecture"]) == set(names)
    assert len(timeseries) > len(names)
    results = json.loads((out / "results.json").read_text())
    for arch in results["architectures"]:
        rows = timeseries[timeseries["architecture"] == arch["name"]]
        assert rows["requests"].sum() == arch["requests"]


def test_out_resolved_scenario_records_seed_and_version(out_run):
    _, out = out_run
    text = (out / "scenario.resolved.yaml").read_text()
    data = yaml.safe_load(text)
    results = json.loads((out / "results.json").read_text())
    assert data["seed"] == 7
    assert f"# predsim_version: {results['predsim_version']}" in text  # a comment: it loads again
    assert data["horizon"] == "2h" and data["warmup"] == "30m"   # the --set values are recorded
    assert set(data["architectures"]) == {a["name"] for a in results["architectures"]}


def test_out_files_respect_the_umask(out_run):
    _, out = out_run
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert modes == {name: 0o644 for name in OUT_FILES}


# --------------------------------------------------------------------------------------------
# validate
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def validate_run() -> subprocess.CompletedProcess:
    return predsim("validate", EXAMPLE, "--set", "architectures.online.serving.replicas=5")


def test_validate_prints_the_resolved_scenario(validate_run):
    assert validate_run.returncode == 0, validate_run.stderr
    assert_no_traceback(validate_run)
    data = yaml.safe_load(validate_run.stdout)
    assert data["name"] == "quickstart" and data["seed"] == 7
    assert data["architectures"]["online"]["serving"]["replicas"] == 5   # --set applied
    assert set(data["architectures"]) == {"batch", "online", "streaming"}
    # defaults are filled in
    assert data["architectures"]["batch"]["nodes"] == 1
    assert "weekend_factor" in data["workload"]["arrivals"]


def test_validate_output_loads_again_as_the_same_scenario(validate_run, tmp_path):
    resolved = tmp_path / "resolved.yaml"
    resolved.write_text(validate_run.stdout)
    again = load_scenario(resolved)
    original = load_scenario(EXAMPLE, ["architectures.online.serving.replicas=5"])
    assert again == original


# --------------------------------------------------------------------------------------------
# bad input: exit 2, a message naming the file and key path, no traceback
# --------------------------------------------------------------------------------------------


def _typo_file(folder: Path) -> Path:
    text = EXAMPLE.read_text().replace("peak_to_trough:", "peak_to_trugh:")
    path = folder / "typo.yaml"
    path.write_text(text)
    return path


def _three_problems(folder: Path) -> Path:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["horizon"] = -1
    data["workload"]["entitys"] = 10
    data["architectures"]["online"]["serving"]["replicas"] = 0
    path = folder / "three.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _broken_yaml(folder: Path) -> Path:
    path = folder / "broken.yaml"
    path.write_text("name: x\nhorizon: 3d\nworkload:\n  entities: [1, 2\n  foo: bar\n")
    return path


# id -> (arguments, file the message must name, fragments it must contain: key path etc.).
# Every `run` also gets --out DIR: DIR must not be created or, where it already holds the
# results of an earlier run (PREEXISTING), must be left exactly as it was.
PREEXISTING = {"bad-value", "bad-set-syntax"}
EARLIER = {"summary.csv": "architecture,kind\nfrom,an earlier run\n",
           "results.json": '{"earlier": true}\n'}
BAD_INPUTS = {
    "several-problems": (lambda d: ["validate", _three_problems(d)],
                         lambda d: d / "three.yaml",
                         ["horizon", "workload.entitys", "architectures.online.serving.replicas",
                          "did you mean 'entities'", ">= 1", "> 0"]),
    "unknown-key": (lambda d: ["run", _typo_file(d), *SHORT],
                    lambda d: d / "typo.yaml",
                    ["workload.arrivals.peak_to_trugh", "did you mean 'peak_to_trough'"]),
    "bad-value": (lambda d: ["run", QUICKSTART, *SHORT,
                             "--set", "architectures.online.serving.replicas=0"],
                  lambda d: QUICKSTART, ["architectures.online.serving.replicas", ">= 1"]),
    "bad-rate": (lambda d: ["run", QUICKSTART, *SHORT, "--set", "workload.arrivals.rate=fast"],
                 lambda d: QUICKSTART, ["workload.arrivals.rate", "'fast'"]),
    "unknown-key-from-set": (lambda d: ["run", QUICKSTART, "--set", "horizonn=2h"],
                             lambda d: QUICKSTART, ["horizonn", "did you mean 'horizon'"]),
    "missing-file": (lambda d: ["run", d / "missing.yaml"],
                     lambda d: d / "missing.yaml", ["not found"]),
    "invalid-yaml": (lambda d: ["validate", _broken_yaml(d)],
                     lambda d: d / "broken.yaml", ["line 5", "YAML"]),
    "bad-set-syntax": (lambda d: ["run", QUICKSTART, *SHORT, "--set", "replicas"],
                       lambda d: QUICKSTART, ["'replicas'", "KEY=VALUE"]),
}


@pytest.fixture(scope="module")
def bad_input(tmp_path_factory):
    """Run every bad-input case once, a few at a time, and share the results between the tests
    below: ``bad_input(case)`` -> (CompletedProcess, the --out folder)."""
    folder = tmp_path_factory.mktemp("bad")
    jobs = {}
    for case, (make_args, _, _) in BAD_INPUTS.items():
        args = make_args(folder)
        out = folder / f"out-{case}"
        if case in PREEXISTING:
            out.mkdir()
            for name, text in EARLIER.items():
                (out / name).write_text(text)
        if args[0] == "run":
            args += ["--out", out]
        jobs[case] = (args, out)
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 1)) as pool:
        futures = {case: pool.submit(predsim, *args) for case, (args, _) in jobs.items()}
        results = {case: (future.result(), jobs[case][1]) for case, future in futures.items()}

    def get(case: str):
        return results[case]

    get.folder = folder
    return get


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exits_2_with_a_clear_message(bad_input, case):
    result, out = bad_input(case)
    assert_no_traceback(result)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert result.stdout == ""
    assert result.stderr.strip()
    for fragment in BAD_INPUTS[case][2]:
        assert fragment in result.stderr, (fragment, result.stderr)
    if case in PREEXISTING:     # an earlier run's results are left untouched
        assert {p.name: p.read_text() for p in out.iterdir()} == EARLIER
    else:                       # nothing written, not even the folder
        assert not out.exists()


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_message_names_the_file(bad_input, case):
    result, _ = bad_input(case)
    path = BAD_INPUTS[case][1](bad_input.folder)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines and all(line.startswith(f"{path}: ") for line in lines), result.stderr
    if case == "several-problems":   # every problem at once, one line each
        assert len(lines) == 3, lines
        for dotted in ("horizon", "workload.entitys", "architectures.online.serving.replicas"):
            assert sum(line.startswith(f"{path}: {dotted}:") for line in lines) == 1, dotted


# --------------------------------------------------------------------------------------------
# help
# --------------------------------------------------------------------------------------------


def test_run_help_mentions_every_option():
    result = predsim("run", "--help")
    assert result.returncode == 0
    for option in ("--set", "--seed", "--json", "--out"):
        assert option in result.stdout, option


def test_validate_help_mentions_set():
    result = predsim("validate", "--help")
    assert result.returncode == 0
    assert "--set" in result.stdout
    assert "KEY=VALUE" in result.stdout
