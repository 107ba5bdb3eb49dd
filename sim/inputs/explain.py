"""A scenario in plain sentences (``predsim explain``): what it simulates, before simulating it.

:func:`explain` reads only the validated :class:`~sim.scenario.Scenario`; the numbers in it are
back-of-the-envelope figures from the scenario's own inputs (rates, prices, schedules), not
simulation results: costs per day at today's entity count, replica load from the mean service
time (the offered load ``arrival rate x mean occupancy / replicas``), and feature ages from the
schedules (a refresh every ``every`` that takes ``d`` gives ages from ``d`` to ``every + d``,
``every / 2 + d`` on average).
"""

from __future__ import annotations

import math
import textwrap

import numpy as np

from sim.distributions import Distribution
from sim.scenario import (BatchArchitecture, BatchFeatures, Curve, HybridArchitecture,
                          OnlineArchitecture, Scenario, StreamingArchitecture, StreamFeatures)
from sim.inputs.starter import expected_active, head_request_share
from sim.engine.architectures.parts import gb_month_usd_per_day
from sim.units import DAY_S, HOUR_S, format_duration
from sim.units import count_short as _count, human_duration as _dur, rate_short as _rate
from sim.units import share_text as _share, usd_short as _usd

WIDTH = 100


# --------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------

def _every(seconds: float) -> str:
    return {DAY_S: "every day", HOUR_S: "every hour", 7 * DAY_S: "every week"}.get(
        seconds, f"every {format_duration(seconds)}")


def _clock(every_s: float, start_at_s: float) -> str:
    """' at 02:00' for a daily schedule with an offset; '' without one."""
    if not start_at_s:
        return ""
    if every_s % DAY_S == 0 and start_at_s < DAY_S:
        hours, rest = divmod(start_at_s, HOUR_S)
        return f" at {int(hours):02d}:{int(rest // 60):02d}"
    return f", offset by {format_duration(start_at_s)}"


def _nodes(n: int) -> str:
    return f"{n} node" + ("s" if n != 1 else "")


def _paragraph(text: str, indent: str = "  ") -> str:
    return textwrap.fill(text, width=WIDTH, initial_indent=indent, subsequent_indent=indent)


def _dist(d: Distribution) -> str:
    if d.is_zero:
        return "no time"
    return d.describe(_short_duration)


def _short_duration(seconds: float) -> str:
    """As written in scenarios (15ms, 6h), or to 3 significant digits when that is long (a
    variant's scaled times)."""
    exact = format_duration(seconds)
    return exact if len(exact) <= 6 else _dur(seconds)


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------

def explain(scenario: Scenario) -> str:
    """The scenario described in plain sentences, section by section."""
    s = scenario
    parts = [f"{s.name}" + (f": {s.description}" if s.description else ""),
             _paragraph(f"Simulates {_dur(s.horizon)} of traffic, measured after a warm-up of "
                        f"{_dur(s.warmup)} that is simulated but not measured; seed {s.seed}. "
                        f"The numbers below are rough figures from the inputs, not results: "
                        f"`predsim run` measures.", indent="")]
    for title, body in (("Traffic", _traffic(s)), ("Entities", _entities(s)),
                        ("Quality", _quality(s)), ("Retraining", _training(s)),
                        ("Drift", _drift(s)), ("Latency target and value", _slo_value(s)),
                        (f"Architectures ({len(s.architectures)}: "
                         f"{', '.join(s.architectures)})", _architectures(s))):
        parts.append("")
        parts.append(title)
        parts.extend(_paragraph(p) for p in body)
    return "\n".join(parts) + "\n"


def _peak_trough(s: Scenario) -> tuple[float, float]:
    a = s.workload.arrivals
    if a.pattern == "constant":
        return a.rate, a.rate
    amplitude = (a.peak_to_trough - 1) / (a.peak_to_trough + 1)
    day = 1.0
    if a.pattern == "weekly":
        day = 7 / (5 + 2 * a.weekend_factor) * max(1.0, a.weekend_factor)
    return a.rate * (1 + amplitude) * day, a.rate * (1 - amplitude)


def _network(s: Scenario) -> str | None:
    """The round trip between clients and the cloud, in words."""
    n = s.network
    if n is None:
        return None
    if n.regions is None:
        where = f"a round trip of {_dist(n.rtt)}"
    else:
        where = "a round trip by region, each user always in the same one: " + "; ".join(
            f"{r.name} ({_share(r.share)} of users) {_dist(r.rtt)}" for r in n.regions)
    return (f"Clients reach the cloud over {where}. It is added to every request answered in "
            f"the cloud (stored or online), counts in the latency target and the latency "
            f"penalty, and occupies no replica.")


def _traffic(s: Scenario) -> list[str]:
    a = s.workload.arrivals
    lines = [f"Requests arrive as a Poisson process at {_rate(a.rate)} on average, about "
             f"{_count(a.rate * DAY_S)} a day."]
    if a.pattern == "constant":
        lines.append("The rate is the same all day (pattern: constant).")
        return lines
    amplitude = (a.peak_to_trough - 1) / (a.peak_to_trough + 1)
    hour = math.sin(math.pi / 24) / (math.pi / 24)
    peak, _ = _peak_trough(s)
    text = (f"The rate follows a daily cycle (pattern: {a.pattern}) that peaks at "
            f"{int(a.peak_hour):02d}:{int(a.peak_hour % 1 * 60):02d} and is lowest twelve hours "
            f"later; the peak is {a.peak_to_trough:g} times the trough "
            f"({_rate(a.rate * (1 + amplitude))} against {_rate(a.rate * (1 - amplitude))} on "
            f"an average day), and the busiest hour carries about "
            f"{_share((1 + amplitude * hour) / 24)} of a day's requests.")
    if a.pattern == "weekly":
        text += (f" Weekend days (days 5 and 6; day 0 is a Monday) carry {a.weekend_factor:g} "
                 f"times the traffic of weekdays; the busiest moment of the week is about "
                 f"{_rate(peak)}.")
    lines.append(text)
    return lines


