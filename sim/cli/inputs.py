"""``predsim workload fit`` and ``predsim calibrate``: scenario inputs from measurements."""

from __future__ import annotations

import click
from rich.console import Console

from sim.cli.main import (BadInput, main)


@main.group()
def workload():
    """Your own traffic: fit a workload: section to a request log."""


@workload.command("fit")
@click.argument("log", type=click.Path(dir_okay=False, path_type=str))
@click.option("--timestamp-column", default="timestamp", show_default=True,
              help="Column of request times: epoch seconds or ISO-8601.")
@click.option("--entity-column", default=None,
              help="Column of the ids of the users or items the requests are about [default: "
                   "entity_id when the log has it; a log without ids gives the arrivals only].")
@click.option("--size-column", default=None,
              help="Column of each request's size (tokens, candidates) [default: size, when the "
                   "log has it].")
@click.option("--profile", type=click.Choice(["auto", "weekly", "daily", "none"]),
              default="auto", show_default=True,
              help="Hour-of-week (168) or hour-of-day (24) rate multipliers, or none; auto: "
                   "weekly when the log covers a week, else daily when it covers a day.")
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=str),
              help="Also write the section to this file.")
def workload_fit(log, timestamp_column, entity_column, size_column, profile, out_file):
    """Fit a workload: section to LOG (CSV or Parquet, one row per request) and print it.

    It gives the mean rate, the daily and weekly profile, the Zipf exponent of entity
    popularity (maximum likelihood), new entities per day, and as comments the burstiness
    (index of dispersion; whether a Poisson model fits) and the share of entities active per
    day. The output pastes into a scenario; to replay the log itself instead, write
    `workload: {arrivals: {trace: LOG}}`. A log with timestamps only (no entity ids) gives the
    arrivals; the entities and their popularity stay the scenario's.
    """
    from pathlib import Path

    from sim.inputs.fit import fit_workload
    from sim.inputs.logs import InputError, read_log
    from sim.report.output import atomic_write

    if out_file is not None and not Path(out_file).parent.is_dir():
        raise BadInput(f"--out {out_file}: folder {Path(out_file).parent} does not exist")
    try:
        requests = read_log(log, timestamp_column, entity_column, size_column,
                            option_names=("--timestamp-column", "--entity-column",
                                          "--size-column"))
        text = fit_workload(requests, profile=profile).to_yaml()
    except InputError as exc:
        raise BadInput("\n".join(exc.problems)) from None
    click.echo(text, nl=False)
    if out_file is not None:
        atomic_write(Path(out_file), text)


@main.group()
def calibrate():
    """Fit scenario inputs to your own measurements."""


@calibrate.command("latency")
@click.argument("file", type=click.Path(dir_okay=False, path_type=str))
@click.option("--column", help="Column of samples [default: the one column whose name carries "
                               "its unit, such as latency_ms or service_time_s].")
@click.option("--unit", type=click.Choice(["s", "ms", "us"]),
              help="Unit of --column, when its name does not end in it.")
@click.option("--key", default="service_time", show_default=True,
              help="The scenario key to print the distribution under.")
@click.option("--time-column", help="Column of request start times (seconds, or ISO-8601 "
                                    "times): test the samples in time order for slow periods "
                                    "[default: t_s, time_s, start_s, timestamp... if the file "
                                    "has one].")
@click.option("--slow-above", type=click.FloatRange(min=1, min_open=True), metavar="X",
              help="With a time column: a request is slow above X times the median, for the "
                   "runs test and the check [default: 1.5].")
@click.option("--states", type=click.IntRange(2, 3),
              help="With a time column: speeds of the slow-period model, normal and one slow "
                   "(2) or two slow (3) [default: 2].")
@click.option("--normal-out", type=click.Path(dir_okay=False, path_type=str), metavar="FILE",
              help="With a time column: also write each duration divided by its request's "
                   "expected slowdown, for service_time: {empirical: FILE}.")
@click.option("--batch-column", metavar="NAME",
              help="Column of batch sizes: fit batch time to size, as a line (fixed + "
                   "per_item) and as measured (batch_time), and print the better [default: "
                   "batch_size, if the file has it].")
