"""Results -> terminal tables and files. Never simulates.

Every file is written to a temporary name in the target folder, fsynced and renamed into place
(:class:`OutputBatch`), so an interrupted run never leaves a half-written file where a good one
was, and a full disk or a read-only folder fails with a clear message before anything is
overwritten (:class:`WriteError`).
"""

from __future__ import annotations

import errno
import io
import json
import math
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sim.results.results import Results, version
from sim.scenario import dump_yaml
from sim.units import format_duration, human_duration


def _table(title: str, headers: list[str]) -> Table:
    """A results table: the first column left-aligned, numbers right-aligned; a cell too wide
    for its column is folded onto the next line, never cut short with an ellipsis."""
    table = Table(title=title, title_justify="left", pad_edge=False)
    for i, header in enumerate(headers):
        table.add_column(header, justify="left" if i == 0 else "right", overflow="fold",
                         min_width=len(header) if i == 0 else None)
    return table


def comparison_table(results: Results, wide: bool = False) -> Table:
    """One row per architecture, the numbers a team compares, units in the headers.

    With several replications each cell is the mean and, below it, its 95% confidence
    half-width. The key columns fit a 100-column terminal; ``wide`` adds p50 latency, wasted
    predictions, replica utilisation and value per day.
    """
    scenario = results.scenario
    metric = scenario.quality.metric
    slo = scenario.slo.latency_p99
    reps = results.replications
    title = (f"{scenario.name}: {format_duration(scenario.horizon)} simulated, seed "
             f"{results.seed}, {reps} replication{'s' if reps != 1 else ''}"
             + (" (mean ± 95% CI)" if reps > 1 else ""))
    summary = results.summary
    streams = "stream_feature_age_s_mean" in summary and \
        summary["stream_feature_age_s_mean"].notna().any()
    ages = (["batch_feature_age_s_mean", "stream_feature_age_s_mean"] if streams
            else ["feature_age_s_mean"])
    # (header, cell) pairs; the cell maps a summary row to its text
    columns = [
        (f"{metric}\nmean", lambda row: _with_ci(row, "quality_mean", "{:.4g}")),
        ("cover-\nage %", lambda row: _with_ci(row, "coverage", "{:.2f}", 100)),
        ("cold\nstart %", lambda row: _with_ci(row, "cold_start_rate", "{:.2f}", 100)),
        *((("batch\nfeatures\nage" if c.startswith("batch") else "stream\nfeatures\nage")
           if streams else "feature\nage",
           lambda row, c=c: "-" if _nan(row.get(c)) else human_duration(row[c]))
          for c in ages),
        *([("p50\nms", lambda row: _with_ci(row, "latency_ms_p50", "{:.1f}"))] if wide else []),
        ("p99\nms", lambda row: _with_ci(row, "latency_ms_p99", "{:.1f}")),
        (f">SLO\n{format_duration(slo)} %" if slo else ">SLO\n%",
         lambda row: _with_ci(row, "slo_violation_rate", "{:.2f}", 100)),
        *([("wasted\npreds %", lambda row: _with_ci(row, "wasted_prediction_rate", "{:.1f}", 100)),
           ("replica\nutil %", lambda row: _with_ci(row, "utilization", "{:.0f}", 100))]
          if wide else []),
        ("cost\n$/day", lambda row: _with_ci(row, "cost_usd_per_day", "{:,.2f}")),
        *([("value\n$/day", lambda row: _with_ci(row, "value_usd_per_day", "{:,.0f}"))]
          if wide else []),
        ("net\n$/day", lambda row: _with_ci(row, "net_value_usd_per_day", "{:,.0f}")),
    ]
    table = _table(title, ["architecture"] + [header for header, _ in columns])
    for row in summary.to_dict("records"):
        name = row["architecture"]
        table.add_row(name if name == row["kind"] else f"{name}\n({row['kind']})",
                      *(cell(row) for _, cell in columns))
    return table