def _entities(s: Scenario) -> list[str]:
    w = s.workload
    requests_per_day = w.arrivals.rate * DAY_S
    text = (f"The requests are about {_count(w.entities)} entities (users or items) at the "
            f"start")
    if w.new_entities_per_day:
        text += (f", and {_count(w.new_entities_per_day)} new ones appear a day (about "
                 f"{_count(w.entities + w.new_entities_per_day * s.end_s / DAY_S)} by the end)")
        rule = w.new_entities
        if rule.first_week_share is not None or rule.first_day_share is not None:
            share, span = ((rule.first_week_share, "week") if rule.first_week_share is not None
                           else (rule.first_day_share, "day"))
            text += (f"; they enter the popularity ranking where a {span}'s new entities make "
                     f"{_share(share)} of the requests")
        elif rule.enter == "tail":
            text += ("; they enter the popularity ranking at the tail (less active than every "
                     "entity present at the start)")
        else:
            text += "; they take random popularity ranks"
    text += "."
    lines = [text]
    exponent = w.popularity.exponent if w.popularity.kind == "zipf" else 0.0
    if w.popularity.kind == "uniform":
        pop = "Popularity is uniform: every entity is equally likely to be asked about."
    else:
        top = head_request_share(w.entities, max(1.0, 0.01 * w.entities), exponent)
        pop = (f"Popularity is Zipf with exponent {exponent:g} (the k-th most popular entity is "
               f"asked about in proportion to k^-{exponent:g}): the top 1% of entities get "
               f"about {_share(top)} of the requests.")
    active = expected_active(w.entities, requests_per_day, exponent)
    pop += (f" About {_count(active)} entities ({_share(active / w.entities)}) make at least "
            f"one request on a given day.")
    lines.append(pop)
    return lines


def _curve(curve: Curve | None, metric: str, fresh: float, what: str) -> str:
    if curve is None:
        return (f"{what.capitalize()} age costs nothing: there is no {what}_staleness curve.")
    if curve.exponential is not None:
        c = curve.exponential
        at_day = c.floor + (fresh - c.floor) * 2 ** (-DAY_S / c.half_life)
        return (f"As {what}s age, {metric} loses half of the way from {fresh:g} to {c.floor:g} "
                f"every {format_duration(c.half_life)} (exponential): {at_day:.4g} at one day "
                f"of {what} age.")
    if curve.linear is not None:
        c = curve.linear
        return (f"As the {what} ages, {metric} changes by {c.per_day:g} per day of {what} "
                f"age (linear), never below {c.floor:g}.")
    points = ", ".join(f"{format_duration(age)}: {value:g}" for age, value in curve.table)
    return (f"{metric} against {what} age is read from a measured table, interpolated "
            f"linearly and flat beyond its ends ({points}).")


def _quality(s: Scenario) -> list[str]:
    q = s.quality
    lines = [
        f"The quality metric is {q.metric}: {q.fresh:g} for a prediction with fresh features "
        f"from a just-trained model; a request that gets the fallback (no prediction, or a "
        f"timeout) gets {q.fallback:g}."]
    has_stream = any(getattr(getattr(a, "features", None), "stream", None) is not None
                     for a in s.architectures.values()) or q.curve("stream") is not None
    if not has_stream:
        lines.append(_curve(q.curve("batch"), q.metric, q.fresh, "feature"))
    else:
        for feature_class in ("batch", "stream"):
            text = _curve(q.curve(feature_class), q.metric, q.fresh, "feature")
            text = text[0].lower() + text[1:]
            lines.append(f"{feature_class.capitalize()} features: " +
                         text.replace("features age", f"{feature_class} features age")
                         .replace("there is no feature_staleness curve",
                                  f"there is no features.{feature_class}.staleness curve"))
        if q.without("stream") < q.fresh:
            lines.append(f"An architecture without stream features (batch, online) is worth "
                         f"{q.without('stream'):.4g} {q.metric} on that account, as if its "
                         f"stream features were as stale as they get.")
    if q.without("request") < q.fresh:
        lacking = [name for name, a in s.architectures.items()
                   if getattr(getattr(a, "features", None), "request", None) is None]
        who = (f": here {', '.join(lacking)}" if lacking else "")
        lines.append(f"Request-time features are always fresh; a prediction without them "
                     f"(stored predictions, and any architecture without features.request"
                     f"{who}) is worth {q.without('request'):.4g} on that account.")
    no_batch = [name for name, a in s.architectures.items()
                if a.kind == "streaming" and a.features.batch is None]
    if no_batch and q.without("batch") < q.fresh:
        lines.append(f"{', '.join(no_batch)} has no batch features: worth "
                     f"{q.without('batch'):.4g} on that account, as if they were as stale as "
                     f"they get.")
    cold = (f"An entity created after the last feature refresh that could include it has no "
            f"batch features yet (a cold start), for every architecture: a batch store has no "
            f"prediction for it (the fallback), and online and streaming predict for it at "
            f"{q.cold_start('batch'):.4g} {q.metric}")
    if has_stream:
        cold += (f"; its stream features exist only once its first events reach a window "
                 f"(until then {q.cold_start('stream'):.4g} on that account)")
    lines.append(cold + ".")
    lines.append(_curve(q.model_staleness, q.metric, q.fresh, "model"))
    lines.append("The losses against fresh from each class of features (its age, a cold start "
                 "or its absence), model age and drift add up, and the result stays between 0 "
                 "and fresh.")
    return lines