def calibrate_latency(file, column, unit, key, time_column, slow_above, states, normal_out,
                      batch_column):
    """Fit a lognormal and a gamma to measured durations in FILE (a CSV) and print the better
    as a distribution to paste into a scenario.

    Both are fitted by maximum likelihood; for each, the comment lines give the
    Kolmogorov-Smirnov statistic and the relative error of p50, p95 and p99 against the
    samples.

    With a time column (t_s, start_s, timestamp..., or --time-column) the durations are taken
    in time order and tested for independence: the lag-1 autocorrelation of their logs
    (Ljung-Box) and whether slow ones follow slow ones (runs test). Independent: the
    distribution as above. Not: slow periods, fitted by maximum likelihood (a continuous-time
    hidden Markov model), printed as serving.slow_periods and the service_time of the work at
    normal speed, with the tests, confidence intervals and a check by simulation as comments.
    Also tested: whether a duration depends on how long the replica stood idle before it
    (when it does, printed as serving.after_idle, and the rest is of the work), and whether
    the speed holds still from one 2-second window to the next (when it wanders, a comment
    says by how much and what that does to the queue's mean wait).

    With a column of batch sizes (batch_size, or --batch-column) the durations are batch
    times: both a straight line (fixed + per_item x size, least squares) and the times as
    measured by size (batching.batch_time, interpolated between sizes) are fitted, each size's
    median compared with what each form gives (the table's at sizes left out), and the better
    printed.
    """
    from pathlib import Path

    from sim.inputs.latency_fit import fit_latency, read_samples
    from sim.inputs.logs import InputError
    from sim.inputs.series import SLOW_ABOVE, series_time_column
    from sim.inputs.slow_fit import analyse_series

    def bad(exc):
        problems = [p if file in p else f"{file}: {p}" for p in exc.problems]
        return BadInput("\n".join(problems))

    if batch_column is not None or _has_column(file, "batch_size"):
        _calibrate_batches(file, batch_column or "batch_size", column, unit, bad)
        return

    if time_column is None:
        time_column = series_time_column(file, column)
    if time_column is None:
        given = [name for name, value in (("--slow-above", slow_above), ("--states", states),
                                          ("--normal-out", normal_out)) if value is not None]
        if given and Path(file).is_file():
            raise BadInput(f"{file}: {', '.join(given)}: only for samples in time order, and "
                           f"the file has no time column (such as t_s, start_s or timestamp); "
                           f"name one with --time-column")
        try:
            samples_s, used = read_samples(file, column=column, unit=unit)
            fitted = fit_latency(samples_s)
        except InputError as exc:
            raise bad(exc) from None
        for line in fitted.lines(f"{Path(file).name}, column {used}"):
            click.echo(line)
        click.echo(fitted.snippet(key))
        return

    from sim.report.output import atomic_write
    from sim.inputs.series import read_series

    if normal_out is not None and not Path(normal_out).parent.is_dir():
        raise BadInput(f"--normal-out {normal_out}: folder {Path(normal_out).parent} does not "
                       f"exist")
    try:
        series = read_series(file, time_column=time_column, column=column, unit=unit)
        analysis = analyse_series(series, states=states or 2,
                                  slow_above=slow_above or SLOW_ABOVE)
    except InputError as exc:
        raise bad(exc) from None
    click.echo(analysis.to_text(key, normal_out=normal_out), nl=False)
    if normal_out is not None and analysis.fit is not None:
        atomic_write(Path(normal_out), analysis.normal_speed_csv())


def _has_column(file: str, name: str) -> bool:
    """Whether the CSV ``file`` has a column ``name`` (False when it cannot be read: the
    reader proper says why)."""
    try:
        with open(file, encoding="utf-8") as handle:
            header = handle.readline()
    except (OSError, UnicodeDecodeError):
        return False
    return name in [c.strip() for c in header.strip().split(",")]


def _calibrate_batches(file, batch_column, column, unit, bad) -> None:
    """``calibrate latency`` on batch times: print both forms and the better one."""
    from pathlib import Path

    import pandas as pd

    from sim.engine.batch_curve import fit_batch_curve
    from sim.inputs.latency_fit import read_samples
    from sim.inputs.logs import InputError

    try:
        durations, used = read_samples(file, column=column, unit=unit)
        frame = pd.read_csv(file, skip_blank_lines=False)
    except InputError as exc:
        raise bad(exc) from None
    if batch_column not in frame.columns:
        raise BadInput(f"{file}: no column {batch_column!r} (the columns are "
                       f"{', '.join(map(str, frame.columns))}); choose one with --batch-column")
    frame.index = frame.index + 2
    frame = frame[~frame.isna().all(axis=1)]
    sizes = pd.to_numeric(frame[batch_column], errors="coerce")
    wrong = sizes.isna() | (sizes < 1) | (sizes != sizes.round())
    if wrong.any():
        line = int(sizes.index[wrong.to_numpy()][0])
        raise BadInput(f"{file}: line {line}: {batch_column} must be a whole number of requests "
                       f">= 1 (got {str(frame[batch_column].loc[line])!r})")
    try:
        fitted = fit_batch_curve(sizes.to_numpy(float), durations)
    except ValueError as exc:
        raise BadInput(f"{file}: {exc}") from None
    for line in fitted.lines(f"{Path(file).name}, columns {batch_column} and {used}"):
        click.echo(line)
    click.echo(fitted.snippet(), nl=False)


