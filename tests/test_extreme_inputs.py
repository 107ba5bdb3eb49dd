"""Extreme and mutated inputs never crash predsim (issue 17, parts 2 and 3).

A corpus of well-formed extreme scenarios and random mutations of the bundled ones is run
against every command. Each must end with exit 0 (it ran) or exit 2 (bad input, with a message),
never 'unexpected error' or a traceback; every JSON it prints is strict JSON (no NaN or
Infinity tokens); and each run ends in bounded time.

The mutations put values around the schema's bounds (0, tiny, negative, huge, huge integers,
nan and inf in every spelling, wrong types, empty lists and sections, tiny durations) at random
key paths of ``scenarios/*.yaml``. Runs are kept short: horizon 10m, no warm-up, one
replication, small populations and rates. Sizes that make a run huge (horizon, warm-up,
entities, new entities per day, arrival rate, schedules every millisecond) belong to the
preflight check, not to this corpus, so they are not mutated here.

Hypothesis runs derandomized (the same examples on every run) so CI is deterministic;
``PREDSIM_FUZZ_EXAMPLES=N`` runs more examples when hunting for new failures.
"""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.cli.main import main

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))
PREDSIM = [sys.executable, "-m", "sim.cli.main"]
EXAMPLES = int(os.environ.get("PREDSIM_FUZZ_EXAMPLES", "0"))
TIME_LIMIT_S = 60.0  # one command on one short scenario; typical runs take well under 2 s

# Keys whose values set the size of a run (the preflight's concern, not this corpus's):
# never mutated, and forced small below.
SIZE_KEYS = {"horizon", "warmup", "entities", "new_entities_per_day", "rate",
             "timeseries_bucket"}
# Keys that set how often something happens: a tiny value means a huge number of events
# (also the preflight's concern), so these are not given tiny positive values.
EVERY_KEYS = {"every", "window", "check_every", "period", "ramp", "full_retrain_every",
              "mean_sojourn", "lag", "label_delay", "max_wait", "loop"}

EXTREMES = [
    0, 0.0, 1e-9, -1, -1e-9, -1e308, 1e308, 1.7976931348623157e308, 10 ** 30, 2 ** 63,
    -(2 ** 63), 2 ** 64 + 1, float("nan"), float("inf"), float("-inf"), "nan", "NaN", ".nan",
    "inf", "-inf", ".inf", "Infinity", "1e308", "1e400", "-1e400", "abc", "", True, False,
    None, [], {}, [1, 2], {"x": 1}, "0s", "1ms", "1us", "-1s", "1e308s", "1e308d", "1e300w",
    "nans", "infs", "1e308/s", "1e308k", "1e-300", 5e-324, "0.0", "1e9B",
]
TINY = {1e-9, "1ms", "1us", 5e-324, "1e-300", "1e-9"}


def _short(raw: dict) -> dict:
    """The scenario made short: 10 minutes, no warm-up, at most 2,000 entities and 20/s."""
    data = copy.deepcopy(raw)
    data["horizon"] = "10m"
    data["warmup"] = "0s"
    data.pop("timeseries_bucket", None)
    work = data.get("workload")
    if isinstance(work, dict):
        if isinstance(work.get("entities"), (int, float, str)):
            work["entities"] = 2000
        if "new_entities_per_day" in work:
            work["new_entities_per_day"] = 100
        arrivals = work.get("arrivals")
        if isinstance(arrivals, dict) and "rate" in arrivals:
            arrivals["rate"] = "5/s"
    return data


BUNDLED = {path.name: _short(yaml.safe_load(path.read_text())) for path in SCENARIOS}


def _paths(node, prefix=()):
    """Every key path of a parsed scenario (sections and leaves, list items included)."""
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        return
    for key, child in items:
        path = prefix + (key,)
        yield path
        yield from _paths(child, path)


def _mutable(path) -> bool:
    names = {p for p in path if isinstance(p, str)}
    return not names & SIZE_KEYS and path != ("name",) and path[0] != "description"


PATHS = {name: [p for p in _paths(raw) if _mutable(p)] for name, raw in BUNDLED.items()}


def _set(data, path, value):
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


NUMBERS = [0, 1e-9, -1, 0.5, 1, 2, 1e6, 1e12, 1.0000001e12, 1e15, 1e300, 1e308,
           1.7976931348623157e308, 2 ** 53, 2 ** 63, 10 ** 30, 5e-324, -1e308]
DURATIONS = ["0s", "0.001us", "1e-10s", "2ms", "1h", "1000d", "365250d", "365251d", "1e308s",
             "1e300w", "-1d", 1e300]