def _training(s: Scenario) -> list[str]:
    own = {name: a.training for name, a in s.architectures.items()
           if getattr(a, "training", None) is not None}
    shared = [name for name in s.architectures if name not in own]
    lines = []
    if shared:
        whose = "" if not own else f" (for {', '.join(shared)})"
        lines.append(_training_text(s, s.training, whose))
    for name, t in own.items():
        lines.append(f"{name} has a training section of its own (and so a model history of "
                     f"its own). " + _training_text(s, t, ""))
    return lines


def _training_text(s: Scenario, t, whose: str) -> str:
    if t is None:
        return (f"The model{whose} is never retrained: it was trained on data up to the start of "
                f"the simulation, so it grows older through the run (model age = time since the "
                f"start).")
    if t.policy != "schedule" or t.throughput is not None or t.training_mode != "stateless":
        return _training_policy(s, t) + _labels_and_tests(s, t)
    test_s = _test_s(s, t)
    lag = t.wait_s + t.duration + test_s + t.deploy_delay
    runs_per_day = DAY_S / t.every
    data = (f"data up to {_dur(t.wait_s)} before its start" if t.wait_s else
            "data up to its start")
    tested = f", is tested for {_dur(test_s)}" if t.evaluation is not None else ""
    text = (f"A training run{whose} starts {_every(t.every)}{_clock(t.every, t.start_at)} on "
            f"{data}, takes {_dur(t.duration)}{tested}, and its model serves "
            f"{_dur(t.deploy_delay)} after that")
    if test_s > t.every:
        text += ("; the test is longer than the cadence, so only one model per test is "
                 "deployed (one test at a time, the newest waiting model next) and the others "
                 "are dropped unused.")
    else:
        text += (f"; models in service are {_dur(lag)} to {_dur(t.every + lag)} old, "
                 f"{_dur(t.every / 2 + lag)} on average.")
    if s.costs.training_run:
        text += (f" Each run costs {_usd(s.costs.training_run)}, about "
                 f"{_usd(s.costs.training_run * runs_per_day)} a day, charged to every "
                 f"architecture that uses it.")
    return text + _labels_and_tests(s, t)


def _test_s(s: Scenario, t) -> float:
    """How long this training's evaluation takes at the mean rate (0 without one)."""
    if t.evaluation is None:
        return 0.0
    from sim.engine.training import ModelLifecycle
    return ModelLifecycle(t, s).test_plan()[0]


_TEST_WORDS = {
    "offline": "an offline evaluation",
    "shadow": "a shadow test (it scores {share} of traffic beside the model in service until "
              "{predictions} predictions, doubling inference there; no user sees it)",
    "canary": "a canary ({steps} of users, {step} each; a bad model is stopped after the "
              "first step)",
    "ab": "an A/B test on {share} of users (split evenly) until it can detect a {effect} "
          "change of {metric}",
    "interleaving": "an interleaving test on {share} of requests, needing {speedup:g}x fewer "
                    "samples than an A/B test of a {effect} change (both models rank each "
                    "request in it)",
    "bandit": "a Thompson-sampling bandit on {share} of users until one model is best with "
              "{confidence:.0%} confidence for a {effect} change",
}


def _labels_and_tests(s: Scenario, t) -> str:
    """Labels, tests of new models, bad models and the stateful quality effect, in words."""
    out = []
    metric = s.quality.metric
    if t.labels is not None:
        lab = t.labels
        text = (f" Labels arrive {lab.delay.describe()} after the prediction; an example is "
                f"trained on once it is {_dur(t.wait_s)} old (training.labels.wait), so "
                f"{_share(lab.mislabelled_share)} of positives are still unlabelled then and "
                f"count as negatives")
        if lab.mislabel_loss:
            text += f", costing every model {lab.loss:.3g} {metric}"
        out.append(text + ".")
    e = t.evaluation
    if e is not None:
        words = _TEST_WORDS[e.method].format(
            share=_share(e.traffic_share), predictions=f"{e.predictions:,.0f}"
            if e.predictions else "", steps=", ".join(_share(x) for x in e.steps),
            step=_dur(e.step_duration) if e.step_duration else "", effect=_share(e.min_effect),
            metric=metric, speedup=e.speedup, confidence=e.confidence)
        text = (f" Each new model goes through {words}, which takes {_dur(_test_s(s, t))} at "
                f"the mean traffic before it deploys")
        if e.cost:
            text += f" and costs {_usd(e.cost)}"
        out.append(text + ".")
    if t.bad_models is not None:
        b = t.bad_models
        caught = ("the test stops them" if e is not None else
                  "without a test (training.evaluation) they are deployed and serve until the "
                  "next model")
        out.append(f" {_share(b.share)} of runs produce a bad model that loses {b.loss:g} "
                   f"{metric}; {caught}.")
    if t.stateful is not None:
        st = t.stateful
        out.append(f" A stateful update changes {metric} by {-st.lift:+g} and loses "
                   f"{st.forgetting:g} more for each update since the last stateless run "
                   f"(forgetting).")
    return "".join(out)


