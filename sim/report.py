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


def comparison_table(results: Results) -> Table:
    """One row per architecture, the numbers a team compares, units in the headers.

    With several replications each cell is the mean and its 95% confidence half-width.
    """
    scenario = results.scenario
    metric = scenario.quality.metric
    slo = scenario.slo.latency_p99
    reps = results.replications
    title = (f"{scenario.name}: {format_duration(scenario.horizon)} simulated, seed "
             f"{results.seed}, {reps} replication{'s' if reps != 1 else ''}"
             + (" (mean ± 95% CI)" if reps > 1 else ""))
    table = Table(title=title, title_justify="left")
    summary = results.summary
    streams = "stream_feature_age_s_mean" in summary and \
        summary["stream_feature_age_s_mean"].notna().any()
    ages = ["batch feat.\nage", "stream feat.\nage"] if streams else ["feature\nage"]
    columns = ["architecture", f"{metric}\nmean", "coverage\n%", "cold\nstart %", *ages,
               "p50\nms", "p99\nms", f">SLO\n{format_duration(slo)} %" if slo else ">SLO\n%",
               "wasted\npreds %", "replica\nutil %", "cost\n$/day", "value\n$/day",
               "net\n$/day"]
    for i, header in enumerate(columns):
        table.add_column(header, justify="left" if i == 0 else "right", no_wrap=i == 0)
    for row in results.summary.to_dict("records"):
        name = row["architecture"]

        def cell(column, pattern, scale=1.0):
            return _with_ci(row, column, pattern, scale)

        age_columns = (["batch_feature_age_s_mean", "stream_feature_age_s_mean"] if streams
                       else ["feature_age_s_mean"])
        table.add_row(
            name if name == row["kind"] else f"{name} ({row['kind']})",
            cell("quality_mean", "{:.4g}"),
            cell("coverage", "{:.2f}", 100),
            cell("cold_start_rate", "{:.2f}", 100),
            *("-" if _nan(row.get(c)) else human_duration(row[c]) for c in age_columns),
            cell("latency_ms_p50", "{:.1f}"),
            cell("latency_ms_p99", "{:.1f}"),
            cell("slo_violation_rate", "{:.2f}", 100),
            cell("wasted_prediction_rate", "{:.1f}", 100),
            cell("utilization", "{:.0f}", 100),
            cell("cost_usd_per_day", "{:,.2f}"),
            cell("value_usd_per_day", "{:,.0f}"),
            cell("net_value_usd_per_day", "{:,.0f}"),
        )
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
    table = Table(title=f"Difference from {results.baseline} (paired, 95% CI)",
                  title_justify="left")
    table.add_column("architecture", no_wrap=True)
    for _, header, _, _ in shown:
        table.add_column(header, justify="right")
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
            cells.append(f"{pattern.format(r['difference'] * scale)} "
                         f"[{pattern.format(r['low'] * scale)}, {pattern.format(r['high'] * scale)}]")
        table.add_row(name, *cells)
    return table


def retraining_table(results: Results) -> Table | None:
    """Per architecture: training runs in the measured window, training cost per day, the
    model-age distribution and the metric lost per prediction to each kind of staleness.
    None when the scenario never retrains and no model staleness or drift is modelled."""
    scenario = results.scenario
    retrains = scenario.training is not None or any(
        getattr(a, "training", None) is not None for a in scenario.architectures.values())
    if not (retrains or scenario.quality.model_staleness is not None or scenario.drift):
        return None
    metric = scenario.quality.metric
    table = Table(title=f"Retraining and staleness ({metric} lost per prediction, by cause)",
                  title_justify="left")
    for i, header in enumerate(["architecture", "trainings", "training\n$/day",
                                "model age\np50", "model age\np95", "model age\nmax",
                                "lost to\nfeature age", "lost to\ncold start",
                                "lost to\nfeatures\nit lacks", "lost to\nmodel age",
                                "lost to\ndrift"]):
        table.add_column(header, justify="left" if i == 0 else "right", no_wrap=i == 0)
    for row in results.summary.to_dict("records"):
        table.add_row(
            row["architecture"],
            _with_ci(row, "trainings", "{:,.1f}" if results.replications > 1 else "{:,.0f}"),
            _with_ci(row, "cost_usd_per_day_training", "{:,.2f}"),
            *("-" if _nan(row.get(f"model_age_s_{k}")) else human_duration(row[f"model_age_s_{k}"])
              for k in ("p50", "p95", "max")),
            *(_with_ci(row, f"quality_lost_{k}", "{:.3g}")
              for k in ("feature_staleness", "cold_start", "missing_features",
                        "model_staleness", "drift")))
    return table


def _with_ci(row: dict, column: str, pattern: str, scale: float = 1.0) -> str:
    value = row.get(column)
    if _nan(value):
        return "-"
    text = pattern.format(value * scale)
    half = row.get(f"{column}_ci95")
    if half is not None and not _nan(half):
        half_pattern = "{:.2g}" if pattern.endswith("g}") else pattern
        text += f" ±{half_pattern.format(half * scale).lstrip('+')}"
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


def print_results(results: Results, console: Console | None = None) -> None:
    if console is None:
        console = Console()
        if not console.is_terminal:  # a file or a pipe: no reason to squeeze the table
            console = Console(width=180)
    console.print(comparison_table(results))
    retraining = retraining_table(results)
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