def _leaf(data, path):
    node = data
    for key in path:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return None  # an earlier change replaced a section on this path
    return node


def _values(original):
    """Extremes of the original's kind (numbers for numbers, durations for durations) most of
    the time, anything else sometimes."""
    anything = st.sampled_from(EXTREMES) | st.floats() | st.integers(-(2 ** 70), 2 ** 70)
    if isinstance(original, bool):
        return anything
    if isinstance(original, (int, float)):
        return st.sampled_from(NUMBERS) | st.sampled_from(NUMBERS).map(
            lambda x: x if isinstance(x, int) else x * 0.999) | anything
    if isinstance(original, str) and original[:1].isdigit():
        return st.sampled_from(DURATIONS) | anything
    return anything


@st.composite
def mutated(draw):
    """A bundled scenario with one to three values replaced by extreme ones."""
    name = draw(st.sampled_from(sorted(BUNDLED)))
    data = copy.deepcopy(BUNDLED[name])
    changes = []
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS[name]))
        value = draw(_values(_leaf(data, path)))
        if path[-1] in EVERY_KEYS or any(p in EVERY_KEYS for p in path if isinstance(p, str)):
            if value in TINY or value in ("0.001us", "1e-10s", "2ms") or (
                    isinstance(value, float) and 0 < value < 1):
                continue
        try:
            _set(data, path, value)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change replaced a section on this path
        changes.append((".".join(map(str, path)), value))
    return name, data, changes


def _write(tmp_path: Path, data) -> Path:
    path = tmp_path / "scenario.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _strict_json(text: str):
    """Parse JSON refusing NaN and Infinity, which are not JSON."""
    def refuse(token):
        raise AssertionError(f"non-finite number {token} in JSON output")
    return json.loads(text, parse_constant=refuse)


def _check(result, context, as_json=False):
    output = result.output
    assert result.exit_code in (0, 2), (
        f"{context}: exit {result.exit_code}\n{output}\n{result.exception!r}")
    if result.exit_code == 2:
        assert output.strip(), f"{context}: exit 2 without a message"
    assert "unexpected error" not in output and "Traceback" not in output, (
        f"{context}:\n{output}")
    if as_json and result.exit_code == 0:
        _strict_json(result.stdout)


def _invoke(args, context, as_json=False):
    start = time.monotonic()
    result = CliRunner().invoke(main, [str(a) for a in args])
    elapsed = time.monotonic() - start
    _check(result, context, as_json)
    assert elapsed < TIME_LIMIT_S, f"{context}: took {elapsed:.0f} s"
    return result


_SETTINGS = settings(max_examples=EXAMPLES or 40, deadline=None, derandomize=True,
                     suppress_health_check=list(HealthCheck), database=None)


@_SETTINGS
@given(case=mutated())
def test_mutated_bundled_scenarios_run_validate_explain(tmp_path_factory, case):
    name, data, changes = case
    path = _write(tmp_path_factory.mktemp("mut"), data)
    context = f"{name} with {changes}"
    _invoke(["validate", path], f"validate {context}")
    _invoke(["explain", path], f"explain {context}")
    _invoke(["run", path, "--replications", 1, "--workers", 1, "--json"], f"run {context}",
            as_json=True)


QUICK = ["--set", "horizon=10m", "--set", "warmup=0s", "--set", "workload.arrivals.rate=5/s",
         "--set", "workload.entities=2000"]
RUN = ["run", ROOT / "scenarios" / "quickstart.yaml", "--replications", 1, "--workers", 1,
       "--json", *QUICK]


@pytest.mark.parametrize("key", ["quality.fresh", "business.value_per_outcome",
                                 "costs.replica_hour", "workload.arrivals.peak_to_trough",
                                 "architectures.online.serving.timeout",
                                 "quality.model_staleness.linear.per_day", "seed"])
@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "nan", "inf", "1e400", "1e308"])
def test_non_finite_and_overflowing_values_are_refused_with_the_key(key, value):
    """The issue's failure (quality.fresh=1e308 printed 'unexpected error ... not JSON
    compliant: inf'): now a clear error naming the key, at validation."""
    result = _invoke([*RUN, "--set", f"{key}={value}"], f"{key}={value}")
    assert result.exit_code == 2
    assert key in result.output