def _drift(s: Scenario) -> list[str]:
    if not s.drift:
        return ["None: no shifts in the world (drift:) are simulated."]
    lines = []
    metric = s.quality.metric
    for d in s.drift:
        when = ("during the warm-up" if d.at < s.warmup else
                f"{_dur(d.at - s.warmup)} into the measured period" if d.at < s.end_s else
                "after the end of the run (it has no effect)")
        start = f"At {format_duration(d.at)} from the start ({when})"
        if d.kind == "gradual":
            text = (f"{start} the world starts shifting, over {_dur(d.ramp)}: models lose up to "
                    f"{d.quality_drop:g} {metric}, in proportion to how much of the shift "
                    f"happened after their data")
        elif d.kind == "recurring":
            text = (f"{start} a cycle of {_dur(d.period)} begins: a model is best at the same "
                    f"point of the cycle as its data and loses up to {d.quality_drop:g} {metric} "
                    f"half a cycle away")
        else:
            text = (f"{start} the world shifts: models trained on data from before then lose "
                    f"{d.quality_drop:g} {metric}")
        if d.kind != "recurring":
            needs = (f"a model trained on at least {_dur(d.recovery_data)} of data after it"
                     if d.recovery_data else "a model trained after it")
            text += f"{',' if d.kind == 'gradual' else ''} until {needs} is deployed"
        if d.visible_in_features:
            text += (f"; {d.visible_in_features:.0%} of the loss goes away as soon as the "
                     f"features reflect data from after the shift (fresh stream features "
                     f"recover first)")
        lines.append(text + ".")
    return lines


def _slo_value(s: Scenario) -> list[str]:
    lines = [line for line in (_network(s),) if line]
    if s.slo.latency_p99 is not None:
        lines.append(f"The latency target (SLO) is a 99th percentile of "
                     f"{format_duration(s.slo.latency_p99)}: the share of requests slower "
                     f"than that is reported as the SLO violation rate.")
    else:
        lines.append("No latency target is set (slo.latency_p99), so SLO violations are not "
                     "counted.")
    b = s.business
    if b.value_per_outcome:
        text = (f"Each outcome ({s.quality.metric} counts outcomes per request) is worth "
                f"{_usd(b.value_per_outcome)}, so value per day is the {s.quality.metric} of "
                f"each request times {_usd(b.value_per_outcome)}, summed over a day")
        if b.latency_penalty.per_100ms:
            text += (f", less {_share(b.latency_penalty.per_100ms)} per 100 ms of that "
                     f"request's latency")
        lines.append(text + "; net value is value minus cost.")
    else:
        lines.append("No value per outcome is set (business.value_per_outcome), so value per "
                     "day is 0 and net value is minus the cost.")
    return lines


# --------------------------------------------------------------------------------------------
# Architectures
# --------------------------------------------------------------------------------------------

def _job_s(entities: float, throughput: float | None, duration: float | None,
           overhead: float) -> float:
    if throughput is not None:
        return entities / throughput + overhead
    return (duration or 0.0) + overhead


def _training_policy(s: Scenario, t) -> str:
    """Retraining by trigger, continual updates, stateful or volume-driven runs (sim.engine.training)."""
    if t.policy == "trigger" and t.trigger.kind == "volume":
        g = t.trigger
        amount = (f"{g.new_labels:,.0f} new labelled examples" if g.new_labels is not None else
                  f"new labelled data worth {_share(g.data_growth)} of its data window")
        when = (f"A monitor looks {_every(g.check_every)} and starts a training run once "
                f"{amount} have arrived since the last run's data.")
    elif t.policy == "trigger" and t.trigger.kind == "distribution":
        g = t.trigger
        when = (f"A drift test on the inputs runs {_every(g.check_every)} (no labels needed) "
                f"and starts a training run when it flags a shift: it catches a shift since "
                f"the model's data with probability {g.detection:g} per check, and raises a "
                f"false alarm with probability {g.false_alarm_rate:g} per check.")
    elif t.policy == "trigger":
        g = t.trigger
        level = (f"below {g.below:g}" if g.below is not None else
                 f"more than {g.drop:.0%} below fresh ({(1 - g.drop) * s.quality.fresh:g})")
        when = (f"A monitor looks {_every(g.check_every)} at the {s.quality.metric} of the model "
                f"in service over the labels that arrived in the last {_dur(g.window)} (labels "
                f"come {t.label_delay.describe()} after the prediction) and starts a training "
                f"run when it is {level}.")
    elif t.policy == "continual":
        when = (f"The model is updated {_every(t.every)} on the data since the last update, one "
                f"update at a time.")
    else:
        when = f"A training run starts {_every(t.every)}{_clock(t.every, t.start_at)}."
    how = ("Stateful runs fine-tune the last model on the data since the previous run"
           if t.training_mode == "stateful" else
           "Each run retrains from scratch" + (f" on {_dur(t.data_window)} of data"
                                               if t.data_window else ""))
    size = (f"; a run takes examples / {t.throughput:g} per second + {_dur(t.overhead)}"
            if t.throughput is not None else f"; a run takes {_dur(t.duration + t.overhead)}")
    tested = " and its test" if t.evaluation is not None else ""
    return (f"{when} {how}{size}, and its model serves {_dur(t.deploy_delay)} after it "
            f"and its test end. " if tested else
            f"{when} {how}{size}, and its model serves {_dur(t.deploy_delay)} after it ends. "
            f"Each run costs run time x {t.nodes} node(s) x {_usd(s.costs.training_node_hour)} "
            f"an hour + {_usd(s.costs.training_run)}.")


