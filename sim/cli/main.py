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
@click.option("--engine", type=click.Choice(["fast", "reference"]), default="fast",
              show_default=True,
              help="reference runs every request as its own SimPy process: much slower, the "
                   "same numbers; for checking the fast path.")
@click.option("--wide", is_flag=True, help="Also show p50 latency, wasted predictions, replica "
                                           "utilisation, value per day and the model age's p95 "
                                           "and max (too wide for a 100-column terminal).")
@_force_option
def run(scenario, overrides, seed, as_json, out_dir, replications, baseline, target_precision,
        max_replications, workers, engine, wide, force):
    """Simulate every architecture in SCENARIO and compare them."""
    import sim
    from sim.results.replications import default_workers
    from sim.report.output import print_results, to_json, write_outputs

    spec = _load(scenario, overrides, seed)
    if baseline is not None and baseline not in spec.architectures:
        raise BadInput(f"{scenario}: --baseline {baseline!r} is not an architecture of this "
                       f"scenario (choose from {', '.join(spec.architectures)})")
    notes = _preflight(spec, replications, force=force, parallel=workers or default_workers(),
                       label=scenario, engine=engine)
    results = _with_progress(
        lambda progress: sim.run(spec, replications, baseline=baseline,
                                 target_precision=target_precision,
                                 max_replications=max(max_replications, replications),
                                 workers=workers or default_workers(), engine=engine,
                                 progress=progress),
        f"Simulating {spec.name}")
    results.notes.extend(n for n in notes if n not in results.notes)
    if as_json:
        click.echo(to_json(results))
    else:
        print_results(results, wide=wide)
    if out_dir:
        written = write_outputs(results, out_dir)
        if not as_json:
            click.echo(f"Wrote {len(written)} files to {os.path.normpath(out_dir)}/")


@main.command()
@click.argument("scenario", type=SCENARIO)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=_SET_HELP)
def validate(scenario, overrides):
    """Check SCENARIO and print it with every default filled in (or every problem at once)."""
    from sim.report.output import resolved_yaml
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
    from sim.report.output import verification_table
    from sim.studies.verify import verify as run_verification

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


def _preflight(scenarios, replications: int = 1, *, force: bool = False, parallel: int = 1,
               label: str | None = None, time_scenarios=None, engine: str = "fast"
               ) -> list[str]:
    """Estimate the simulations a command is about to run (sim/inputs/preflight.py) before any starts:
    a refusal exits 2 with its message; warnings (a run longer than a minute) go to stderr and
    are returned, for the JSON's notes. An estimate that fails itself never stops the run."""
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
# The first hour: init, explain, schema (and completion of scenario file names)
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


def _answer_options(command):
    """One --option per question of ``predsim init`` (sim/inputs/starter.py: QUESTIONS)."""
    from sim.inputs.starter import QUESTIONS
    for q in reversed(QUESTIONS):
        default = q.default if isinstance(q.default, str) else "from your other answers"
        command = click.option(q.flag, q.key, metavar="VALUE",
                               help=f"{q.text} [default: {default}]")(command)
    return command


def _ask(given: dict[str, str]) -> dict[str, str]:
    """Prompt for every answer not given as an option, each with its default shown."""
    from sim.inputs.starter import QUESTIONS

    answers, parsed, section = dict(given), {}, None
    for q in QUESTIONS:
        if q.key in given:
            try:
                parsed[q.key] = q.parse(given[q.key])
            except ValueError:
                pass  # reported with the option's name when all answers are checked
            continue
        if q.section != section:
            section = q.section
            click.secho(f"\n{section}", bold=True, err=True)

        def parse(text, q=q):
            try:
                return text, q.parse(text)
            except ValueError as exc:
                raise click.BadParameter(str(exc)) from None

        text, parsed[q.key] = click.prompt(f"  {q.text}", default=q.default_for(parsed),
                                           value_proc=parse, err=True)
        answers[q.key] = text
    return answers


