"""The ``predsim`` command: parse, call the library, print, map errors to exit codes.

Exit codes: 0 success, 2 bad input (a clear message, no traceback), 1 anything else.
"""

from __future__ import annotations

import os
import sys

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from sim.scenario import ScenarioError, load_scenario

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


_FORCE_HELP = ("Run even when the preflight finds an absurd number of control-plane events "
               "(jobs overlapping, windows far shorter than the gap between requests); never "
               "past a memory refusal.")


def _force_option(command):
    """--force, on every command that simulates (see sim/inputs/preflight.py)."""
    return click.option("--force", is_flag=True, help=_FORCE_HELP)(command)


class _Commands(click.Group):
    """The command group; an output that cannot be written (a full disk, a read-only folder)
    is bad input: one clear line, exit 2, nothing overwritten (sim.report.output.WriteError)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except OSError as exc:
            from sim.report.output import WriteError, write_error_message
            if isinstance(exc, WriteError):
                raise BadInput(write_error_message(exc)) from None
            raise
        except ValueError as exc:  # a result that overflowed: bad input, naming the metric
            from sim.results.results import NonFiniteResult
            if isinstance(exc, NonFiniteResult):
                raise BadInput(str(exc)) from None
            raise


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="predsim-ml", prog_name="predsim")
def main():
    """predsim: simulate batch, online, streaming and hybrid prediction on your own workload
    and compare freshness, latency, quality, cost and value before you build anything."""


def _with_progress(work, description: str):
    """Run ``work(progress_callback)`` under a progress bar when stderr is a terminal."""
    console = Console(stderr=True)
    if not console.is_terminal or os.environ.get("PREDSIM_NO_PROGRESS"):
        return work(None)
    with Progress(TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.percentage:>3.0f}%"), TimeRemainingColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task(description, total=1.0)
        return work(lambda done: progress.update(task, completed=done))


def _preflight(scenarios, replications: int = 1, *, force: bool = False, parallel: int = 1,
               label: str | None = None, time_scenarios=None, engine: str = "fast"
               ) -> list[str]:
    """Estimate the simulations a command is about to run (sim/inputs/preflight.py) before any
    starts: a refusal exits 2 with its message; warnings (a run longer than a minute) go to
    stderr and are returned, for the JSON's notes. An estimate that fails itself never stops
    the run."""
    from sim.inputs.preflight import PreflightError, check, estimate_many

    if not isinstance(scenarios, (list, tuple)):
        scenarios = [scenarios]
    try:
        est = check(estimate_many(scenarios, replications, parallel=parallel, label=label,
                                  time_scenarios=time_scenarios, engine=engine), force=force)
    except PreflightError as exc:
        raise BadInput(str(exc)) from None
    except Exception:  # noqa: BLE001 - the preflight advises; the simulation decides
        if os.environ.get("PREDSIM_DEBUG"):
            raise
        return []
    for warning in est.warnings:
        click.echo(f"Warning: {warning}", err=True)
    return list(est.warnings)


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


# --------------------------------------------------------------------------------------------
# Completion of scenario file names (the commands are in first_hour.py, studies.py, inputs.py)
# --------------------------------------------------------------------------------------------

def _complete_scenario(ctx, param, incomplete: str):
    """Shell completion of scenario arguments: *.yaml and *.yml files, and folders.

    When the only candidate is a folder, its contents are offered instead, so that completing
    ``scen`` goes straight on to ``scenarios/quickstart.yaml`` (bash would otherwise add a space
    after ``scenarios/``).
    """
    from click.shell_completion import CompletionItem

    for _ in range(8):  # folders nested this deep at most
        names = _scenario_candidates(incomplete)
        if len(names) != 1 or not names[0].endswith("/"):
            break
        inside = _scenario_candidates(names[0])
        if not inside:
            break
        incomplete = names[0]
    return [CompletionItem(name) for name in names]


def _scenario_candidates(incomplete: str) -> list[str]:
    """Folders (ending in /) and *.yaml / *.yml files whose path starts with ``incomplete``."""
    from pathlib import Path

    head = incomplete[: incomplete.rfind("/") + 1]
    prefix = incomplete[len(head):]
    try:
        entries = sorted(Path(os.path.expanduser(head) if head else ".").iterdir())
    except OSError:
        return []
    names = []
    for entry in entries:
        if not entry.name.startswith(prefix) or (entry.name.startswith(".") and
                                                 not prefix.startswith(".")):
            continue
        if entry.is_dir():
            names.append(head + entry.name + "/")
        elif entry.suffix in (".yaml", ".yml"):
            names.append(head + entry.name)
    return names


# --------------------------------------------------------------------------------------------
# Helpers of the study commands (studies.py): baselines, scale-out, search output
# --------------------------------------------------------------------------------------------

def _check_baseline(scenario: str, spec, baseline: str | None, option: str = "--baseline"):
    if baseline is not None and baseline not in spec.architectures:
        raise BadInput(f"{scenario}: {option} {baseline!r} is not an architecture of this "
                       f"scenario (choose from {', '.join(spec.architectures)})")


def _scale_out_options(command):
    """--workers / --dask, shared by sweep, optimize and capacity."""
    command = click.option(
        "--dask", metavar="ADDRESS",
        help="Run on an existing Dask distributed cluster (tcp://host:8786), or 'local' to "
             "start a LocalCluster here. Results do not depend on it.")(command)
    return click.option(
        "--workers", "-j", type=click.IntRange(min=1), default=None,
        help="Local processes (default: CPU cores); with --dask local, the LocalCluster's "
             "workers. Results do not depend on it.")(command)


def _executor(workers, dask):
    from sim.studies.executors import make_executor
    if dask is not None and not dask.strip():
        raise BadInput("--dask: expected a scheduler address such as tcp://host:8786, or "
                       "'local'")
    if dask and dask != "local" and workers is not None:
        raise BadInput("--workers: not with --dask ADDRESS (the cluster has its own workers); "
                       "it sizes the cluster only with --dask local")
    return make_executor(workers or os.cpu_count() or 1, dask)


def _search_errors(work):
    """Run ``work()``, turning bad sweep/search input into BadInput (exit 2)."""
    from sim.studies.executors import ExecutorError
    from sim.studies.designs import SweepError
    try:
        return work()
    except (SweepError, ExecutorError) as exc:
        raise BadInput(str(exc)) from None
    except ScenarioError as exc:
        raise BadInput("\n".join(exc.problems)) from None


def _evaluation_printer():
    """Prints each simulated configuration to stderr when it is a terminal."""
    console = Console(stderr=True)
    if not console.is_terminal or os.environ.get("PREDSIM_NO_PROGRESS"):
        return None

    def show(evaluation):
        values = ", ".join(f"{k.rsplit('.', 1)[-1]}={v:g}" if isinstance(v, float) else
                           f"{k.rsplit('.', 1)[-1]}={v}" for k, v in evaluation.values.items())
        verdict = "meets" if evaluation.feasible else "misses"
        console.print(f"  {evaluation.order + 1}. {values}: {verdict} the constraints",
                      highlight=False, markup=False)
    return show


# The commands register themselves on ``main`` when imported.
from sim.cli import first_hour, inputs, studies  # noqa: E402,F401  (registers the commands)
