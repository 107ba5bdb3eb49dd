"""A plain SimPy model of benchmarks/standard.yaml's online queue: the yardstick for "100x a
plain SimPy model of the same queue".

It is the textbook model, written as one would in a notebook, neither slowed down nor tuned:
one SimPy process per request; Poisson arrivals at the scenario's mean rate of 1,000/s with its
diurnal cycle (peak / trough 3, peak at 19:00), by thinning a process at the peak rate; 24
replicas as a ``simpy.Resource``; each request holds a replica for a lognormal feature lookup
(median 3 ms, p99 12 ms) plus a lognormal service time (median 15 ms, p99 60 ms); a request
still waiting for a replica after the 300 ms timeout gives up (``request | env.timeout``).
Each request's queue wait and latency go into lists. Draws are numpy Generator scalars.

bench.py runs it for a few times 10^4 requests and reports its simulated requests per
CPU-second. The ratio bench.py reports against it is

    (predsim fast path: request-architectures per CPU-second, three-architecture scenario)
    / (this model: requests per CPU-second)

that is, one request through one architecture in predsim against one request through the one
queue here.

It is a correct model of that queue: ``--validate`` runs it and predsim's online architecture
alone (fast path) on the same scenario from an empty queue over independent seeds, and compares
the mean over runs of: mean queue wait (a request that gives up counts its 300 ms, as predsim
counts it), the share of requests over the timeout, and mean latency (capped at the timeout, as
predsim reports it). The offered load there is near 1 (about 1,130 requests/s just after
midnight against 24 replicas of about 21.5 ms each), so the queue matters. Measured when this
was written (mean ± standard error over runs, plain SimPy against predsim):

- 200 runs of 3 s (about 3,400 requests each): queue wait 36.7 ± 1.5 against 36.0 ± 1.5 ms,
  latency 58.2 ± 1.5 against 57.5 ± 1.5 ms (0.3 standard errors apart); none over the timeout;
- 60 runs of 10 s (about 11,300 requests each): queue wait 84.2 ± 5.8 against 84.0 ± 5.2 ms,
  over the timeout 1.8 ± 0.7 against 0.8 ± 0.4 % (1.2 standard errors apart);
- 24 runs of 30 s (about 33,900 requests each): queue wait 169 ± 10 against 155 ± 9 ms, over
  the timeout 15.5 ± 2.4 against 12.3 ± 2.0 % (1.0 standard error apart).

The per-run means are heavy-tailed (the queue is near critical), so a few dozen runs can land
two standard errors apart by chance; bench.py runs the 3 s check with 100 runs each.

    python benchmarks/plain_simpy.py [--requests 3e4] [--json]
    python benchmarks/plain_simpy.py --validate [--replications 200] [--horizon 3]
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import time

import numpy as np
import simpy

MEAN_RATE_PER_S = 1000.0
PEAK_TO_TROUGH = 3.0
PEAK_HOUR = 19.0
REPLICAS = 24
TIMEOUT_S = 0.300
Z_99 = 2.3263478740408408  # standard normal 0.99 quantile


def lognormal(median_s: float, p99_s: float) -> tuple[float, float]:
    """numpy's (mean, sigma) of the underlying normal for a lognormal given median and p99."""
    return math.log(median_s), math.log(p99_s / median_s) / Z_99


SERVICE = lognormal(0.015, 0.060)
LOOKUP = lognormal(0.003, 0.012)
AMPLITUDE = (PEAK_TO_TROUGH - 1.0) / (PEAK_TO_TROUGH + 1.0)
PEAK_RATE_PER_S = MEAN_RATE_PER_S * (1.0 + AMPLITUDE)


def rate(t_s: float) -> float:
    """Requests per second at time t_s (day 0 starts at midnight)."""
    return MEAN_RATE_PER_S * (1.0 + AMPLITUDE * math.cos(
        2.0 * math.pi * (t_s - PEAK_HOUR * 3600.0) / 86400.0))


def run(horizon_s: float, seed: int = 1) -> dict[str, list[float]]:
    """Arrivals over [0, horizon_s), each served or given up; returns every request's queue
    wait and latency in seconds."""
    rng = np.random.default_rng(seed)
    env = simpy.Environment()
    replicas = simpy.Resource(env, capacity=REPLICAS)
    waits: list[float] = []
    latencies: list[float] = []

    def request(env):
        arrived = env.now
        with replicas.request() as req:
            result = yield req | env.timeout(TIMEOUT_S)
            if req not in result:  # gave up waiting
                waits.append(TIMEOUT_S)
                latencies.append(TIMEOUT_S)
                return
            waits.append(env.now - arrived)
            yield env.timeout(rng.lognormal(*LOOKUP) + rng.lognormal(*SERVICE))
        latencies.append(env.now - arrived)

    def arrivals(env):
        while True:
            yield env.timeout(rng.exponential(1.0 / PEAK_RATE_PER_S))
            if env.now >= horizon_s:
                return
            if rng.random() < rate(env.now) / PEAK_RATE_PER_S:
                env.process(request(env))

    env.process(arrivals(env))
    env.run()  # until the last request is answered
    return {"wait_s": waits, "latency_s": latencies}