@calibrate.command("freshness")
@click.argument("file", type=click.Path(dir_okay=False, path_type=str))
@click.option("--metric", help="Name written as quality.metric (e.g. ctr); also the metric "
                               "column when the file has no column named metric.")
@click.option("--fresh", type=float, metavar="VALUE",
              help="The scenario's quality with fresh features and a just-trained model (e.g. "
                   "a CTR of 0.02); the curves are scaled to it. Default: the fitted metric at "
                   "age 0, or 1 (relative) for a lower-is-better metric.")
@click.option("--lower-is-better/--higher-is-better", "lower_is_better", default=None,
              help="Whether the metric improves downwards (log loss, NE) [default: by its name, "
                   "else by its trend with age].")
@click.option("--form", type=click.Choice(["auto", "exponential", "linear", "table"]),
              default="auto", show_default=True,
              help="Curve to write; auto: the lowest AICc among the usable fits.")
@click.option("--age-column", help="Column of ages [default: age_s, age_hours, age_days... or "
                                   "age with durations such as 6h].")
@click.option("--age-unit", type=click.Choice(["s", "m", "h", "d"]),
              help="Unit of bare numbers in the age column, when its name does not carry it.")
@click.option("--metric-column", help="Column of the metric [default: metric, or --metric].")
@click.option("--experiment-column", help="Column saying per row what was aged: model, "
                                          "feature, or one class of features (batch, stream) "
                                          "[default: experiment or kind, if there is one].")
@click.option("--experiment", type=click.Choice(["model", "feature", "batch", "stream"]),
              default="model", show_default=True,
              help="What the rows measure when there is no experiment column: model age, "
                   "feature age, or the age of one class of features.")
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=str),
              help="Also write the quality: section to this file.")
def calibrate_freshness(file, metric, fresh, lower_is_better, form, age_column, age_unit,
                        metric_column, experiment_column, experiment, out_file):
    """Fit staleness curves to FILE, the table of a "value of data freshness" experiment (CSV:
    age, metric, optionally experiment = feature | batch | stream | model), and print a
    quality: section. Rows for batch and stream (each class aged with the other held fresh)
    give a staleness curve per feature class.

    Each experiment is fitted three ways, exponential (half_life, floor), linear (per_day) and
    a table of the points; the goodness of fit of each (RMSE, R², AICc, standard errors) goes
    to stderr as a table, the chosen curves as YAML to stdout (and --out).
    """
    from pathlib import Path

    from rich.table import Table

    from sim.inputs.calibrate import fit_freshness, read_freshness
    from sim.inputs.logs import InputError
    from sim.report.output import atomic_write

    if out_file is not None and not Path(out_file).parent.is_dir():
        raise BadInput(f"--out {out_file}: folder {Path(out_file).parent} does not exist")
    try:
        table = read_freshness(file, age_column=age_column, metric_column=metric_column,
                               experiment_column=experiment_column, age_unit=age_unit,
                               metric=metric, experiment=experiment)
        fitted = fit_freshness(table, lower_is_better=lower_is_better, fresh=fresh,
                               metric=metric, form=form)
    except InputError as exc:
        raise BadInput("\n".join(p if file in p else f"{file}: {p}" for p in exc.problems)) \
            from None
    grid = Table(title=f"{Path(file).name}: {table.metric_column} by age")
    for name in ("experiment", "form", "parameters ± standard error", "RMSE", "R²", "AICc"):
        grid.add_column(name, justify="right" if name in ("RMSE", "R²", "AICc") else "left")
    for row in fitted.rows():
        status = "chosen" if row["chosen"] else "" if row["usable"] else "not usable"
        grid.add_row(row["experiment"], row["form"] + (f"\n({status})" if status else ""),
                     row["parameters"], f"{row['rmse']:.3g}", f"{row['r2']:.4f}",
                     f"{row['aicc']:.1f}")
    Console(stderr=True).print(grid)
    text = fitted.to_yaml()
    click.echo(text, nl=False)
    if out_file is not None:
        atomic_write(Path(out_file), text)

