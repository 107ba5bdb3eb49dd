"""Preflight: what a simulation will cost before it starts, and a refusal of what cannot work.

From a validated scenario alone (nothing is simulated, nothing large is allocated) it
estimates, per simulation (one replication of one scenario):

- **requests**: the expected number of arrivals over warm-up + horizon, the rate profile
  integrated exactly (daily or weekly pattern, hourly profile, bursts; a Markov-modulated rate
  averages to the mean rate; a replayed log stops at its end unless it loops);
- **control-plane events**: runs of every schedule (batch scoring jobs, feature
  materialisations, stream windows, training runs or trigger checks, autoscaler evaluations),
  from the schedule's start before time 0 (its lead, as the engine computes it) to the end;
- **memory**: the arrays the engine allocates that grow with the scenario: per architecture a
  latency histogram per time bucket (``n_buckets x N_BINS`` int64, :class:`sim.results.metrics.Accumulator`)
  and the per-bucket series and time-series frame; the entity arrays of
  :class:`sim.engine.workload.Population` (a byte per slot, about 32 bytes per new entity, 8 more per
  slot when new entities enter at random) and a 4-byte int per slot per batch-scoring
  architecture (:class:`sim.engine.architectures.parts.StoredPredictions`); the request chunk
  (``REQUESTS_PER_CHUNK`` requests, about 24 float64 arrays plus 20 per architecture); and a
  record per control-plane run. The ~300 MiB every Python process needs for its imports is not
  counted;
- **time**, at this machine's measured speed (the constants below), scaled by the number of
  simulations, the processes running them in parallel and how busy the machine is now.

:func:`check` turns an :class:`Estimate` into a decision. **Memory refusals are final** (the
run would die with "Unable to allocate ..."); ``force`` does not lift them. **Absurd event
counts** are refused unless ``force``: a scheduled job, materialisation or training that starts
before the previous run could finish while the schedule runs more than
:data:`OVERLAP_RUNS` times, or any schedule whose runs outnumber the requests more than
:data:`EVENTS_PER_REQUEST` to one (and are more than :data:`MIN_ABSURD_RUNS`), such as a
stream window far shorter than the gap between requests. **A long run is a warning only**
(more than :data:`WARN_AFTER_S` seconds), with the estimate.

``sim.run`` does not call the preflight (library users may want exactly the run they asked
for); the ``predsim`` commands that simulate do, before anything is simulated.

Speed constants: how they were measured
---------------------------------------
Request plane, nanoseconds per request on one quiet core. ``benchmarks/results.json``
(2026-11-26, this project's 2-core VM, one core per run) gives 411 ns per request for batch +
online + streaming together (2.43 M requests/s at 10^8 requests, ``scaling``), 215 ns for an
online architecture alone (4.65 M/s, ``serving_kernels``), 116 ns for batch alone
(``stages``), and x1.19 / x1.27 for online with dynamic batching / an autoscaler. The split
between the shared request generation and each kind was measured on 2026-12-04 by simulating
``benchmarks/standard.yaml`` for 1 h (3.84 M requests) with one architecture at a time and with
all three (553, 811, 849 and 1,940 ns per request on a machine then busy with a load average of
3.3 on 2 cores, so about 4.7 times slower than the benchmark): shared generation 136 ns, batch
417, online 675, streaming 713, scaled by 411 / 1,940 to the benchmark's speed and rounded up.
Hybrid (a batch store plus online serving) measured about the sum of the two.

Control plane, microseconds per run, measured the same day the same way: one day of each
schedule every second with negligible traffic (86,400 runs each; 3.8 s for batch scoring
jobs, 3.2 s materialisations, 0.8 s stream windows, 2.2 s trainings, under the same load),
scaled by the same 4.7. Time-series buckets: :func:`sim.results.metrics.quantile` per bucket and
architecture, 42 us under that load, about 20 us quiet.

Memory, checked against the growth of peak RSS over a simulation (2026-12-04, quickstart):
30 s time buckets over a day, 671 MiB estimated, 629 MiB measured; 20.8 million new entities,
0.95 GiB estimated, 731 MiB measured; the plain 30-minute run, 114 MiB estimated, 62 MiB
measured. It errs on the large side.

The time estimate is good to about a factor of 1.5 on a quiet machine (the benchmark moves by 20%
between runs); when the machine is busy it is scaled up by (load average + 1) / cores. Under
heavy contention it can still be short by a factor of 2 (measured on 2026-12-04 at a load of
4 on 2 cores: 3.4 s estimated, 9.5 s simulated, for an hour of ``benchmarks/standard.yaml``);
overloaded serving queues (requests far faster than the replicas) also cost more per request.
The request counts were within 0.2% of the simulated ones in the same checks.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Sequence

from sim.results.metrics import N_BINS
from sim.scenario import Scenario
from sim.scenario.architectures import serving_of
from sim.units import count_words as _count, duration_up as _dur_up
from sim.units import duration_words as _human, rate_estimate as _rate
from sim.units import round_duration as _dur

# -- speed (see the module docstring) ------------------------------------------------------------
NS_PER_REQUEST_SHARED = 30.0  # arrivals, thinning, entity draw, uniforms: once per request
NS_PER_REQUEST = {"batch": 90.0, "online": 145.0, "streaming": 155.0, "hybrid": 235.0}
EVENTED_FACTOR = 1.25  # online serving with dynamic batching or an autoscaler
# A Markov-modulated rate is thinned from its highest state's rate over the whole run (the
# chunks cannot know the state in advance): each candidate point costs a draw and a test.
NS_PER_CANDIDATE_POINT = 10.0
# The reference engine (a SimPy process per request): 12,308 request-architectures/s in
# benchmarks/results.json ("reference"), 81 us each.
NS_PER_REQUEST_REFERENCE = 81_300.0
US_PER_RUN = {"job": 10.0, "materialisation": 8.0, "window": 2.5, "training": 6.0,
              "check": 3.0, "autoscaler": 1.0, "slow period": 0.1}
BYTES_PER_SLOW_PATH = 3 * 3 * 512 * 8  # breakpoints, work and slowdowns of about 3 blocks
US_PER_BUCKET = 20.0  # per time bucket and architecture (percentiles of each bucket)

# -- memory ---------------------------------------------------------------------------------------
BYTES_PER_BUCKET = N_BINS * 8 + (12 + 5) * 8 + 40 * 8  # histogram + series + time-series frame
BYTES_PER_SLOT = 1            # Population._is_new (at most: none when new entities take a band)
BYTES_PER_SLOT_RANDOM = 8     # rng.choice(n_slots, replace=False) when new entities enter at random
BYTES_PER_STORE_SLOT = 0.125  # StoredPredictions._seen: a bit per entity, per batch/hybrid
BYTES_PER_NEW_ENTITY = 32     # slots, creation times (sorted and shuffled), at the peak of set-up
BYTES_PER_RUN = 500           # a Run record and a Timeline row per control-plane run
CHUNK_ARRAYS_SHARED, CHUNK_ARRAYS_PER_ARCH = 24, 20
MEMORY_SHARE = 0.8            # refuse above this share of the available memory

# -- limits ---------------------------------------------------------------------------------------
WARN_AFTER_S = 60.0           # warn when a command's simulations will take longer
OVERLAP_RUNS = 1000           # overlapping runs are absurd above this many runs
EVENTS_PER_REQUEST = 10.0     # runs of one schedule per request above which it is absurd
SPEED_CHANGES_PER_REQUEST = 100.0  # the same for slow periods' changes of speed
MIN_ABSURD_RUNS = 100_000     # ... as long as it has more runs than this


class PreflightError(ValueError):
    """A scenario the preflight refuses; ``str()`` is the message for the user (the CLI exits
    2 with it). ``memory`` is True for a memory refusal (final even with ``force``)."""

    def __init__(self, message: str, memory: bool = False):
        super().__init__(message)
        self.memory = memory


@dataclass
class Problem:
    kind: str      # "memory" or "events"
    key: str       # the scenario key to change
    message: str


@dataclass
class Schedule:
    """One control-plane schedule of a simulation: its key, how many runs, how long the
    longest takes and how often it starts."""

    key: str
    kind: str          # job | materialisation | window | training | check | autoscaler |
                       # slow period (stays in a slow-period state)
    runs: float
    every_s: float
    longest_s: float = 0.0
    what: str = ""     # e.g. "50,036 entities at 5,000/s"
    entities: float = 0.0  # scored or materialised by the longest run, when by throughput
    can_overlap: bool = True


@dataclass
class Estimate:
    """What the simulations of a command will cost: totals over every simulation, the
    memory the largest needs times those running at once, and what :func:`check` found."""

    requests: float = 0.0                 # over every simulation
    events: float = 0.0                   # control-plane runs, over every simulation
    bytes: float = 0.0                    # peak: largest simulation x simulations at once
    seconds: float = 0.0                  # wall time of all the simulations
    simulations: int = 0
    architectures: int = 0                # in the largest simulation
    available_bytes: float | None = None
    memory_parts: dict = field(default_factory=dict)   # of the largest simulation
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    busy_factor: float = 1.0

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else float("inf")


# -------------------------------------------------------------------------------------------------
# Available memory
# -------------------------------------------------------------------------------------------------

def available_bytes() -> float | None:
    """Memory available to a new allocation: ``PREDSIM_AVAILABLE_MEMORY`` (bytes, or with a
    K/M/G/T suffix) when set, else MemAvailable from /proc/meminfo, else free physical pages
    from sysconf; None when none can be read (no memory check then)."""
    given = os.environ.get("PREDSIM_AVAILABLE_MEMORY")
    if given:
        try:
            return _parse_bytes(given)
        except ValueError:
            pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024.0
    except (OSError, ValueError, IndexError):
        pass
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def _parse_bytes(text: str) -> float:
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    scale = {"K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}.get(text[-1:], 1)
    return float(text[:-1] if scale > 1 else text) * scale


def _busy_factor() -> float:
    """How much slower than a quiet core a simulation runs now: with a load average of L on
    C cores, a new process gets about C / (L + 1) of a core, so (L + 1) / C, at least 1."""
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):
        return 1.0
    return max(1.0, (load + 1.0) / (os.cpu_count() or 1))


# -------------------------------------------------------------------------------------------------
# One simulation
# -------------------------------------------------------------------------------------------------

def expected_requests(scenario: Scenario) -> float:
    """Expected arrivals over [0, warm-up + horizon] (what the engine generates, warm-up
    included)."""
    from sim.engine.workload import RateProfile

    end_s = scenario.end_s
    arrivals = scenario.workload.arrivals
    if arrivals.trace is not None:
        end = end_s
        if arrivals.trace.loop is False:
            end = min(end_s, arrivals.trace.period_s / arrivals.replay_speedup)
        return float(arrivals.rate) * end
    profile = RateProfile(arrivals)
    bursts = profile.bursts
    profile.bursts = []
    if profile.is_constant:
        total = profile.mean_per_s * end_s
    else:
        period = 7 * 86400.0 if (arrivals.pattern == "weekly" or
                                 (profile.hourly is not None and profile.hourly.size == 168)) \
            else 86400.0
        whole = math.floor(end_s / period)
        total = whole * _integral(profile, 0.0, period) + \
            _integral(profile, whole * period, end_s)
    for start, end, multiplier in bursts:  # each burst adds (multiplier - 1) x the rate
        a, b = max(0.0, start), min(end, end_s)
        if b > a:
            total += (multiplier - 1.0) * _integral(profile, a, b)
    return float(total)


def _integral(profile, a: float, b: float, step_s: float = 60.0) -> float:
    """The integral of the rate over [a, b], midpoint rule (exact for a constant, to 1e-7 of a
    day's traffic for the cosine with one-minute steps)."""
    import numpy as np

    if b <= a:
        return 0.0
    n = max(1, min(200_000, math.ceil((b - a) / step_s)))
    t = a + (np.arange(n) + 0.5) * (b - a) / n
    return float(profile(t).mean() * (b - a))


def _duration(spec, entities: float) -> float:
    """A scheduled run's duration over ``entities`` (throughput) or as given."""
    throughput = getattr(spec, "throughput", None)
    if throughput is not None:
        return entities / throughput + spec.overhead
    return (getattr(spec, "duration", None) or 0.0) + spec.overhead


def _schedules(scenario: Scenario, n_slots: float) -> tuple[list[Schedule], float]:
    """Every control-plane schedule of one simulation, with its number of runs, and the lead:
    how long before time 0 the control plane starts (the longest any schedule needs, as
    :class:`sim.engine.run.Run` computes it)."""
    import numpy as np

    from sim.engine.rng import Streams
    from sim.engine.training import ModelLifecycle

    end_s = scenario.end_s
    out: list[Schedule] = []
    leads = []
    for name, spec in scenario.architectures.items():
        kind = spec.kind
        if kind in ("batch", "hybrid"):
            scored = n_slots if kind == "batch" else max(1.0, spec.head_share * n_slots)
            longest = _duration(spec, scored)
            leads.append(2 * spec.every + longest)
            out.append(Schedule(f"architectures.{name}.every", "job", 0.0, spec.every, longest,
                                f"{_count(scored)} entities at {_rate(spec.throughput)}",
                                entities=scored))
        features = getattr(spec, "features", None)
        batch = features.batch if features is not None else None
        if batch is not None:
            longest = _duration(batch, n_slots)
            leads.append(2 * batch.every + longest)
            what = (f"{_count(n_slots)} entities at {_rate(batch.throughput)}"
                    if batch.throughput is not None else "its duration")
            out.append(Schedule(f"architectures.{name}.features.batch.every", "materialisation",
                                0.0, batch.every, longest, what,
                                entities=n_slots if batch.throughput is not None else 0.0))
        stream = features.stream if features is not None else None
        if stream is not None and not stream.window.is_zero:
            window = float(stream.window.mean)
            q = np.array(0.9999)
            lead = 2 * float(stream.window.ppf(q)) + float(stream.lag.ppf(q))
            out.append(Schedule(f"architectures.{name}.features.stream.window", "window",
                                (end_s + lead) / window, window, can_overlap=False))
        path, serving = serving_of(spec)
        if serving is not None and serving.autoscaling is not None:
            every = serving.autoscaling.every
            out.append(Schedule(f"architectures.{name}.{path}.autoscaling.every", "autoscaler",
                                end_s / every + 1, every, can_overlap=False))
        slow = serving.slow_periods if serving is not None else None
        if slow is not None:
            stay = slow.mean_stay_s
            out.append(Schedule(f"architectures.{name}.{path}.slow_periods.states[*].mean",
                                "slow period", _slow_paths(serving) * (end_s / stay + 1), stay,
                                can_overlap=False))
    trainings = [("training", scenario.training)] + [
        (f"architectures.{name}.training", getattr(spec, "training", None))
        for name, spec in scenario.architectures.items()]
    shared_used = any(getattr(spec, "training", None) is None
                      for spec in scenario.architectures.values())
    for prefix, t in trainings:
        if t is None or (prefix == "training" and not shared_used):
            continue
        try:
            model = ModelLifecycle(t, scenario, Streams(scenario.seed, 0))
            lead = model.lead_s
            longest = model._longest_s()
        except Exception:  # noqa: BLE001 - an estimate: fall back to the section's own numbers
            lead, longest = 2 * (t.every or 0.0), (t.duration or 0.0) + t.overhead
        leads.append(lead)
        if t.policy == "trigger":
            every = t.trigger.check_every
            out.append(Schedule(f"{prefix}.trigger.check_every", "check", 0.0, every,
                                can_overlap=False))
        else:
            out.append(Schedule(f"{prefix}.every", "training", 0.0, t.every, longest,
                                "its duration", can_overlap=t.policy == "schedule"))
    lead = max(leads, default=0.0)
    for s in out:
        if s.runs == 0.0:
            s.runs = (end_s + lead) / s.every_s + 1
    return out, lead


def _slow_paths(serving) -> int:
    """The speed paths a serving section's slow periods draw: one for the host, or one per
    replica it can have."""
    if serving.slow_periods.scope == "host":
        return 1
    return serving.autoscaling.max if serving.autoscaling is not None else serving.replicas


def _one(scenario: Scenario, engine: str = "fast") -> dict:
    """Requests, schedules, memory parts (bytes) and seconds of one simulation of
    ``scenario``."""
    from sim.engine.run import REQUESTS_PER_CHUNK

    w = scenario.workload
    end_s = scenario.end_s
    requests = expected_requests(scenario)
    if w.arrivals.trace is not None and w.arrivals.trace.log.has_entities:
        n_new, n_slots = 0.0, float(w.entities)
    else:
        n_new = w.new_entities_per_day / 86400.0 * end_s
        n_slots = float(w.entities) + n_new
    kinds = [spec.kind for spec in scenario.architectures.values()]
    n_arch = len(kinds)
    n_buckets = max(1.0, math.ceil(scenario.horizon / scenario.bucket_s))
    schedules, lead_s = _schedules(scenario, n_slots)
    runs = sum(s.runs for s in schedules if s.kind != "slow period")  # kept: stays are not

    per_slot = BYTES_PER_SLOT + BYTES_PER_STORE_SLOT * sum(k in ("batch", "hybrid") for k in kinds)
    rule = w.new_entities
    if rule.share is None and rule.enter == "random" and n_new > 0:
        per_slot += BYTES_PER_SLOT_RANDOM
    servings = [serving_of(spec)[1] for spec in scenario.architectures.values()]
    paths = sum(_slow_paths(s) for s in servings if s is not None and s.slow_periods is not None)
    parts = {
        "time-series buckets": n_arch * n_buckets * BYTES_PER_BUCKET,
        "slow-period paths": paths * BYTES_PER_SLOW_PATH,
        "entities": n_slots * per_slot + n_new * BYTES_PER_NEW_ENTITY,
        "control-plane runs": runs * BYTES_PER_RUN,
        "request chunks": REQUESTS_PER_CHUNK * 8.0 * (CHUNK_ARRAYS_SHARED +
                                                      CHUNK_ARRAYS_PER_ARCH * n_arch),
    }
    ns = NS_PER_REQUEST_SHARED
    for spec in scenario.architectures.values():
        cost = NS_PER_REQUEST.get(spec.kind, max(NS_PER_REQUEST.values()))
        serving = serving_of(spec)[1]
        if serving is not None and (serving.batching is not None or
                                    serving.autoscaling is not None):
            cost *= EVENTED_FACTOR
        ns += cost
    if engine == "reference":
        ns = NS_PER_REQUEST_REFERENCE * n_arch
    seconds = requests * ns * 1e-9 + sum(s.runs * US_PER_RUN[s.kind] for s in schedules) * 1e-6 \
        + n_arch * n_buckets * US_PER_BUCKET * 1e-6
    modulated_x = None
    if w.arrivals.trace is None and w.arrivals.mmpp is not None:
        from sim.engine.workload import RateProfile
        modulated_x = float(max(w.arrivals.mmpp.normalised_multipliers))
        seconds += RateProfile(w.arrivals).peak_per_s * modulated_x * end_s * \
            NS_PER_CANDIDATE_POINT * 1e-9
    return dict(lead_s=lead_s, requests=requests, schedules=schedules, runs=runs, parts=parts,
                modulated_x=modulated_x,
                bytes=sum(parts.values()), seconds=seconds, n_arch=n_arch, n_slots=n_slots,
                n_new=n_new, n_buckets=n_buckets, per_slot=per_slot)


# -------------------------------------------------------------------------------------------------
# Estimates and the check
# -------------------------------------------------------------------------------------------------

def estimate(scenario: Scenario, replications: int = 1, *, parallel: int = 1,
             label: str | None = None, engine: str = "fast") -> Estimate:
    """The cost of ``replications`` simulations of ``scenario``, ``parallel`` at once, with
    the problems and warnings :func:`check` acts on (nothing is raised here).

    >>> from sim import load_scenario
    >>> est = estimate(load_scenario("scenarios/quickstart.yaml"), replications=3)
    >>> est.requests, est.events, est.bytes, est.seconds, est.problems, est.warnings
    """
    return estimate_many([scenario], replications, parallel=parallel, label=label,
                         engine=engine)


def estimate_many(scenarios: Sequence[Scenario], replications: int = 1, *, parallel: int = 1,
                  label: str | None = None, time_scenarios: Sequence[Scenario] | None = None,
                  engine: str = "fast") -> Estimate:
    """The cost of simulating every scenario ``replications`` times (a sweep's points, the
    candidates of retraining advice), ``parallel`` simulations at once; the time counts
    ``time_scenarios`` when given (the points still to run), else all of them."""
    label = label or (scenarios[0].name if scenarios else "the scenario")
    est = Estimate(available_bytes=available_bytes(), busy_factor=_busy_factor())
    ones = [(s, _one(s, engine)) for s in scenarios]
    timed = ones if time_scenarios is None else [(s, _one(s, engine)) for s in time_scenarios]
    simulations = len(timed) * replications
    at_once = max(1, min(parallel, len(ones) * replications, os.cpu_count() or 1))
    est.simulations = simulations
    est.requests = sum(o["requests"] for _, o in timed) * replications
    est.events = sum(o["runs"] for _, o in timed) * replications
    serial_s = sum(o["seconds"] for _, o in timed) * replications
    waves = math.ceil(simulations / at_once) if simulations else 0
    est.seconds = serial_s / max(1, min(at_once, simulations)) * est.busy_factor \
        if waves else 0.0
    if not ones:
        return est
    scenario, big = max(ones, key=lambda so: so[1]["bytes"])
    est.architectures = big["n_arch"]
    est.memory_parts = dict(big["parts"])
    concurrent = max(1, min(parallel, len(ones) * replications))
    est.bytes = big["bytes"] * concurrent
    seen = set()
    for s, o in ones:
        for problem in _event_problems(s, o, label):
            if problem.message not in seen:
                seen.add(problem.message)
                est.problems.append(problem)
    memory = _memory_problem(scenario, big, concurrent, est.available_bytes, label)
    if memory is not None:
        est.problems.insert(0, memory)
    if est.seconds > WARN_AFTER_S:
        est.warnings.append(_time_warning(est, label, max(
            (o["modulated_x"] or 0.0 for _, o in timed), default=0.0)))
    return est


def check(estimate: Estimate, force: bool = False) -> Estimate:
    """Raise :class:`PreflightError` for what ``estimate`` found impossible: always for
    memory, for absurd event counts unless ``force``. Returns the estimate (its
    ``warnings`` are for the user) when the run may go ahead."""
    memory = [p for p in estimate.problems if p.kind == "memory"]
    if memory:  # with the event problems too: they often explain it
        raise PreflightError("\n".join(p.message for p in estimate.problems), memory=True)
    events = [p for p in estimate.problems if p.kind == "events"]
    if events and not force:
        raise PreflightError("\n".join(p.message + " (--force runs it anyway.)"
                                       for p in events))
    for p in events:  # forced: the user is told once more, and so is the JSON
        note = f"{p.message} Running it anyway (--force)."
        if note not in estimate.warnings:
            estimate.warnings.append(note)
    return estimate


def _event_problems(scenario: Scenario, one: dict, label: str) -> list[Problem]:
    out = []
    requests = one["requests"]
    span = scenario.end_s
    for s in one["schedules"]:
        # a speed change costs a small share of a request: far more of them are fine
        per_request = SPEED_CHANGES_PER_REQUEST if s.kind == "slow period" else \
            EVENTS_PER_REQUEST
        cap = max(MIN_ABSURD_RUNS, per_request * requests)
        noun = {"job": "job", "materialisation": "materialisation", "window": "window",
                "training": "training run", "check": "check",
                "autoscaler": "autoscaler evaluation", "slow period": "speed change"}[s.kind]
        if s.can_overlap and s.longest_s > s.every_s and s.runs > OVERLAP_RUNS:
            fix = f"give {s.key} of at least {_dur_up(s.longest_s)}"
            if s.entities > 0:
                spec_key = s.key.rsplit(".", 1)[0] + ".throughput"
                fix += f", or {spec_key} of at least {_rate(s.entities / s.every_s)}"
            at_once = s.longest_s / s.every_s
            out.append(Problem("events", s.key, (
                f"{label}: {s.key} is {_dur(s.every_s)}, but each {noun} takes "
                f"{_dur(s.longest_s)} ({s.what}): a new {noun} would start before the "
                f"previous one could finish, {_count(at_once)} at once, "
                f"{_count(s.runs)} {noun}s in all. To fit, {fix}.")))
        elif s.runs > cap:
            per_request = s.runs / requests if requests > 0 else float("inf")
            least = s.runs * s.every_s / cap  # the interval that gives `cap` runs
            gap = (f"requests arrive every {_dur(span / requests)} on average"
                   if requests > 0 else "there are no requests")
            out.append(Problem("events", s.key, (
                f"{label}: {s.key} is {_dur(s.every_s)}: {_count(s.runs)} {noun}s for "
                f"{_count(requests)} requests ({_ratio(per_request)} per request; {gap}), "
                f"so the run would be almost all {noun}s. To fit, give {s.key} of at least "
                f"{_dur_up(least)} (at most {_count(cap)} {noun}s).")))
    return out


def _memory_problem(scenario: Scenario, one: dict, concurrent: int, available: float | None,
                    label: str) -> Problem | None:
    if available is None:
        return None
    need = one["bytes"] * concurrent
    limit = MEMORY_SHARE * available
    if need <= limit:
        return None
    parts = one["parts"]
    name = max(parts, key=parts.get)
    budget = limit / concurrent - (one["bytes"] - parts[name])  # what the biggest part may use
    detail = ", ".join(f"{k} {_bytes(v)}" for k, v in sorted(parts.items(), key=lambda kv: -kv[1])
                       if v >= 0.01 * one["bytes"])
    head = (f"{label}: this would need about {_bytes(need)} of memory ({detail}"
            + (f"; x{concurrent} simulations at once" if concurrent > 1 else "")
            + f"), more than the {_bytes(limit)} it may use "
            f"({MEMORY_SHARE:.0%} of the {_bytes(available)} available).")
    # Buckets, control-plane runs and new entities grow with the simulated time: the longest
    # horizon that fits scales them down together.
    grows = parts["time-series buckets"] + parts["control-plane runs"] + \
        one["n_new"] * (BYTES_PER_NEW_ENTITY + one["per_slot"])
    fixed = one["bytes"] - grows
    horizon_fit = None
    if grows > 0 and limit / concurrent > fixed:
        horizon_fit = max(0.0, (limit / concurrent - fixed) / grows * scenario.end_s
                          - scenario.warmup)
    shorter = (f" or a horizon of at most {_dur(horizon_fit)}" if horizon_fit else "")
    if budget <= 0 and horizon_fit:
        key = "horizon"
        fix = (f"horizon: to fit, give a horizon of at most {_dur(horizon_fit)} (every part "
               f"above grows with it).")
    elif budget <= 0:
        key = "workload"
        fix = "even without its largest part it would not fit: simulate a smaller scenario."
    elif name == "time-series buckets":
        max_buckets = max(1.0, math.floor(budget / (one["n_arch"] * BYTES_PER_BUCKET)))
        key = "timeseries_bucket" if scenario.timeseries_bucket is not None else "horizon"
        fix = (f"{key}: {one['n_buckets']:,.0f} time buckets of {_dur(scenario.bucket_s)} x "
               f"{one['n_arch']} architectures hold a latency histogram each "
               f"({BYTES_PER_BUCKET / 1024:.0f} KiB). To fit, set timeseries_bucket to at least "
               f"{_dur_up(scenario.horizon / max_buckets)}{shorter}.")
    elif name == "entities":
        w = scenario.workload
        days = scenario.end_s / 86400.0
        if one["n_new"] > w.entities:
            key = "workload.new_entities_per_day"
            per_new = BYTES_PER_NEW_ENTITY + one["per_slot"]
            most = max(0.0, (budget - w.entities * one["per_slot"]) / per_new)
            fix = (f"{key}: {_count(one['n_new'])} new entities over {_dur(scenario.end_s)} "
                   f"({_count(w.new_entities_per_day)} a day). To fit, give "
                   f"{key} of at most {_count(most / days)}{shorter}.")
        else:
            key = "workload.entities"
            most = max(0.0, (budget - one["n_new"] * BYTES_PER_NEW_ENTITY) / one["per_slot"])
            fix = (f"{key}: {_count(one['n_slots'])} entities at {one['per_slot']} bytes each. To fit, "
                   f"give {key} of at most {_count(most)}.")
    elif name == "control-plane runs":
        s = max(one["schedules"], key=lambda s: s.runs)
        key = s.key
        most = budget / BYTES_PER_RUN
        fix = (f"{_count(s.runs)} runs of {s.key} ({_dur(s.every_s)}) from the control "
               f"plane's start, {_dur(one['lead_s'])} before time 0, to the end. To fit, give "
               f"{s.key} of at least {_dur_up(s.runs * s.every_s / max(1.0, most))}.")
    else:
        key = "architectures"
        fix = "Simulate fewer architectures at once."
    if concurrent > 1 and one["bytes"] <= limit:
        fix += f" Or run one simulation at a time (--workers 1): each needs {_bytes(one['bytes'])}."
    return Problem("memory", key, f"{head} {fix}")


def _time_warning(est: Estimate, label: str, modulated_x: float = 0.0) -> str:
    sims = (f"{est.simulations} simulations" if est.simulations != 1 else "one simulation")
    busy = (f"; the machine is busy (load {est.busy_factor:.1f}x its cores), which slows it"
            if est.busy_factor > 1.05 else "")
    return (f"{label}: this will take about {_human(est.seconds)} ({_count(est.requests)} "
            f"requests through {est.architectures} architecture"
            f"{'s' if est.architectures != 1 else ''}, {sims}, at this machine's measured "
            f"speed{busy}). A shorter horizon, a lower workload.arrivals.rate or fewer "
            f"replications shortens it." + (
                f" Arrivals are drawn at the rate of workload.arrivals.mmpp's busiest state, "
                f"{_ratio(modulated_x)} times the mean, and thinned: lower its largest "
                f"multiplier to shorten it." if modulated_x > 100 else ""))


# -------------------------------------------------------------------------------------------------
# Formatting
# -------------------------------------------------------------------------------------------------

def _ratio(x: float) -> str:
    return f"{x:,.0f}" if x >= 10 else f"{x:.2g}"


def _bytes(n: float) -> str:
    for unit, size in (("TiB", 2 ** 40), ("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= size:
            return f"{n / size:,.3g} {unit}" if n / size < 1000 else f"{n / size:,.0f} {unit}"
    return f"{n:.0f} bytes"


def summary(est: Estimate) -> str:
    """One line: requests, events, memory and time."""
    return (f"{_count(est.requests)} requests, {_count(est.events)} control-plane runs, "
            f"about {_bytes(est.bytes)} of memory, about {_human(est.seconds)}")


__all__ = ["Estimate", "PreflightError", "Problem", "available_bytes", "check", "estimate",
           "estimate_many", "expected_requests", "summary"]


def corner_scenarios(path: str, overrides: Sequence[str], seed: int | None,
                     vary: Sequence[str]) -> list[Scenario]:
    """The scenario at ``path`` and, for each ``KEY=LO:HI`` of ``vary`` (``predsim optimize``),
    the scenario with KEY at each end of its range: where a search's memory and event counts
    are largest. A corner that does not load is left out (the search reports it)."""
    from sim.scenario import load_scenario

    out = [load_scenario(path, list(overrides), seed=seed)]
    for item in vary:
        key, _, bounds = str(item).partition("=")
        for end in bounds.split(":")[:2] if ":" in bounds else ():
            try:
                out.append(load_scenario(path, [*overrides, f"{key.strip()}={end.strip()}"],
                                         seed=seed))
            except Exception:  # noqa: BLE001 - ScenarioError and the like: the search says
                continue
    return out


def advice_scenarios(path: str, overrides: Sequence[str], seed: int | None,
                     intervals: Sequence[float], policies: Sequence[str]) -> list[Scenario]:
    """The scenario of every candidate ``predsim retrain-advice`` simulates (as
    :func:`sim.studies.advice.advise` builds them); none when they do not build (advise reports why)."""
    from sim.studies.advice import candidates
    from sim.studies.designs import Point
    from sim.studies.sweep import Template, build_scenarios

    try:
        template = Template.of(path, list(overrides), seed)
        chosen = candidates(template.scenario, intervals, policies, template.label)
        return build_scenarios(template, [Point(c.values) for c in chosen],
                               common_random_numbers=True)
    except Exception:  # noqa: BLE001 - advise reports bad input itself
        return []