def differences_table(results: Results) -> Table | None:
    """Each architecture minus the baseline, with paired 95% confidence intervals."""
    d = results.differences
    if d is None or d.empty or results.replications < 2:
        return None
    metric = results.scenario.quality.metric
    shown = [("net_value_usd_per_day", "net value\n$/day", "{:+,.0f}", 1),
             ("cost_usd_per_day", "cost\n$/day", "{:+,.2f}", 1),
             ("quality_mean", f"{metric}", "{:+.3g}", 1),
             ("coverage", "coverage\npoints", "{:+.2f}", 100),
             ("latency_ms_p99", "p99\nms", "{:+.1f}", 1)]
    table = _table(f"Difference from {results.baseline} (paired, 95% CI)",
                   ["architecture"] + [header for _, header, _, _ in shown])
    for name in results.summary["architecture"]:
        if name == results.baseline:
            continue
        rows = d[d["architecture"] == name].set_index("metric")
        cells = []
        for column, _, pattern, scale in shown:
            if column not in rows.index:
                cells.append("-")
                continue
            r = rows.loc[column]
            cells.append(f"{pattern.format(r['difference'] * scale)}\n"
                         f"[{pattern.format(r['low'] * scale)},\n"
                         f" {pattern.format(r['high'] * scale)}]")
        table.add_row(name, *cells)
    return table


def latency_table(results: Results) -> Table | None:
    """Where the time goes, per architecture (mean ms): the network, the queue, the replica and
    the device. None unless the scenario has a network or an edge architecture."""
    scenario = results.scenario
    edge = any(a.kind == "edge" for a in scenario.architectures.values())
    if scenario.network is None and not edge:
        return None
    table = _table("Where the time goes (mean ms; the device's over the requests it answered)",
                   ["architecture", "latency", "network", "queue\nwait", "replica",
                    "on the\ndevice"])
    for row in results.summary.to_dict("records"):
        table.add_row(row["architecture"], *(_with_ci(row, c, "{:,.1f}") for c in (
            "latency_ms_mean", "network_ms_mean", "queue_wait_ms_mean", "service_ms_mean",
            "device_ms_mean")))
    return table


def retraining_table(results: Results, wide: bool = False) -> Table | None:
    """Per architecture: training runs in the measured window, training cost per day, the
    model age (p50; p95 and max too when ``wide``) and the metric lost per prediction to each
    cause. None when the scenario never retrains and no model staleness or drift is
    modelled."""
    scenario = results.scenario
    retrains = scenario.training is not None or any(
        getattr(a, "training", None) is not None for a in scenario.architectures.values())
    if not (retrains or scenario.quality.model_staleness is not None or scenario.drift):
        return None
    metric = scenario.quality.metric
    ages = ("p50", "p95", "max") if wide else ("p50",)
    causes = (("feature_staleness", "feature\nage"), ("cold_start", "cold\nstart"),
              ("missing_features", "features\nit lacks"), ("model_staleness", "model\nage"),
              ("drift", "drift"))
    summary = results.summary
    for cause, label in (("model_variant", "the model\nvariant"),
                         ("model_training", "how it\nwas trained")):
        if (summary.get(f"quality_lost_{cause}", 0.0).abs() > 0).any():
            causes += ((cause, label),)
    tested = any(t is not None and t.evaluation is not None for t in (
        scenario.training, *(getattr(a, "training", None)
                             for a in scenario.architectures.values())))
    table = _table(f"Retraining and staleness ({metric} lost per prediction, by cause)",
                   ["architecture", "train-\nings", "training\n$/day",
                    *(("deploys\n/day", "testing\n$/day") if tested else ()),
                    *(f"model age\n{k}" for k in ages),
                    *(f"lost to\n{label}" for _, label in causes)])
    for row in summary.to_dict("records"):
        table.add_row(
            row["architecture"],
            _with_ci(row, "trainings", "{:,.1f}" if results.replications > 1 else "{:,.0f}"),
            _with_ci(row, "cost_usd_per_day_training", "{:,.2f}"),
            *((_with_ci(row, "deploys_per_day", "{:,.2f}"),
               _with_ci(row, "cost_usd_per_day_evaluation", "{:,.2f}")) if tested else ()),
            *("-" if _nan(row.get(f"model_age_s_{k}")) else human_duration(row[f"model_age_s_{k}"])
              for k in ages),
            *(_with_ci(row, f"quality_lost_{k}", "{:.3g}") for k, _ in causes))
    return table


