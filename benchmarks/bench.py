"""Speed and memory of the engine: numbers, and whether each target is met.

For benchmarks/standard.yaml (batch, online and streaming at a mean of 1,000 requests/s) this
prints and writes as JSON:
- simulated requests per wall-second and per CPU-second (user + system time of the whole
  process, measured around ``sim.simulate`` in the child process) of the fast path and of the
  reference engine (one SimPy process per request), measured in the same run, and their ratio;
- wall time, CPU time and peak resident memory for 10^6, 10^7 and 10^8 requests, each in a
  fresh process (the median of three runs up to 10^7, by CPU time), and how far wall time is
  from linear;
- a plain SimPy model of the scenario's online queue (benchmarks/plain_simpy.py: one SimPy
  process per request, a ``simpy.Resource`` of 24 replicas, give up at the timeout), its
  requests per CPU-second, and the ratio (predsim's request-architectures per CPU-second on the
  largest three-architecture run) / (plain SimPy's requests per CPU-second): a request through
  one architecture in predsim against a request through the one queue in plain SimPy; and the
  check that the plain model agrees with predsim's online architecture (mean queue wait, share
  over the timeout, mean latency over independent runs);
- the numba compile time on a cold cache;
- start-up: the wall time of a fresh process that imports sim and runs the scenario for 1,000
  requests (1 s) on a warm numba cache, the median of three; the import of sim alone; and the
  five imports that take longest (``python -X importtime``, outermost non-sim modules);
- simulated requests per second and per CPU-second of the online architecture alone with each
  serving kernel: one request at a time, dynamic batching, autoscaling; and of the batch
  architecture alone;
- where the time goes, in nanoseconds per request by pipeline stage, for the online and the
  batch architecture alone (benchmarks/stages.py, under cProfile);
- with --full, the 7-day run (605 million requests through three architectures): its CPU time
  (the whole process, start-up included) and wall time.
It ends with a table of the targets, what was measured and whether each is met: online alone at
least 15 M and batch alone at least 30 M requests per CPU-second; the three architectures at
least 100x the plain SimPy model (as defined above); the week in under 2 minutes of CPU time of
the process (wall time printed too; not judged without --full); peak RSS under 500 MiB (the
largest of every predsim process this run started); start-up under 1.5 s.

    python benchmarks/bench.py [--sizes 1e6,1e7,1e8] [--serving-requests 1e7] [--full]
                               [--json benchmarks/results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCENARIO = HERE / "standard.yaml"
MEAN_RATE_PER_S = 1000.0

CHILD = r"""
import json, resource, sys, time

def cpu_s():  # user + system time of this process (and of any children it waited for)
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

t0 = time.perf_counter()
import sim
overrides = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
scenario = sim.load_scenario(sys.argv[1], {"horizon": sys.argv[2], "warmup": "0s", **overrides})
if len(sys.argv) > 5:
    keep = sys.argv[5].split(",")
    scenario = scenario.model_copy(update={"architectures": {
        k: v for k, v in scenario.architectures.items() if k in keep}})
