"""Sweeps: many configurations of one scenario, each over replications, as one tidy table.

A *point* is a set of dotted-key overrides (``architectures.online.serving.replicas=4``), from a
grid (every combination of the listed values) and/or random draws in ranges (Latin hypercube or
plain uniform). Every point is simulated over ``replications`` replications and combined with
:func:`sim.results.replications.combine`, exactly as ``sim.run`` would.

Determinism: a point's seed derives from the scenario seed and the point's canonical
``key=value`` text (:meth:`Point.seed`), never from when or where it runs, and the table is
sorted by the swept values. One process, many, or a Dask cluster give the same table, byte
for byte. Each point is run as ``replications`` independent tasks ``(point, replication)``.

Durability: with ``out``, each finished point is written to ``out/points/<id>.json`` (written to
a temporary name, fsynced, renamed, the folder fsynced) next to ``out/manifest.json``, which
names the resolved scenario, the points and the replications. ``resume=True`` skips the points
already written and refuses a folder whose manifest describes another sweep. The final table is
always assembled from the point records, so an interrupted and resumed sweep gives the same
table as an uninterrupted one.

Unlike the simulation modules, this one writes files: saving each point as it finishes is part
of what a sweep promises. Figures come from :mod:`sim.report.sweep_plots`, which never writes.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import yaml

from sim.engine.run import simulate
from sim.studies.designs import (Knob, Point, SweepError, canonical, magnitude, parse_value,
                                 plan_points, point_id)
from sim.studies.executors import make_executor
from sim.results.replications import combine, default_baseline
from sim.results.results import Results, version
from sim.scenario import Scenario, ScenarioError, scenario_from_dict

MANIFEST = "manifest.json"
POINTS_DIR = "points"
TABLE_PARQUET = "sweep.parquet"
TABLE_CSV = "sweep.csv"
FORMAT = "predsim-sweep/1"
# Columns of the tidy table that follow the swept keys (the swept keys come first).
POINT_SEED = "point_seed"
# Metrics plotted against each swept parameter by write_outputs.
PLOTTED_METRICS = ("net_value_usd_per_day", "latency_ms_p99", "quality_mean")


# --------------------------------------------------------------------------------------------
# Scenarios for points
# --------------------------------------------------------------------------------------------

class Template:
    """A scenario as plain data, from which the scenario of each point is built and validated.

    From a file, the raw YAML is kept (with the ``--set`` overrides applied first), so a point's
    scenario is exactly what ``predsim run SCENARIO --set KEY=VALUE --seed SEED`` would load.
    """

    def __init__(self, raw: dict, label: str = "<scenario>", base_dir: str | Path = ".",
                 overrides: Mapping[str, Any] | None = None, seed: int | None = None):
        self.raw, self.label, self.base_dir = raw, label, base_dir
        self.overrides = dict(overrides or {})
        self.scenario = scenario_from_dict(raw, label=label, base_dir=base_dir,
                                           overrides=self.overrides, seed=seed)

    @classmethod
    def from_path(cls, path: str | Path, overrides: Iterable[str] | Mapping[str, Any] = (),
                  seed: int | None = None) -> "Template":
        from sim.scenario import load_scenario
        load_scenario(path, _as_list(overrides), seed=seed)  # every problem, as `run` reports it
        raw = yaml.safe_load(Path(path).read_text())
        return cls(raw, str(path), Path(path).parent, _as_dict(overrides), seed)

    @classmethod
    def from_scenario(cls, scenario: Scenario) -> "Template":
        return cls(scenario.to_yaml_dict(), scenario.name)

    @classmethod
    def of(cls, scenario: "Scenario | Template | str | Path",
           overrides: Iterable[str] | Mapping[str, Any] = (), seed: int | None = None
           ) -> "Template":
        if isinstance(scenario, Template):
            if not overrides and seed is None:
                return scenario
            return cls(scenario.raw, scenario.label, scenario.base_dir,
                       {**scenario.overrides, **_as_dict(overrides)},
                       seed if seed is not None else scenario.scenario.seed)
        if isinstance(scenario, Scenario):
            if overrides or seed is not None:
                return cls(scenario.to_yaml_dict(), scenario.name, overrides=_as_dict(overrides),
                           seed=seed)
            return cls.from_scenario(scenario)
        return cls.from_path(scenario, overrides, seed)

    def build(self, values: Mapping[str, Any], seed: int | None = None) -> Scenario:
        """The scenario with ``values`` set (after the template's own overrides) and ``seed``."""
        return scenario_from_dict(self.raw, label=self.label, base_dir=self.base_dir,
                                  overrides={**self.overrides, **values},
                                  seed=self.scenario.seed if seed is None else seed)


def _as_list(overrides) -> list[str] | dict:
    return dict(overrides) if isinstance(overrides, Mapping) else list(overrides)


def _as_dict(overrides) -> dict[str, Any]:
    if isinstance(overrides, Mapping):
        return dict(overrides)
    out = {}
    for item in overrides:
        key, _, text = item.partition("=")
        out[key.strip()] = parse_value(text)
    return out


# --------------------------------------------------------------------------------------------
# The task each (point, replication) is, run by an executor of sim.studies.executors
# --------------------------------------------------------------------------------------------

def _simulate_task(scenario: Scenario, replication: int) -> Results:
    """One task: one replication of one point's scenario (module level, so it pickles)."""
    return simulate(scenario, replication=replication)


# --------------------------------------------------------------------------------------------
# Simulating points
# --------------------------------------------------------------------------------------------

@dataclass
class PointResult:
    """A finished point: its combined summary (means and ``*_ci95``, as ``sim.run`` gives)."""

    point: Point
    seed: int
    replications: int
    summary: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    per_replication: pd.DataFrame | None = None  # one summary row per replication


def point_seed(point: Point, base_seed: int, common_random_numbers: bool = False) -> int:
    """The seed of a point: derived from the point, or the scenario's own seed for all points
    (common random numbers across points, for searches comparing configurations)."""
    if common_random_numbers and "seed" not in point.values:
        return base_seed
    return point.seed(base_seed)


def build_scenarios(template: Template, points: Sequence[Point],
                    common_random_numbers: bool = False) -> list[Scenario]:
    """Every point's validated scenario; every problem of every point at once
    (:class:`ScenarioError`)."""
    scenarios, problems = [], []
    base_seed = template.scenario.seed
    for point in points:
        try:
            scenarios.append(template.build(point.values,
                                            point_seed(point, base_seed, common_random_numbers)))
        except ScenarioError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ScenarioError(list(dict.fromkeys(problems)))
    return scenarios


def simulate_points(template: Template, points: Sequence[Point], replications: int,
                    executor, *, common_random_numbers: bool = False,
                    scenarios: Sequence[Scenario] | None = None,
                    progress: Callable[[int], None] | None = None) -> Iterator[PointResult]:
    """Simulate ``points`` (each over ``replications``) and yield each as soon as all its
    replications are done, in order of completion. ``progress(n)`` is told of each finished
    replication."""
    if replications < 1:
        raise SweepError(f"--replications: expected a number >= 1 (got {replications})")
    if scenarios is None:
        scenarios = build_scenarios(template, points, common_random_numbers)
    tasks = [(scenarios[i], r) for i in range(len(points)) for r in range(replications)]
    pending: dict[int, dict[int, Results]] = {}
    for index, result in executor.map_unordered(_simulate_task, tasks):
        i, r = divmod(index, replications)
        runs = pending.setdefault(i, {})
        runs[r] = result
        if progress is not None:
            progress(1)
        if len(runs) == replications:
            del pending[i]
            ordered = [runs[k] for k in range(replications)]
            combined = combine(ordered, default_baseline(scenarios[i]))
            yield PointResult(points[i], scenarios[i].seed, replications, combined.summary,
                              combined.notes, combined.per_replication)


# --------------------------------------------------------------------------------------------
# Durable storage: manifest and one file per point
# --------------------------------------------------------------------------------------------

def durable_write(path: Path, data: bytes, advice: str | None = None) -> Path:
    """Write ``data`` to ``path`` so that a crash leaves either the old file or the new one:
    a temporary file in the same folder, fsync, rename, fsync of the folder
    (:func:`sim.report.output.atomic_write`; a failure raises :class:`sim.report.output.WriteError`)."""
    from sim.report.output import atomic_write
    return atomic_write(path, data, advice)


def _resume_advice(out: Path, exc: OSError) -> str:
    """What to do when a sweep's folder refuses a write: every finished point is kept."""
    from sim.report.output import WRITE_SPACE_ERRORS
    if exc.errno in WRITE_SPACE_ERRORS:
        return (f"the points finished so far are kept in {out / POINTS_DIR}; free space, then "
                f"run the same command with --resume")
    return (f"the points finished so far are kept in {out / POINTS_DIR}; make {out} writable "
            f"and run the same command with --resume, or choose another --out")


def _json_default(obj):
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {obj!r}")


def _nulls(data: Any) -> Any:
    """``data`` with every non-finite float as None, so that the JSON written is strict."""
    if isinstance(data, dict):
        return {k: _nulls(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_nulls(v) for v in data]
    if hasattr(data, "item") and not isinstance(data, (str, bytes)):
        data = data.item()
    if isinstance(data, float) and not math.isfinite(data):
        return None
    return data


def _to_json(data: Any) -> str:
    """Strict JSON (no NaN or Infinity tokens: they become null)."""
    return json.dumps(_nulls(data), indent=1, default=_json_default, allow_nan=False) + "\n"


def _read_record(text: str) -> dict:
    """A point record as written by :func:`_to_json`, with a null metric read back as NaN."""
    record = json.loads(text)
    record["rows"] = [{k: float("nan") if v is None else v for k, v in row.items()}
                      for row in record.get("rows", [])]
    return record


def point_record(result: PointResult) -> dict:
    """What is stored for a finished point (and what the table is assembled from)."""
    rows = result.summary.to_dict("records")
    return _read_record(_to_json({"key": result.point.key, "id": result.point.id,
                                  "values": result.point.values, "seed": result.seed,
                                  "replications": result.replications, "rows": rows,
                                  "notes": result.notes}))


class SweepStore:
    """A sweep's folder: ``manifest.json``, ``points/<id>.json``, the tables and plots."""

    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.points_dir = self.out / POINTS_DIR

    def open(self, manifest: dict, resume: bool) -> dict[str, dict]:
        """Create the folder, or check it holds this very sweep; the finished points by id."""
        if self.out.exists() and not self.out.is_dir():
            raise SweepError(f"--out {self.out}: exists and is not a folder")
        path = self.out / MANIFEST
        if path.exists():
            try:
                old = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise SweepError(f"--out {self.out}: {MANIFEST} is unreadable ({exc}); choose "
                                 f"another folder") from None
            differs = [k for k in ("format", "scenario", "points", "replications", "seeds")
                       if old.get(k) != manifest[k]]
            if differs:
                raise SweepError(
                    f"--out {self.out}: holds a sweep of a different "
                    f"{', '.join(_MANIFEST_WORDS[k] for k in differs)}; points of two sweeps "
                    f"are never mixed. Choose another folder, or delete this one to start over")
            done = self._finished(manifest)
            if not resume and done:
                raise SweepError(f"--out {self.out}: already holds this sweep ({len(done)} of "
                                 f"{len(manifest['points'])} points done); add --resume to "
                                 f"continue it, or choose another folder")
            return done
        from sim.report.output import ensure_folder
        ensure_folder(self.points_dir)
        self._write(path, _to_json(manifest).encode())
        return self._finished(manifest)

    def _finished(self, manifest: dict) -> dict[str, dict]:
        from sim.report.output import ensure_folder, remove_stale_temps
        ensure_folder(self.points_dir, _resume_advice(self.out, OSError()))
        remove_stale_temps(self.points_dir)  # writes that a crash interrupted
        wanted = {point_id(key): key for key in manifest["points"]}
        done = {}
        for path in sorted(self.points_dir.iterdir()):
            if path.name.startswith(".") and path.name.endswith(".tmp"):
                if ".predsim-" not in path.name:  # left by an older predsim: never live now
                    path.unlink(missing_ok=True)
                continue  # a temporary file: never a finished point
            if path.suffix != ".json" or path.stem not in wanted:
                continue
            try:
                record = _read_record(path.read_text())
            except (OSError, ValueError, AttributeError):
                continue  # unreadable: simulated again and replaced
            if record.get("key") == wanted[path.stem]:
                done[path.stem] = record
        return done

    def save_point(self, record: dict) -> Path:
        return self._write(self.points_dir / f"{record['id']}.json", _to_json(record).encode())

    def _write(self, path: Path, data: bytes) -> Path:
        from sim.report.output import WriteError
        try:
            return durable_write(path, data)
        except WriteError as exc:
            exc.advice = _resume_advice(self.out, exc)
            raise


_MANIFEST_WORDS = {"format": "format", "scenario": "scenario", "points": "grid (points)",
                   "replications": "number of replications", "seeds": "seeding"}


# --------------------------------------------------------------------------------------------
# The sweep
# --------------------------------------------------------------------------------------------

class Sweep:
    """A planned sweep: its points, which are done, and the table.

    >>> sweep = Sweep("scenarios/quickstart.yaml",
    ...               {"architectures.online.serving.replicas": [2, 4]}, out="sweep/")
    >>> table = sweep.run()
    """

    def __init__(self, scenario: Scenario | Template | str | Path,
                 grid: Mapping[str, Sequence] | None = None, *, random: int = 0,
                 ranges: Mapping[str, tuple] | Iterable[Knob | str] = (), method: str = "lhs",
                 replications: int = 3, out: str | Path | None = None, resume: bool = False,
                 common_random_numbers: bool = False,
                 overrides: Iterable[str] | Mapping[str, Any] = (), seed: int | None = None):
        if replications < 1:
            raise SweepError(f"--replications: expected a number >= 1 (got {replications})")
        self.template = Template.of(scenario, overrides, seed)
        self.knobs = _knobs(ranges)
        self.grid = dict(grid or {})
        self.keys = list(self.grid) + [k.key for k in self.knobs]
        self.points = plan_points(self.grid, random=random, ranges=self.knobs, method=method,
                                  seed=self.template.scenario.seed)
        self.replications = replications
        self.common_random_numbers = common_random_numbers
        self.scenarios = build_scenarios(self.template, self.points, common_random_numbers)
        self.arch_order = list(self.template.scenario.architectures)
        self.manifest = {
            "format": FORMAT,
            "scenario": self.template.scenario.to_yaml_dict(),
            "points": [p.key for p in self.points],
            "replications": replications,
            "seeds": "common" if common_random_numbers else "per-point",
            "keys": self.keys,
            "grid": self.grid,
            "random": {"n": random, "method": method,
                       "ranges": {k.key: [k.lo, k.hi, k.kind] for k in self.knobs}},
            "predsim_version": version(),
        }
        self.store = SweepStore(out) if out is not None else None
        self.records: dict[str, dict] = self.store.open(self.manifest, resume) if self.store \
            else {}
        self.resumed = len(self.records)

    @property
    def remaining(self) -> list[Point]:
        return [p for p in self.points if p.id not in self.records]

    @property
    def simulations(self) -> int:
        return len(self.points) * self.replications

    def run(self, executor=None, *, workers: int | None = None, dask: str | None = None,
            progress: Callable[[float], None] | None = None) -> pd.DataFrame:
        """Simulate the remaining points (saving each as it finishes) and return the table."""
        todo = self.remaining
        total = len(self.points) * self.replications
        done = [len(self.records) * self.replications]
        if progress is not None:
            progress(done[0] / total)

        def step(n):
            done[0] += n
            if progress is not None:
                progress(done[0] / total)

        if todo:
            own = executor is None
            executor = executor or make_executor(workers, dask)
            position = {p.id: i for i, p in enumerate(self.points)}
            scenarios = [self.scenarios[position[p.id]] for p in todo]
            try:
                if own:
                    executor.__enter__()
                for result in simulate_points(self.template, todo, self.replications, executor,
                                              scenarios=scenarios, progress=step):
                    record = point_record(result)
                    if self.store is not None:
                        self.store.save_point(record)
                    self.records[record["id"]] = record
            finally:
                if own:
                    executor.__exit__(None, None, None)
        return self.table()

    def table(self) -> pd.DataFrame:
        """The tidy table of the finished points: one row per point and architecture, the swept
        keys first, then ``point_seed`` and the summary columns (means and ``*_ci95``), sorted
        by the swept values (numerically, durations and rates by magnitude), then by
        architecture in the scenario's order."""
        return assemble([self.records[p.id] for p in self.points if p.id in self.records],
                        self.keys, self.arch_order)


def _knobs(ranges) -> list[Knob]:
    if isinstance(ranges, Mapping):
        return [Knob.from_bounds(k, *bounds) for k, bounds in ranges.items()]
    return [r if isinstance(r, Knob) else Knob.parse(r) for r in ranges]


def _sort_key(value: Any) -> tuple:
    m = magnitude(value)
    return (0, m, "") if m is not None and not math.isnan(m) else (1, 0.0, canonical(value))


def assemble(records: Sequence[dict], keys: Sequence[str], arch_order: Sequence[str]
             ) -> pd.DataFrame:
    """The tidy table from point records (see :meth:`Sweep.table`)."""
    rank = {name: i for i, name in enumerate(arch_order)}
    rows = []
    for record in records:
        values = record["values"]
        for row in record["rows"]:
            rows.append(({k: values.get(k) for k in keys}, record["seed"], row))
    rows.sort(key=lambda item: (tuple(_sort_key(item[0][k]) for k in keys),
                                rank.get(item[2]["architecture"], len(rank)),
                                item[2]["architecture"],
                                "\n".join(f"{k}={canonical(item[0][k])}" for k in keys)))
    frame = pd.DataFrame([{**v, POINT_SEED: seed, **row} for v, seed, row in rows])
    if frame.empty:
        return pd.DataFrame(columns=[*keys, POINT_SEED, "architecture", "kind"])
    for key in keys:
        frame[key] = _key_column([v[key] for v, _, _ in rows])
    frame[POINT_SEED] = frame[POINT_SEED].astype("int64")
    if "queue_stable" in frame:
        frame["queue_stable"] = frame["queue_stable"].astype("boolean")
    return frame


def _key_column(values: list) -> pd.Series:
    if all(isinstance(v, bool) for v in values):
        return pd.Series(values, dtype=bool)
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return pd.Series(values, dtype="int64")
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return pd.Series(values, dtype="float64")
    return pd.Series([v if isinstance(v, str) else canonical(v) for v in values], dtype=object)


def swept_keys(table: pd.DataFrame) -> list[str]:
    """The swept keys of a sweep table: the columns before ``point_seed``."""
    columns = list(table.columns)
    return columns[:columns.index(POINT_SEED)] if POINT_SEED in columns else []


def run_sweep(scenario: Scenario | str | Path, grid: Mapping[str, Sequence] | None = None, *,
              random: int = 0, ranges: Mapping[str, tuple] | Iterable[Knob | str] = (),
              method: str = "lhs", replications: int = 3, workers: int | None = None,
              dask: str | None = None, out: str | Path | None = None, resume: bool = False,
              common_random_numbers: bool = False, plots: bool = True,
              progress: Callable[[float], None] | None = None) -> pd.DataFrame:
    """Simulate every point of a grid and/or random design over ``replications`` and return
    the tidy table (see :meth:`Sweep.table`). With ``out``, points are saved as they finish,
    ``resume`` continues an interrupted sweep, and ``sweep.parquet``, ``sweep.csv`` (and, with
    ``plots``, PNG figures) are written at the end.

    >>> run_sweep(scenario, {"architectures.online.serving.replicas": [1, 2, 4]},
    ...           replications=3, workers=2)
    """
    sweep = Sweep(scenario, grid, random=random, ranges=ranges, method=method,
                  replications=replications, out=out, resume=resume,
                  common_random_numbers=common_random_numbers)
    table = sweep.run(workers=workers, dask=dask, progress=progress)
    if out is not None:
        write_outputs(table, out, plots=plots)
    return table


# --------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------

def table_bytes(table: pd.DataFrame) -> tuple[bytes, bytes]:
    """(Parquet, CSV) bytes of a table; the same table always gives the same bytes."""
    buffer = io.BytesIO()
    table.to_parquet(buffer, index=False, engine="pyarrow")
    return buffer.getvalue(), table.to_csv(index=False).encode()


def write_outputs(table: pd.DataFrame, out: str | Path, plots: bool = True) -> list[Path]:
    """``sweep.parquet``, ``sweep.csv`` and, with ``plots``, ``<metric>_vs_<key>.png`` for each
    swept key whose values are numbers (or durations, rates) and ``cost_vs_quality.png``."""
    from sim.report.output import OutputBatch

    parquet, csv = table_bytes(table)
    advice = ("the points are kept in " + str(Path(out) / POINTS_DIR) +
              "; free space or make the folder writable, then run the same command with "
              "--resume to write the table")
    with OutputBatch(out, advice) as batch:  # staged, then renamed into place together
        written = [batch.add(TABLE_PARQUET, parquet), batch.add(TABLE_CSV, csv)]
        if plots and not table.empty:
            written += _write_plots(table, batch)
    return written


def _write_plots(table: pd.DataFrame, batch) -> list[Path]:
    import matplotlib.pyplot as plt

    from sim.report import sweep_plots
    from sim.report.output import render_png

    written = []
    for key in swept_keys(table):
        if not all(magnitude(v) is not None for v in table[key]):
            continue
        # A key of one architecture (architectures.NAME....) is plotted for that one only.
        parts = key.split(".")
        names = [parts[1]] if (len(parts) > 2 and parts[0] == "architectures"
                               and parts[1] in set(table["architecture"])) else None
        for metric in PLOTTED_METRICS:
            shown = table if names is None else table[table["architecture"].isin(names)]
            if metric not in table or not shown[metric].notna().any():
                continue
            fig = sweep_plots.metric_vs_parameter(table, key, metric, architectures=names)
            name = f"{metric}_vs_{_file_safe(key)}.png"
            try:
                written.append(batch.add(name, render_png(fig)))
            finally:
                plt.close(fig)
    if {"cost_usd_per_day", "quality_mean"} <= set(table.columns):
        fig = sweep_plots.cost_vs_quality(table)
        try:
            written.append(batch.add("cost_vs_quality.png", render_png(fig)))
        finally:
            plt.close(fig)
    return written


def _file_safe(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", key)


def pareto_mask(cost: Sequence[float], quality: Sequence[float]) -> np.ndarray:
    """True for the rows no other row beats: none costs no more *and* has no lower quality
    with one of the two strictly better. Rows with a NaN are never on the front."""
    cost = np.asarray(cost, dtype=float)
    quality = np.asarray(quality, dtype=float)
    ok = ~(np.isnan(cost) | np.isnan(quality))
    mask = np.zeros(cost.size, dtype=bool)
    for i in np.flatnonzero(ok):
        others = ok & (cost <= cost[i]) & (quality >= quality[i]) & \
            ((cost < cost[i]) | (quality > quality[i]))
        mask[i] = not others.any()
    return mask
