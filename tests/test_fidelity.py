"""predsim against a real model server: the small case of `make fidelity` (benchmarks/fidelity/).

C = 1 worker at utilisation 0.3: calibrate on 768 requests sent one at a time, drive the real
server (a pre-forked worker on 127.0.0.1 serving an MLP) open loop for 10 s, simulate the
calibrated scenario and compare p50, p95, p99 and mean latency. About 25 s.

Two checks with different bounds, for different reasons (docs/fidelity.md, "Fidelity against a
real server", has the table they come from):

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
  The read rule holds for the calibration too: its mean overhead is added to every replayed and
  predicted latency, and a held-up client there skews it (one CI run: the replay's p50 4.4%
  high after a calibration whose answers were read up to 1.9 ms late).
- The prediction with slow periods (the calibration's service times, in time order, through
  sim.inputs.slow_fit: when they are not independent, predsim gets serving.slow_periods and the
  service times at normal speed; when they are, this is the independent-draw prediction itself;
  Poisson arrivals, predsim's own simulation): within PREDICTION_BOUNDS. It is the prediction the
  docs judge. The figures below are from 2026-11-26, before slow periods, when it was the
  independent-draw prediction; on 2026-12-04 the calibrations had no slow stretches (the
  series were independent, so both predictions were the same) and the full table's C = 1,
  rho = 0.3 case was at -7.0% (p50) and -6.3% (mean). The full table has this case at +2.4% (p50), -3.3%
  (p95), -19.9% (p99) and 0.0% (mean), an earlier full run at -8%, -37%, -41% and -20%; eight
  10-second runs on the quiet machine ranged over -14..+2%, -59..+5%, -64..-20% and -36..-3%.
  The tails are under-predicted because on the 2-vCPU virtual machine the table was made on,
  the CPU runs 3-4 times slower for stretches of tens of milliseconds, clustered in time, so
  consecutive service times are correlated where predsim draws them independently (docs/fidelity.md
  shows it case by case). The bounds cover that spread: they catch a prediction that is broken
  (a unit, a replica count, a factor of two in the service time), not one that misses the 5%
  target on this machine. Only p50 and the mean are judged. The tails of a 10-second run are
  the machine's, both ways: on 2026-11-26 an undisturbed run measured p99 10.6 ms against 21.6
  predicted (+103%) because the calibration happened to see slow stretches the run did not
  (its replay was within 1%, and predsim fed the run's own service times within 9%), where the
  eight runs above were all under-predicted. A tail bound wide enough for both directions would
  catch nothing; the replay checks the tails instead, with the real inputs. Skipped, saying
  why, when other processes used the CPU during the measurement: the test would then measure
  the neighbours.

Around each case the harness also records the server's log under load (RHO_LOG, 10 s just
before and 10 s just after) and predicts from it alone: the in-minute prediction, which the
full table judges. Here it is checked to be recorded and made (the segments bracket the case,
the prediction is finite and judged), not bounded: its errors on a 10-second case are the
machine's, as above.

The same with dynamic batching (server.py --batching 8 --max-wait-ms 2, C = 1, rho = 0.3 in
predsim's sense: rate x (fixed / 8 + E[per_item]) / C): calibrate on the 768 requests alone and
30 groups of each size 2..8, drive the server for 10 s, predict through predsim's batching model.
About 30 s. Three checks:

- The policy, exactly (no bound): no batch over max_batch, every batch short of max_batch left
  no earlier than its oldest request's max_wait, requests dispatched in the order they were
  enqueued, each batch's logged size is the number of requests in it.
- The replay (the measured arrivals at the batcher's queue and the measured batch times through
  predsim's batching kernel) within BATCH_REPLAY_BOUNDS: 1.3 x the largest error seen, rounded
  up to a whole percent. The calibrated prediction is not judged here: bounds taken the same way
  (12% p50, 29% mean) were missed by an undisturbed run at -37.6% on the mean, the machine's
  slow stretches again; the full table reports it.
  On 2026-11-26, 24 runs of this case were made (18 by a script recording every error, 6 of
  this test); 19 were disturbed by the rules below (in 10, other processes - a test suite run
  alongside - used 0.6-1.9 cores; in 9, the load generator sent 9-33 ms late) and do not count.
  The 5 undisturbed runs: replay within 2.7% (p50), 3.3% (mean), 10.9% (p95) and 27.7% (p99);
  prediction within 8.9%, 11.5%, 30.8% and 50.6% (p50 -3.5..+8.9%, mean -11.5..+6.8%, p95
  -26..+31%, p99 -51..+16%). The full table's 15-second run
  of this case is at -8.6%, -21.9%, -33.2% and -61.4% (replay -2.0% at p50, -3.5% at p99), and
  that is the largest for the mean, p95 and p99, so the bounds are 12%, 29%, 44% and 80% for the
  prediction and 4%, 5%, 15% and 37% for the replay. The replay's p99 spread is wider than
  without batching (its batches are formed anew, and a request whose batch differs from the real
  one is given the real batch time of its batch's first request); five runs are a small sample,
  and a sixth undisturbed run (a CI run, 2026-11-26) replayed p99 37.3% high, so the replay's
  tails are not judged either: only its p50 and mean (1.3 x the largest seen: 4% and 5%).
  Skipped under the same disturbance rules as above.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import load_fidelity

# A real server on 127.0.0.1 and the machine's own timing: `make fidelity` runs these, not
# `make test` (they are skipped as often as they run on a busy or virtual machine).
pytestmark = pytest.mark.fidelity

STATS = ("p50", "p95", "p99", "mean")
REPLAY_BOUNDS = {"p50": 0.03, "mean": 0.04, "p95": 0.10, "p99": 0.12}
PREDICTION_BOUNDS = {"p50": 0.20, "mean": 0.45}  # tails: see the docstring
BUSY_CORES = 0.25  # other processes' CPU during the run above which the server is not judged
STALL_MS = 5.0     # a send this late means the machine paused the load generator itself
READ_MS = 1.0      # answers read this late (p99) mean the same (undisturbed runs: 0.1-0.3 ms)


def _load_harness():
    return load_fidelity("fidelity")


@pytest.fixture(scope="module")
def small_case(tmp_path_factory):
    fidelity = _load_harness()
    results = fidelity.run(replicas=(1,), rhos=(0.3,), durations={0.3: 10.0}, pool=768,
                           quiet_wait_s=5.0, run_root=tmp_path_factory.mktemp("fidelity"),
                           log=lambda *args, **kwargs: None)
    config = results["configurations"][0]
    return config, config["cases"][0]


def _assert_within(row: dict, result: dict, bounds: dict) -> None:
    """Every statistic of ``result`` (the prediction, or the replay) within its bound of the
    measured one, the whole comparison in the message when not."""
    report = _report(row, result["predicted"], result["relative_error"])
    for stat, bound in bounds.items():
        assert abs(result["relative_error"][stat]) <= bound, f"{stat} beyond {bound:.0%}: {report}"


def _report(row: dict, predicted: dict, errors: dict) -> str:
    return ", ".join(f"{s} {row['measured'][s]:.3f} ms measured vs {predicted[s]:.3f} "
                     f"({errors[s]:+.1%})" for s in STATS)


def test_the_real_server_answered_everything_on_schedule(small_case):
    config, row = small_case
    assert config["calibration"]["requests"] == 768
    assert row["unanswered"] == 0 and not row["overloaded"]
    # every request of the schedule after the warm-up was measured: a Poisson count at the
    # case's rate (which follows the calibrated service time: 110-120/s on the quiet machine,
    # 61/s after a calibration slowed by hypervisor steal), within 4 standard deviations
    expected = row["rate_per_s"] * (row["duration_s"] - _load_harness().WARMUP_S)
    assert row["requests"] >= expected - 4 * expected ** 0.5
    assert row["requests"] > 300  # enough for the statistics below to mean something
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
    # The calibration too: a held-up client there inflates the overhead every prediction and
    # replay adds (one CI run: calibration read p99 1.9 ms, overhead mean 0.36 ms against
    # 0.14 ms undisturbed, and the replay's p50 4.4% high).
    read_ms = config["calibration"]["answer_read_us"]["p99"] / 1e3
    if read_ms > READ_MS:
        pytest.skip(f"during calibration the load generator read 1% of the answers more than "
                    f"{read_ms:.1f} ms after they were sent (the machine held it up), which "
                    f"skews the overhead measured there; the real server is judged on an "
                    f"undisturbed run")


def test_the_real_server_is_the_queue_predsim_models(small_case):
    config, row = small_case
    _skip_if_busy(config, row)
    _assert_within(row, row["diagnostic_replay"], REPLAY_BOUNDS)


def test_slow_periods_are_fitted_on_the_calibration(small_case):
    config, row = small_case
    slow = config["calibration"]["slow_periods"]
    assert slow["series"] == config["calibration"]["requests"] == 768
    assert not slow["normalised_by_expected"]
    if slow["slow_stretches"]:
        assert slow["slowdowns"][0] == 1.0 and slow["slowdowns"][1] > 1.0
        assert row["predicted_slow_periods"] != row["predicted"]
    else:  # independent: nothing to model, the two predictions are one
        assert "slowdowns" not in slow
        assert row["predicted_slow_periods"] == row["predicted"]
    assert row["verdict"] in ("yes", "no", "unresolved", "not judgeable")


def test_predsim_predicts_the_real_server(small_case):
    config, row = small_case
    _skip_if_busy(config, row)
    _assert_within(row, {"predicted": row["predicted_slow_periods"],
                         "relative_error": row["relative_error_slow_periods"]},
                   PREDICTION_BOUNDS)


# ---------------------------------------------------------------------------------------------
# With dynamic batching (server.py --batching 8 --max-wait-ms 2)
# ---------------------------------------------------------------------------------------------

BATCH_REPLAY_BOUNDS = {"p50": 0.04, "mean": 0.05}  # see docstring


@pytest.fixture(scope="module")
def small_batching_case(tmp_path_factory):
    fidelity = _load_harness()
    root = tmp_path_factory.mktemp("fidelity-batching")
    results = fidelity.run(replicas=(1,), rhos=(0.3,), durations={0.3: 10.0},
                           batch_durations={0.3: 10.0}, pool=768, quiet_wait_s=5.0,
                           run_root=root, batching="on", batch_groups=30,
                           log=lambda *args, **kwargs: None)
    config = results["configurations"][0]
    log = fidelity.Server.read_logs(root / "c1-batch" / "logs")
    return config, config["cases"][0], log


def test_the_batching_server_follows_the_policy_predsim_models(small_batching_case):
    config, row, log = small_batching_case
    max_batch = config["batching"]["max_batch"]
    max_wait_s = config["batching"]["max_wait_ms"] / 1e3
    assert row["unanswered"] == 0 and not row["overloaded"]
    assert row["requests"] > 600
    # the calibration saw batches of every size, and their composition is known
    assert set(config["calibration"]["residual_by_size"]) == {str(b) for b in
                                                              range(1, max_batch + 1)}
    batch_id, size = log[:, 8], log[:, 9].astype(int)
    ids, inverse, counts = np.unique(batch_id, return_inverse=True, return_counts=True)
    assert (counts == size[np.unique(batch_id, return_index=True)[1]]).all()
    assert size.max() <= max_batch
    # a batch short of max_batch leaves only when its oldest request has waited max_wait
    head = np.full(ids.size, np.inf)
    np.minimum.at(head, inverse, log[:, 3])  # enqueued
    dispatched = log[np.unique(batch_id, return_index=True)[1], 2]
    short = size[np.unique(batch_id, return_index=True)[1]] < max_batch
    assert (dispatched[short] >= head[short] + max_wait_s - 1e-6).all()
    # every request waited in FIFO order: dispatched in the order it was enqueued
    order = np.argsort(log[:, 3], kind="stable")
    assert (np.diff(log[order, 2]) >= 0).all()


def test_the_batching_server_is_the_queue_predsim_models(small_batching_case):
    config, row, _ = small_batching_case
    _skip_if_busy(config, row)
    _assert_within(row, row["diagnostic_replay"], BATCH_REPLAY_BOUNDS)


def test_the_batching_prediction_has_both_columns(small_batching_case):
    """Reported, not judged (see the docstring): both predictions are made, the slow-period
    one from a fit on the calibration's batches in time order, each over its expected time."""
    config, row, _ = small_batching_case
    slow = config["calibration"]["slow_periods"]
    assert slow["series"] == config["calibration"]["batches"]
    assert slow["normalised_by_expected"]
    for key in ("predicted", "predicted_slow_periods"):
        assert all(0 < row[key][s] < 1e4 for s in STATS), row[key]
    assert row["verdict"] in ("yes", "no", "unresolved", "not judgeable")


def _assert_log_brackets_the_case(row: dict) -> None:
    """The in-minute log: a segment just before the case and one just after, at RHO_LOG, the
    prediction made from it and judged (its bounds are PREDICTION_BOUNDS' reasons: the
    machine's speed, not the model, sets how close a 10-second case comes)."""
    m = row["in_minute"]
    before, after = m["segments"]
    assert before["requests"] > 1000 and after["requests"] > 1000
    assert before["unanswered"] == after["unanswered"] == 0
    assert before["end_s"] < after["start_s"]
    assert row["verdict_on"] == "in-minute"
    assert all(0 < row["predicted_in_minute"][s] < 1e4 for s in STATS)
    assert set(m["level"]) == {"before", "after", "case", "idle_model", "unexplained"}


def test_the_in_minute_log_is_recorded_around_the_case(small_case):
    _assert_log_brackets_the_case(small_case[1])


def test_the_batching_in_minute_log_forms_batches_of_several_sizes(small_batching_case):
    config, row, _ = small_batching_case
    _assert_log_brackets_the_case(row)
    m = row["in_minute"]
    assert m["largest_batch"] >= 3 and m["batches_of_one"] > 100
    assert m["per_item_ms_mean"] > 0 and m["fixed_ms"] >= 0
