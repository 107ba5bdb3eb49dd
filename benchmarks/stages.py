"""Where the fast path spends its time: nanoseconds per simulated request, by stage.

Runs benchmarks/standard.yaml (or the architectures named) once to warm the numba cache, then
once under cProfile, and attributes each function's own time to a stage of the pipeline:
generating requests, drawing durations (inverse CDFs), the serving queue, feature and model ages
(timelines, stores), quality, the metrics pass, and the rest (assembling outcomes, Python glue);
the fused kernels, which do the queue and ages in one pass and quality and metrics in another,
count as those two.
cProfile sees compiled kernels as single calls, so their time is measured, not sampled.

    python benchmarks/stages.py [--requests 3e6] [--architectures online] [--json FILE]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import time
from pathlib import Path

import sim

HERE = Path(__file__).resolve().parent
MEAN_RATE_PER_S = 1000.0

# (stage, where the function is defined): first match wins. The fused kernels
# (sim/engine/architectures/fused.py) do several stages in one compiled pass each: the queue
# and the ages in one, quality and the metrics in the other.
STAGES = (
    ("fused: queue and ages", ("fused.py:online_ages",)),
    ("fused: quality and metrics", ("fused.py:metrics", "fused.py:prepared")),
    ("generate requests", ("workload.py", "rng.py", "_generator", "mtrand", "method 'random'",
                           "method 'standard_exponential'", "method 'poisson'",
                           "method 'cumsum'")),
    ("draw durations (inverse CDFs)", ("distributions.py", "normal_quantile.py")),
    ("serving queue", ("serving.py", "parts.py:_decide")),
    ("ages: timelines and stores", ("freshness.py:lookup", "freshness.py:at", "freshness.py:value",
                                    "freshness.py:_", "parts.py", "training.py",
                                    "kinds.py:_feature_age", "kinds.py:_model_cutoff_now",
                                    "kinds.py:_stream_lag")),
    ("quality", ("freshness.py", "kinds.py:_quality")),
    ("metrics pass", ("metrics.py",)),
)


def stage_of(key: str) -> str:
    for stage, patterns in STAGES:
        if any(p in key for p in patterns):
            return stage
    return "assembling outcomes, glue"


def profile(requests: float, architectures: list[str] | None) -> dict:
    def load(horizon_s: float):
        scenario = sim.load_scenario(HERE / "standard.yaml",
                                     {"horizon": f"{horizon_s}s", "warmup": "0s"})
        if architectures:
            scenario = scenario.model_copy(update={"architectures": {
                k: v for k, v in scenario.architectures.items() if k in architectures}})
        return scenario

    sim.simulate(load(20.0))  # compile or load the kernels
    scenario = load(requests / MEAN_RATE_PER_S)
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    results = sim.simulate(scenario)
    profiler.disable()
    wall_s = time.perf_counter() - started
    n = int(results.summary["requests"].iloc[0])
    stages: dict[str, float] = {}
    functions = []
    for (path, line, name), (_, _, own_s, _, _) in pstats.Stats(profiler).stats.items():
        key = f"{Path(path).name}:{name}" if path != "~" else name
        stages[stage_of(key)] = stages.get(stage_of(key), 0.0) + own_s
        functions.append((own_s, f"{Path(path).name}:{line}({name})" if path != "~" else name))
    functions.sort(reverse=True)
    return {"requests": n, "architectures": list(scenario.architectures), "wall_s": wall_s,
            "ns_per_request": wall_s / n * 1e9,
            "stages_ns_per_request": {k: v / n * 1e9 for k, v in
                                      sorted(stages.items(), key=lambda kv: -kv[1])},
            "top_functions_ns_per_request": {name: s / n * 1e9 for s, name in functions[:15]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=float, default=3e6, help="About this many requests.")
    parser.add_argument("--architectures", default="",
                        help="Comma-separated architectures of the scenario (default: all).")
    parser.add_argument("--json", help="Also write the figures here.")
    args = parser.parse_args()
    report = profile(args.requests, [a for a in args.architectures.split(",") if a] or None)
    print(f"{report['requests']:,d} requests through {', '.join(report['architectures'])}: "
          f"{report['wall_s']:.2f} s under the profiler, {report['ns_per_request']:.0f} ns per "
          f"request ({1e3 / report['ns_per_request']:.2f} M requests/s)")
    for stage, ns in report["stages_ns_per_request"].items():
        print(f"  {ns:7.1f} ns  {stage}")
    print("  top functions (own time):")
    for name, ns in report["top_functions_ns_per_request"].items():
        print(f"  {ns:7.1f} ns  {name}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
