"""``predsim verify``, ``report``, ``abtest``, ``sweep``, ``optimize``, ``capacity`` and
``retrain-advice``: studies made of many runs."""

from __future__ import annotations

import os
import sys

import click
from rich.console import Console

from sim.cli.main import (BadInput, SCENARIO, _SET_HELP, _check_baseline, _complete_scenario,
                          _evaluation_printer, _executor, _force_option, _load, _preflight,
                          _scale_out_options, _search_errors, _with_progress, main)


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
              help="Share of daily traffic in the test, split evenly between the two arms "
                   "(default 1; with --methods, the scenario's training.evaluation.share, else "
                   "0.1, for the plan and the comparison alike).")
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
@click.option("--methods", is_flag=True,
              help="Also compare the ways to test the new model: A/B test, shadow, canary, "
                   "interleaving and a Thompson-sampling bandit (days to decide, extra cost, "
                   "value lost while testing). See docs/testing-in-production.md.")
@click.option("--shadow-predictions", metavar="N",
              help="With --methods: predictions the shadow model makes before the decision "
                   "(default 100k).")
@click.option("--canary-steps", metavar="S1,S2,...",
              help="With --methods: the canary's ramp of traffic shares (default "
                   "1%,5%,25%,50%).")
@click.option("--canary-step", metavar="DURATION",
              help="With --methods: how long the canary holds each step (default 1h).")
@click.option("--speedup", type=float, metavar="X",
              help="With --methods: how many times fewer requests interleaving needs than the "
                   "A/B test (default 10; Netflix reported over 100 for its rankers).")
@click.option("--min-effect", type=float, metavar="R",
              help="With --methods: size the A/B, interleaving and bandit tests for this "
                   "relative difference (0.01 = 1%) instead of the actual one.")
@click.option("--confidence", type=float, metavar="P",
              help="With --methods: the bandit stops when one model is best with this "
                   "probability (default 0.95).")
@click.option("--cost-per-prediction", type=float, metavar="USD",
              help="With --methods: US$ per prediction, for the extra inference of shadow and "
                   "interleaving (default 0; with SCENARIO, the treatment's serving and "
                   "batch-scoring cost per request).")