def _ages(every: float, job: float) -> str:
    return (f"{_dur(job)} to {_dur(every + job)} old when read, about "
            f"{_dur(every / 2 + job)} on average")


def _architectures(s: Scenario) -> list[str]:
    lines = []
    training = (s.costs.training_run * DAY_S / s.training.every) \
        if s.training and s.training.every and s.training.policy == "schedule" else 0.0
    from sim.engine.architectures.registry import kind_of
    from sim.scenario import with_variant
    for name, given in s.architectures.items():
        kind = kind_of(given)
        spec = with_variant(given)  # the times the variant serves with
        if spec.kind == "edge":
            text, costs = _edge(s, spec)
        elif kind.stores_predictions and kind.predicts_online:
            text, costs = _hybrid(s, spec)
        elif kind.stores_predictions:
            text, costs = _batch(s, spec)
        else:
            text, costs = _online(s, spec, s.workload.arrivals.rate)
        if spec.variant is not None:
            v = spec.variant
            text += (f" It serves the {v.name} variant of the model: {v.latency:.3g}x the "
                     f"service time, {v.throughput:.3g}x the throughput under batching"
                     f"{' and in scoring jobs' if hasattr(spec, 'throughput') else ''}, "
                     f"{_share(v.quality_kept)} of the quality (the times above are the "
                     f"variant's).")
        if training:
            costs["training"] = training
        total = sum(costs.values())
        parts = " + ".join(f"{_usd(v)} {k}" for k, v in costs.items() if v)
        cost = f"Cost: about {_usd(total)} a day" + (f" ({parts})." if parts and
                                                       len(costs) > 1 else ".")
        pipelines = getattr(spec, "pipelines", None)
        if pipelines is not None and pipelines.cost_per_day:
            costs["skew prevention"] = pipelines.cost_per_day
            total = sum(costs.values())
            parts = " + ".join(f"{_usd(v)} {k}" for k, v in costs.items() if v)
            cost = f"Cost: about {_usd(total)} a day ({parts})."
        risks = _reliability(spec)
        lines.append(f"{name} ({spec.kind}): {text}{' ' + risks if risks else ''} {cost}")
    return lines


def _batch_part(s: Scenario, spec: BatchArchitecture | HybridArchitecture,
                scored: float, who: str) -> tuple[str, float]:
    job = _job_s(scored, spec.throughput, None, spec.overhead)
    per_day = DAY_S / spec.every
    cost = per_day * job / HOUR_S * spec.nodes * s.costs.batch_node_hour * _spot_share(spec)
    text = (f"A scoring job runs {_every(spec.every)}{_clock(spec.every, spec.start_at)} and "
            f"scores {who} when it starts (about {_count(scored)} now) at "
            f"{_rate(spec.throughput)}: about {_dur(job)} a run on {_nodes(spec.nodes)}. "
            f"Requests read the stored prediction (lookup: {_dist(spec.lookup)}"
            + (f"; lookups over {format_duration(spec.timeout)} get the fallback"
               if spec.timeout else "")
            + f"), which is {_ages(spec.every, job)}; entities created after a job started "
              f"get the fallback until the next job.")
    return text, cost


def _batch(s: Scenario, spec: BatchArchitecture) -> tuple[str, dict[str, float]]:
    w = s.workload
    text, cost = _batch_part(s, spec, w.entities, "every entity that exists")
    exponent = w.popularity.exponent if w.popularity.kind == "zipf" else 0.0
    seen = expected_active(w.entities, w.arrivals.rate * spec.every, exponent)
    text += (f" Predictions for entities that make no request before the next job are wasted: "
             f"roughly {_share(1 - seen / w.entities)} of each job's here.")
    return "Predicts ahead of time. " + text, {"batch scoring": cost,
                                               **_prediction_storage(s, spec, w.entities)}


def _prediction_storage(s: Scenario, spec, scored: float) -> dict[str, float]:
    """The storage of stored predictions per day, when they have a size."""
    if not spec.prediction_bytes:
        return {}
    return {"storage": gb_month_usd_per_day(scored * spec.prediction_bytes,
                                            s.costs.storage_gb_month)}


def _load(rate: float, peak_factor: float, occupancy_s: float, replicas: int) -> str:
    mean = rate * occupancy_s / replicas
    peak = mean * peak_factor
    text = (f"At the peak of {_rate(rate * peak_factor)} the replicas are about "
            f"{peak:.0%} busy ({mean:.0%} at the mean rate)")
    if peak >= 1:
        text += ": at 100% or more the queue grows without bound at the peak; add replicas"
    return text + "."


def _spot_share(job) -> float:
    """The share of the node price a scheduled job pays (less its spot discount)."""
    return 1.0 - job.spot.discount if job.spot is not None else 1.0


def _stream_usage_usd(stream: StreamFeatures, workload, prices) -> float:
    """A stream's cost per day besides its nodes: events processed (a stateless aggregation
    reads each entity's window again) and window state held, at the workload's mean rate."""
    from types import SimpleNamespace

    from sim.engine.architectures.parts import events_read_per_event
    events_per_s = workload.arrivals.rate * stream.events_per_request
    population = SimpleNamespace(n_slots=int(workload.entities), request_counts=None,
                                 popularity=workload.popularity)
    per_event = events_read_per_event(stream, population, events_per_s)
    usd = events_per_s * DAY_S * per_event / 1e6 * prices.stream_per_million_events
    if stream.aggregation == "stateful" and stream.state_bytes:
        usd += gb_month_usd_per_day(workload.entities * stream.state_bytes,
                                    prices.stream_state_gb_month)
    return usd


