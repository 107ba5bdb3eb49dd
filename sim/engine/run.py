"""The engine: SimPy for the control plane, numpy chunks for the request plane.

The control plane (training runs and deploys, batch jobs, feature materialisations, stream
windows) runs as SimPy processes; it starts before time 0 so that every schedule is in steady
state when requests begin. Requests are generated in time-ordered chunks; before a chunk is
served the SimPy clock is advanced to the chunk's end, so every refresh a request could see is
already recorded. All architectures serve the very same chunk (common random numbers).
"""

from __future__ import annotations

from typing import Callable

import simpy

from sim.engine.architectures import World, build
from sim.results.metrics import Accumulator, Outcomes
from sim.results.results import Results, collect
from sim.engine.rng import Streams
from sim.scenario import Scenario
from sim.engine.training import lifecycles
from sim.engine.workload import make_population, make_source

REQUESTS_PER_CHUNK = 1 << 17
# Serve with the fused kernels where an architecture can (sim/engine/architectures/fused.py); the
# staged path gives the same bits, slower (tests/test_fused.py compares them).
FUSED = True


class Run:
    """Everything one replication needs, set up identically for the fast and reference engines:
    streams, entities, the model history, the architectures with their control-plane processes
    started on a SimPy environment, the request source and the accumulators."""

    def __init__(self, scenario: Scenario, replication: int = 0):
        self.scenario = scenario
        self.replication = replication
        self.streams = Streams(scenario.seed, replication)
        self.end_s = scenario.end_s
        self.population = make_population(scenario.workload, self.end_s, self.streams)
        # The shared model history, and per architecture the one it uses (its own when it
        # has a training section).
        self.model, self.models = lifecycles(scenario, self.streams)
        self.architectures = [build(name, spec, scenario)
                              for name, spec in scenario.architectures.items()]
        distinct = list({id(m): m for m in [self.model, *self.models.values()]}.values())
        lead_s = max([m.lead_s for m in distinct] +
                     [a.lead_s(self.population.n_slots) for a in self.architectures])
        self.env = simpy.Environment(initial_time=-lead_s)
        for model in distinct:
            model.start(self.env, since_s=-lead_s)
        for architecture in self.architectures:
            world = World(scenario, self.streams, self.population, self.models[architecture.name],
                          history_start_s=-lead_s)
            architecture.start(self.env, world)
        self.source = make_source(scenario.workload, self.population, self.streams)
        n_buckets = max(1, int(-(-scenario.horizon // scenario.bucket_s)))
        self.accumulators = [
            Accumulator(a.name, a.kind, n_buckets, scenario.bucket_s, scenario.warmup,
                        self.end_s, scenario.slo.latency_p99,
                        scenario.business.latency_penalty.per_100ms,
                        (scenario.slo.freshness_bound("batch"),
                         scenario.slo.freshness_bound("stream")))
            for a in self.architectures]

    def chunk_bounds(self):
        """The (start, end) of every request chunk, in order; the same for both engines."""
        span_s = REQUESTS_PER_CHUNK / self.source.peak_per_s
        t_s = 0.0
        while t_s < self.end_s:
            next_s = min(t_s + span_s, self.end_s)
            yield t_s, next_s
            t_s = next_s

    def results(self) -> Results:
        return collect(self.scenario, self.architectures, self.accumulators,
                       replication=self.replication)


def simulate(scenario: Scenario, *, replication: int = 0,
             progress: Callable[[float], None] | None = None,
             observe: Callable[[str, Outcomes], None] | None = None,
             engine: str = "fast") -> Results:
    """One replication: every architecture of ``scenario`` over warm-up + horizon.

    ``replication`` selects independent random streams for the same seed. ``progress`` is called
    with the share of simulated time done after each chunk. ``observe(name, outcomes)``, when
    given, receives every chunk's per-request outcomes (warm-up included), for checks that need
    individual requests. ``engine="reference"`` runs every request as its own SimPy process
    (see ``sim/engine/reference.py``): slower, and the same numbers.
    """
    if engine == "reference":
        from sim.engine.reference import simulate_reference
        return simulate_reference(scenario, replication=replication, progress=progress,
                                  observe=observe)
    if engine != "fast":
        raise ValueError(f"engine must be 'fast' or 'reference' (got {engine!r})")
    run = Run(scenario, replication)
    for start_s, end_s in run.chunk_bounds():
        run.env.run(until=end_s)
        chunk = run.source.chunk(start_s, end_s)
        for architecture, accumulator in zip(run.architectures, run.accumulators):
            if FUSED and architecture.fusable(chunk, accumulator):
                outcomes = architecture.serve_fused(chunk, accumulator, observe is not None)
            else:
                outcomes = architecture.serve(chunk)
                accumulator.add(outcomes)
            if observe is not None:
                observe(architecture.name, outcomes)
        if progress is not None:
            progress(end_s / run.end_s)
    for architecture, accumulator in zip(run.architectures, run.accumulators):
        outcomes = architecture.finish()  # requests still queued when arrivals end
        if outcomes is not None:
            if observe is not None:
                observe(architecture.name, outcomes)
            accumulator.add(outcomes)
    return run.results()