def test_the_bounds_give_their_reason():
    result = _invoke([*RUN, "--set", "quality.fresh=1e308", "--set",
                      "business.value_per_outcome=1e308", "--set", "quality.fallback=.nan"],
                     "over the bounds")
    assert result.exit_code == 2
    lines = result.output.splitlines()
    assert any("quality.fresh: expected at most 1e12" in line and "finite" in line
               for line in lines), result.output
    assert any("business.value_per_outcome: expected at most 1e12 US$" in line
               for line in lines), result.output
    assert any("quality.fallback: expected a finite number" in line for line in lines)


def test_values_at_the_bounds_run_to_finite_json():
    result = _invoke([*RUN, "--set", "quality.fresh=1e12", "--set", "quality.fallback=0",
                      "--set", "quality.features=null", "--set", "quality.model_staleness=null",
                      "--set", "drift=[]", "--set", "business.value_per_outcome=1e12",
                      *[a for c in ("replica_hour", "batch_node_hour", "stream_node_hour",
                                    "training_run", "training_node_hour")
                        for a in ("--set", f"costs.{c}=1e12")]], "at the bounds")
    assert result.exit_code == 0, result.output
    data = _strict_json(result.stdout)
    assert all(math.isfinite(a["value_per_day"]) and a["value_per_day"] > 1e12
               for a in data["architectures"])


# Well-formed scenarios at the edges of the schema: each runs (exit 0, finite JSON) or is
# refused with a message (exit 2), in bounded time.
WELL_FORMED_EXTREMES = [
    ["quality.fresh=1e-9", "quality.fallback=0", "quality.features=null",
     "quality.model_staleness=null", "drift=[]"],
    ["quality.model_staleness={linear: {per_day: -1e12, floor: 0}}"],
    ["quality.model_staleness={table: [[0s, 0.05], [365250d, 0]]}"],
    ["quality.features.stream.staleness={table: [[0s, 1e12], [0.001us, -1e12]]}"],
    ["quality.features.batch.staleness={exponential: {half_life: 0.001us, floor: 0}}"],
    ["workload.popularity.zipf=1e300"],
    # (a burst of 1e6 x the rate is a size the preflight judges; 1e3 keeps this run short)
    ["workload.arrivals.bursts=[{at: 1m, duration: 1m, multiplier: 1e3}]"],
    ["workload.arrivals.bursts=[{at: 1m, duration: 1m, multiplier: 1e-300}]"],
    ["workload.arrivals.pattern=weekly", "workload.arrivals.weekend_factor=1e-300"],
    ["workload.arrivals.pattern=constant", "workload.arrivals.profile=" + str([1e6] * 24)],
    ["workload.arrivals.pattern=constant",
     "workload.arrivals.profile=" + str([1e-300] + [0] * 23)],
    ["workload.arrivals.mmpp={multipliers: [1e6, 0], mean_sojourn: [1m, 1m]}"],
    ["architectures.online.serving.service_time={lognormal: {median: 0.001us, p99: 365250d}}"],
    ["architectures.online.serving.service_time={gamma: {mean: 0.001us, cv: 100}}"],
    ["architectures.online.serving.service_time={percentiles: {p0.001: 0.001us, "
     "p99.999: 365250d}}"],
    ["architectures.online.serving.timeout=0.001us", "slo.latency_p99=0.001us"],
    ["slo.latency_p99=365250d"],
    ["architectures.online.serving.replicas=1000000"],
    ["architectures.online.feature_lookup={exponential: {mean: 365250d}}"],
    ["architectures.batch.throughput=1e300/s"],
    ["architectures.batch.throughput=1/day", "architectures.batch.overhead=365250d"],
    ["drift=[{at: 1m, quality_drop: 1e12}]"],
    ["drift=[{at: 1m, quality_drop: 0.01, kind: gradual, ramp: 365250d}]"],
    ["seed=99999999999999999999999"],
    ["business.latency_penalty.per_100ms=1e300"],
    ["training={policy: trigger, trigger: {window: 1m, drop: 0.999999, min_labels: 9e15}}"],
    ["training={every: 1d, throughput: 1e300/s, data_window: 0.001us}"],
    ["training={every: 1h, mode: stateful, throughput: 1/s, examples_per_day: 0}"],
    ["workload.new_entities_per_day=1", "workload.new_entities={first_week_share: 1e-300}"],
    ["architectures.hybrid={kind: hybrid, head_share: 1e-300, every: 1d, throughput: 1/s, "
     "features: {batch: {every: 1d}}, serving: {replicas: 1, service_time: 1ms}}"],
]


@pytest.mark.parametrize("changes", WELL_FORMED_EXTREMES, ids=lambda c: c[0][:60])
def test_well_formed_extreme_scenarios(changes):
    args = [a for change in changes for a in ("--set", change)]
    _invoke([*RUN, *args], f"run {changes}", as_json=True)