t1, c1 = time.perf_counter(), cpu_s()
results = sim.simulate(scenario, engine=sys.argv[3])
t2, c2 = time.perf_counter(), cpu_s()
print(json.dumps({"requests": int(results.summary["requests"].iloc[0]),
                  "architectures": len(results.summary),
                  "simulate_s": t2 - t1, "startup_s": t1 - t0,
                  "simulate_cpu_s": c2 - c1, "process_cpu_s": c2,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


SERVING_VARIANTS = {
    "one at a time": {},
    "batching": {"architectures.online.serving.service_time": None,
                 "architectures.online.serving.batching": {
                     "max_batch": 16, "max_wait": "5ms", "fixed": {"constant": "10ms"},
                     "per_item": {"constant": "2ms"}}},
    "autoscaling": {"architectures.online.serving.autoscaling": {
        "min": 4, "max": 40, "target_utilization": 0.6, "every": "30s", "warmup": "1m"}},
}

# Every predsim process this run starts: (what it ran, its peak RSS in MiB), for the memory target.
PEAK_RSS: list[tuple[str, float]] = []


def sources_stamp() -> float:
    """The newest modification time of the sim package's sources: if it moves during a run,
    numba recompiled kernels in some of the runs and their times include compiling."""
    return max(f.stat().st_mtime for f in (HERE.parent / "sim").rglob("*.py"))


def run_child(requests: float, engine: str = "fast", env: dict | None = None,
              overrides: dict | None = None, architectures: str | None = None,
              label: str | None = None) -> dict:
    horizon_s = requests / MEAN_RATE_PER_S
    started = time.perf_counter()
    extra = [json.dumps(overrides or {})] + ([architectures] if architectures else [])
    done = subprocess.run([sys.executable, "-c", CHILD, str(SCENARIO), f"{horizon_s}s", engine,
                           *extra], capture_output=True, text=True, env=env, check=True)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out["process_wall_s"] = time.perf_counter() - started
    per_arch = out["requests"] * out["architectures"]
    out["requests_per_s"] = out["requests"] / out["simulate_s"]
    out["request_architectures_per_s"] = per_arch / out["simulate_s"]
    out["requests_per_cpu_s"] = out["requests"] / out["simulate_cpu_s"]
    out["request_architectures_per_cpu_s"] = per_arch / out["simulate_cpu_s"]
    PEAK_RSS.append((label or f"{out['requests']:,d} requests through "
                     f"{architectures or 'all architectures'}"
                     + (f", {engine} engine" if engine != "fast" else ""), out["peak_rss_mib"]))
    return out


def median_child(requests: float, repeats: int = 3, **kwargs) -> dict:
    """The run with the median CPU time of ``repeats`` (this virtual machine's speed varies by
    tens of percent from minute to minute), with every run's times."""
    runs = sorted((run_child(requests, **kwargs) for _ in range(repeats)),
                  key=lambda r: r["simulate_cpu_s"])
    return {**runs[len(runs) // 2], "simulate_s_all_runs": [x["simulate_s"] for x in runs],
            "simulate_cpu_s_all_runs": [x["simulate_cpu_s"] for x in runs]}


def cold_compile_s() -> float:
    """Wall time of a tiny run with an empty numba cache, minus the same run with a warm one."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        cold = run_child(2e4, env=env, label="a tiny run on a cold numba cache")
        warm = run_child(2e4, env=env)
    return cold["process_wall_s"] - warm["process_wall_s"]


def import_s() -> float:
    """Wall time of ``import sim`` in a fresh process."""
    done = subprocess.run([sys.executable, "-c", "import time; t = time.perf_counter(); "
                           "import sim; print(time.perf_counter() - t)"],
                          capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def slowest_imports(n: int = 5) -> list[dict]:
    """The ``n`` modules outside sim that take longest to import (cumulative, by
    ``python -X importtime -c 'import sim'``), each outermost one (imported by sim itself, not
    by another package) with the sim module that imports it."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", "import sim"],
                          capture_output=True, text=True, check=True)
    rows = []  # (depth, module, cumulative microseconds), children before their parent
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "self [us]" not in line:
            _, cumulative, name = line[len("import time:"):].split("|")
            rows.append(((len(name) - len(name.lstrip(" ")) - 1) // 2, name.strip(),
                         int(cumulative)))

    def parent(i: int) -> int | None:
        j = i + 1
        while j < len(rows) and rows[j][0] >= rows[i][0]:
            j += 1
        return j if j < len(rows) else None

    def in_sim(i: int) -> bool:
        return rows[i][1] == "sim" or rows[i][1].startswith("sim.")

    found = []
    for i, (_, name, cumulative) in enumerate(rows):
        up = parent(i)
        if in_sim(i) or up is None:
            continue
        importer, ancestor = rows[up][1], up
        while ancestor is not None and in_sim(ancestor):
            ancestor = parent(ancestor)
        if ancestor is None:
            found.append({"module": name, "cumulative_s": cumulative / 1e6,
                          "imported_by": importer})
    return sorted(found, key=lambda f: -f["cumulative_s"])[:n]


def plain_simpy(requests: float) -> dict:
    """benchmarks/plain_simpy.py for about ``requests`` requests in a fresh process, the median
    of three by CPU time."""
    runs = sorted((json.loads(subprocess.run(
        [sys.executable, str(HERE / "plain_simpy.py"), "--requests", str(requests), "--json"],
        capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
        for _ in range(3)), key=lambda r: r["simulate_cpu_s"])
    return {**runs[1], "simulate_cpu_s_all_runs": [r["simulate_cpu_s"] for r in runs]}


def plain_simpy_check(replications: int) -> dict:
    """benchmarks/plain_simpy.py --validate: the plain model against predsim's online
    architecture over independent 3 s runs."""
    done = subprocess.run([sys.executable, str(HERE / "plain_simpy.py"), "--validate",
                           "--replications", str(replications), "--json"],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1e6,1e7,1e8",
                        help="Request counts for the scaling runs (comma-separated).")
    parser.add_argument("--reference-requests", type=float, default=2e4,
                        help="Requests for the reference-engine measurement.")
    parser.add_argument("--plain-requests", type=float, default=3e4,
                        help="Requests for the plain SimPy measurement.")
    parser.add_argument("--serving-requests", type=float, default=1e7,
                        help="Requests for each serving-kernel and the batch-alone measurement.")
    parser.add_argument("--full", action="store_true",
                        help="Also the 7-day run at 1,000 requests/s (605 million requests).")
    parser.add_argument("--json", default=str(HERE / "results.json"), help="Where to write.")
    args = parser.parse_args()

    stamp = sources_stamp()
    run_child(2e4)  # make sure the numba cache is warm for what follows
    report = {"machine": {"python": platform.python_version(), "cpu": platform.processor() or
                          platform.machine(), "cores": os.cpu_count(),
                          "load_average": os.getloadavg()},
              "scenario": str(SCENARIO.relative_to(HERE.parent)),
              "compile_s_cold_cache": cold_compile_s()}
    print(f"numba compile time on a cold cache: {report['compile_s_cold_cache']:.1f} s")

    # Start-up: a fresh process that imports sim and simulates 1,000 requests, warm cache.
    starts = sorted(run_child(1e3, label="start-up (1,000 requests)")["process_wall_s"]
                    for _ in range(3))
    imports = sorted(import_s() for _ in range(3))
    report["startup"] = {"process_wall_s": starts[1], "process_wall_s_all_runs": starts,
                         "import_s": imports[1], "import_s_all_runs": imports,
                         "slowest_imports": slowest_imports()}
    print(f"start-up: {starts[1]:.2f} s for a fresh process that imports sim and simulates 1,000 "
          f"requests (warm numba cache, median of 3); import sim alone {imports[1]:.2f} s")
    print("  slowest imports (python -X importtime, cumulative): " + ", ".join(
        f"{f['module']} {f['cumulative_s']:.2f} s (from {f['imported_by']})"
        for f in report["startup"]["slowest_imports"]))

    sizes = [float(s) for s in args.sizes.split(",") if s]
    scaling = []
    for size in sizes:
        # Runs short enough to repeat are run three times and the median one is reported.
        r = median_child(size, repeats=3 if size <= 1e7 else 1)
        scaling.append({"target_requests": size, **r})
        print(f"{r['requests']:>12,d} requests: {r['simulate_s']:8.2f} s simulating "
              f"({r['process_wall_s']:.2f} s with start-up), {r['requests_per_s'] / 1e6:6.2f} M "
              f"requests/s ({r['request_architectures_per_s'] / 1e6:.2f} M request-architectures/s),"
              f" peak RSS {r['peak_rss_mib']:,.0f} MiB")
        print(f"{'':>12}  per CPU-second: {r['simulate_cpu_s']:8.2f} CPU-s simulating, "
              f"{r['requests_per_cpu_s'] / 1e6:6.2f} M requests ("
              f"{r['request_architectures_per_cpu_s'] / 1e6:.2f} M request-architectures)")
    report["scaling"] = scaling
    by_size = {s["target_requests"]: s for s in scaling}
    if 1e7 in by_size and 1e8 in by_size:
        ratio = by_size[1e8]["simulate_s"] / (10 * by_size[1e7]["simulate_s"])
        report["linearity_1e8_over_10x_1e7"] = ratio
        print(f"wall time of 10^8 / (10 x wall time of 10^7): {ratio:.2f}")

    reference = run_child(args.reference_requests, engine="reference")
    fast = max(scaling, key=lambda s: s["requests"]) if scaling else run_child(1e6)
    report["reference"] = reference
    report["fast_over_reference"] = fast["requests_per_s"] / reference["requests_per_s"]
    report["fast_over_reference_cpu"] = (fast["requests_per_cpu_s"] /
                                         reference["requests_per_cpu_s"])
    print(f"reference engine: {reference['requests_per_s']:,.0f} requests/s; fast path "
          f"{fast['requests_per_s']:,.0f} requests/s: {report['fast_over_reference']:,.0f}x "
          f"({report['fast_over_reference_cpu']:,.0f}x per CPU-second)")

    # The yardstick: a plain SimPy model of the online queue, and its agreement with predsim.
    plain = plain_simpy(args.plain_requests)
    check = plain_simpy_check(100)
    report["plain_simpy"] = {**plain, "check": check}
    report["fast_over_plain_simpy_cpu"] = (fast["request_architectures_per_cpu_s"] /
                                           plain["requests_per_cpu_s"])
    report["fast_over_plain_simpy_definition"] = (
        f"request-architectures per CPU-second of predsim's fast path on "
        f"{fast['requests']:,d} requests through {fast['architectures']} architectures / "
        f"requests per CPU-second of benchmarks/plain_simpy.py")
    print(f"plain SimPy model of the online queue (benchmarks/plain_simpy.py): "
          f"{plain['requests']:,d} requests, {plain['requests_per_cpu_s']:,.0f} requests per "
          f"CPU-second; predsim on {fast['requests']:,d} requests through "
          f"{fast['architectures']} architectures: "
          f"{fast['request_architectures_per_cpu_s'] / 1e6:.2f} M request-architectures per "
          f"CPU-second: {report['fast_over_plain_simpy_cpu']:,.0f}x (a request through one "
          "architecture in predsim against a request through the one queue in plain SimPy)")
    print(f"  the plain model against predsim's online architecture, {check['replications']} "
          f"independent {check['horizon_s']:g} s runs each: " + "; ".join(
              f"{key} {f['plain SimPy']:.1f} ± {f['plain SimPy standard error']:.1f} against "
              f"{f['predsim']:.1f} ± {f['predsim standard error']:.1f}"
              for key, f in check["figures"].items()))

    # The serving kernels: the online architecture alone, one request at a time (the
    # Kiefer-Wolfowitz recursion), with dynamic batching, and with an autoscaler (the event loop).
    serving = {}
    for name, overrides in SERVING_VARIANTS.items():
        r = median_child(args.serving_requests, repeats=3 if name == "one at a time" else 1,
                         overrides=overrides, architectures="online",
                         label=f"online alone, {name}")
        serving[name] = r
        print(f"online serving, {name:<12} {r['requests_per_s'] / 1e6:6.2f} M requests/s, "
              f"{r['requests_per_cpu_s'] / 1e6:6.2f} M requests per CPU-second")
    report["serving_kernels"] = serving
    batch = median_child(args.serving_requests, architectures="batch", label="batch alone")
    report["batch_alone"] = batch
    print(f"batch alone                 {batch['requests_per_s'] / 1e6:6.2f} M requests/s, "
          f"{batch['requests_per_cpu_s'] / 1e6:6.2f} M requests per CPU-second")

    # Where the time goes (benchmarks/stages.py), each architecture kind alone.
    stages = {}
    for name in ("online", "batch"):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "stages.json"
            subprocess.run([sys.executable, str(HERE / "stages.py"), "--requests", "3e6",
                            "--architectures", name, "--json", str(out)],
                           capture_output=True, check=True)
            stages[name] = json.loads(out.read_text())
        print(f"where the time goes, {name} alone ({stages[name]['ns_per_request']:.0f} ns per "
              "request under the profiler): " + ", ".join(
                  f"{stage} {ns:.0f}" for stage, ns in
                  stages[name]["stages_ns_per_request"].items()))
    report["stages"] = stages

    week = None
    if args.full:
        week = run_child(7 * 86400 * MEAN_RATE_PER_S, label="7 days")
        report["seven_days"] = week
        print(f"7 days at 1,000/s: {week['requests']:,d} requests through "
              f"{week['architectures']} architectures in {week['process_cpu_s']:.1f} CPU-s for "
              f"the whole process ({week['simulate_cpu_s']:.1f} CPU-s simulating), "
              f"{week['process_wall_s']:.1f} s wall ({week['simulate_s']:.1f} s simulating), "
              f"peak RSS {week['peak_rss_mib']:,.0f} MiB")

    largest = max(PEAK_RSS, key=lambda r: r[1])
    report["peak_rss_mib_largest"] = {"run": largest[0], "peak_rss_mib": largest[1]}
    online = serving["one at a time"]
    targets = [
        ("online alone >= 15 M requests per CPU-second",
         f"{online['requests_per_cpu_s'] / 1e6:.2f} M", online["requests_per_cpu_s"] >= 15e6),
        ("batch alone >= 30 M requests per CPU-second",
         f"{batch['requests_per_cpu_s'] / 1e6:.2f} M", batch["requests_per_cpu_s"] >= 30e6),
        (f"3 architectures ({fast['requests']:,d} requests) >= 100x plain SimPy, per CPU-second",
         f"{report['fast_over_plain_simpy_cpu']:,.0f}x",
         report["fast_over_plain_simpy_cpu"] >= 100),
        ("7 days at 1,000/s, 3 architectures < 2 min CPU of the process",
         f"{week['process_cpu_s']:.0f} CPU-s ({week['process_wall_s']:.0f} s wall)" if week
         else "not run (--full)", week["process_cpu_s"] < 120 if week else None),
        ("peak RSS < 500 MiB, largest of every predsim process",
         f"{largest[1]:,.0f} MiB ({largest[0]})", largest[1] < 500),
        ("start-up < 1.5 s: fresh process, import, 1,000 requests",
         f"{starts[1]:.2f} s (import {imports[1]:.2f} s)", starts[1] < 1.5),
    ]
    report["targets"] = [{"target": t, "measured": m, "met": met} for t, m, met in targets]
    width, measured = (max(len(row[k]) for row in targets) for k in (0, 1))
    print(f"\nTargets\n  {'target':<{width}}  {'measured':<{measured}}  met")
    for t, m, met in targets:
        print(f"  {t:<{width}}  {m:<{measured}}  "
              f"{'met' if met else 'not measured' if met is None else 'NOT MET'}")

    report["sources_changed_during_run"] = sources_stamp() != stamp
    if report["sources_changed_during_run"]:
        print("\nWARNING: sim's sources changed during this run, so some runs recompiled numba "
              "kernels and include compile time: run it again.")

    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