def _with_ci(row: dict, column: str, pattern: str, scale: float = 1.0) -> str:
    value = row.get(column)
    if _nan(value):
        return "-"
    text = pattern.format(value * scale)
    half = row.get(f"{column}_ci95")
    if half is not None and not _nan(half):
        if abs(half) <= 1e-9 * abs(value):  # rounding noise of a constant, not a spread
            half = 0.0
        half_pattern = "{:.2g}" if pattern.endswith("g}") else pattern
        text += f"\n±{half_pattern.format(half * scale).lstrip('+')}"
    return text


def verification_table(frame) -> Table:
    """The ``predsim verify`` table: simulated ± CI against the closed form, per check."""
    table = Table(title="predsim against theory (CI: family-wise 99%, Bonferroni)",
                  title_justify="left")
    for header in ("case", "quantity", "simulated ± CI", "expected", "reference",
                   "rel. error", "result"):
        table.add_column(header, justify="right" if header in ("simulated ± CI", "expected",
                                                               "rel. error") else "left")
    for row in frame.to_dict("records"):
        table.add_row(escape(row["case"]), escape(row["quantity"]),
                      f"{row['simulated']:.5g} ± {row['ci']:.2g}", f"{row['expected']:.5g}",
                      escape(row["reference"]), f"{row['relative_error'] * 100:+.2f}%",
                      "[green]pass[/]" if row["passed"] else "[bold red]FAIL[/]")
    return table


def print_results(results: Results, console: Console | None = None, wide: bool = False) -> None:
    """The comparison, retraining and difference tables, the verdict and the notes; ``wide``
    adds the columns a 100-column terminal has no room for (all are in the JSON and CSV)."""
    if console is None:
        console = Console()
        if not console.is_terminal:  # a file or a pipe: no reason to squeeze the table
            console = Console(width=180)
    console.print(comparison_table(results, wide))
    timing = latency_table(results)
    if timing is not None:
        console.print(timing)
    retraining = retraining_table(results, wide)
    if retraining is not None:
        console.print(retraining)
    differences = differences_table(results)
    if differences is not None:
        console.print(differences)
    if results.verdict:
        console.print(results.verdict, highlight=False)
    for note in results.notes:
        console.print(f"[bold yellow]Note:[/] {note}")


def _nan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _fmt(x, pattern: str) -> str:
    return "-" if _nan(x) else pattern.format(x)


def to_json(results: Results) -> str:
    return json.dumps(results.to_dict(), indent=2, allow_nan=False)


def resolved_yaml(results_or_scenario) -> str:
    """The resolved scenario with the seed and the predsim version that produced the outputs."""
    scenario = getattr(results_or_scenario, "scenario", results_or_scenario)
    header = (f"# Resolved scenario: every default filled in.\n"
              f"# predsim_version: {version()}\n# seed: {scenario.seed}\n")
    return header + dump_yaml(scenario.to_yaml_dict())


def incident_csv(results: Results) -> str:
    """The pipelines' incidents (failed or preempted runs, stream outages) as CSV: one row
    each, with its replication; only the header when there were none."""
    frame = results.incidents
    if frame is None:
        frame = pd.DataFrame(columns=["architecture", "component", "cause", "start_s", "end_s",
                                      "replication"])
    return frame.to_csv(index=False)