def _stream_nodes(stream: StreamFeatures, workload) -> int:
    """The stream processor's nodes: as given, or sized for the peak event rate."""
    if stream.nodes != "auto":
        return int(stream.nodes)
    from sim.engine.architectures.backlog import event_rate, resolve_nodes
    return resolve_nodes(stream, event_rate(workload, stream.events_per_request)[1])


def _reliability(spec) -> str:
    """What can go wrong in an architecture's pipelines and what answers then, in words."""
    texts = []
    jobs = [("Scoring jobs", spec)] if hasattr(spec, "throughput") and hasattr(spec, "lookup") \
        else []
    features = getattr(spec, "features", None)
    if features is not None and features.batch is not None:
        jobs.append(("Feature materialisations", features.batch))
    for what, job in jobs:
        parts = []
        if not job.delay.is_zero:
            parts.append(f"take {_dist(job.delay)} longer than computed")
        if job.failures is not None and job.failures.probability > 0:
            f = job.failures
            retry = (f"retried {f.retries} time(s), {_dist(f.retry_after)} after a failure"
                     if f.retries else "not retried (the next scheduled run tries again)")
            parts.append(f"fail {_share(f.probability)} of the time, {retry}")
        if job.spot is not None:
            parts.append(f"run on spot capacity at {_share(1 - job.spot.discount)} of the price"
                         + (f", preempted {job.spot.preemptions_per_hour:g} times per hour of "
                            f"run and restarted" if job.spot.preemptions_per_hour else ""))
        if parts:
            texts.append(f"{what} " + "; ".join(parts) + ": meanwhile requests keep reading "
                         "the last good run's output, which ages.")
    stream = getattr(features, "stream", None) if features is not None else None
    if stream is not None:
        if stream.outages is not None:
            texts.append(f"The stream processor goes down after {_dur(stream.outages.every)} "
                         f"of running on average, for {_dist(stream.outages.duration)} each "
                         f"time; stream features then age until it catches up.")
        if stream.node_capacity is not None:
            texts.append(f"Each stream node processes up to {_rate(stream.node_capacity)} events: "
                         f"when events arrive faster, a backlog adds to the lag.")
    ttls = [(w, t) for w, t in (("Stored predictions", getattr(spec, "ttl", None)),
                                ("Batch features", getattr(getattr(features, "batch", None),
                                                           "ttl", None)),
                                ("Stream features", getattr(stream, "ttl", None))) if t]
    for what, ttl in ttls:
        texts.append(f"{what} older than {format_duration(ttl)} expire from the store.")
    chain = list(getattr(spec, "fallback", ["default"]))
    if chain != ["default"]:
        words = {"stale": "the last stored prediction however old", "default":
                 "the popular default", "error": "nothing (an error)"}
        texts.append("A request without a valid prediction gets "
                     + ", else ".join(words[c] for c in chain) + ".")
    pipelines = getattr(spec, "pipelines", None)
    if pipelines is not None:
        if pipelines.kind == "dual":
            texts.append(f"Training and serving compute features in separate pipelines: "
                         f"{_share(pipelines.skewed_share)} of requests see a skewed feature, "
                         f"losing {pipelines.skew_loss:.4g} each.")
        else:
            texts.append(f"Training and serving features stay the same "
                         f"({pipelines.kind.replace('_', ' ')}), at "
                         f"{_usd(pipelines.cost_per_day)} a day.")
    return " ".join(texts)


def _features(spec_batch: BatchFeatures | None, stream: StreamFeatures | None,
              entities: float, prices, costs: dict[str, float], request=None,
              workload=None) -> str:
    texts = []
    if spec_batch is not None:
        b = spec_batch
        job = _job_s(entities, b.throughput, b.duration, b.overhead)
        costs["feature pipeline"] = (DAY_S / b.every * job / HOUR_S * b.nodes
                                     * prices.batch_node_hour * _spot_share(b))
        if b.bytes_per_entity:
            costs["storage"] = gb_month_usd_per_day(entities * b.bytes_per_entity,
                                                    prices.storage_gb_month)
        texts.append(f"Batch features are materialised {_every(b.every)}"
                     f"{_clock(b.every, b.start_at)} (about {_dur(job)} a run on "
                     f"{_nodes(b.nodes)}), so they are {_ages(b.every, job)}.")
    if stream is not None:
        w = stream.window
        if w.is_zero:
            mean_age = stream.lag.mean
            window = f"updated with every event, visible after a lag ({_dist(stream.lag)})"
        else:
            mean_age = stream.lag.mean + w.second_moment / (2 * w.mean)
            shape = (f"{format_duration(w.mean)} tumbling windows" if w.kind == "constant" else
                     f"windows of varying length ({_dist(w)})")
            window = f"over {shape}, each visible after a lag ({_dist(stream.lag)})"
        nodes = _stream_nodes(stream, workload)
        costs["stream processing"] = nodes * 24 * prices.stream_node_hour + \
            _stream_usage_usd(stream, workload, prices)
        sized = " (sized for the peak event rate)" if stream.nodes == "auto" else ""
        texts.append(f"Stream features are computed by a stream processor on "
                     f"{_nodes(nodes)}{sized} {window}: they are about {_dur(mean_age)} old on "
                     f"average" + (", while the batch features keep their own age; both count "
                                   "toward quality." if spec_batch is not None else
                                   "; there are no batch features."))
    if request is not None:
        texts.append(f"Request-time features are computed on the replica in every request "
                     f"({_dist(request.compute)}): always fresh, paid for in latency.")
    return " ".join(texts)


