"""The fidelity harness's analysis of a log under load (benchmarks/fidelity/fidelity.py), on
synthetic records: no server, no timing, so it runs in `make test` (the live checks are in
tests/test_fidelity.py, under `make fidelity`).

Checked: a batching log's per_item is each batch's time beyond ``fixed`` shared among its
requests (every request of a complete batch gets one, and a batch's shares add up to its
time beyond fixed); the speed band says "no steady state" rather than a number when the
slower machine saturates; ``level_vs_log`` is the arithmetic its docstring gives.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.conftest import load_fidelity


@pytest.fixture(scope="module")
def harness():
    return load_fidelity("fidelity")


def _batching_log(seed=3, batches=1500):
    """A joined batching log as ``bracket_join`` returns it: batches of 1-8 requests one after
    another on one worker, each taking 0.3 ms + (20 us + 9 us x candidates) per request,
    times a little independent noise; the last batch incomplete (one request unanswered)."""
    rng = np.random.default_rng(seed)
    size = rng.integers(1, 9, batches)
    rows = {k: [] for k in ("batch_id", "batch_size", "k", "read_s", "accepted_s", "free_s",
                            "service_s", "worker", "cpu_s", "worker_got_s", "worker_done_s",
                            "latency_s", "segment")}
    t = 0.0
    for b, n in enumerate(size):
        k = np.maximum(rng.lognormal(math.log(128), 0.5, n).round(), 1)
        took = (0.3e-3 + np.sum(20e-6 + 9e-6 * k)) * rng.lognormal(0, 0.05)
        t += rng.exponential(3e-3)
        seen = n - 1 if b == batches - 1 and n > 1 else n
        for i in range(seen):
            for key, value in (("batch_id", b), ("batch_size", n), ("k", k[i]),
                               ("read_s", t - 1e-3), ("accepted_s", t), ("free_s", t + took),
                               ("service_s", took), ("worker", 0), ("cpu_s", took),
                               ("worker_got_s", t), ("worker_done_s", t + took),
                               ("latency_s", took + 1e-3), ("segment", int(b >= batches // 2))):
                rows[key].append(value)
        t += took
    j = {key: np.asarray(v, dtype=float) for key, v in rows.items()}
    j["segment"] = j["segment"].astype(int)
    j["segments"] = [{"requests": int((j["segment"] == i).sum()), "unanswered": 0,
                      "start_s": 0.0, "end_s": 1.0} for i in (0, 1)]
    return j


def test_per_item_is_each_batch_beyond_fixed_shared_among_its_requests(harness, tmp_path):
    j = _batching_log()
    fitted = harness.fit_batching_in_minute(j, tmp_path / "per_item.csv")
    assert fitted["after_idle"] is None and fitted["slow_periods"] is None  # nothing to divide
    per_item = np.loadtxt(tmp_path / "per_item.csv", skiprows=1)
    t = harness.batch_table(j)
    complete = t["seen"] == t["size"]
    assert (~complete).sum() <= 1
    assert per_item.size == int(t["size"][complete].sum())
    # the CSV is in request order; each complete batch's shares add up to its time beyond fixed
    ids, inverse = np.unique(j["batch_id"], return_inverse=True)
    member = complete[inverse]
    sums = np.bincount(inverse[member], per_item, minlength=ids.size)[complete]
    beyond = np.maximum(t["service_s"][complete] - fitted["fixed_s"], 0.0)
    # to the CSV's resolution: 9 decimals of a second, half a unit per request, 8 at most
    np.testing.assert_allclose(sums, beyond, rtol=0, atol=8 * 0.5e-9)
    # a bigger request (more candidates) gets the bigger share of its batch
    two = np.flatnonzero(complete & (t["size"] == 2))[0]
    mine = np.flatnonzero(inverse == two)
    order = np.argsort(j["k"][mine])
    assert np.all(np.diff(per_item[np.cumsum(member) - 1][mine][order]) >= 0)
    # the line it came from: the per-candidate cost that made the batches
    assert fitted["summary"]["coefficients"]["per_candidate_us"] == pytest.approx(9, rel=0.1)


def test_the_speed_band_says_no_steady_state_rather_than_a_number(harness):
    steady = {s: 10.0 for s in harness.STATS} | {"stable": True, "utilisation": 0.9}
    faster = {s: 8.0 for s in harness.STATS} | {"stable": True, "utilisation": 0.85}
    slower = {s: 13.0 for s in harness.STATS} | {"stable": True, "utilisation": 0.95}
    assert harness.speed_band(steady, faster, slower)["p50"] == pytest.approx(0.3)
    saturated = slower | {"utilisation": 1.02}
    assert all(math.isinf(v) for v in harness.speed_band(steady, faster, saturated).values())
    assert all(math.isinf(v) for v in harness.speed_band(
        steady, faster, slower | {"stable": False}).values())


def test_level_vs_log_is_the_case_speed_over_the_log_and_the_idle_model(harness):
    log_ratio = np.r_[np.full(100, 1.02), np.full(100, 0.98)]
    segment = np.r_[np.zeros(100, int), np.ones(100, int)]
    model = {"idle": ["0ms", "10ms"], "slowdown": [0.9, 1.1]}
    out = harness.level_vs_log(log_ratio, segment, np.full(200, 0.010), np.full(50, 0.95),
                               np.zeros(50), model)
    assert out["before"] == pytest.approx(0.02) and out["after"] == pytest.approx(-0.02)
    assert out["case"] == pytest.approx(-0.05)
    assert out["idle_model"] == pytest.approx(0.9 / 1.1 - 1)
    assert out["unexplained"] == pytest.approx(0.95 / (0.9 / 1.1) - 1)
