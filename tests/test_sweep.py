"""Sweeps (sim/studies/sweep.py, `predsim sweep`): parsing, seeds that depend on the point and not on the
order, the same table byte for byte from 1 worker, 2 workers and a Dask LocalCluster, durable
points that survive SIGKILL and resume to the same table, and the sweep plots."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from sim.studies.designs import Knob, Point, SweepError, parse_grid, plan_points, random_unit
from sim.studies.sweep import Sweep, pareto_mask, run_sweep, swept_keys, table_bytes
from tests.conftest import BASE, make_scenario, online

ROOT = Path(__file__).resolve().parent.parent
PREDSIM = [str(Path(sys.executable).parent / "predsim")]
REPLICAS = "architectures.online.serving.replicas"
SERVICE = "architectures.online.serving.service_time.exponential.mean"


def tiny():
    """Batch and online on a few minutes of traffic: a simulation takes milliseconds."""
    return make_scenario({"batch": {"kind": "batch", "every": "1h", "throughput": "1000/s"},
                          "online": online(replicas=2, service={"exponential": {"mean": "100ms"}})},
                         horizon="5m", warmup="1m", workload__arrivals__rate="5/s",
                         costs__replica_hour=1.0)


GRID = {REPLICAS: [1, 2, 3], "workload.arrivals.rate": ["5/s", "8/s"]}


# --- parsing and points ----------------------------------------------------------------------

def test_grid_values_are_read_as_yaml():
    grid = parse_grid(["a.b=1,2.5,6h", "c={constant: 5ms},[1, 2]", "d=true"])
    assert grid == {"a.b": [1, 2.5, "6h"], "c": [{"constant": "5ms"}, [1, 2]], "d": [True]}
    for bad in ("nokey", "=1,2", "a=", "a=1,,2", "a=1,1"):
        with pytest.raises(SweepError, match="--grid"):
            parse_grid([bad])


def test_ranges_keep_their_kind():
    assert Knob.parse("r=1:16") == Knob("r", 1, 16, "int")
    assert Knob.parse("x=0.5:2").kind == "float"
    every = Knob.parse("t=1h:6h")
    assert (every.lo, every.hi, every.kind) == (3600, 21600, "duration")
    assert Knob.parse("rate=10/s:1k/s").kind == "rate"
    assert Knob.parse("n=10k:1M").kind == "count"
    for bad in ("r=3:1", "r=1", "r=1h:5/s", "r=a:b"):
        with pytest.raises(SweepError, match="--range"):
            Knob.parse(bad)


def test_a_point_seed_depends_on_the_point_only():
    forward = plan_points({"a": [1, 2, 3], "b": ["x", "y"]}, seed=7)
    backward = plan_points({"b": ["y", "x"], "a": [3, 2, 1]}, seed=7)
    assert {p.key: p.seed(7) for p in forward} == {p.key: p.seed(7) for p in backward}
    assert len({p.seed(7) for p in forward}) == len(forward) == 6
    assert Point({"a": 1}).seed(7) != Point({"a": 1}).seed(8)
    assert Point({"a": 1}).seed(7) != Point({"a": 1.0}).seed(7)  # 1 and 1.0 are two points


def test_latin_hypercube_hits_every_stratum_once():
    u = random_unit(20, 3, seed=5)
    for j in range(3):
        assert sorted(np.floor(u[:, j] * 20).astype(int)) == list(range(20))
    assert np.array_equal(u, random_unit(20, 3, seed=5))
    points = plan_points(random=12, ranges=[Knob.parse("r=1:4"), Knob.parse("t=1m:1h")], seed=5)
    assert all(1 <= p.values["r"] <= 4 and 60 <= p.values["t"] <= 3600 for p in points)
    assert all(isinstance(p.values["r"], int) for p in points)


# --- the table ---------------------------------------------------------------------------------

def test_one_row_per_point_and_architecture_sorted_by_value():
    grid = {"warmup": ["30m", "5m", "1h"], REPLICAS: [2, 1]}
    table = run_sweep(tiny(), grid, replications=2, workers=1)
    assert swept_keys(table) == ["warmup", REPLICAS]
    assert len(table) == 3 * 2 * 2
    assert list(dict.fromkeys(table["warmup"])) == ["5m", "30m", "1h"]  # by duration, not text
    assert table[REPLICAS].dtype == np.int64
    assert list(table["architecture"][:2]) == ["batch", "online"]
    assert {"latency_ms_p99", "latency_ms_p99_ci95", "cost_usd_per_day"} <= set(table.columns)
    online_cost = table[table["architecture"] == "online"].groupby(REPLICAS)["cost_usd_per_day"]
    assert online_cost.mean().is_monotonic_increasing


def test_a_row_is_what_run_gives_for_that_point():
    import sim
    table = run_sweep(tiny(), {REPLICAS: [1, 3]}, replications=2, workers=1)
    row = table[(table[REPLICAS] == 3) & (table["architecture"] == "online")].iloc[0]
    scenario = sim.scenario_from_dict(tiny().to_yaml_dict(), overrides={REPLICAS: 3},
                                      seed=int(row["point_seed"]))
    direct = sim.run(scenario, 2).summary.set_index("architecture").loc["online"]
    for column in ("latency_ms_p99", "quality_mean", "latency_ms_p99_ci95"):
        assert row[column] == direct[column]


def test_same_bytes_from_one_worker_two_workers_and_dask(tmp_path):
    pytest.importorskip("distributed")
    tables = {}
    for name, options in (("one", {"workers": 1}), ("two", {"workers": 2}),
                          ("dask", {"workers": 2, "dask": "local"})):
        tables[name] = run_sweep(tiny(), GRID, replications=2, out=tmp_path / name,
                                 plots=name == "two", **options)
    for name in ("two", "dask"):
        pd.testing.assert_frame_equal(tables[name], tables["one"])
        for file in ("sweep.parquet", "sweep.csv"):
            assert (tmp_path / name / file).read_bytes() == (tmp_path / "one" / file).read_bytes()
    assert table_bytes(tables["one"]) == table_bytes(tables["dask"])
    assert (tmp_path / "two" / "cost_vs_quality.png").stat().st_size > 0
    assert (tmp_path / "two" / f"latency_ms_p99_vs_{REPLICAS}.png").exists()


def test_refuses_to_mix_two_sweeps_in_one_folder(tmp_path):
    run_sweep(tiny(), GRID, replications=1, workers=1, out=tmp_path, plots=False)
    with pytest.raises(SweepError, match="--resume"):
        Sweep(tiny(), GRID, replications=1, out=tmp_path)
    with pytest.raises(SweepError, match="different grid"):
        Sweep(tiny(), {REPLICAS: [1, 2]}, replications=1, out=tmp_path, resume=True)
    with pytest.raises(SweepError, match="different number of replications"):
        Sweep(tiny(), GRID, replications=2, out=tmp_path, resume=True)
    other = make_scenario(tiny().to_yaml_dict()["architectures"], seed=2)
    with pytest.raises(SweepError, match="different scenario"):
        Sweep(other, GRID, replications=1, out=tmp_path, resume=True)
    resumed = Sweep(tiny(), GRID, replications=1, out=tmp_path, resume=True)
    assert resumed.resumed == 6 and not resumed.remaining


# --- killed and resumed ------------------------------------------------------------------------

def _scenario_file(folder: Path) -> Path:
    raw = {**BASE, "name": "resume", "horizon": "10m", "warmup": "1m", "seed": 3,
           "workload": {"entities": 1000, "arrivals": {"rate": "200/s"}},
           "costs": {"replica_hour": 1},
           "architectures": {"online": online(replicas=4)}}
    path = folder / "scenario.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _sweep_command(scenario: Path, out: Path, *extra: str) -> list[str]:
    return [*PREDSIM, "sweep", str(scenario), "--grid", f"{REPLICAS}=2,3,4,6",
            "--grid", f"{SERVICE}=5ms,8ms,10ms", "-r", "2", "--no-plots", "--out", str(out),
            *extra]


def test_killed_sweep_resumes_to_the_same_table(tmp_path):
    scenario = _scenario_file(tmp_path)
    env = {**os.environ, "PREDSIM_NO_PROGRESS": "1"}
    killed = tmp_path / "killed"
    process = subprocess.Popen(_sweep_command(scenario, killed, "-j", "1"), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    points = killed / "points"
    while time.monotonic() < deadline and process.poll() is None:
        if points.is_dir() and len(list(points.glob("*.json"))) >= 3:
            break
        time.sleep(0.01)
    assert process.poll() is None, process.stderr.read().decode()
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = len(list(points.glob("*.json")))
    assert 3 <= done < 12, "the sweep must be killed part-way through"
    assert not (killed / "sweep.parquet").exists()

    resumed = subprocess.run(_sweep_command(scenario, killed, "--resume", "-j", "2"), env=env,
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{done} of them resumed" in resumed.stdout
    whole = tmp_path / "whole"  # the same sweep, uninterrupted, from Python
    run_sweep(scenario, {REPLICAS: [2, 3, 4, 6], SERVICE: ["5ms", "8ms", "10ms"]},
              replications=2, workers=1, out=whole, plots=False)
    for file in ("sweep.parquet", "sweep.csv"):
        assert (killed / file).read_bytes() == (whole / file).read_bytes()
    assert len(list(points.glob("*.json"))) == 12
    assert not [p for p in points.iterdir() if p.suffix != ".json"]  # no temporary files left
    assert len(pd.read_parquet(killed / "sweep.parquet")) == 12


def test_bad_input_exits_2_with_the_option_named(tmp_path):
    from click.testing import CliRunner

    from sim.cli.main import main
    scenario = _scenario_file(tmp_path)
    cases = [(["--grid", "replicas"], "--grid 'replicas': expected KEY=V1,V2"),
             (["--grid", f"{REPLICAS}=0,1"], "replicas: must be >= 1"),
             (["--random", "3"], "--random: give the ranges"),
             (["--random", "3", "--range", f"{REPLICAS}=4:1"], "LO must be below HI"),
             (["--grid", f"{REPLICAS}=1,2", "--dask", "tcp://127.0.0.1:1", "-j", "2"],
              "--workers: not with --dask")]
    for args, message in cases:
        result = CliRunner().invoke(main, ["sweep", str(scenario), "--out",
                                           str(tmp_path / "out"), *args])
        assert result.exit_code == 2, (args, result.output)
        assert isinstance(result.exception, SystemExit)  # a message, not a crash
        assert message in result.output
    assert not (tmp_path / "out").exists()  # nothing written for bad input


# --- plots ---------------------------------------------------------------------------------

def test_pareto_front():
    cost = [1, 2, 3, 2, 4, np.nan]
    quality = [0.1, 0.3, 0.3, 0.2, 0.5, 0.9]
    assert pareto_mask(cost, quality).tolist() == [True, True, False, False, True, False]


def test_sweep_plots_return_figures():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sim.report import sweep_plots
    table = run_sweep(tiny(), {REPLICAS: [1, 2, 3], "warmup": ["1m", "2m"]}, replications=2,
                      workers=1)
    fig = sweep_plots.metric_vs_parameter(table, REPLICAS, "latency_ms_p99")
    assert fig.axes[0].get_legend() is not None and fig.axes[0].collections  # the CI bands
    plt.close(fig)
    fig = sweep_plots.metric_vs_parameter(table, "warmup", "quality_mean",
                                          architectures=["online"])
    assert "(s)" in fig.axes[0].get_xlabel()
    plt.close(fig)
    fig = sweep_plots.cost_vs_quality(table)
    assert any("Pareto" in t.get_text() for t in fig.axes[0].get_legend().get_texts())
    plt.close(fig)
    with pytest.raises(ValueError, match="swept keys"):
        sweep_plots.metric_vs_parameter(table, "nope")


def test_the_files_a_sweep_writes_are_strict_json(tmp_path):
    # A tiny run has metrics with no value (wasted predictions, no job replaced): they are
    # written as null, never as a NaN token, and read back as NaN in the table.
    def refuse(token):
        raise ValueError(f"{token} is not JSON")

    table = run_sweep(tiny(), {REPLICAS: [1, 2]}, replications=1, out=tmp_path, plots=False,
                      workers=1)
    files = [tmp_path / "manifest.json", *sorted((tmp_path / "points").glob("*.json"))]
    assert len(files) == 3
    for path in files:
        json.loads(path.read_text(), parse_constant=refuse)
    assert table["wasted_prediction_rate"].isna().all()
    assert table["queue_stable"].dtype == "boolean"
