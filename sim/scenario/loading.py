"""The whole scenario, and loading it: reading YAML, applying --set overrides, and explaining every
validation problem with its file and key path.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sim.units import human_duration
from sim.scenario.fields import (Model, NonNegativeDuration, PositiveDuration, ScenarioError,
                                 _did_you_mean)
from sim.scenario.workload import Workload
from sim.scenario.quality import Quality
from sim.scenario.architectures import serving_of
from sim.scenario.deployment import Network
from sim.scenario.operations import Business, Costs, Drift, Slo, Training
from sim.scenario.architectures import (Architecture, BatchArchitecture, HybridArchitecture,
                                        KINDS, OnlineArchitecture, StreamingArchitecture)


# --------------------------------------------------------------------------------------------
# The scenario
# --------------------------------------------------------------------------------------------

class Scenario(Model):
    """A whole scenario: workload, quality, prices and the architectures to compare."""

    model_config = ConfigDict(json_schema_extra={
        "$schema": "https://json-schema.org/draft/2020-12/schema"})

    name: str = Field("scenario", description="Shown in tables and reports.")
    description: str | None = Field(None, description="Free text about the scenario.")
    horizon: PositiveDuration = Field(description="Measured simulated time.")
    warmup: NonNegativeDuration = Field(0.0, description="Simulated first, not measured.")
    seed: int = Field(0, ge=0, description="Random seed: the same seed gives the same numbers.")
    timeseries_bucket: PositiveDuration | None = Field(None, description="Width of a time-series bucket "
                                               "(default: 1h, or horizon/48 when shorter).")
    slo: Slo = Field(Slo(), description="Latency target.")
    workload: Workload = Field(description="Traffic and entities.")
    quality: Quality = Field(description="The quality metric and how it decays with age.")
    training: Training | None = Field(None, description="Retraining schedule; none: the model is "
                                      "never retrained.")
    drift: list[Drift] = Field([], description="Shifts (sudden, gradual or recurring) that "
                               "hurt predictions until a model trained on enough data after "
                               "them is deployed.")
    network: Network | None = Field(None, description="Round trip between clients and the "
                                    "serving tier, added to every cloud request's latency: "
                                    "{rtt} or {regions: [{name, share, rtt}]} (none: 0).")
    costs: Costs = Field(Costs(), description="Unit prices, for cost per day.")
    business: Business = Field(Business(), description="Value of outcomes.")
    architectures: dict[str, Architecture] = Field(description="The architectures to compare, "
                                                   "by name.")

    @model_validator(mode="after")
    def _check(self) -> "Scenario":
        if not self.architectures:
            raise ValueError("architectures: give at least one")
        sections = [("training", self.training)] + [
            (f"architectures.{name}.training", getattr(a, "training", None))
            for name, a in self.architectures.items()]
        for where, t in sections:
            g = t.trigger if t is not None else None
            if g is not None and g.below is not None and g.below >= self.quality.fresh:
                raise ValueError(f"{where}.trigger.below ({g.below:g}) must be below "
                                 f"quality.fresh ({self.quality.fresh:g}), or every check "
                                 f"would start a retrain")
            if g is not None and g.noise and self.quality.fresh > 1:
                raise ValueError(f"{where}.trigger.noise: the monitor's binomial noise needs a "
                                 f"metric that is a rate between 0 and 1 (quality.fresh is "
                                 f"{self.quality.fresh:g}); set noise: false")
            e = t.evaluation if t is not None else None
            if e is not None and e.method in ("ab", "interleaving", "bandit"):
                treated = self.quality.fresh * (1 + e.min_effect)
                if not (0 < self.quality.fresh and treated < 1):
                    raise ValueError(
                        f"{where}.evaluation: method {e.method} tests a rate, so quality.fresh "
                        f"and fresh x (1 + min_effect) must lie between 0 and 1 (got "
                        f"{self.quality.fresh:g} and {treated:g}); use offline, shadow or "
                        f"canary, or a smaller min_effect")
        trace = self.workload.arrivals.trace
        for name, a in self.architectures.items():
            path, serving = serving_of(a)
            if serving is not None and serving.time_per_size > 0 and \
                    (trace is None or trace.log.sizes is None):
                raise ValueError(f"architectures.{name}.{path}.time_per_size: requests have no "
                                 f"size: it needs workload.arrivals.trace with a size column "
                                 f"(size, or size_column)")
        return self

    # Derived quantities the engine and the reports share.
    @property
    def end_s(self) -> float:
        return self.warmup + self.horizon

    @property
    def bucket_s(self) -> float:
        if self.timeseries_bucket is not None:
            return self.timeseries_bucket
        return 3600.0 if self.horizon >= 48 * 3600.0 / 4 else self.horizon / 48

    def to_yaml_dict(self) -> dict:
        """The resolved scenario as plain data in scenario-file units (defaults filled in)."""
        data = self.model_dump(mode="json", exclude_none=True)
        data["architectures"] = {
            name: {"kind": arch.pop("kind"), **arch} for name, arch in data["architectures"].items()}
        return data


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

def load_scenario(path: str | Path, overrides: dict[str, Any] | list[str] | None = None,
                  seed: int | None = None) -> Scenario:
    """Read, override and validate a scenario file.

    ``overrides`` maps dotted key paths to values (``{"architectures.online.serving.replicas":
    8}``) or is a list of ``KEY=VALUE`` strings whose values are parsed as YAML, as on the
    command line. Raises :class:`ScenarioError` listing every problem at once.
    """
    path = Path(path)
    label = str(path)
    if not path.is_file():
        raise ScenarioError([f"{label}: file not found"])
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ScenarioError([f"{label}: {where}not valid YAML ({problem})"]) from None
    except UnicodeDecodeError:
        raise ScenarioError([f"{label}: not a text file"]) from None
    return scenario_from_dict(raw, label=label, base_dir=path.parent, overrides=overrides,
                              seed=seed)


def scenario_from_dict(raw: Any, label: str = "<scenario>", base_dir: str | Path = ".",
                       overrides: dict[str, Any] | list[str] | None = None,
                       seed: int | None = None) -> Scenario:
    """Validate a scenario given as plain data (as parsed from YAML)."""
    if not isinstance(raw, dict):
        raise ScenarioError([f"{label}: expected a mapping of keys (name, horizon, workload, "
                             f"...) at the top level (got {type(raw).__name__})"])
    data = copy.deepcopy(raw)
    problems: list[str] = []
    for key, value in _parse_overrides(overrides, label, problems):
        _set_path(data, key, value, label, problems)
    if seed is not None:
        data["seed"] = seed
    try:
        scenario = Scenario.model_validate(data, context={"base_dir": str(base_dir)})
    except ValidationError as exc:
        problems.extend(_explain(exc, data, label))
    else:
        problems.extend(_replay_problems(scenario, label))
    if problems:
        raise ScenarioError(problems)
    return scenario


def _replay_problems(scenario: "Scenario", label: str) -> list[str]:
    """A replayed log that ends before the simulation does, unless it loops. A log covers its
    span and one mean gap between requests after its last."""
    arrivals = scenario.workload.arrivals
    trace = arrivals.trace
    if trace is None or trace.loop is not False:
        return []
    covers_s = trace.period_s / arrivals.replay_speedup
    if covers_s >= scenario.end_s:
        return []
    return [f"{label}: workload.arrivals.trace: the log covers {human_duration(covers_s)} at "
            f"this speed, but warmup + horizon is {human_duration(scenario.end_s)}: set "
            f"trace.loop: true to repeat it, or shorten the horizon"]


def _parse_overrides(overrides, label, problems):
    if overrides is None:
        return []
    if isinstance(overrides, dict):  # copied: later keys may write into an earlier value
        return [(key, copy.deepcopy(value)) for key, value in overrides.items()]
    pairs = []
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            problems.append(f"{label}: --set {item!r}: expected KEY=VALUE, e.g. "
                            f"architectures.online.serving.replicas=8")
            continue
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        pairs.append((key.strip(), value))
    return pairs


def _set_path(data: dict, dotted: str, value: Any, label: str, problems: list[str]) -> None:
    node = data
    parts = dotted.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.get(part) if isinstance(node, dict) else None
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            where = ".".join(parts[: i + 1])
            problems.append(f"{label}: --set {dotted}: {where} is not a section "
                            f"(it is {child!r})")
            return
        node = child
    node[parts[-1]] = value


_MESSAGES = {
    "missing": "is required",
    "int_parsing": "expected a whole number",
    "int_from_float": "expected a whole number",
    "float_parsing": "expected a number",
    "bool_parsing": "expected true or false",
    "string_type": "expected text",
    "dict_type": "expected a section of keys",
    "model_type": "expected a section of keys",
    "list_type": "expected a list",
    "tuple_type": "expected a pair [age, value]",
    "finite_number": "expected a finite number",
}


def _explain(exc: ValidationError, data: dict, label: str) -> list[str]:
    lines = []
    for err in exc.errors():
        loc = _clean_loc(err["loc"])
        path = ".".join(str(p) for p in loc)
        kind = err["type"]
        got = err.get("input")
        ctx = err.get("ctx") or {}
        if kind == "extra_forbidden":
            parent = _known_fields(loc[:-1], data)
            hint = _did_you_mean(str(loc[-1]), parent)
            msg = f"unknown key{hint}"
        elif kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
            op = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=",
                  "less_than": "<"}[kind]
            bound = next(iter(ctx.values()))
            msg = f"must be {op} {bound} (got {got!r})"
        elif kind == "literal_error":
            msg = f"expected {ctx.get('expected')} (got {got!r})"
        elif kind == "union_tag_invalid":
            hint = _did_you_mean(str(ctx.get("tag")), list(KINDS))
            msg = f"kind must be one of {', '.join(KINDS)} (got {ctx.get('tag')!r}){hint}"
        elif kind == "union_tag_not_found":
            msg = f"needs a kind: one of {', '.join(KINDS)}"
        elif kind in ("value_error", "assertion_error"):
            msg = str(ctx.get("error", err["msg"]))
        elif kind == "missing":
            msg = _MESSAGES[kind]
        elif kind in _MESSAGES:
            msg = f"{_MESSAGES[kind]} (got {got!r})"
        else:
            msg = err["msg"]
        lines.append(f"{label}: {path or '(top level)'}: {msg}")
    return list(dict.fromkeys(lines))


def _clean_loc(loc: tuple) -> tuple:
    """Drop pydantic's internal steps (union tags, function names) from an error location."""
    out = []
    for i, part in enumerate(loc):
        if isinstance(part, str) and (part in KINDS and i >= 2 and loc[0] == "architectures"
                                      and i == 2):
            continue
        if isinstance(part, str) and ("function-" in part or part.startswith("function")):
            continue
        out.append(part)
    return tuple(out)


def _known_fields(loc: tuple, data: dict) -> list[str]:
    """The keys allowed at a location, for "did you mean" suggestions."""
    model: Any = Scenario
    node: Any = data
    for part in loc:
        if isinstance(node, dict):
            node = node.get(part)
        if model is Scenario and part == "architectures":
            model = "architectures"
            continue
        if model == "architectures":
            kind = node.get("kind") if isinstance(node, dict) else None
            model = {"batch": BatchArchitecture, "online": OnlineArchitecture,
                     "streaming": StreamingArchitecture, "hybrid": HybridArchitecture}.get(kind)
            if model is None:
                return []
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return []
        field = model.model_fields.get(str(part))
        if field is None:
            return []
        model = _model_of(field.annotation)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _model_of(annotation: Any) -> Any:
    for candidate in getattr(annotation, "__args__", ()) or (annotation,):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def dump_yaml(data: Any) -> str:
    """YAML in the key order given, as the resolved scenario is printed."""
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=None,
                          width=100)