def write_outputs(results: Results, out_dir: str | Path) -> list[Path]:
    """Write summary.csv, timeseries.csv, results.json, scenario.resolved.yaml and PNG plots,
    all staged first and renamed into place together (see :class:`OutputBatch`)."""
    import matplotlib.pyplot as plt

    plot = results.plot
    with OutputBatch(out_dir) as batch:
        written = [
            batch.add("summary.csv", results.summary.to_csv(index=False)),
            batch.add("timeseries.csv", results.timeseries.to_csv(index=False)),
            batch.add("incidents.csv", incident_csv(results)),
            batch.add("results.json", to_json(results) + "\n"),
            batch.add("scenario.resolved.yaml", resolved_yaml(results)),
        ]
        for name, figure in (("latency_cdf.png", plot.latency_cdf),
                             ("feature_age.png", plot.feature_age),
                             ("quality_over_time.png", plot.quality_over_time),
                             ("freshness_over_time.png", plot.freshness_over_time),
                             ("serving_load.png", plot.serving_load),
                             ("cost_breakdown.png", plot.cost_breakdown),
                             ("net_value.png", plot.net_value)):
            fig = figure()
            try:
                written.append(batch.add(name, render_png(fig)))
            finally:
                plt.close(fig)
    return written


# --------------------------------------------------------------------------------------------
# Writing files: atomically, durably, with a clear message when the disk says no
# --------------------------------------------------------------------------------------------
#
# Every output goes through OutputBatch (or atomic_write, a batch of one file): the bytes are
# written to a temporary file in the target folder (".NAME.predsim-PID-XXXX.tmp"), flushed and
# fsynced; only when every file of the batch is staged are they renamed into place
# (os.replace) and the folder fsynced. So a full disk or a read-only folder fails before
# anything is overwritten, and a crash (SIGKILL, power loss) leaves each output either the old
# complete file or the new complete one, never a truncated one. Temporary files a crash left
# behind are removed by the next write into the folder.

_TEMP = re.compile(r"^\..+\.predsim-(\d+)-[A-Za-z0-9_]+\.tmp$")
WRITE_SPACE_ERRORS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})


class WriteError(OSError):
    """An output could not be written. No half-written file was left behind; ``replaced``
    lists the outputs already renamed into place by this batch (normally none: a batch fails
    while staging, before it overwrites anything)."""

    def __init__(self, path: str | Path, cause: OSError, replaced: Sequence[Path] = (),
                 advice: str | None = None, creating: bool = False):
        super().__init__(cause.errno, cause.strerror or str(cause), str(path))
        self.path = Path(path)
        self.cause = cause
        self.replaced = list(replaced)
        self.advice = advice
        self.creating = creating

    def __str__(self) -> str:
        return write_error_message(self)


def write_error_message(exc: OSError, out: str | Path | None = None) -> str:
    """The one-line message a user sees when an output cannot be written, e.g.
    ``predsim: could not write out/summary.csv: no space left on device (nothing was
    overwritten; free space or choose another --out)``. ``out`` names the target when ``exc``
    carries no file name."""
    wrapped = isinstance(exc, WriteError)
    creating = wrapped and exc.creating
    path = exc.path if wrapped else Path(exc.filename) if exc.filename else \
        Path(out) if out is not None else Path(".")
    folder = path.parent
    if creating:  # the folder that refused is the deepest one that exists
        while folder != folder.parent and not folder.exists():
            folder = folder.parent
    code = exc.errno
    if code == errno.ENOSPC:
        reason = "no space left on device"
    elif code == errno.EDQUOT:
        reason = "disk quota exceeded"
    elif code == errno.EFBIG:
        reason = "file too large (over the file-size limit, see ulimit -f)"
    elif code in (errno.EACCES, errno.EPERM):
        reason = f"permission denied: {folder} is read-only for this user"
    elif code == errno.EROFS:
        reason = f"read-only file system: {folder} is read-only"
    else:
        reason = (exc.strerror or str(exc)).rstrip(".")
        reason = reason[:1].lower() + reason[1:]
    replaced = exc.replaced if wrapped else []
    state = ("nothing was overwritten" if not replaced else
             f"{len(replaced)} file{'s' if len(replaced) != 1 else ''} already replaced, "
             f"the others unchanged")
    advice = exc.advice if wrapped and exc.advice else \
        "free space or choose another --out" if code in WRITE_SPACE_ERRORS else \
        "choose another --out"
    return f"predsim: could not {'create' if creating else 'write'} {path}: {reason} " \
           f"({state}; {advice})"


