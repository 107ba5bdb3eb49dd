"""The workload section: popularity, bursts, Markov-modulated rates, replayed traces, arrivals and
new entities.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (AfterValidator, Field, PrivateAttr, Strict, ValidationInfo,
                      model_serializer, model_validator)

from sim.inputs.logs import InputError, RequestLog, read_log
from sim.units import format_duration
from sim.scenario.fields import (Count, Model, Multiplier, NonNegativeDuration, PositiveDuration,
                                 Rate, _multiplier_bound)


# --------------------------------------------------------------------------------------------
# Workload
# --------------------------------------------------------------------------------------------

class Popularity(Model):
    """How requests spread over entities: Zipf over popularity ranks, or uniform."""

    kind: Literal["zipf", "uniform"] = Field("uniform", description="zipf or uniform.")
    exponent: float = Field(0.0, ge=0, description="Zipf exponent s: P(rank k) ~ k^-s.")

    @model_validator(mode="before")
    @classmethod
    def _from_yaml(cls, value: Any) -> Any:
        if value == "uniform" or value == {"uniform": None} or value == {"uniform": True}:
            return {"kind": "uniform"}
        if isinstance(value, dict) and set(value) == {"zipf"}:
            return {"kind": "zipf", "exponent": value["zipf"]}
        if isinstance(value, (dict, Popularity)) and (not value or "kind" in value
                                                      or isinstance(value, Popularity)):
            return value
        raise ValueError(f"expected 'uniform' or {{zipf: EXPONENT}} (got {value!r})")


    @model_serializer
    def _to_yaml(self) -> Any:
        return "uniform" if self.kind == "uniform" else {"zipf": self.exponent}

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema, handler) -> dict:
        """The YAML form: 'uniform' or {zipf: EXPONENT}."""
        return {"title": "Popularity", "description": cls.__doc__,
                "anyOf": [{"const": "uniform"},
                          {"type": "object", "additionalProperties": False, "required": ["zipf"],
                           "properties": {"zipf": {"type": "number", "minimum": 0,
                                                   "description": "Zipf exponent s: P(rank k) "
                                                                  "~ k^-s."}}}]}


class Burst(Model):
    """A flash crowd: the arrival rate multiplied by ``multiplier`` for ``duration`` from ``at``."""

    at: NonNegativeDuration = Field(description="When it starts, from the start of the "
                                    "simulation (warm-up included).")
    duration: PositiveDuration = Field(description="How long it lasts.")
    multiplier: Multiplier = Field(gt=0, description="The rate during the burst / the rate without "
                              "it (overlapping bursts multiply).")


class Mmpp(Model):
    """Markov-modulated Poisson arrivals: a hidden Markov chain multiplies the rate by its
    state's multiplier. It stays in state i for an exponential time with mean
    ``mean_sojourn[i]``, then jumps to one of the other states, each equally likely."""

    multipliers: list[Annotated[float, Field(ge=0), AfterValidator(_multiplier_bound)]] = Field(
        description="Rate multiplier of each state (two or more), relative: they are scaled so "
        "that their long-run average is 1 and rate stays the mean rate.")
    mean_sojourn: list[PositiveDuration] = Field(description="Mean time spent in each state "
                                                 "per visit.")

    @model_validator(mode="after")
    def _check(self) -> "Mmpp":
        if len(self.multipliers) < 2 or len(self.multipliers) != len(self.mean_sojourn):
            raise ValueError(f"mmpp needs two or more states, with as many multipliers as "
                             f"mean_sojourn (got {len(self.multipliers)} and "
                             f"{len(self.mean_sojourn)})")
        if not any(self.multipliers):
            raise ValueError("mmpp multipliers must not all be 0")
        return self

    @property
    def stationary(self) -> np.ndarray:
        """Long-run share of time in each state: proportional to the mean sojourn, since every
        state is entered equally often (the jump chain is symmetric)."""
        sojourn = np.asarray(self.mean_sojourn, dtype=float)
        return sojourn / sojourn.sum()

    @property
    def normalised_multipliers(self) -> np.ndarray:
        """The multipliers scaled to a long-run average of 1."""
        m = np.asarray(self.multipliers, dtype=float)
        return m / float(self.stationary @ m)


_StrictBool = Annotated[bool, Strict()]


class Trace(Model):
    """A request log replayed as the arrivals: its times, shifted so that its first request is
    at time 0 and divided by the speed-up, and its entities."""

    file: str = Field(description="Request log, CSV or Parquet (.parquet): one row per request; "
                      "relative to the scenario file, or absolute.")
    timestamp_column: str = Field("timestamp", description="Column of request times: epoch "
                                  "seconds or ISO-8601.")
    entity_column: str | None = Field(None, description="Column of entity (user, item) ids; "
                                      "default: entity_id when the log has it. A log without ids "
                                      "gives the arrival times only, and each request's entity "
                                      "is drawn from workload.entities and popularity.")
    size_column: str | None = Field(None, description="Column of each request's size (tokens, "
                                    "candidates); default: size when the log has it.")
    speedup: float = Field(1.0, gt=0, description="Replay this many times faster: 2 doubles the "
                           "traffic. Or give arrivals.rate, the mean rate to replay at.")
    loop: _StrictBool | PositiveDuration = Field(
        False, description="Repeat the log to fill the simulation: true repeats it every span + "
        "one mean gap between requests; a duration (such as 14d, in the log's own time) repeats "
        "it with that period.")

    _log: RequestLog | None = PrivateAttr(None)
    _path: str = PrivateAttr("")

    @model_validator(mode="before")
    @classmethod
    def _from_yaml(cls, value: Any) -> Any:
        return {"file": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _load(self, info: ValidationInfo) -> "Trace":
        path = Path(self.file)
        if not path.is_absolute():
            path = Path((info.context or {}).get("base_dir", ".")) / path
        try:
            log = read_log(path, self.timestamp_column, self.entity_column, self.size_column)
        except InputError as exc:
            raise ValueError("; ".join(exc.problems)) from None
        if not isinstance(self.loop, bool) and self.loop <= log.span_s:
            raise ValueError(f"loop: the period must be longer than the log's span, "
                             f"{format_duration(log.span_s)} (got {format_duration(self.loop)})")
        self._log = log
        self._path = str(path.resolve())
        return self

    @property
    def log(self) -> RequestLog:
        """The log as read (times in the log's own seconds, before any speed-up)."""
        return self._log

    @property
    def period_s(self) -> float:
        """The repeating period in the log's own time (the span + a mean gap unless given)."""
        return self.log.period_s if isinstance(self.loop, bool) else float(self.loop)

    @property
    def mean_rate_per_s(self) -> float:
        """Requests per second of the log, before any speed-up, over :attr:`period_s`."""
        return self.log.n_requests / self.period_s

    @model_serializer(mode="wrap")
    def _to_yaml(self, handler) -> Any:
        # The file absolutely, so that the resolved scenario loads from anywhere; the speed-up
        # is in arrivals.rate, which the resolved scenario always gives.
        data = handler(self)
        data["file"] = self._path or self.file
        data.pop("speedup", None)
        return data

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema, handler) -> dict:
        """A file name, or the section."""
        section = handler(core_schema)
        section = handler.resolve_ref_schema(section)
        return {"title": "Trace", "description": cls.__doc__,
                "anyOf": [{"type": "string", "description": "The request log (columns "
                           "timestamp and entity_id)."}, section]}