@main.command()
@click.argument("path", default="scenario.yaml", type=click.Path(dir_okay=False, path_type=str),
                shell_complete=_complete_scenario)
@click.option("--defaults", is_flag=True,
              help="Ask nothing: use the default of every answer not given as an option.")
@click.option("--force", is_flag=True, help="Overwrite PATH if it exists.")
@click.option("--name", help="Scenario name [default: the file name without .yaml].")
@_answer_options
def init(path, defaults, force, name, **given):
    """Write a first scenario to PATH (default scenario.yaml) from a few plain answers.

    It compares your current batch predictions with online and streaming prediction. Each
    question shows its default; press Enter to take it. With --defaults, or with an option for
    every answer, nothing is asked.
    """
    from pathlib import Path

    from sim.report.output import atomic_write
    from sim.inputs.starter import StarterError, parse_answers, starter_yaml

    target = Path(path)
    if target.exists() and not force:
        raise BadInput(f"{path}: already exists; choose another name or add --force to "
                       f"overwrite it")
    if not target.parent.is_dir():
        raise BadInput(f"{path}: folder {target.parent} does not exist")
    given = {k: v for k, v in given.items() if v is not None}
    if not defaults:
        given = _ask(given)
    try:
        text = starter_yaml(parse_answers(given, name=name or target.stem), filename=path)
    except (StarterError, ScenarioError) as exc:
        raise BadInput("\n".join(exc.problems)) from None
    atomic_write(target, text)
    click.echo(f"Wrote {path}. Read it back with `predsim explain {path}`, then compare the "
               f"architectures with `predsim run {path}`.")


@main.command()
@click.argument("scenario", type=SCENARIO, shell_complete=_complete_scenario)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=_SET_HELP)
def explain(scenario, overrides):
    """Describe SCENARIO in plain sentences: traffic, entities, quality, and how each
    architecture predicts, how fresh its data is and roughly what it costs."""
    from sim.inputs.explain import explain as describe
    click.echo(describe(_load(scenario, overrides)), nl=False)


@main.command()
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=str),
              help="Write the schema to this file instead of printing it; the copy in the "
                   "repository is regenerated with --out schema/scenario.schema.json.")
def schema(out_file):
    """Print the JSON Schema of scenario files (for editors: see docs/tutorial.md).

    It is generated from the same models that validate scenarios; `predsim validate` stays the
    authority on what a scenario may hold.
    """
    import json
    from pathlib import Path

    from sim.report.output import atomic_write
    from sim.scenario import Scenario

    text = json.dumps(Scenario.model_json_schema(), indent=2) + "\n"
    if out_file is None:
        click.echo(text, nl=False)
        return
    target = Path(out_file)
    if not target.parent.is_dir():
        raise BadInput(f"{out_file}: folder {target.parent} does not exist")
    atomic_write(target, text)


# --------------------------------------------------------------------------------------------
# The manager's report and the A/B test planner (sim/report/manager_report.py, sim/studies/abtest.py)
# --------------------------------------------------------------------------------------------

def _check_baseline(scenario: str, spec, baseline: str | None, option: str = "--baseline"):
    if baseline is not None and baseline not in spec.architectures:
        raise BadInput(f"{scenario}: {option} {baseline!r} is not an architecture of this "
                       f"scenario (choose from {', '.join(spec.architectures)})")


@main.command()
@click.argument("scenario", type=SCENARIO, shell_complete=_complete_scenario)
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=str),
              help="Folder for report.html (one self-contained page), report.md and the PNGs.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=_SET_HELP)
@click.option("--seed", type=click.IntRange(min=0), help="Random seed (overrides the scenario's).")
@click.option("--replications", "-r", type=click.IntRange(min=1), default=3, show_default=True,
              help="Replications of the comparison; confidence intervals need 2 or more.")
@click.option("--baseline", help="Architecture to compare with, what the team runs today "
                                 "(default: the first batch architecture, else the first).")
