"""Results -> terminal tables and files. Never simulates.

Every file is written to a temporary name in the target folder and renamed into place, so an
interrupted run never leaves a half-written file where a good one was.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sim.results import Results, version
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
    table = _table(f"Retraining and staleness ({metric} lost per prediction, by cause)",
                   ["architecture", "train-\nings", "training\n$/day",
                    *(f"model age\n{k}" for k in ages),
                    *(f"lost to\n{label}" for _, label in causes)])
    for row in results.summary.to_dict("records"):
        table.add_row(
            row["architecture"],
            _with_ci(row, "trainings", "{:,.1f}" if results.replications > 1 else "{:,.0f}"),
            _with_ci(row, "cost_usd_per_day_training", "{:,.2f}"),
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


def write_outputs(results: Results, out_dir: str | Path) -> list[Path]:
    """Write summary.csv, timeseries.csv, results.json, scenario.resolved.yaml and PNG plots."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [
        _atomic_write(out / "summary.csv", results.summary.to_csv(index=False)),
        _atomic_write(out / "timeseries.csv", results.timeseries.to_csv(index=False)),
        _atomic_write(out / "results.json", to_json(results) + "\n"),
        _atomic_write(out / "scenario.resolved.yaml", resolved_yaml(results)),
    ]
    import matplotlib.pyplot as plt
    plot = results.plot
    for name, figure in (("latency_cdf.png", plot.latency_cdf), ("feature_age.png", plot.feature_age),
                         ("quality_over_time.png", plot.quality_over_time),
                         ("serving_load.png", plot.serving_load),
                         ("cost_breakdown.png", plot.cost_breakdown),
                         ("net_value.png", plot.net_value)):
        fig = figure()
        written.append(_atomic_write_figure(out / name, fig))
        plt.close(fig)
    return written


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic_write(path: Path, text: str) -> Path:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as handle:
            handle.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; files should look ordinary
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _atomic_write_figure(path: Path, fig) -> Path:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None})
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
