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

from sim.architectures import World, build
from sim.metrics import Accumulator, Outcomes
from sim.results import Results, collect
from sim.rng import Streams
from sim.scenario import Scenario
from sim.training import ModelLifecycle
from sim.workload import Population, RequestSource

REQUESTS_PER_CHUNK = 1 << 17


def simulate(scenario: Scenario, *, replication: int = 0,
             progress: Callable[[float], None] | None = None,
             observe: Callable[[str, Outcomes], None] | None = None) -> Results:
    """One replication: every architecture of ``scenario`` over warm-up + horizon.

    ``replication`` selects independent random streams for the same seed. ``progress`` is called
    with the share of simulated time done after each chunk. ``observe(name, outcomes)``, when
    given, receives every chunk's per-request outcomes (warm-up included), for checks that need
    individual requests.
    """
    streams = Streams(scenario.seed, replication)
    end_s = scenario.end_s
    population = Population(scenario.workload, end_s, streams)
    model = ModelLifecycle(scenario.training)
    architectures = [build(name, spec, scenario) for name, spec in scenario.architectures.items()]
    lead_s = max([model.lead_s] + [a.lead_s(population.n_slots) for a in architectures])

    env = simpy.Environment(initial_time=-lead_s)
    world = World(scenario, streams, population, model, history_start_s=-lead_s)
    model.start(env, since_s=-lead_s)
    for architecture in architectures:
        architecture.start(env, world)

    source = RequestSource(scenario.workload, population, streams)
    n_buckets = max(1, int(-(-scenario.horizon // scenario.bucket_s)))
    slo = scenario.slo.latency_p99
    accumulators = [Accumulator(a.name, a.kind, n_buckets, scenario.bucket_s, scenario.warmup,
                                end_s, slo, scenario.business.latency_penalty.per_100ms)
                    for a in architectures]

    span_s = REQUESTS_PER_CHUNK / source.profile.peak_per_s
    t_s = 0.0
    while t_s < end_s:
        next_s = min(t_s + span_s, end_s)
        env.run(until=next_s)
        chunk = source.chunk(t_s, next_s)
        for architecture, accumulator in zip(architectures, accumulators):
            outcomes = architecture.serve(chunk)
            if observe is not None:
                observe(architecture.name, outcomes)
            accumulator.add(outcomes)
        t_s = next_s
        if progress is not None:
            progress(t_s / end_s)
    return collect(scenario, architectures, accumulators, replication=replication)