@click.option("--analysis-horizon", default="1d", show_default=True, metavar="DURATION",
              help="Longest measured time of each breakeven and sensitivity run (shorter runs "
                   "keep the report quick; the report says so).")
@click.option("--analysis-replications", type=click.IntRange(min=1), default=1,
              show_default=True, help="Replications of each breakeven and sensitivity run.")
@click.option("--no-analysis", is_flag=True,
              help="Leave out the breakeven and the sensitivity (no extra runs).")
@click.option("--workers", "-j", type=click.IntRange(min=1), default=None,
              help="Simulations run in parallel in this many processes (default: CPU cores). "
                   "Results do not depend on it.")
@_force_option
def report(scenario, out_dir, overrides, seed, replications, baseline, analysis_horizon,
           analysis_replications, no_analysis, workers, force):
    """Write the report for a manager on SCENARIO to --out: a recommendation in one sentence,
    the comparison with confidence intervals, plots, the traffic at which the decision flips,
    the inputs that matter most, the A/B test that would confirm it, and the assumptions."""
    from pathlib import Path

    import sim
    from sim.report.manager_report import Analysis, build_report
    from sim.results.replications import default_workers
    from sim.units import parse_duration

    spec = _load(scenario, overrides, seed)
    _check_baseline(scenario, spec, baseline)
    try:
        horizon_s = parse_duration(analysis_horizon)
    except ValueError:
        horizon_s = float("nan")
    if not horizon_s > 0:
        raise BadInput(f"--analysis-horizon: expected a duration > 0 such as 6h or 1d "
                       f"(got {analysis_horizon!r})")
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise BadInput(f"--out {out_dir}: exists and is not a folder")
    workers = workers or default_workers()
    notes = _preflight(spec, replications, force=force, parallel=workers, label=scenario)
    results = _with_progress(
        lambda progress: sim.run(spec, replications, baseline=baseline, workers=workers,
                                 progress=progress),
        f"Simulating {spec.name}")
    results.notes.extend(n for n in notes if n not in results.notes)
    analysis = Analysis(horizon_s=horizon_s, replications=analysis_replications,
                        breakeven=not no_analysis, sensitivity=not no_analysis)
    built = _with_progress(
        lambda progress: build_report(results, analysis=analysis,
                                      source_text=Path(scenario).read_text(),
                                      overrides=overrides, workers=workers, progress=progress),
        "Breakeven and sensitivity")
    try:
        written = built.write(out_dir)
    except OSError as exc:
        from sim.report.output import write_error_message
        raise BadInput(write_error_message(exc, out_dir)) from None
    click.echo(built.recommendation.sentence)
    click.echo(f"Wrote {len(written)} files to {os.path.normpath(out_dir)}/: open "
               f"{Path(out_dir) / 'report.html'}")


@main.command()
@click.argument("scenario", required=False, type=SCENARIO, shell_complete=_complete_scenario)
@click.option("--baseline-rate", type=float, metavar="P",
              help="Without SCENARIO: today's rate of the metric, e.g. 0.05 for a 5% CTR.")
@click.option("--uplift", type=float, metavar="D",
              help="Without SCENARIO: the change to detect, absolute (0.003 = 5.0% -> 5.3%), "
                   "or relative with --relative (0.03 = +3%).")
@click.option("--relative", is_flag=True, help="--uplift is a share of the baseline rate.")
@click.option("--daily-traffic", metavar="N",
              help="Requests a day (e.g. 1e6 or 1M); with SCENARIO, the scenario's rate by "
                   "default.")
