"""The ``predsim`` command: parse, call the library, print, map errors to exit codes.

Exit codes: 0 success, 2 bad input (a clear message, no traceback), 1 anything else.
"""

from __future__ import annotations

import os
import sys

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from sim.scenario import ScenarioError, dump_yaml, load_scenario

SCENARIO = click.Path(dir_okay=False, path_type=str)
_SET_HELP = ("Override any scenario key, e.g. --set architectures.online.serving.replicas=8 "
             "(the value is read as YAML). Repeatable.")


class BadInput(click.ClickException):
    """Bad input: printed line by line without a traceback, exit code 2."""

    exit_code = 2

    def show(self, file=None):
        click.echo(self.format_message(), err=True)


def _load(path: str, overrides: tuple[str, ...], seed: int | None = None):
    try:
        return load_scenario(path, list(overrides), seed=seed)
    except ScenarioError as exc:
        raise BadInput("\n".join(exc.problems)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="predsim-ml", prog_name="predsim")
def main():
    """predsim: simulate batch, online, streaming and hybrid prediction on your own workload
    and compare freshness, latency, quality, cost and value before you build anything."""


@main.command()
@click.argument("scenario", type=SCENARIO)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=_SET_HELP)
@click.option("--seed", type=click.IntRange(min=0), help="Random seed (overrides the scenario's).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Also write summary.csv, timeseries.csv, results.json, the resolved scenario "
                   "and PNG plots to this folder.")
@click.option("--replications", "-r", type=click.IntRange(min=1), default=3, show_default=True,
              help="Independent replications; results are means with 95% confidence intervals.")
@click.option("--baseline", help="Architecture the others are compared with (default: the "
                                 "first batch architecture, else the first).")
@click.option("--target-precision", type=click.FloatRange(min=0, min_open=True),
              help="Add replications until every paired net-value difference is known to "
                   "within this share of itself (e.g. 0.1 for ±10%).")
@click.option("--max-replications", type=click.IntRange(min=1), default=50, show_default=True,
              help="Cap for --target-precision.")
@click.option("--workers", "-j", type=click.IntRange(min=1), default=None,
              help="Replications run in parallel in this many processes (default: CPU cores). "
                   "Results do not depend on it.")
def run(scenario, overrides, seed, as_json, out_dir, replications, baseline, target_precision,
        max_replications, workers):
    """Simulate every architecture in SCENARIO and compare them."""
    import sim
    from sim.replications import default_workers
    from sim.report import print_results, to_json, write_outputs

    spec = _load(scenario, overrides, seed)
    if baseline is not None and baseline not in spec.architectures:
        raise BadInput(f"{scenario}: --baseline {baseline!r} is not an architecture of this "
                       f"scenario (choose from {', '.join(spec.architectures)})")
    results = _with_progress(
        lambda progress: sim.run(spec, replications, baseline=baseline,
                                 target_precision=target_precision,
                                 max_replications=max(max_replications, replications),
                                 workers=workers or default_workers(), progress=progress),
        f"Simulating {spec.name}")
    if as_json:
        click.echo(to_json(results))
    else:
        print_results(results)
    if out_dir:
        written = write_outputs(results, out_dir)
        if not as_json:
            click.echo(f"Wrote {len(written)} files to {out_dir}/")


@main.command()
@click.argument("scenario", type=SCENARIO)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=_SET_HELP)
def validate(scenario, overrides):
    """Check SCENARIO and print it with every default filled in (or every problem at once)."""
    from sim.report import resolved_yaml
    spec = _load(scenario, overrides)
    click.echo(resolved_yaml(spec), nl=False)


@main.command()
@click.option("--quick", is_flag=True, help="The short set of cases (under a minute).")
def verify(quick):
    """Check the simulator against queueing theory and age-of-information closed forms.

    Prints, per case, the simulated value with its confidence interval, the closed form, the
    relative error and whether the closed form lies inside the interval. Exits 0 only when
    every case passes.
    """
    from sim.report import verification_table
    from sim.verify import verify as run_verification

    table = _with_progress(lambda progress: run_verification(quick=quick),
                           "Running verification cases")
    console = Console() if Console().is_terminal else Console(width=180)
    console.print(verification_table(table))
    failed = int((~table["passed"]).sum())
    if failed:
        click.echo(f"{failed} of {len(table)} checks FAILED: the simulator disagrees with "
                   f"theory. This is a bug; please report it.", err=True)
        sys.exit(1)
    click.echo(f"All {len(table)} checks passed.")


def _with_progress(work, description: str):
    """Run ``work(progress_callback)`` under a progress bar when stderr is a terminal."""
    console = Console(stderr=True)
    if not console.is_terminal or os.environ.get("PREDSIM_NO_PROGRESS"):
        return work(None)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeRemainingColumn(), console=console, transient=True) as progress:
        task = progress.add_task(description, total=1.0)
        return work(lambda done: progress.update(task, completed=done))


def entry() -> None:
    """Console-script entry: bad input exits 2, unexpected errors exit 1 without a traceback."""
    try:
        main(standalone_mode=True)
    except SystemExit:
        raise
    except Exception as exc:  # pragma: no cover - the last line of defence
        if os.environ.get("PREDSIM_DEBUG"):
            raise
        click.echo(f"predsim: unexpected error: {exc}. Set PREDSIM_DEBUG=1 for details.",
                   err=True)
        sys.exit(1)