_PATTERN_DEFAULTS = {"pattern": "constant", "peak_to_trough": 1.0, "peak_hour": 19.0,
                     "weekend_factor": 0.7}


class Arrivals(Model):
    """Request arrivals: a non-homogeneous Poisson process around a mean rate, or a replayed
    request log."""

    rate: Rate | None = Field(None, description="Mean request rate, e.g. 50/s or 4.3M/day. "
                              "With a trace: optional, the mean rate to replay the log at.")
    pattern: Literal["constant", "diurnal", "weekly"] = Field(
        "constant", description="constant; diurnal (a daily cycle); weekly (diurnal, quieter at "
        "weekends).")
    peak_to_trough: Multiplier = Field(1.0, ge=1.0, description="Daily peak rate / daily "
                                       "trough rate.")
    peak_hour: float = Field(19.0, ge=0, lt=24, description="Hour of day of the daily peak.")
    weekend_factor: Multiplier = Field(0.7, gt=0, description="Weekly pattern: weekend traffic "
                                  "relative to weekdays (day 0 of the simulation is a Monday).")
    profile: list[Annotated[float, Field(ge=0), AfterValidator(_multiplier_bound)]] | None = Field(
        None, description="Instead of pattern: 24 hour-of-day or 168 hour-of-week rate "
        "multipliers (Monday 00:00 first), scaled on load to a mean of 1 (predsim workload fit "
        "writes them).")
    bursts: list[Burst] | None = Field(None, description="Flash crowds: [{at, duration, "
                                       "multiplier}, ...].")
    mmpp: Mmpp | None = Field(None, description="Markov-modulated rate: {multipliers: [...], "
                              "mean_sojourn: [...]}.")
    trace: Trace | None = Field(None, description="Replay a request log instead: FILE, or "
                                "{file, timestamp_column, entity_column, speedup, loop}.")

    _replay_speedup: float = PrivateAttr(1.0)

    @model_validator(mode="after")
    def _check(self) -> "Arrivals":
        if self.trace is None:
            if self.rate is None:
                raise ValueError("rate is required (or trace: FILE to replay a request log)")
            if self.profile is not None:
                if self.pattern != "constant":
                    raise ValueError(f"give either profile or pattern: {self.pattern}, not both")
                if len(self.profile) not in (24, 168):
                    raise ValueError(f"profile needs 24 hour-of-day or 168 hour-of-week "
                                     f"multipliers (got {len(self.profile)})")
                if not sum(self.profile) > 0:
                    raise ValueError("profile multipliers must not all be 0")
            return self
        given = [k for k, default in _PATTERN_DEFAULTS.items() if getattr(self, k) != default]
        given += [k for k in ("profile", "bursts", "mmpp") if getattr(self, k)]
        if given:
            raise ValueError(f"{', '.join(given)}: not with trace (the log gives the arrival "
                             f"times)")
        if self.rate is None:
            self._replay_speedup = self.trace.speedup
            object.__setattr__(self, "rate", self.trace.mean_rate_per_s * self.trace.speedup)
        elif "speedup" in self.trace.model_fields_set:
            raise ValueError("give either rate or trace.speedup, not both (rate replays the log "
                             "at that mean rate)")
        else:
            self._replay_speedup = self.rate / self.trace.mean_rate_per_s
        return self

    @property
    def replay_speedup(self) -> float:
        """With a trace: how many times faster than real time the log is replayed."""
        return self._replay_speedup

    @model_serializer(mode="wrap")
    def _to_yaml(self, handler) -> Any:
        data = handler(self)
        if self.trace is not None:  # the pattern keys say nothing about a replayed log
            for key in _PATTERN_DEFAULTS:
                data.pop(key, None)
        return data