@click.option("--power", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=0.8, show_default=True, help="Chance of detecting the uplift if real.")
@click.option("--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=0.05, show_default=True, help="Significance level (false-positive rate).")
@click.option("--one-sided", is_flag=True, help="A one-sided test (default: two-sided).")
@click.option("--traffic-share", type=click.FloatRange(0, 1, min_open=True), default=1.0,
              show_default=True, help="Share of daily traffic in the test, split evenly "
                                      "between the two arms.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=_SET_HELP)
@click.option("--seed", type=click.IntRange(min=0), help="With SCENARIO: random seed.")
@click.option("--replications", "-r", type=click.IntRange(min=1), default=3, show_default=True,
              help="With SCENARIO: replications of the simulation.")
@click.option("--baseline", help="With SCENARIO: the control arm (default: the first batch "
                                 "architecture, else the first).")
@click.option("--arch", help="With SCENARIO: the treatment arm (default: the recommended, or "
                             "best, architecture).")
@click.option("--unit", type=click.Choice(["request", "user"]), default="request",
              show_default=True,
              help="What the test splits at random. request: every request an independent "
                   "trial. user: a user's requests are correlated, and the sample is multiplied "
                   "by the design effect 1 + ((cv^2 + 1) m - 1) ICC (needs --icc).")
@click.option("--icc", type=float, metavar="R",
              help="With --unit user: the intra-user correlation of the metric, 0 to 1 (the "
                   "share of its variance between users; from a past test or log).")
@click.option("--requests-per-user", type=float, metavar="M",
              help="With --unit user: mean requests per user who shows up during the test "
                   "(required without SCENARIO; with SCENARIO, computed from its popularity).")
@click.option("--cv", type=float, metavar="CV",
              help="With --requests-per-user: coefficient of variation of requests per user "
                   "(default 0: every user the same).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_force_option
def abtest(scenario, baseline_rate, uplift, relative, daily_traffic, power, alpha, one_sided,
           traffic_share, overrides, seed, replications, baseline, arch, unit, icc,
           requests_per_user, cv, as_json, force):
    """Sample size per arm and days of traffic an A/B test needs to confirm an uplift.

    Two modes: `predsim abtest --baseline-rate 0.05 --uplift 0.03 --relative --daily-traffic 1e6`,
    or `predsim abtest SCENARIO`, which simulates SCENARIO and takes the two rates and the
    traffic from it. Two-proportion z-test: n = (z_{1-a/2} sqrt(2 pbar (1-pbar)) +
    z_{1-b} sqrt(p1 (1-p1) + p2 (1-p2)))^2 / (p2 - p1)^2 per arm. With --unit user, times the
    design effect; with SCENARIO, m and cv come from its popularity for each test length tried.
    """
    import json

    from sim.studies.abtest import PlanError, check_unit, plan
    from sim.units import parse_count

    traffic = None
    if daily_traffic is not None:
        try:
            traffic = parse_count(daily_traffic)
        except ValueError:
            traffic = float("nan")
        if not traffic > 0:
            raise BadInput(f"--daily-traffic: expected a number of requests > 0 such as 1e6 or "
                           f"1M (got {daily_traffic!r})")
    rate_options = [name for name, given in (("--baseline-rate", baseline_rate is not None),
                                             ("--uplift", uplift is not None),
                                             ("--relative", relative)) if given]
    user_options = {"unit": unit, "icc": icc, "requests_per_user": requests_per_user, "cv": cv}
    try:
        check_unit(unit, icc, requests_per_user, cv, scenario is not None)
        if scenario is None:
            scenario_options = [name for name, given in (
                ("--set", overrides), ("--seed", seed is not None),
                ("--baseline", baseline is not None), ("--arch", arch is not None)) if given]
            if scenario_options:
                raise BadInput(f"{', '.join(scenario_options)}: only with a SCENARIO")
            if baseline_rate is None or uplift is None:
                raise BadInput("give --baseline-rate and --uplift (e.g. --baseline-rate 0.05 "
                               "--uplift 0.03 --relative --daily-traffic 1e6), or a SCENARIO "
                               "to simulate")
            result = plan(baseline_rate, uplift, relative=relative, daily_traffic=traffic,
                          alpha=alpha, power=power, two_sided=not one_sided,
                          traffic_share=traffic_share, **user_options)
        else:
            if rate_options:
                raise BadInput(f"{', '.join(rate_options)}: not with a SCENARIO, whose "
                               f"simulation gives the rates (use --arch and --baseline to "
                               f"choose the arms)")
            result = _abtest_from_scenario(scenario, overrides, seed, replications, baseline,
                                           arch, alpha, power, not one_sided, traffic_share,
                                           traffic, user_options, force=force)
    except PlanError as exc:
        where = (f"--{exc.field.replace('_', '-')}: " if exc.field in user_options else
                 f"{scenario}: " if scenario else
                 f"--{exc.field.replace('_', '-')}: " if exc.field else "")
        raise BadInput(f"{where}{exc}") from None
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        for line in result.lines():
            click.echo(line)


def _abtest_from_scenario(scenario, overrides, seed, replications, baseline, arch, alpha,
                          power, two_sided, traffic_share, traffic, user_options, force=False):
    import sim
    from sim.studies.abtest import plan_from_results
    from sim.report.manager_report import recommend
    from sim.results.replications import default_workers

    spec = _load(scenario, overrides, seed)
    _check_baseline(scenario, spec, baseline)
    _check_baseline(scenario, spec, arch, "--arch")
    if len(spec.architectures) < 2:
        raise BadInput(f"{scenario}: an A/B test needs two architectures; this scenario has "
                       f"one ({', '.join(spec.architectures)})")
    _preflight(spec, replications, force=force, parallel=default_workers(), label=scenario)
    results = _with_progress(
        lambda progress: sim.run(spec, replications, baseline=baseline,
                                 workers=default_workers(), progress=progress),
        f"Simulating {spec.name}")
    treatment = arch or recommend(results).compared
    return plan_from_results(results, treatment, results.baseline, alpha=alpha, power=power,
                             two_sided=two_sided, traffic_share=traffic_share,
                             daily_traffic=traffic, **user_options)


# --------------------------------------------------------------------------------------------
# Sweeps, search and capacity (sim/studies/sweep.py, sim/studies/search.py)
# --------------------------------------------------------------------------------------------

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
    from sim.studies.sweep import SweepError
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


@main.command()
@click.argument("scenario", type=SCENARIO, shell_complete=_complete_scenario)
@click.option("--grid", multiple=True, metavar="KEY=V1,V2,...",
              help="Values of one scenario key, read as YAML (6h stays text for the scenario "
                   "parser). Every combination of the --grid keys is a point. Repeatable.")
@click.option("--random", "random_points", type=click.IntRange(min=1), metavar="N",
              help="N random points drawn in the --range boxes (each combined with every grid "
                   "point), seeded from the scenario seed.")
@click.option("--range", "ranges", multiple=True, metavar="KEY=LO:HI",
              help="Range of one key for --random: numbers (whole numbers stay whole), "
                   "durations (1h:6h), rates (10/s:50/s). Repeatable.")
@click.option("--design", type=click.Choice(["lhs", "uniform"]), default="lhs",
              show_default=True, help="Random points: Latin hypercube or plain uniform.")
@click.option("--replications", "-r", type=click.IntRange(min=1), default=3, show_default=True,
              help="Replications of every point (means with 95% confidence intervals).")
@_scale_out_options
@click.option("--resume", is_flag=True,
              help="Continue the sweep in --out, skipping the points already written.")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=str),
              help="Folder for sweep.parquet, sweep.csv, the plots, manifest.json and one file "
                   "per finished point.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=_SET_HELP)
@click.option("--seed", type=click.IntRange(min=0), help="Random seed (overrides the scenario's).")
@click.option("--common-random-numbers", is_flag=True,
              help="Every point uses the scenario's seed (the same requests), instead of a seed "
                   "derived from the point.")
@click.option("--no-plots", is_flag=True, help="Write the tables only.")
@_force_option
def sweep(scenario, grid, random_points, ranges, design, replications, workers, dask, resume,
          out_dir, overrides, seed, common_random_numbers, no_plots, force):
    """Simulate SCENARIO at every point of a grid (and/or random points in ranges), each over
    replications, and write one tidy table: a row per point and architecture, the swept keys as
    columns, means and 95% CIs. Each point's seed derives from the scenario seed and the point,
    so the table is the same, byte for byte, however many workers run it; finished points are
    saved as they complete, and --resume continues a sweep that was stopped.

    \b
    predsim sweep scenarios/quickstart.yaml --out sweep/ \\
        --grid architectures.online.serving.replicas=1,2,4 --grid workload.arrivals.rate=10/s,20/s
    """
    from pathlib import Path

    from sim.studies.sweep import Sweep, parse_grid, write_outputs

    spec = _load(scenario, overrides, seed)
    executor = _executor(workers, dask)
    plan = _search_errors(lambda: Sweep(
        scenario, parse_grid(grid), random=random_points or 0, ranges=ranges, method=design,
        replications=replications, out=out_dir, resume=resume,
        common_random_numbers=common_random_numbers, overrides=overrides, seed=seed))
    todo = len(plan.remaining)
    left = {p.id for p in plan.remaining}
    _preflight(plan.scenarios, replications, force=force, label=scenario,
               parallel=getattr(executor, "workers", None) or os.cpu_count() or 1,
               time_scenarios=[s for p, s in zip(plan.points, plan.scenarios) if p.id in left])
    if todo:
        _search_errors(executor.__enter__)
    try:
        table = _with_progress(lambda progress: plan.run(executor, progress=progress),
                               f"Sweeping {spec.name}: {len(plan.points)} points x "
                               f"{replications} replications")
    finally:
        executor.close()
    try:
        written = write_outputs(table, out_dir, plots=not no_plots)
    except OSError as exc:
        from sim.report.output import write_error_message
        raise BadInput(write_error_message(exc, out_dir)) from None
    resumed = f", {plan.resumed} of them resumed from {out_dir}/" if plan.resumed else ""
    where = executor.describe() if todo else "nothing left to run"
    click.echo(f"{len(plan.points)} points x {replications} replications = "
               f"{plan.simulations} simulations{resumed} ({where}).")
    plots = f" and {len(written) - 2} plots" if len(written) > 2 else ""
    click.echo(f"Wrote {Path(out_dir) / 'sweep.parquet'}, sweep.csv{plots} "
               f"({len(table)} rows).")


def _run_search(executor, work):
    """``work(executor)`` on a started executor, bad input exiting 2."""
    _search_errors(executor.__enter__)
    try:
        return _search_errors(lambda: work(executor))
    finally:
        executor.close()


@main.command()
@click.argument("scenario", type=SCENARIO, shell_complete=_complete_scenario)
@click.option("--vary", multiple=True, required=True, metavar="KEY=LO:HI",
              help="A knob and its range: whole numbers (replicas=1:32), numbers, durations "
                   "(1h:24h) or rates. Repeatable.")
@click.option("--objective", default="min:cost_per_day", show_default=True,
              metavar="min|max:METRIC", help="What to minimise or maximise (metric names: see "
                                             "docs/sweeps.md, e.g. cost_per_day, "
                                             "net_value_per_day).")
@click.option("--constraint", "constraints", multiple=True, metavar="EXPR",
              help="METRIC<=BOUND or METRIC>=BOUND with units: latency_p99<=100ms, "
                   "quality>=0.047, coverage>=99%. Repeatable.")
@click.option("--arch", help="Architecture whose metrics are judged (default: the one the "
                             "--vary keys name, or the only one).")
@click.option("--method", type=click.Choice(["auto", "bisect", "pattern"]), default="auto",
              show_default=True, help="bisect (one knob, constraints met on one side of a "
                                      "boundary) or pattern (compass search); auto: bisect for "
                                      "one knob, else pattern.")
@click.option("--replications", "-r", type=click.IntRange(min=1), default=3, show_default=True,
              help="Replications of every configuration.")
@click.option("--tolerance", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=0.01, show_default=True,
              help="Stop refining continuous knobs at this share of their range.")
@click.option("--max-evaluations", type=click.IntRange(min=2), default=60, show_default=True,
              help="At most this many configurations.")
@click.option("--window", type=click.Choice(["peak", "day", "horizon"]), default="peak",
              show_default=True,
              help="Where latency and queueing are judged: peak, the busiest hour of the arrival "
                   "pattern (or of a replayed log); day, whole days; horizon, the scenario's "
                   "own window (warns when it leaves out the peak).")
@_scale_out_options
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=_SET_HELP)
@click.option("--seed", type=click.IntRange(min=0), help="Random seed (overrides the scenario's).")
@_force_option
def optimize(scenario, vary, objective, constraints, arch, method, replications, tolerance,
             max_evaluations, window, workers, dask, overrides, seed, force):
    """Find the configuration that minimises (or maximises) a metric subject to constraints,
    with far fewer simulations than a grid; prints how many it used.

    \b
    predsim optimize scenarios/quickstart.yaml --vary architectures.online.serving.replicas=1:32 \\
        --objective min:cost_per_day --constraint latency_p99<=100ms
    """
    from sim.studies.search import optimize as search

    _load(scenario, overrides, seed)
    from sim.inputs.preflight import corner_scenarios
    _preflight(corner_scenarios(scenario, overrides, seed, vary), replications, force=force,
               parallel=workers or os.cpu_count() or 1, label=scenario, time_scenarios=[])
    result = _run_search(_executor(workers, dask), lambda executor: search(
        scenario, list(vary), objective, list(constraints), arch=arch,
        replications=replications, method=method, tolerance=tolerance,
        max_evaluations=max_evaluations, executor=executor, overrides=overrides, seed=seed,
        on_evaluation=_evaluation_printer(), window=window))
    for line in result.lines():
        click.echo(line)


@main.command()
@click.argument("scenario", type=SCENARIO, shell_complete=_complete_scenario)
@click.option("--arch", help="The architecture (default: the only one).")
@click.option("--constraint", "constraints", multiple=True, metavar="EXPR",
              help="What 'sustains' means (default: latency_p99<= the scenario's "
                   "slo.latency_p99), e.g. queue_wait_mean<=5ms. Repeatable.")
@click.option("--replications", "-r", type=click.IntRange(min=1), default=3, show_default=True,
              help="Replications at every rate tried.")
@click.option("--tolerance", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=0.01, show_default=True,
              help="Stop when the bracket is within this share of the rate.")
@click.option("--max-evaluations", type=click.IntRange(min=2), default=40, show_default=True,
              help="At most this many rates.")
@click.option("--window", type=click.Choice(["peak", "day", "horizon"]), default="peak",
              show_default=True,
              help="Where latency and queueing are judged: peak, the busiest hour of the arrival "
                   "pattern (or of a replayed log); day, whole days; horizon, the scenario's "
                   "own window (warns when it leaves out the peak).")
@_scale_out_options
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=_SET_HELP)
@click.option("--seed", type=click.IntRange(min=0), help="Random seed (overrides the scenario's).")
@_force_option
def capacity(scenario, arch, constraints, replications, tolerance, max_evaluations, window,
             workers, dask, overrides, seed, force):
    """The highest arrival rate (workload.arrivals.rate, the mean rate) at which an architecture
    stays within its SLO at the busiest hour of its traffic (--window), by bisection on the
    rate; prints the answer with its bracket and the window judged."""
    from sim.studies.search import capacity as search

    _preflight(_load(scenario, overrides, seed), replications, force=force,
               parallel=workers or os.cpu_count() or 1, label=scenario, time_scenarios=[])
    result = _run_search(_executor(workers, dask), lambda executor: search(
        scenario, arch, list(constraints), replications=replications, tolerance=tolerance,
        max_evaluations=max_evaluations, executor=executor, overrides=overrides, seed=seed,
        on_evaluation=_evaluation_printer(), window=window))
    for line in result.lines():
        click.echo(line)