def _online(s: Scenario, spec: OnlineArchitecture | StreamingArchitecture | HybridArchitecture,
            rate: float) -> tuple[str, dict[str, float]]:
    sv = spec.serving
    occupancy = sv.mean_occupancy_s(spec.feature_lookup, spec.features.request)
    pool = sv.autoscaling.warm_pool if sv.autoscaling is not None else 0  # paid, not serving
    costs = {"serving": (sv.replicas + pool) * 24 * sv.price_per_hour(s.costs)}
    peak, _ = _peak_trough(s)
    plural = "s" if sv.replicas != 1 else ""
    if sv.batching is None:
        work = (f"a request waits for a free replica (first come, first served), which looks up "
                f"its features ({_dist(spec.feature_lookup)}) and runs the model "
                f"({_dist(sv.service_time)}), busy about {_dur(occupancy)} per request. ")
    else:
        b = sv.batching
        if b.batch_time is None:
            model = f"{_dist(b.fixed)} per batch plus {_dist(b.per_item)} per request"
        else:
            measured = ", ".join(f"{k}: {_dist(d)}" for k, d in b.batch_time.items())
            model = (f"in the time measured for batches of its size ({measured}; straight "
                     f"lines between those sizes)")
        work = (f"requests wait in one queue and a free replica takes up to {b.max_batch} of "
                f"them together, holding the oldest back at most {_dur(b.max_wait)} for a "
                f"fuller batch; a batch looks up its features ({_dist(spec.feature_lookup)}, "
                f"the slowest of the batch) and runs the model ({model}), about "
                f"{_dur(occupancy)} of replica time per request when batches are full. ")
    text = (f"Predicts at request time on {sv.replicas} serving replica{plural}: " + work
            + _load(rate, peak / s.workload.arrivals.rate, occupancy, sv.replicas))
    a = sv.autoscaling
    if a is not None:
        target = (f"{a.target_utilization:.0%} busy" if a.target_utilization is not None else
                  f"{a.target_queue:g} waiting request(s) per replica")
        text += (f" An autoscaler keeps between {a.min} and {a.max} replicas, looking every "
                 f"{_dur(a.every)} and aiming at {target}, and removes none within "
                 f"{_dur(a.cooldown)} of the last change (the serving cost shown here is for "
                 f"{sv.replicas}, where it starts{', and the warm pool' if a.warm_pool else ''}"
                 f"; the run reports the replicas that actually ran, and its time series the "
                 f"replicas asked for, starting and ready). " + _startup(a))
    if sv.slow_periods is not None:
        text += " " + _slow_periods(sv.slow_periods, sv.replicas)
    if sv.after_idle is not None:
        text += " " + _after_idle(sv.after_idle, sv.batching is not None)
    if sv.timeout:
        text += (f" Requests not answered within {format_duration(sv.timeout)} get the "
                 f"fallback.")
    text += " " + _features(spec.features.batch, spec.features.stream, s.workload.entities,
                            s.costs, costs, spec.features.request, s.workload)
    return text, costs


def _edge(s: Scenario, spec) -> tuple[str, dict[str, float]]:
    """On-device prediction, and its cloud path, in words, with its costs per day."""
    w = s.workload
    sync = spec.sync
    mean_age = sync.every / 2 + sync.every * sync.offline / (1 - sync.offline)
    text = (f"Predicts on the user's device: {_dist(spec.device_time)} per request, with no "
            f"replica and no network. Its features are as fresh as the device's last sync: "
            f"every {_dur(sync.every)}")
    if sync.offline:
        text += f", {_share(sync.offline)} of them missed (offline)"
    text += f", so about {_dur(mean_age)} old on average"
    if spec.request_features is not None:
        text += (f"; request-time features are computed on the device "
                 f"({_dist(spec.request_features.compute)})")
    text += ". "
    text += ("A new model is on every device at once." if spec.rollout.is_zero else
             f"A new model reaches each device {_dist(spec.rollout)} after it is deployed, so "
             f"devices serve older models than the cloud would.")
    t = s.training
    deploys = DAY_S / t.every if t is not None and t.every and t.policy == "schedule" else 0.0
    devices = w.entities
    costs = {"device syncs": devices * (1 - sync.offline) * DAY_S / sync.every *
             s.costs.device_sync,
             "model downloads": devices * deploys * s.costs.device_download}
    c = spec.cloud
    if c is not None:
        slow = 0.0
        if c.slower_than is not None:
            u = (np.arange(4000) + 0.5) / 4000
            slow = float(np.mean(spec.device_time.ppf(u) > c.slower_than))
        who = []
        if c.slower_than is not None:
            who.append(f"those whose device would take longer than "
                       f"{format_duration(c.slower_than)} (about {_share(slow)})")
        if c.cold:
            who.append("those of new users with nothing synced yet")
        online = OnlineArchitecture.model_construct(
            kind="online", features=c.features, feature_lookup=c.feature_lookup,
            serving=c.serving, fallback=spec.fallback, pipelines=None, training=None,
            variant=None)
        cloud_text, cloud_costs = _online(s, online, s.workload.arrivals.rate * max(slow, 0.01))
        text += f" Requests go to the cloud instead: {' and '.join(who)}. There: " + cloud_text
        costs.update(cloud_costs)
    return text, costs