@click.option("--value-per-outcome", type=float, metavar="USD",
              help="With --methods: US$ per outcome (a click...), for the value lost while "
                   "testing (default 0; with SCENARIO, business.value_per_outcome).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_force_option
def abtest(scenario, baseline_rate, uplift, relative, daily_traffic, power, alpha, one_sided,
           traffic_share, overrides, seed, replications, baseline, arch, unit, icc,
           requests_per_user, cv, methods, shadow_predictions, canary_steps, canary_step,
           speedup, min_effect, confidence, cost_per_prediction, value_per_outcome, as_json,
           force):
    """Sample size per arm and days of traffic an A/B test needs to confirm an uplift.

    Two modes: `predsim abtest --baseline-rate 0.05 --uplift 0.03 --relative --daily-traffic 1e6`,
    or `predsim abtest SCENARIO`, which simulates SCENARIO and takes the two rates and the
    traffic from it. Two-proportion z-test: n = (z_{1-a/2} sqrt(2 pbar (1-pbar)) +
    z_{1-b} sqrt(p1 (1-p1) + p2 (1-p2)))^2 / (p2 - p1)^2 per arm. With --unit user, times the
    design effect; with SCENARIO, m and cv come from its popularity for each test length tried.

    --methods adds A/B, shadow, canary, interleaving and bandit side by side, with the same arms.
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
    method_options = _method_options(methods, shadow_predictions, canary_steps, canary_step,
                                     speedup, min_effect, confidence, cost_per_prediction,
                                     value_per_outcome)
    explicit = _explicit(click.get_current_context(), ("traffic_share", "alpha", "power"))
    comparison = None
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
            if methods:
                if traffic is None:
                    raise BadInput("--methods: give --daily-traffic too (the days to a "
                                   "decision depend on it)")
                if "traffic_share" not in explicit:
                    traffic_share = 0.1
            result = plan(baseline_rate, uplift, relative=relative, daily_traffic=traffic,
                          alpha=alpha, power=power, two_sided=not one_sided,
                          traffic_share=traffic_share, **user_options)
            if methods:
                from sim.studies.testplan import compare_methods
                comparison = compare_methods(
                    result.baseline_rate, result.treatment_rate, traffic, share=traffic_share,
                    alpha=alpha, power=power, two_sided=not one_sided,
                    **_user_sizing(result, user_options), **method_options)
        else:
            if rate_options:
                raise BadInput(f"{', '.join(rate_options)}: not with a SCENARIO, whose "
                               f"simulation gives the rates (use --arch and --baseline to "
                               f"choose the arms)")
            result, comparison = _abtest_from_scenario(
                scenario, overrides, seed, replications, baseline, arch, alpha, power,
                not one_sided, traffic_share, traffic, user_options, force=force,
                methods=method_options if methods else None, explicit=explicit)
    except PlanError as exc:
        where = (f"{_METHOD_FIELDS[exc.field]}: " if exc.field in _METHOD_FIELDS else
                 f"--{exc.field.replace('_', '-')}: " if exc.field in user_options else
                 f"{scenario}: " if scenario else
                 f"--{exc.field.replace('_', '-')}: " if exc.field else "")
        raise BadInput(f"{where}{exc}") from None
    if as_json:
        data = result.to_dict()
        if comparison is not None:
            data["methods"] = comparison.to_dict()
        click.echo(json.dumps(data, indent=2))
        return
    for line in result.lines():
        click.echo(line)
    if comparison is not None:
        from sim.studies.testplan import rich_table
        console = Console()
        if not console.is_terminal:
            console = Console(width=120)
        click.echo("")
        console.print(rich_table(comparison))
        for line in comparison.lines():
            click.echo(line)


# compare_methods' parameters and the abtest options that set them, for error messages.
_METHOD_FIELDS = {"share": "--traffic-share", "shadow_predictions": "--shadow-predictions",
                  "canary_steps": "--canary-steps", "canary_step_days": "--canary-step",
                  "interleaving_speedup": "--speedup", "min_effect": "--min-effect",
                  "bandit_confidence": "--confidence",
                  "cost_per_prediction": "--cost-per-prediction",
                  "value_per_outcome": "--value-per-outcome"}


def _explicit(ctx, names) -> set[str]:
    """The parameters among ``names`` given on the command line (not left at their default)."""
    from click.core import ParameterSource
    return {name for name in names
            if ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)}


def _method_options(methods, shadow_predictions, canary_steps, canary_step, speedup,
                    min_effect, confidence, cost_per_prediction, value_per_outcome) -> dict:
    """The --methods options as :func:`sim.studies.testplan.compare_methods` arguments (only
    those given); bad text exits 2 naming the option."""
    from sim.units import DAY_S, parse_count, parse_duration

    given = {"--shadow-predictions": shadow_predictions, "--canary-steps": canary_steps,
             "--canary-step": canary_step, "--speedup": speedup, "--min-effect": min_effect,
             "--confidence": confidence, "--cost-per-prediction": cost_per_prediction,
             "--value-per-outcome": value_per_outcome}
    if not methods:
        named = [name for name, value in given.items() if value is not None]
        if named:
            raise BadInput(f"{', '.join(named)}: only with --methods")
        return {}
    out = {}
    if shadow_predictions is not None:
        try:
            out["shadow_predictions"] = parse_count(shadow_predictions)
        except ValueError:
            raise BadInput(f"--shadow-predictions: expected a count of predictions such as "
                           f"100k (got {shadow_predictions!r})") from None
    if canary_steps is not None:
        try:
            out["canary_steps"] = tuple(
                float(x.strip()[:-1]) / 100 if x.strip().endswith("%") else float(x)
                for x in canary_steps.split(","))
        except ValueError:
            raise BadInput(f"--canary-steps: expected shares of traffic separated by commas, "
                           f"such as 1%,5%,25%,50% or 0.01,0.05 (got {canary_steps!r})") from None
    if canary_step is not None:
        try:
            seconds = parse_duration(canary_step)
        except ValueError:
            seconds = float("nan")
        if not seconds > 0:
            raise BadInput(f"--canary-step: expected a duration > 0 such as 30m or 1h (got "
                           f"{canary_step!r})")
        out["canary_step_days"] = seconds / DAY_S
    for key, value in (("interleaving_speedup", speedup), ("min_effect", min_effect),
                       ("bandit_confidence", confidence),
                       ("cost_per_prediction", cost_per_prediction),
                       ("value_per_outcome", value_per_outcome)):
        if value is not None:
            out[key] = value
    return out


def _user_sizing(plan, user_options) -> dict:
    """The unit of randomisation for the comparison's A/B sample: the plan's, with m̄ and cv as
    the plan found them (from a scenario's popularity when not given)."""
    if user_options["unit"] != "user":
        return {}
    return {"unit": "user", "icc": plan.icc, "requests_per_user": plan.requests_per_user,
            "cv": plan.cv}


def _abtest_from_scenario(scenario, overrides, seed, replications, baseline, arch, alpha,
                          power, two_sided, traffic_share, traffic, user_options, force=False,
                          methods=None, explicit=frozenset()):
    """The plan for SCENARIO's two arms, and with ``methods`` (the --methods options given)
    the comparison of ways to test, whose other options default to the treatment's
    training.evaluation (the plan's share, alpha and power too, unless given)."""
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
    if methods is None:
        return plan_from_results(results, treatment, results.baseline, alpha=alpha,
                                 power=power, two_sided=two_sided, traffic_share=traffic_share,
                                 daily_traffic=traffic, **user_options), None
    from sim.studies.testplan import compare_from_results, evaluation_options, find_evaluation
    defaults = evaluation_options(find_evaluation(spec, treatment))
    alpha = alpha if "alpha" in explicit else defaults.get("alpha", alpha)
    power = power if "power" in explicit else defaults.get("power", power)
    if "traffic_share" not in explicit:
        traffic_share = defaults.get("share", 0.1)
    result = plan_from_results(results, treatment, results.baseline, alpha=alpha, power=power,
                               two_sided=two_sided, traffic_share=traffic_share,
                               daily_traffic=traffic, **user_options)
    comparison = compare_from_results(
        results, treatment, results.baseline, daily_traffic=result.daily_traffic,
        share=traffic_share, alpha=alpha, power=power, two_sided=two_sided,
        **_user_sizing(result, user_options), **methods)
    return result, comparison


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

    from sim.studies.designs import parse_grid
    from sim.studies.sweep import Sweep, write_outputs

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


def _window_option(command):
    """--window, shared by optimize and capacity."""
    return click.option(
        "--window", type=click.Choice(["peak", "day", "horizon"]), default="peak",
        show_default=True,
        help="Where latency and queueing are judged: peak, the busiest hour of the arrival "
             "pattern (or of a replayed log); day, whole days; horizon, the scenario's own "
             "window (warns when it leaves out the peak).")(command)


@main.command()
@click.argument("scenario", type=SCENARIO, shell_complete=_complete_scenario)
@click.option("--vary", multiple=True, required=True, metavar="KEY=LO:HI",
              help="A knob and its range: whole numbers (replicas=1:32), numbers, durations "
                   "(1h:24h) or rates. Repeatable.")
@click.option("--choose", multiple=True, metavar="KEY=A,B,...",
              help="A key with a few values to choose among, e.g. "
                   "architectures.online.variant=none,int8,distilled: the search runs for "
                   "each (--max-evaluations each) and the best wins. Repeatable.")
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
@_window_option
@_scale_out_options
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=_SET_HELP)
@click.option("--seed", type=click.IntRange(min=0), help="Random seed (overrides the scenario's).")
@_force_option
def optimize(scenario, vary, choose, objective, constraints, arch, method, replications,
             tolerance, max_evaluations, window, workers, dask, overrides, seed, force):
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
        on_evaluation=_evaluation_printer(), window=window, choose=list(choose)))
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
@_window_option
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