# --------------------------------------------------------------------------------------------
# Measured inputs: a workload fitted to a request log, latency calibrated to samples (sim/inputs/fit.py)
# --------------------------------------------------------------------------------------------

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

    from sim.inputs.fit import InputError, fit_workload, read_log
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

    With a column of batch sizes (batch_size, or --batch-column) the durations are batch
    times: both a straight line (fixed + per_item x size, least squares) and the times as
    measured by size (batching.batch_time, interpolated between sizes) are fitted, each size's
    median compared with what each form gives (the table's at sizes left out), and the better
    printed.
    """
    from pathlib import Path

    from sim.inputs.fit import InputError, fit_latency, read_samples
    from sim.inputs.slow_fit import SLOW_ABOVE, analyse_series, series_time_column

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
    from sim.inputs.slow_fit import read_series

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
    from sim.inputs.fit import InputError, read_samples

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
    from sim.inputs.fit import InputError
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


# --------------------------------------------------------------------------------------------
# Retraining advice (sim/studies/advice.py)
# --------------------------------------------------------------------------------------------

@main.command("retrain-advice")
@click.argument("scenario", type=SCENARIO, shell_complete=_complete_scenario)
@click.option("--intervals", default="1h,6h,1d,7d", show_default=True, metavar="T1,T2,...",
              help="Retraining intervals to try (training.every), as durations.")
@click.option("--policies", default="schedule", show_default=True, metavar="P1,P2,...",
              help="Policies to try: schedule and continual at each interval; trigger once, "
                   "with the scenario's own training.trigger section.")
@click.option("--replications", "-r", type=click.IntRange(min=1), default=3, show_default=True,
              help="Replications of every candidate (means with 95% confidence intervals).")
@_scale_out_options
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=str),
              help="Also write advice.csv, advice.json and net_value_vs_interval.png here.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=_SET_HELP)
@click.option("--seed", type=click.IntRange(min=0), help="Random seed (overrides the scenario's).")
@_force_option
def retrain_advice(scenario, intervals, policies, replications, workers, dask, out_dir, as_json,
                   overrides, seed, force):
    """How often to retrain: simulate SCENARIO with each retraining interval (and policy) and
    print the net value per day (value - cost) of each, per architecture, with 95% confidence
    intervals, and the best. Every candidate sees the same requests (common random numbers).

    \b
    predsim retrain-advice scenarios/quickstart.yaml --intervals 6h,1d,7d -r 3
    """
    import json
    from pathlib import Path

    from sim.studies.advice import advise, parse_intervals, parse_policies, rich_table, write_advice

    spec = _load(scenario, overrides, seed)
    chosen = _search_errors(lambda: (parse_intervals(intervals), parse_policies(policies)))
    if out_dir is not None and Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise BadInput(f"--out {out_dir}: exists and is not a folder")
    from sim.inputs.preflight import advice_scenarios
    notes = _preflight(advice_scenarios(scenario, overrides, seed, *chosen) or [spec],
                       replications, force=force, parallel=workers or os.cpu_count() or 1,
                       label=scenario)
    result = _run_search(_executor(workers, dask), lambda executor: _with_progress(
        lambda progress: advise(scenario, *chosen, replications=replications,
                                executor=executor, overrides=overrides, seed=seed,
                                progress=progress),
        f"Retraining advice for {spec.name}"))
    result.notes.extend(n for n in notes if n not in result.notes)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        console = Console()
        if not console.is_terminal:
            console = Console(width=180)
        console.print(rich_table(result))
        for line in result.lines():
            console.print(line, highlight=False, markup=False)
        for note in result.notes:
            console.print(f"Note: {note}", highlight=False, markup=False)
    if out_dir is not None:
        try:
            written = write_advice(result, out_dir)
        except OSError as exc:
            from sim.report.output import write_error_message
            raise BadInput(write_error_message(exc, out_dir)) from None
        if not as_json:
            names = ", ".join(p.name for p in written)
            click.echo(f"Wrote {names} to {os.path.normpath(out_dir)}/")