def _startup(a) -> str:
    """The autoscaler's delays in plain words: decision lag, start-up, warm pool."""
    texts = []
    lag = a.decision_lag
    if not lag.is_zero:
        when = (f"{_dur(lag.mean)} after it is made" if lag.kind == "constant" else
                f"after a lag ({_dist(lag)}; {_dur(lag.mean)} on average)")
        texts.append(f"A decision takes effect {when}, and nothing new is decided meanwhile.")
    first, second = a.startup
    if first.is_zero and second.is_zero:
        texts.append("A new replica serves as soon as it is asked for.")
    elif a.warmup.is_zero:
        parts = [f"its node has started ({_dist(first)})" if not first.is_zero else None,
                 f"its model has loaded ({_dist(second)})" if not second.is_zero else None]
        texts.append(f"A new replica serves once {' and '.join(p for p in parts if p)}, about "
                     f"{_dur(a.mean_startup_s)} after it is asked for on average.")
    elif first.kind == "constant":
        texts.append(f"A new replica serves {_dur(first.mean)} after it is asked for.")
    else:
        texts.append(f"A new replica serves after its start-up ({_dist(first)}; "
                     f"{_dur(first.mean)} on average).")
    if a.warm_pool:
        them = "them" if a.warm_pool != 1 else "it"
        texts.append(f"{a.warm_pool} more replica{'s stand' if a.warm_pool != 1 else ' stands'} "
                     f"by, started and loaded (paid for, not serving): a scale-up takes {them} "
                     f"first, serving as soon as the decision takes effect, and the pool refills "
                     f"in the background.")
    return " ".join(texts)


def _slow_periods(slow, replicas: int) -> str:
    """Slow periods in plain words: how often, how slow, for how long, and what it costs."""
    shares = slow.time_shares()
    normal = int(np.argmin([state.slowdown for state in slow.states]))
    parts = []
    for k, state in enumerate(slow.states):
        if k == normal:
            continue
        times = f"{state.slowdown:g} times slower" if state.slowdown > 1 else \
            f"{1 / state.slowdown:g} times faster"
        length = (f"{_dur(state.mean_s)} on average" if state.mean is not None else
                  f"{_dist(state.length)}")
        parts.append(f"{times} for stretches of {length} ({_share(shares[k])} of the time)")
    who = ("every replica at once (they share a host)" if slow.scope == "host" or replicas == 1
           else "each replica on its own")
    return (f"The replicas do not always work at full speed: {who} runs "
            f"{'; or '.join(parts)}. Inference and request-time features stretch while a slow "
            f"stretch lasts (feature lookups do not), so in the long run a replica gets through "
            f"{slow.mean_speed:.0%} of the work it would at full speed (included above), and "
            f"requests that queue behind a slow stretch make the latency tail longer than "
            f"independent service times would.")


def _after_idle(after, batching: bool) -> str:
    """serving.after_idle in plain words: how the work depends on the replica's idle time."""
    what = "a batch" if batching else "a request"

    def times(f: float) -> str:
        return ("as measured" if f == 1 else f"{f - 1:.0%} slower" if f > 1
                else f"{1 - f:.0%} faster")

    points = list(zip(after.idle, after.slowdown))
    if len(points) == 1:
        return (f"Its work is {times(points[0][1])} whatever the replica did before "
                f"(serving.after_idle has one point).")
    first, last = points[0], points[-1]
    middle = "; ".join(f"{times(f)} after {_dur(x)}" for x, f in points[1:-1])
    return (f"How long the replica stood idle before {what} changes its work (not the feature "
            f"lookup): {times(first[1])} when it follows "
            + ("the previous one at once (it waited in the queue)" if first[0] == 0 else
               f"{_dur(first[0])} of idling or less")
            + (f"; {middle}" if middle else "")
            + f"; {times(last[1])} after {_dur(last[0])} or more, and for a replica that has "
            f"not served yet (straight lines in between). So under load, with little idling, "
            f"replicas work at the first rate, and when quiet at the last; the replica time "
            f"and load above are at the first, back to back, which decides whether the "
            f"replicas keep up.")


def _hybrid(s: Scenario, spec: HybridArchitecture) -> tuple[str, dict[str, float]]:
    w = s.workload
    exponent = w.popularity.exponent if w.popularity.kind == "zipf" else 0.0
    head = max(1.0, math.ceil(spec.head_share * w.entities))
    head_share = head_request_share(w.entities, head, exponent)
    batch_text, batch_cost = _batch_part(s, spec, head, f"the {_share(spec.head_share)} most "
                                                        f"popular entities that exist")
    online_text, costs = _online(s, spec, w.arrivals.rate * (1 - head_share))
    text = (f"Precomputed predictions for the most popular entities, which get about "
            f"{_share(head_share)} of the requests; the rest are predicted online. "
            f"{batch_text} The tail: {online_text[0].lower()}{online_text[1:]}")
    storage = _prediction_storage(s, spec, head).get("storage", 0.0) + costs.pop("storage", 0.0)
    return text, {"batch scoring": batch_cost, **costs, **({"storage": storage} if storage
                                                           else {})}


__all__ = ["explain"]