def test_a_result_that_overflows_is_a_clear_error(monkeypatch):
    """The safety net: an infinite number that validation did not foresee is refused naming
    the metric (exit 2), never printed as an Infinity token or a crash in json.dumps."""
    import sim
    from sim.results.results import NonFiniteResult, check_finite

    spec = sim.load_scenario(ROOT / "scenarios" / "quickstart.yaml",
                             ["horizon=10m", "warmup=0s"])
    results = sim.run(spec, 1, workers=1)
    results.summary.loc[1, "value_usd_per_day"] = math.inf
    name = results.summary.loc[1, "architecture"]
    with pytest.raises(NonFiniteResult, match=rf"architectures\[{name}\]\.value_per_day"):
        results.to_dict()
    assert check_finite({"a": [1.0, None, float("nan")]}) == {"a": [1.0, None, None]}
    monkeypatch.setattr(sim, "run", lambda *a, **k: results)
    result = _invoke(RUN, "an infinite result")
    assert result.exit_code == 2
    assert f"architectures[{name}].value_per_day is inf" in result.output


def _cli(args, tmp_path, context):
    """One command in its own process, through the console-script entry."""
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from sim.cli.main import entry; sys.argv[0] = 'predsim'; "
         "entry()", *map(str, args)], cwd=tmp_path, capture_output=True, text=True,
        env={**os.environ, "PREDSIM_NO_PROGRESS": "1"}, timeout=TIME_LIMIT_S * 3)
    elapsed = time.monotonic() - start
    output = proc.stdout + proc.stderr
    assert proc.returncode in (0, 2), f"{context}: exit {proc.returncode}\n{output}"
    if proc.returncode == 2:
        assert proc.stderr.strip(), f"{context}: exit 2 without a message"
    assert "unexpected error" not in output and "Traceback" not in output, f"{context}\n{output}"
    assert elapsed < TIME_LIMIT_S * 2, f"{context}: took {elapsed:.0f} s"
    return proc


def test_every_command_on_extreme_inputs(tmp_path):
    short = _short(yaml.safe_load((ROOT / "scenarios" / "quickstart.yaml").read_text()))
    short["workload"]["entities"] = 2000
    scenario = _write(tmp_path, short)
    huge = ["--set", "business.value_per_outcome=1e308"]
    nan = ["--set", "quality.fresh=.nan"]
    cases = [
        ["report", scenario, "--out", tmp_path / "r", "-r", 1, "--no-analysis", *huge],
        ["report", scenario, "--out", tmp_path / "r2", "-r", 1, "--no-analysis",
         "--set", "business.value_per_outcome=1e12", "--set", "costs.replica_hour=1e12"],
        ["sweep", scenario, "--grid", "quality.fresh=1e308,.nan,0.05", "-r", 1, "--no-plots",
         "--out", tmp_path / "s"],
        ["optimize", scenario, "--vary", "architectures.online.serving.replicas=1:1e30",
         "--arch", "online", "--max-evaluations", 3, *huge],
        ["optimize", scenario, "--vary", "business.value_per_outcome=0:1e308",
         "--objective", "max:net_value_per_day", "--arch", "online", "--max-evaluations", 3],
        ["capacity", scenario, "--arch", "online", "--max-evaluations", 3, *nan],
        ["capacity", scenario, "--arch", "online", "--max-evaluations", 3,
         "--set", "architectures.online.serving.service_time=365250d"],
        ["retrain-advice", scenario, "--intervals", "1h,365250d,1e308s", "-r", 1, "--json"],
        ["retrain-advice", scenario, "--intervals", "1h", "-r", 1, "--json", *huge],
    ]
    log = tmp_path / "log.csv"
    log.write_text("timestamp,entity_id\n0,a\n0,a\n1e300,b\nnan,c\ninf,d\n")
    samples = tmp_path / "latency_ms.csv"
    samples.write_text("latency_ms\n0\n1e308\nnan\ninf\n-1\n5e-324\n")
    fresh = tmp_path / "fresh.csv"
    fresh.write_text("age_s,metric\n0,nan\n1e308,inf\n1e309,0.5\n-1,1e308\n")
    cases += [["workload", "fit", log], ["calibrate", "latency", samples],
              ["calibrate", "freshness", fresh]]
    for args in cases:
        proc = _cli(args, tmp_path, " ".join(map(str, args)))
        if "--json" in args and proc.returncode == 0:
            _strict_json(proc.stdout)
