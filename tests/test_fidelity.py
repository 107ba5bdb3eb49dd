"""predsim against a real model server: the small case of `make fidelity` (benchmarks/fidelity/).

C = 1 worker at utilisation 0.3: calibrate on 768 requests sent one at a time, drive the real
server (a pre-forked worker on 127.0.0.1 serving an MLP) open loop for 10 s, simulate the
calibrated scenario and compare p50, p95, p99 and mean latency. About 25 s.

Two checks with different bounds, for different reasons (README.md, "Fidelity against a real
server", has the table they come from):

- The replay: this run's measured send times and per-request service times, put through
  predsim's FIFO queue kernel, must give the measured latencies within REPLAY_BOUNDS. In the
  full table the C = 1 replays are within 2.5%; ten runs of this 10-second case stayed within
  1.9% (p50), 2.7% (mean), 7.0% (p95) and 8.1% (p99): a window this short has about 950
  requests, so its p99 is about 10 of them. This checks that the real server is the queue
  predsim models. It holds only when nothing outside the server delayed the requests: with
  another process using a whole core (a test suite run in parallel) one run's p50 was off by
  3.8%, and in runs where the virtual machine paused the load generator itself for 8-20 ms (seen
  as a send 8-20 ms late) the replay missed by up to 16% at p99 (late sends and late reads of
  answers are latency the server never saw). So the replay, too, is judged only on a quiet,
  undisturbed run: no send more than 5 ms late, and 99% of answers read within 1 ms (0.1-0.3 ms
  when undisturbed). Of fifteen runs on 2026-11-26, seven were disturbed that way (up to 9.6%
  off at p50); the eight others were within 1.3% (p50), 1.6% (mean), 3.7% (p95) and 2.1% (p99).
- The prediction (service times calibrated at low load, Poisson arrivals, predsim's own
  simulation): within PREDICTION_BOUNDS. The full table has this case at +2.4% (p50), -3.3%
  (p95), -19.9% (p99) and 0.0% (mean), an earlier full run at -8%, -37%, -41% and -20%; eight
  10-second runs on the quiet machine ranged over -14..+2%, -59..+5%, -64..-20% and -36..-3%.
  The tails are under-predicted because on the 2-vCPU virtual machine the table was made on,
  the CPU runs 3-4 times slower for stretches of tens of milliseconds, clustered in time, so
  consecutive service times are correlated where predsim draws them independently (the README
  shows it case by case). The bounds cover that spread: they catch a prediction that is broken
  (a unit, a replica count, a factor of two in the service time), not one that misses the 5%
  target on this machine. Skipped, saying why, when other processes used the CPU during the
  measurement: the test would then measure the neighbours.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STATS = ("p50", "p95", "p99", "mean")
REPLAY_BOUNDS = {"p50": 0.03, "mean": 0.04, "p95": 0.10, "p99": 0.12}
PREDICTION_BOUNDS = {"p50": 0.20, "mean": 0.45, "p95": 0.70, "p99": 0.75}
BUSY_CORES = 0.25  # other processes' CPU during the run above which the server is not judged
STALL_MS = 5.0     # a send this late means the machine paused the load generator itself
READ_MS = 1.0      # answers read this late (p99) mean the same (undisturbed runs: 0.1-0.3 ms)


def _load_harness():
    path = ROOT / "benchmarks" / "fidelity" / "fidelity.py"
    spec = importlib.util.spec_from_file_location("predsim_fidelity", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def small_case(tmp_path_factory):
    fidelity = _load_harness()
    results = fidelity.run(replicas=(1,), rhos=(0.3,), durations={0.3: 10.0}, pool=768,
                           quiet_wait_s=5.0, run_root=tmp_path_factory.mktemp("fidelity"),
                           log=lambda *args, **kwargs: None)
    config = results["configurations"][0]
    return config, config["cases"][0]


def _report(row: dict, predicted: dict, errors: dict) -> str:
    return ", ".join(f"{s} {row['measured'][s]:.3f} ms measured vs {predicted[s]:.3f} "
                     f"({errors[s]:+.1%})" for s in STATS)


def test_the_real_server_answered_everything_on_schedule(small_case):
    config, row = small_case
    assert config["calibration"]["requests"] == 768
    assert row["unanswered"] == 0 and not row["overloaded"]
    assert row["requests"] > 600
    # open loop on schedule: the arrivals are the Poisson process predsim assumes
    assert row["send_lag_us"]["p50"] < 500


def _skip_if_busy(config: dict, row: dict) -> None:
    busy = max(row["cpu_cores"]["others_cores"], config["calibration"]["others_cores_before"])
    if busy > BUSY_CORES:
        pytest.skip(f"other processes used {busy:.2f} cores during the measurement; the "
                    f"real server is judged on a machine without other work")
    late_ms = row["send_lag_us"]["max"] / 1e3
    if late_ms > STALL_MS:
        pytest.skip(f"the load generator sent a request {late_ms:.1f} ms late (the machine "
                    f"paused it); the real server is judged on an undisturbed run")
    read_ms = row["answer_read_us"]["p99"] / 1e3
    if read_ms > READ_MS:
        pytest.skip(f"the load generator read 1% of the answers more than {read_ms:.1f} ms "
                    f"after they were sent (the machine held it up); the real server is judged "
                    f"on an undisturbed run")


def test_the_real_server_is_the_queue_predsim_models(small_case):
    config, row = small_case
    _skip_if_busy(config, row)
    replay = row["diagnostic_replay"]
    report = _report(row, replay["predicted"], replay["relative_error"])
    for stat, bound in REPLAY_BOUNDS.items():
        assert abs(replay["relative_error"][stat]) <= bound, f"{stat} beyond {bound:.0%}: {report}"


def test_predsim_predicts_the_real_server(small_case):
    config, row = small_case
    _skip_if_busy(config, row)
    report = _report(row, row["predicted"], row["relative_error"])
    for stat, bound in PREDICTION_BOUNDS.items():
        assert abs(row["relative_error"][stat]) <= bound, f"{stat} beyond {bound:.0%}: {report}"