def cpu_s() -> float:
    """User + system CPU time of this process (and of any children it waited for)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure(requests: float, seed: int = 1) -> dict:
    """One run of about ``requests`` requests: its speed per CPU-second and per wall-second."""
    cpu0, wall0 = cpu_s(), time.perf_counter()
    out = run(requests / MEAN_RATE_PER_S, seed)
    cpu, wall = cpu_s() - cpu0, time.perf_counter() - wall0
    n = len(out["wait_s"])
    return {"requests": n, "simulate_s": wall, "simulate_cpu_s": cpu,
            "requests_per_s": n / wall, "requests_per_cpu_s": n / cpu,
            "queue_wait_ms_mean": 1e3 * float(np.mean(out["wait_s"])),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _summary(wait_s, latency_s) -> dict[str, float]:
    latency = np.asarray(latency_s)
    return {"queue wait, mean ms": 1e3 * float(np.mean(wait_s)),
            "over the timeout, %": 100.0 * float(np.mean(latency >= TIMEOUT_S)),
            "latency (capped at the timeout), mean ms":
                1e3 * float(np.mean(np.minimum(latency, TIMEOUT_S)))}


def validate(replications: int, horizon_s: float) -> dict:
    """This model and predsim's online architecture alone, ``replications`` independent runs
    each: the mean over runs of each figure and its standard error, and the difference in
    standard errors of the difference."""
    from pathlib import Path

    import sim

    scenario = sim.load_scenario(Path(__file__).resolve().parent / "standard.yaml",
                                 {"horizon": f"{horizon_s}s", "warmup": "0s"})
    scenario = scenario.model_copy(update={"architectures": {
        "online": scenario.architectures["online"]}})
    plain, fast = [], []
    plain_requests = fast_requests = 0
    for k in range(replications):
        out = run(horizon_s, seed=1000 + k)
        plain.append(_summary(out["wait_s"], out["latency_s"]))
        plain_requests += len(out["wait_s"])
        row = sim.simulate(scenario, replication=k).summary.iloc[0]
        fast.append({"queue wait, mean ms": float(row["queue_wait_ms_mean"]),
                     "over the timeout, %": 100.0 * float(row["timeout_rate"]),
                     "latency (capped at the timeout), mean ms": float(row["latency_ms_mean"])})
        fast_requests += int(row["requests"])
    report = {"replications": replications, "horizon_s": horizon_s,
              "requests_per_run": {"plain SimPy": plain_requests / replications,
                                   "predsim": fast_requests / replications},
              "figures": {}}
    for key in plain[0]:
        a = np.array([p[key] for p in plain])
        b = np.array([f[key] for f in fast])
        se_a, se_b = a.std(ddof=1) / math.sqrt(len(a)), b.std(ddof=1) / math.sqrt(len(b))
        report["figures"][key] = {
            "plain SimPy": float(a.mean()), "plain SimPy standard error": float(se_a),
            "predsim": float(b.mean()), "predsim standard error": float(se_b),
            "difference in standard errors": float((a.mean() - b.mean()) / math.hypot(se_a, se_b))}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=float, default=3e4, help="About this many requests.")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="Print the figures as JSON.")
    parser.add_argument("--validate", action="store_true",
                        help="Compare with predsim's online architecture instead.")
    parser.add_argument("--replications", type=int, default=200, help="With --validate.")
    parser.add_argument("--horizon", type=float, default=3.0,
                        help="With --validate: seconds of simulated time per run.")
    args = parser.parse_args()
    if args.validate:
        report = validate(args.replications, args.horizon)
        lines = [f"{args.replications} independent runs of {args.horizon:g} s each (about "
                 f"{report['requests_per_run']['plain SimPy']:,.0f} requests per run here, "
                 f"{report['requests_per_run']['predsim']:,.0f} in predsim):"]
        lines += [f"  {key:<42} plain SimPy {f['plain SimPy']:7.2f} ± "
                  f"{f['plain SimPy standard error']:.2f}, predsim {f['predsim']:7.2f} ± "
                  f"{f['predsim standard error']:.2f}: {f['difference in standard errors']:+.1f} "
                  "standard errors apart" for key, f in report["figures"].items()]
    else:
        report = r = measure(args.requests, args.seed)
        lines = [f"plain SimPy: {r['requests']:,d} requests in {r['simulate_cpu_s']:.2f} CPU-s "
                 f"({r['simulate_s']:.2f} s wall): {r['requests_per_cpu_s']:,.0f} requests per "
                 f"CPU-second; mean queue wait {r['queue_wait_ms_mean']:.1f} ms"]
    print(json.dumps(report) if args.json else "\n".join(lines))

if __name__ == "__main__":
    main()