def ensure_folder(folder: str | Path, advice: str | None = None) -> Path:
    """``mkdir -p folder`` (the parent fsynced when it is new), failing with a WriteError."""
    folder = Path(folder)
    if folder.is_dir():
        return folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fsync_folder(folder.parent)  # the new folder's name survives a crash too
    except FileExistsError as exc:  # a file of that name
        raise WriteError(folder, OSError(errno.ENOTDIR, "exists and is not a folder"),
                         advice=advice or "choose another --out", creating=True) from exc
    except OSError as exc:
        raise WriteError(folder, exc, advice=advice, creating=True) from exc
    return folder


def render_png(fig, dpi: int = 110) -> bytes:
    """A matplotlib figure as PNG bytes (no timestamp or version in the metadata)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return buffer.getvalue()


class OutputBatch:
    """Files for one folder, staged as fsynced temporaries and renamed into place together.

    >>> with OutputBatch(out) as batch:
    ...     batch.add("summary.csv", text)
    ...     batch.add("plot.png", render_png(fig))
    # on leaving the block without an exception every file is renamed into place; with one,
    # the temporaries are removed and nothing in the folder has changed.
    """

    def __init__(self, folder: str | Path, advice: str | None = None):
        self.folder = Path(folder)
        self.advice = advice
        self.staged: list[tuple[str, Path]] = []
        self.replaced: list[Path] = []
        self._cleaned = False

    def __enter__(self) -> OutputBatch:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.commit()
        else:
            self.discard()

    def add(self, name: str | Path, data: bytes | str) -> Path:
        """Stage ``data`` (text is UTF-8) for ``folder/name``; returns the final path."""
        path = self.folder / name
        if not self._cleaned:
            ensure_folder(self.folder, self.advice)
            remove_stale_temps(self.folder)
            self._cleaned = True
        if isinstance(data, str):
            data = data.encode("utf-8")
        try:
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=f".{path.name}.predsim-"
                                       f"{os.getpid()}-", suffix=".tmp")
        except OSError as exc:
            self.discard()
            raise WriteError(path, exc, advice=self.advice) from exc
        self.staged.append((tmp, path))
        try:
            try:
                os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; outputs look ordinary
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            self.discard()
            raise WriteError(path, exc, advice=self.advice) from exc
        except BaseException:
            self.discard()
            raise
        return path

    def commit(self) -> list[Path]:
        """Rename every staged file into place, then fsync the folder."""
        paths = []
        try:
            while self.staged:
                tmp, path = self.staged[0]
                os.replace(tmp, path)
                self.staged.pop(0)
                self.replaced.append(path)
                paths.append(path)
        except OSError as exc:
            path = self.staged[0][1]
            replaced = list(self.replaced)
            self.discard()
            raise WriteError(path, exc, replaced, advice=self.advice) from exc
        except BaseException:
            self.discard()
            raise
        fsync_folder(self.folder)
        return paths

    def discard(self) -> None:
        """Remove the staged temporaries (the folder keeps whatever it had)."""
        for tmp, _ in self.staged:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        self.staged = []


def atomic_write(path: str | Path, data: bytes | str, advice: str | None = None) -> Path:
    """Write one file so that a crash leaves the old file or the new one, never a mix: a
    temporary file in the same folder, fsync, rename, fsync of the folder."""
    path = Path(path)
    with OutputBatch(path.parent, advice) as batch:
        batch.add(path.name, data)
    return path


def fsync_folder(folder: str | Path) -> None:
    """fsync a folder so that renames in it survive a power loss (best effort)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without folder descriptors
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse fsync on folders
        pass
    finally:
        os.close(fd)


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Remove the temporaries that an interrupted predsim left in ``folder``: names
    ``.NAME.predsim-PID-XXXX.tmp`` whose process is gone (a live writer's are left alone)."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP.match(entry.name)
        if not match or _alive(int(match.group(1))):
            continue
        try:
            os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            pass
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process: alive
        return True
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_figure(path: Path, fig) -> Path:
    """A figure as PNG, written with :func:`atomic_write`."""
    return atomic_write(path, render_png(fig))