class NewEntities(Model):
    """Where entities created during the run enter the popularity ranking (slot 0 the most
    popular). Each takes a slot of a band of ranks, in random order, and keeps it: ``tail`` puts
    the band below every entity present at the start; ``random`` spreads the new entities over
    all ranks; a share places the band so that a day's or a week's new entities make that share
    of the requests."""

    enter: Literal["tail", "random"] = Field(
        "tail", description="tail: new entities are the least popular (they rank below every "
        "entity present at the start); random: any rank, the most popular included. Leave it "
        "out when giving a share.")
    first_day_share: float | None = Field(
        None, gt=0, lt=1, description="Instead of enter: the share of requests made by entities "
        "in their first day (predsim workload fit estimates it).")
    first_week_share: float | None = Field(
        None, gt=0, lt=1, description="Instead of enter: the share of requests made by entities "
        "in their first week (predsim workload fit estimates it).")

    @model_validator(mode="after")
    def _check(self) -> "NewEntities":
        given = [k for k in ("first_day_share", "first_week_share") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError("give first_day_share or first_week_share, not both")
        if given and "enter" in self.model_fields_set:
            raise ValueError(f"give enter or {given[0]}, not both (a share places new entities "
                             f"where they make that share of the requests)")
        return self

    @property
    def share(self) -> tuple[str, float, float] | None:
        """(key, share, days) of the share given, or None."""
        if self.first_week_share is not None:
            return "first_week_share", self.first_week_share, 7.0
        if self.first_day_share is not None:
            return "first_day_share", self.first_day_share, 1.0
        return None

    @model_serializer
    def _to_yaml(self) -> Any:
        share = self.share
        return {share[0]: share[1]} if share else {"enter": self.enter}


class Workload(Model):
    """Traffic and the population of entities (users, items) that requests are about."""

    entities: Count | None = Field(None, description="Entities at the start of the simulation. "
                                   "With a trace: optional, the whole population (at least the "
                                   "log's distinct ids; the others never make a request).")
    new_entities_per_day: Count = Field(0.0, description="New entities created per day.")
    new_entities: NewEntities = Field(NewEntities(), description="Where new entities enter the "
                                      "popularity ranking: {enter: tail} (the default), {enter: "
                                      "random}, or {first_week_share: X} or {first_day_share: "
                                      "X}.")
    popularity: Popularity = Field(Popularity(), description="How requests spread over "
                                   "entities: uniform or {zipf: EXPONENT}.")
    arrivals: Arrivals = Field(description="When requests arrive.")

    @model_validator(mode="after")
    def _check(self) -> "Workload":
        trace = self.arrivals.trace
        if trace is not None:
            return self._check_trace(trace)
        if self.entities is None:
            raise ValueError("entities is required (or arrivals.trace: FILE to replay a log)")
        return self._check_entities()

    def _check_entities(self) -> "Workload":
        if self.entities < 1 or self.entities != int(self.entities):
            raise ValueError(f"entities must be a whole number >= 1 (got {self.entities:g})")
        if self.new_entities_per_day < 0:
            raise ValueError(f"new_entities_per_day must be >= 0 "
                             f"(got {self.new_entities_per_day:g})")
        self._check_share()
        return self

    def _check_share(self) -> None:
        """A share of requests for new entities needs new entities, Zipf popularity (under
        uniform popularity every entity gets the same share), and must be within what a day's or
        a week's new entities can make at the most popular ranks."""
        share = self.new_entities.share
        if share is None:
            return
        key, value, days = share
        where = f"new_entities.{key}"
        if not self.new_entities_per_day > 0:
            raise ValueError(f"{where}: needs new_entities_per_day > 0 (got "
                             f"{self.new_entities_per_day:g})")
        if self.popularity.kind != "zipf" or self.popularity.exponent == 0:
            raise ValueError(f"{where}: needs popularity: {{zipf: EXPONENT}} (under uniform "
                             f"popularity every entity, new or not, gets the same share)")
        from sim.inputs.fit import new_entity_share_range  # scipy.stats, only when checked
        _, most = new_entity_share_range(self.entities, self.new_entities_per_day,
                                         self.popularity.exponent, days)
        if value > most:
            raise ValueError(f"{where}: expected at most {most:.3g}, what "
                             f"{self.new_entities_per_day * days:,.0f} new entities make at the "
                             f"most popular ranks among {self.entities:,.0f} entities with "
                             f"zipf {self.popularity.exponent:g} (got {value:g})")

    def _check_trace(self, trace: Trace) -> "Workload":
        if not trace.log.has_entities:  # arrivals from the log, entities from the scenario
            if self.entities is None:
                raise ValueError(f"entities is required: the log {trace.file} names no entities "
                                 f"(no entity id column), so each request's entity is drawn "
                                 f"from entities and popularity")
            return self._check_entities()
        given = [k for k, default in (("popularity", Popularity()), ("new_entities_per_day", 0),
                                      ("new_entities", NewEntities()))
                 if getattr(self, k) != default]
        if given:
            raise ValueError(f"{', '.join(given)}: not with arrivals.trace (the log says which "
                             f"entities make requests, and when each first appears)")
        in_log = trace.log.n_entities
        if self.entities is None:
            object.__setattr__(self, "entities", float(in_log))
        elif self.entities < in_log or self.entities != int(self.entities):
            raise ValueError(f"entities must be a whole number, at least the {in_log:,} distinct "
                             f"ids in the trace (got {self.entities:g})")
        return self
