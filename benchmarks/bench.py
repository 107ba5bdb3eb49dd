"""Speed and memory of the engine: numbers, not pass/fail.

For benchmarks/standard.yaml (batch, online and streaming at a mean of 1,000 requests/s) this
prints and writes as JSON:
- simulated requests per wall-second of the fast path and of the reference engine (one SimPy
  process per request), measured in the same run, and their ratio;
- wall time and peak resident memory for 10^6, 10^7 and 10^8 requests, each in a fresh process
  (import and numba cache loading included; the median of three runs up to 10^7), and how far
  wall time is from linear;
- the numba compile time on a cold cache;
- simulated requests per second of the online architecture alone with each serving kernel: one
  request at a time, dynamic batching, autoscaling;
- where the time goes, in nanoseconds per request by pipeline stage, for the online and the
  batch architecture alone (benchmarks/stages.py, under cProfile).
With --full also the 7-day run (605 million requests through three architectures).

    python benchmarks/bench.py [--sizes 1e6,1e7,1e8] [--full] [--json benchmarks/results.json]
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
t0 = time.perf_counter()
import sim
overrides = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
scenario = sim.load_scenario(sys.argv[1], {"horizon": sys.argv[2], "warmup": "0s", **overrides})
if len(sys.argv) > 5:
    keep = sys.argv[5].split(",")
    scenario = scenario.model_copy(update={"architectures": {
        k: v for k, v in scenario.architectures.items() if k in keep}})
t1 = time.perf_counter()
results = sim.simulate(scenario, engine=sys.argv[3])
t2 = time.perf_counter()
print(json.dumps({"requests": int(results.summary["requests"].iloc[0]),
                  "architectures": len(results.summary),
                  "simulate_s": t2 - t1, "startup_s": t1 - t0,
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


def run_child(requests: float, engine: str = "fast", env: dict | None = None,
              overrides: dict | None = None, architectures: str | None = None) -> dict:
    horizon_s = requests / MEAN_RATE_PER_S
    started = time.perf_counter()
    extra = [json.dumps(overrides or {})] + ([architectures] if architectures else [])
    done = subprocess.run([sys.executable, "-c", CHILD, str(SCENARIO), f"{horizon_s}s", engine,
                           *extra], capture_output=True, text=True, env=env, check=True)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out["process_wall_s"] = time.perf_counter() - started
    out["requests_per_s"] = out["requests"] / out["simulate_s"]
    out["request_architectures_per_s"] = out["requests"] * out["architectures"] / out["simulate_s"]
    return out


def cold_compile_s() -> float:
    """Wall time of a tiny run with an empty numba cache, minus the same run with a warm one."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        cold = run_child(2e4, env=env)["process_wall_s"]
        warm = run_child(2e4, env=env)["process_wall_s"]
    return cold - warm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1e6,1e7,1e8",
                        help="Request counts for the scaling runs (comma-separated).")
    parser.add_argument("--reference-requests", type=float, default=2e4,
                        help="Requests for the reference-engine measurement.")
    parser.add_argument("--serving-requests", type=float, default=1e7,
                        help="Requests for each serving-kernel measurement.")
    parser.add_argument("--full", action="store_true",
                        help="Also the 7-day run at 1,000 requests/s (605 million requests).")
    parser.add_argument("--json", default=str(HERE / "results.json"), help="Where to write.")
    args = parser.parse_args()

    run_child(2e4)  # make sure the numba cache is warm for what follows
    report = {"machine": {"python": platform.python_version(), "cpu": platform.processor() or
                          platform.machine(), "cores": os.cpu_count(),
                          "load_average": os.getloadavg()},
              "scenario": str(SCENARIO.relative_to(HERE.parent)),
              "compile_s_cold_cache": cold_compile_s()}
    print(f"numba compile time on a cold cache: {report['compile_s_cold_cache']:.1f} s")

    sizes = [float(s) for s in args.sizes.split(",") if s]
    scaling = []
    for size in sizes:
        # This virtual machine's speed varies by tens of percent from minute to minute: runs
        # short enough to repeat are run three times and the median one is reported.
        runs = sorted((run_child(size) for _ in range(3 if size <= 1e7 else 1)),
                      key=lambda r: r["simulate_s"])
        r = runs[len(runs) // 2]
        r["simulate_s_all_runs"] = [x["simulate_s"] for x in runs]
        scaling.append({"target_requests": size, **r})
        print(f"{r['requests']:>12,d} requests: {r['simulate_s']:8.2f} s simulating "
              f"({r['process_wall_s']:.2f} s with start-up), {r['requests_per_s'] / 1e6:6.2f} M "
              f"requests/s ({r['request_architectures_per_s'] / 1e6:.2f} M request-architectures/s),"
              f" peak RSS {r['peak_rss_mib']:,.0f} MiB")
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
    print(f"reference engine: {reference['requests_per_s']:,.0f} requests/s; fast path "
          f"{fast['requests_per_s']:,.0f} requests/s: {report['fast_over_reference']:,.0f}x")

    # The serving kernels: the online architecture alone, one request at a time (the
    # Kiefer-Wolfowitz recursion), with dynamic batching, and with an autoscaler (the event loop).
    serving = {}
    for name, overrides in SERVING_VARIANTS.items():
        r = run_child(args.serving_requests, overrides=overrides, architectures="online")
        serving[name] = r
        print(f"online serving, {name:<12} {r['requests_per_s'] / 1e6:6.2f} M requests/s")
    report["serving_kernels"] = serving

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

    if args.full:
        r = run_child(7 * 86400 * MEAN_RATE_PER_S)
        report["seven_days"] = r
        print(f"7 days at 1,000/s: {r['requests']:,d} requests through "
              f"{r['architectures']} architectures in {r['simulate_s']:.1f} s "
              f"({r['process_wall_s']:.1f} s with start-up), peak RSS {r['peak_rss_mib']:,.0f} MiB")

    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
