"""The preflight (sim/inputs/preflight.py): estimates, refusals, warnings and --force, before any
simulation starts. The command-line cases run in a subprocess with a timeout, which proves the
refusals come in bounded time; each is a few seconds at most."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sim.inputs import preflight
from sim.engine.run import simulate
from sim.inputs.preflight import PreflightError, check, estimate, expected_requests
from sim.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "scenarios" / "quickstart.yaml"
PREDSIM = Path(sys.executable).parent / "predsim"
BASE = ["run", "scenarios/quickstart.yaml", "--replications", "1", "--set", "horizon=30m",
        "--set", "warmup=0s"]
BUNDLED = sorted((ROOT / "scenarios").glob("*.yaml"))
# Overlapping batch jobs (each takes 50 s, one starts every 20 s) that --force can still run
# quickly: about 9,000 jobs.
OVERLAPPING = ["--set", "architectures.batch.every=20s",
               "--set", "architectures.batch.throughput=1000/s"]


def predsim(*args, timeout: float = 60, env: dict | None = None):
    """Run predsim; returns (result, seconds)."""
    full_env = {**os.environ, "PREDSIM_NO_PROGRESS": "1", **(env or {})}
    full_env.pop("PREDSIM_DEBUG", None)
    start = time.monotonic()
    result = subprocess.run([str(PREDSIM), *map(str, args)], capture_output=True, text=True,
                            cwd=ROOT, env=full_env, timeout=timeout)
    return result, time.monotonic() - start


def _refused(result, elapsed, *words):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "unexpected error" not in result.stderr
    for word in words:
        assert word in result.stderr, result.stderr
    assert elapsed < 10, f"took {elapsed:.1f} s"


# -- the cases of the issue ----------------------------------------------------------------------

def test_a_batch_job_every_millisecond_is_refused_at_once():
    result, elapsed = predsim(*BASE, "--set", "architectures.batch.every=1ms")
    _refused(result, elapsed, "architectures.batch.every", "before the previous one could "
             "finish", "at least 15s")


def test_a_horizon_of_100000_days_is_refused_for_memory_naming_what_fits():
    result, elapsed = predsim(*BASE, "--set", "horizon=100000d")
    _refused(result, elapsed, "of memory", "horizon: to fit, give a horizon of at most")


def test_a_trillion_new_entities_a_day_is_refused_for_memory_naming_the_key():
    result, elapsed = predsim(*BASE, "--set", "workload.new_entities_per_day=1e12")
    _refused(result, elapsed, "of memory", "workload.new_entities_per_day of at most")


def test_a_billion_requests_per_second_warns_with_the_time_before_simulating():
    """It fits in memory, so it runs after the warning (on stderr, --json or not); the test
    reads stderr until the warning is out, then stops it."""
    env = {**os.environ, "PREDSIM_NO_PROGRESS": "1"}
    start = time.monotonic()
    proc = subprocess.Popen([str(PREDSIM), *BASE, "--set", "workload.arrivals.rate=1e9/s",
                             "--json"], cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    timer = threading.Timer(30, proc.kill)  # should the warning never come
    timer.start()
    try:
        line = proc.stderr.readline()
    finally:
        timer.cancel()
        proc.kill()
        proc.communicate()
    assert line.startswith("Warning: scenarios/quickstart.yaml: this will take about"), line
    assert " days " in line and "trillion requests" in line
    assert time.monotonic() - start < 10


def test_a_stream_window_far_shorter_than_the_gap_between_requests_is_refused():
    s = load_scenario(QUICKSTART, ["horizon=30m", "warmup=0s",
                                   "architectures.streaming.features.stream.window=1ms"])
    est = estimate(s)
    [problem] = [p for p in est.problems]
    assert problem.kind == "events"
    assert problem.key == "architectures.streaming.features.stream.window"
    assert "per request" in problem.message and "at least 5ms" in problem.message
    with pytest.raises(PreflightError) as refused:
        check(est)
    assert not refused.value.memory
    assert check(est, force=True).warnings  # forced: it runs, and says so


def test_slow_periods_changing_speed_every_microsecond_are_refused_naming_the_key():
    slow = ("architectures.online.serving.slow_periods={states: [{slowdown: 1, mean: 1us}, "
            "{slowdown: 3, mean: 1us}]}")
    est = estimate(load_scenario(QUICKSTART, ["horizon=1d", slow]))
    [problem] = est.problems
    assert problem.kind == "events"
    assert problem.key == "architectures.online.serving.slow_periods.states[*].mean"
    assert "speed changes" in problem.message and "at least" in problem.message
    fine = slow.replace("1us", "20ms")
    assert not estimate(load_scenario(QUICKSTART, ["horizon=1d", fine])).problems


# -- normal scenarios --------------------------------------------------------------------------

def test_a_normal_run_passes_without_a_warning():
    result, elapsed = predsim(*BASE, "--json")
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr
    assert json.loads(result.stdout)["notes"] == [] or all(
        "this will take" not in n for n in json.loads(result.stdout)["notes"])


@pytest.mark.parametrize("path", BUNDLED, ids=[p.stem for p in BUNDLED])
def test_bundled_scenarios_are_never_refused(path):
    est = estimate(load_scenario(path), replications=3, parallel=2)
    assert est.problems == []
    assert est.requests > 0 and est.bytes > 0 and est.seconds > 0


@pytest.mark.parametrize("overrides", [
    ["horizon=30m", "warmup=0s"],
    ["horizon=2h", "warmup=30m", "workload.arrivals.pattern=weekly"],
    ["horizon=1h", "warmup=0s", "workload.arrivals.pattern=constant",
     "workload.arrivals.bursts=[{at: 10m, duration: 20m, multiplier: 3}]"],
])
def test_the_request_estimate_is_within_a_few_percent_of_a_short_run(overrides):
    s = load_scenario(QUICKSTART, overrides + ["architectures={batch: {kind: batch, every: 24h, "
                                               "throughput: 5000/s}}"])
    simulated = []
    simulate(s, observe=lambda name, out: simulated.append(out.t_s.size))
    est = estimate(s)
    assert est.requests == pytest.approx(sum(simulated), rel=0.03)
    assert expected_requests(s) == est.requests


# -- memory --------------------------------------------------------------------------------------

def test_memory_refusal_when_the_estimate_exceeds_available_memory(monkeypatch):
    s = load_scenario(QUICKSTART, ["horizon=30m", "warmup=0s"])
    assert not estimate(s).problems
    monkeypatch.setattr(preflight, "available_bytes", lambda: 50 * 2 ** 20)
    est = estimate(s)
    assert [p.kind for p in est.problems] == ["memory"]
    assert "50 MiB available" in est.problems[0].message
    for force in (False, True):  # a memory refusal is final
        with pytest.raises(PreflightError) as refused:
            check(est, force=force)
        assert refused.value.memory


def test_the_memory_estimate_counts_the_bucket_histograms_per_architecture():
    s = load_scenario(QUICKSTART, ["horizon=30d", "warmup=0s", "timeseries_bucket=1m"])
    parts = estimate(s).memory_parts
    buckets = 30 * 24 * 60
    assert parts["time-series buckets"] == pytest.approx(
        len(s.architectures) * buckets * preflight.BYTES_PER_BUCKET)
    assert preflight.BYTES_PER_BUCKET > preflight.N_BINS * 8


def test_a_memory_refusal_is_final_even_with_force_on_the_command_line():
    for extra in ([], ["--force"]):
        result, elapsed = predsim(*BASE, *extra, env={"PREDSIM_AVAILABLE_MEMORY": "50M"})
        _refused(result, elapsed, "of memory", "50 MiB available")


# -- --force and the JSON notes ------------------------------------------------------------------

def test_force_runs_past_an_absurd_event_count_and_notes_it():
    result, elapsed = predsim(*BASE, *OVERLAPPING)
    _refused(result, elapsed, "architectures.batch.every is 20s", "--force runs it anyway")
    result, _ = predsim(*BASE, *OVERLAPPING, "--force", "--json")
    assert result.returncode == 0, result.stderr
    assert "Running it anyway (--force)" in result.stderr
    notes = json.loads(result.stdout)["notes"]
    assert any("Running it anyway (--force)" in n for n in notes)


def test_the_json_notes_carry_the_long_run_warning(monkeypatch):
    from click.testing import CliRunner

    from sim.cli.main import main

    monkeypatch.setattr(preflight, "WARN_AFTER_S", 0.0)
    monkeypatch.setenv("PREDSIM_NO_PROGRESS", "1")
    result = CliRunner().invoke(main, [*BASE[:4], "--set", "horizon=10m", "--set",
                                       "warmup=0s", "--workers", "1", "--json"])
    assert result.exit_code == 0, result.output
    assert "Warning: scenarios/quickstart.yaml: this will take about" in result.stderr
    notes = json.loads(result.stdout)["notes"]
    assert any("this will take about" in n for n in notes)


SIMULATING = ["run", "report", "sweep", "optimize", "capacity", "retrain-advice", "abtest"]
HUGE = ["--set", "horizon=100000d"]


@pytest.mark.parametrize("args", [
    ["sweep", "--grid", "architectures.batch.every=24h,1ms", "--set", "horizon=30m",
     "--set", "warmup=0s", "--out", "OUT"],
    ["report", *HUGE, "--out", "OUT"],
    ["abtest", *HUGE],
    ["retrain-advice", *HUGE],
    ["capacity", "--arch", "online", *HUGE],
    ["optimize", "--vary", "architectures.online.serving.replicas=1:8", *HUGE],
], ids=lambda args: args[0])
def test_every_simulating_command_refuses_before_simulating(args, tmp_path):
    from sim.cli.main import main

    assert "force" in [p.name for p in main.commands[args[0]].params]
    out = tmp_path / "out"
    args = [str(out) if a == "OUT" else a for a in args]
    result, elapsed = predsim(args[0], "scenarios/quickstart.yaml", *args[1:])
    _refused(result, elapsed, "scenarios/quickstart.yaml: ")
    points = out / "points"  # a sweep writes its manifest first, never a point
    assert not points.exists() or not any(points.iterdir())
    assert not (out / "report.html").exists()


def test_the_commands_that_simulate_all_take_force():
    from sim.cli.main import main

    assert all("force" in [p.name for p in main.commands[name].params] for name in SIMULATING)


# -- the progress bar ----------------------------------------------------------------------------

def test_progress_shows_time_remaining_on_a_terminal_and_nothing_otherwise(monkeypatch):
    import sim.cli.main as cli

    seen = []
    assert cli._with_progress(lambda progress: seen.append(progress) or 1, "x") == 1
    assert seen == [None]  # pytest's stderr is not a terminal: no bar, no callback

    columns = []

    class FakeProgress:
        def __init__(self, *cols, **kwargs):
            columns.extend(type(c).__name__ for c in cols)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def add_task(self, *args, **kwargs):
            return 0

        def update(self, *args, **kwargs):
            pass

    monkeypatch.delenv("PREDSIM_NO_PROGRESS", raising=False)
    monkeypatch.setattr(cli, "Progress", FakeProgress)
    monkeypatch.setattr(cli.Console, "is_terminal", property(lambda self: True))
    seen.clear()
    cli._with_progress(lambda progress: seen.append(progress), "x")
    assert callable(seen[0]) and "TimeRemainingColumn" in columns


def test_a_markov_modulated_rate_is_timed_at_its_busiest_state():
    # Thinning draws candidates at the busiest state's rate over the whole run: a state a
    # million times busier than a nearly permanent idle one makes 15,000 requests cost days.
    s = load_scenario(QUICKSTART, ["horizon=10m", "warmup=0s", "workload.arrivals.mmpp="
                                   "{multipliers: [1000000, 0], mean_sojourn: [1m, 365000d]}"])
    quiet = load_scenario(QUICKSTART, ["horizon=10m", "warmup=0s"])
    est = estimate(s)
    assert est.requests == pytest.approx(estimate(quiet).requests, rel=0.05)
    assert est.seconds > 3600
    assert any("workload.arrivals.mmpp" in w and "busiest state" in w for w in est.warnings)
