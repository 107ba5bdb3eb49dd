"""The engine against queueing theory and age-of-information closed forms.

``predsim verify --quick`` (sim/verify.py) runs the whole engine on textbook cases, over
independent replications, and requires each closed form to lie inside the simulated mean's
confidence interval. Here it runs as part of the suite, and we check that the checks can fail.
"""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sim import theory, verify

PREDSIM = Path(sys.executable).parent / "predsim"


def test_closed_forms_reproduce_the_published_erlang_c_example():
    p_wait, mean_wait = theory.erlang_c(100 / 1800, 1 / 180, 14)
    assert p_wait == pytest.approx(0.17413, abs=5e-6)
    assert mean_wait == pytest.approx(7.84, abs=0.005)
    assert theory.pollaczek_khinchine_wait(0.5, 1.0, 1.0) == pytest.approx(0.5)  # M/D/1
    assert theory.periodic_age(3600, 600) == (2400, 4200)


@pytest.mark.slow
def test_verify_quick_passes_every_case():
    done = subprocess.run([str(PREDSIM), "verify", "--quick"], capture_output=True, text=True,
                          env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stdout + done.stderr
    for case in ("M/M/1", "M/M/4", "Erlang C worked example", "M/D/1", "Little's law",
                 "feature age", "coverage", "batching, take all waiting"):
        assert case in done.stdout
    assert "FAIL" not in done.stdout


def test_verify_catches_a_broken_queue(monkeypatch):
    # A kernel that forgets that requests wait for a free replica must fail the M/M/1 checks.
    from sim import serving

    def no_waiting(arrival_s, occupancy_s, patience_s, free_at_s, wait_s, started):
        wait_s[:] = 0.0
        started[:] = True
        return float(occupancy_s.sum())

    monkeypatch.setattr(serving, "fifo_queue", no_waiting)
    checks = verify._mm1(0.8, "60s", 4)
    rows = [c.row(0.99) for c in checks]
    assert not rows[0]["passed"]  # mean wait is now 0, theory says 4 ms


def test_verify_catches_stale_feature_timestamps(monkeypatch):
    # Features stamped with the finish time instead of the data cut-off look 10 min fresher.
    from sim.architectures import parts

    original = parts.BatchFeaturePipeline._materialise

    def stamped_at_finish(self, env, scheduled_s):
        yield from original(self, env, scheduled_s)
        row = self.refreshes.rows[-1]
        row["cutoff_s"] = row["visible_at_s"]
        self.refreshes._arrays = None

    monkeypatch.setattr(parts.BatchFeaturePipeline, "_materialise", stamped_at_finish)
    rows = [c.row(0.99) for c in verify._periodic_features(3)]
    assert not rows[0]["passed"]


def test_gated_batch_wait_has_the_right_limits():
    # light load: almost every request finds the server idle; heavy: always half a batch
    assert theory.gated_batch_wait(1e-6, 0.01) == pytest.approx(0.0, abs=1e-9)
    assert theory.gated_batch_wait(1e4, 0.01) == pytest.approx(0.005)
    # lambda D = 1: x = e, E[W] = D/2 * e / (e + 1)
    assert theory.gated_batch_wait(100, 0.01) == pytest.approx(0.005 * math.e / (math.e + 1))


def test_verify_catches_a_batcher_that_lingers(monkeypatch):
    # A batcher that holds a free replica back 3 ms for a fuller batch must fail the gated check.
    from sim import serving

    original = serving.BatchingPool.__init__

    def lingering(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.max_wait_s = 0.003

    monkeypatch.setattr(serving.BatchingPool, "__init__", lingering)
    rows = [c.row(0.99) for c in verify._gated_batches(0.5, "60s", 4)]
    assert not rows[0]["passed"]


@pytest.mark.slow
def test_mgc_lognormal_agrees_with_ciw():
    pytest.importorskip("ciw")
    check = verify.mgc_against_ciw(servers=3, rho=0.8, ciw_runs=5, ciw_horizon_s=300.0, n=10)
    row = check.row(0.99)
    assert row["passed"], row
    assert abs(row["relative_error"]) < 0.1
