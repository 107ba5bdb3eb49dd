"""``predsim run``, ``validate``, ``init``, ``explain`` and ``schema``: from a scenario file
(or a few questions) to its first comparison."""

from __future__ import annotations

import os

import click
from sim.scenario import ScenarioError

from sim.cli.main import (BadInput, SCENARIO, _SET_HELP, _complete_scenario, _force_option, _load,
                          _preflight, _with_progress, main)


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

