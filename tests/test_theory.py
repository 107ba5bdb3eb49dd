"""The engine against queueing theory and age-of-information closed forms.

``predsim verify --quick`` (sim/studies/verify.py) runs the whole engine on textbook cases, over
independent replications, and requires each closed form to lie inside the simulated mean's
confidence interval. Here it runs as part of the suite, and we check that the checks can fail.
"""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sim.studies import theory
from sim.studies import verify

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
                 "feature age", "coverage", "batching, take all waiting",
                 "M/M/1 in a random environment", "switching fast", "of runs fail",
                 "outages"):
        assert case in done.stdout
    assert "FAIL" not in done.stdout


@pytest.mark.parametrize("path", ["staged", "fused"])
def test_verify_catches_a_broken_queue(monkeypatch, path):
    # A queue that forgets that requests wait for a free replica must fail the M/M/1 checks,
    # in the staged kernels and in the fused ones.
    from sim.engine import run, serving
    from sim.engine.architectures import fused

    if path == "staged":
        def no_waiting(arrival_s, occupancy_s, patience_s, free_at_s, wait_s, started):
            wait_s[:] = 0.0
            started[:] = True
            return float(occupancy_s.sum())

        monkeypatch.setattr(run, "FUSED", False)
        monkeypatch.setattr(serving, "fifo_queue", no_waiting)
    else:
        first_pass = fused.online_ages

        def no_waiting(*args):
            first_pass(*args)
            wait_s, started = args[-5], args[-4]
            wait_s[:] = 0.0
            started[:] = True

        monkeypatch.setattr(fused, "online_ages", no_waiting)
    checks = verify._mm1(0.8, "60s", 4)
    rows = [c.row(0.99) for c in checks]
    assert not rows[0]["passed"]  # mean wait is now 0, theory says 4 ms


def test_verify_catches_stale_feature_timestamps(monkeypatch):
    # Features stamped with the finish time instead of the data cut-off look 10 min fresher.
    from sim.engine.architectures import parts

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
    from sim.engine import serving

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


# --- M/M/1 in a random environment (slow periods), sim.studies.theory.mm1_random_environment ----------

def _truncated_ctmc(lam, mu, q, levels):
    """Independent check: the QBD's generator on levels 0..K built state by state and solved
    by dense linear algebra (arrivals at level K are lost; K large enough not to matter)."""
    n = q.shape[0]
    size = (levels + 1) * n
    g = np.zeros((size, size))
    for level in range(levels + 1):
        for i in range(n):
            x = level * n + i
            for j in range(n):
                if j != i:
                    g[x, level * n + j] = q[i, j]
            if level < levels:
                g[x, x + n] = lam
            if level > 0:
                g[x, x - n] = mu[i]
            g[x, x] = -g[x].sum()
    a = g.T.copy()
    a[0] = 1.0  # one balance equation is redundant: normalise instead
    p = np.linalg.solve(a, np.r_[1.0, np.zeros(size - 1)]).reshape(levels + 1, n)
    number = float(np.arange(levels + 1) @ p.sum(axis=1))
    busy = 1.0 - float(p[0].sum())
    return number, busy, p[-1].sum()


def test_random_environment_with_equal_rates_is_mm1():
    for q in (theory.two_state_generator((0.01, 0.003)),
              np.array([[-3.0, 1.0, 2.0], [0.5, -0.5, 0.0], [4.0, 4.0, -8.0]])):
        n = q.shape[0]
        for lam, mu in ((800.0, 1000.0), (0.3, 1.0), (9.5, 10.0)):
            r = theory.mm1_random_environment(lam, [mu] * n, q)
            assert r.mean_wait == pytest.approx(lam / (mu * (mu - lam)), rel=1e-9)
            assert r.mean_response == pytest.approx(1 / (mu - lam), rel=1e-9)
            assert r.mean_number == pytest.approx(lam / (mu - lam), rel=1e-9)
            assert r.busy == pytest.approx(lam / mu, rel=1e-9)


@pytest.mark.parametrize("lam, mu, q", [
    # verify's case: a third of the speed for 2 ms after 4 ms at normal speed, rho 0.65
    (505.5556, [1000.0, 1000.0 / 3], theory.two_state_generator((0.004, 0.002))),
    # a state that cannot serve at all (mu = 0: a pause), and one faster than average
    (1.0, [2.0, 0.0], theory.two_state_generator((3.0, 0.5))),
    # three states with uneven jumps
    (2.0, [4.0, 1.0, 2.5], np.array([[-0.6, 0.2, 0.4], [1.5, -2.0, 0.5], [0.1, 0.9, -1.0]])),
])
def test_random_environment_matches_a_truncated_ctmc(lam, mu, q):
    r = theory.mm1_random_environment(lam, mu, q)
    number, busy, top = _truncated_ctmc(lam, np.array(mu), q, levels=500)
    assert top < 1e-14  # the truncation loses nothing we could see
    assert r.mean_number == pytest.approx(number, rel=1e-9)
    assert r.busy == pytest.approx(busy, rel=1e-9)
    assert r.mean_wait == pytest.approx((number - busy) / lam, rel=1e-9)
    assert r.mean_response == pytest.approx(number / lam, rel=1e-9)


def test_qbd_rate_matrix_solves_its_equation_and_is_minimal():
    lam, mu = 2.0, np.array([4.0, 1.0, 2.5])
    q = np.array([[-0.6, 0.2, 0.4], [1.5, -2.0, 0.5], [0.1, 0.9, -1.0]])
    up, down = lam * np.eye(3), np.diag(mu)
    local = q - up - down
    r = theory.qbd_rate_matrix(up, local, down)
    assert np.abs(up + r @ local + r @ r @ down).max() < 1e-12
    assert r.min() >= 0
    # the minimal solution is the one of spectral radius < 1 (the queue is positive recurrent)
    assert max(abs(np.linalg.eigvals(r))) < 1
    # and the simple iteration R <- -(A0 + R^2 A2) A1^-1 from 0 climbs to the same R
    simple = np.zeros((3, 3))
    for _ in range(20000):
        simple = -(up + simple @ simple @ down) @ np.linalg.inv(local)
    assert np.abs(simple - r).max() < 1e-10


def test_random_environment_switching_fast_is_mm1_at_the_mean_rate():
    # Speed 1 or 1/3 with stays of ratio 2:1: mean rate mu (2/3 + 1/9). As the stays shrink the
    # queue tends to the M/M/1 with that rate, the distance shrinking in proportion to them.
    mu, lam = 1000.0, 0.65 * 1000.0 * 7 / 9
    rate = mu * 7 / 9
    limit = lam / (rate * (rate - lam))
    gaps = []
    for scale in (1e-3, 1e-4, 1e-5, 1e-6):
        r = theory.mm1_random_environment(lam, [mu, mu / 3],
                                          theory.two_state_generator((2 * scale, scale)))
        gaps.append(r.mean_wait / limit - 1)
    assert all(g > 0 for g in gaps)  # switching adds variability: always worse than the limit
    assert gaps[-1] < 2e-4  # stays of 1/500 and 1/1000 of a service
    for before, after in zip(gaps, gaps[1:]):
        assert after / before == pytest.approx(0.1, rel=0.1)  # O(stay / service)
    # verify's fast case (stays 1/10 and 1/20 of a service) is 0.57% away, an allowance far
    # below its confidence interval (quick: about 4%)
    r = theory.mm1_random_environment(lam, [mu, mu / 3], theory.two_state_generator((1e-4, 5e-5)))
    assert r.mean_wait / limit - 1 == pytest.approx(0.0057, abs=0.0002)


def test_random_environment_switching_slowly_is_a_mixture_of_mm1s():
    # Each state lasts so long that the queue settles in it: the time average of M/M/1s.
    lam, mu, stays = 1.0, np.array([4.0, 1.5, 2.0]), np.array([1.0, 0.5, 2.0])
    q = np.array([[-1.0, 0.5, 0.5], [0.2, -1.0, 0.8], [0.5, 0.5, -1.0]]) / stays[:, None]
    shares = theory._stationary(q)
    rho = lam / mu
    number = float(shares @ (rho / (1 - rho)))
    busy = float(shares @ rho)
    for scale, tolerance in ((1e3, 1e-2), (1e5, 1e-4)):
        r = theory.mm1_random_environment(lam, mu, q / scale)
        assert r.mean_number == pytest.approx(number, rel=tolerance)
        assert r.busy == pytest.approx(busy, rel=tolerance)
        assert r.mean_wait == pytest.approx((number - busy) / lam, rel=tolerance)


def test_random_environment_needs_the_mean_rate_above_the_arrival_rate():
    q = theory.two_state_generator((0.004, 0.002))
    # mean rate 1000 (2/3 + 1/9) = 777.8/s; a slow state below lambda is fine on average
    assert theory.mm1_random_environment(700.0, [1000.0, 1000.0 / 3], q).mean_wait > 0
    with pytest.raises(ValueError, match="unstable queue"):
        theory.mm1_random_environment(780.0, [1000.0, 1000.0 / 3], q)
    with pytest.raises(ValueError, match="unstable queue"):
        theory.mm1_random_environment(1000.0 * 7 / 9, [1000.0, 1000.0 / 3], q)
    with pytest.raises(ValueError, match="generator"):
        theory.mm1_random_environment(1.0, [2.0, 2.0], np.array([[-1.0, 2.0], [1.0, -1.0]]))
    with pytest.raises(ValueError, match="one service rate per state"):
        theory.mm1_random_environment(1.0, [2.0, 2.0, 2.0], q)


def test_verify_catches_slow_periods_flattened_to_their_mean(monkeypatch):
    # An engine that stretches every request by the mean slowdown instead of following the
    # path still passes the fast-switching case, but misses the queues built up in slow stays.
    from sim.engine import serving

    def mean_speed_only(self, arrival_s, lookup_s, work_s):
        occupancy = np.broadcast_to(lookup_s + work_s / self.slow.spec.mean_speed,
                                    arrival_s.shape)
        wait, started = self.serve(arrival_s, occupancy)
        return wait, started, np.where(started, occupancy, np.nan)

    monkeypatch.setattr(serving.ReplicaPool, "serve_split", mean_speed_only)
    rows = [c.row(0.99) for c in verify._random_environment(0.65, "60s", 4)]
    assert not rows[0]["passed"]  # mean wait: 2.39 ms simulated, 2.90 ms in theory
    assert not rows[1]["passed"]  # utilisation: 0.650 against 0.671
    rows = [c.row(0.99) for c in verify._fast_switching(0.65, "30s", 4)]
    assert rows[0]["passed"]


# --- Pipeline failures and stream outages (age of information) --------------------------------

def _age_on_requests(t, cutoff, visible):
    """The age each request at ``t`` sees: its time less the newest cut-off visible by then
    (refreshes visible in the order of their cut-offs)."""
    k = np.searchsorted(visible, t, side="right") - 1
    return t - cutoff[k]


@pytest.mark.parametrize("period, lag, p", [(3600.0, 300.0, 0.3), (1.0, 0.0, 0.7),
                                            (10.0, 25.0, 0.05)])
def test_failing_refresh_age_matches_a_monte_carlo(period, lag, p):
    # Independent of the engine: a run scheduled every T fails with probability p (lost, no
    # retry); the good ones are visible L after their cut-off. Exact time average over the
    # gaps, and the age at uniform times for the distribution.
    rng = np.random.default_rng(7)
    runs = 400_000
    ok = rng.random(runs) >= p
    cutoff = period * np.flatnonzero(ok)
    gaps = np.diff(cutoff)
    time_average = lag + float((gaps ** 2).sum() / (2 * gaps.sum()))
    assert theory.failing_refresh_age(period, lag, p) == pytest.approx(time_average, rel=0.01)
    t = rng.uniform(cutoff[0] + lag, cutoff[-1] + lag, 400_000)
    age = _age_on_requests(np.sort(t), cutoff, cutoff + lag)
    assert age.mean() == pytest.approx(theory.failing_refresh_age(period, lag, p), rel=0.01)
    for a in lag + period * np.array([0.0, 0.4, 1.0, 1.7, 3.2]):
        assert theory.failing_refresh_age_survival(period, lag, p, a) == pytest.approx(
            (age > a).mean(), abs=0.005)


def test_failing_refresh_age_limits():
    # p = 0 is the periodic refresh; P(age > L + mT) = p^m; the survival is continuous
    assert theory.failing_refresh_age(3600, 600, 0.0) == theory.periodic_age(3600, 600)[0]
    assert theory.failing_refresh_age(3600, 300, 0.3) == pytest.approx(300 + 3600 * 1.3 / 1.4)
    for m in range(5):
        assert theory.failing_refresh_age_survival(3600, 300, 0.3, 300 + m * 3600) == \
            pytest.approx(0.3 ** m)
        assert theory.failing_refresh_age_survival(3600, 300, 0.3, 300 + (m + 1) * 3600 - 1e-6) \
            == pytest.approx(0.3 ** (m + 1), abs=1e-9)
    assert theory.failing_refresh_age_survival(3600, 300, 0.3, 100) == 1.0
    with pytest.raises(ValueError, match="failure probability"):
        theory.failing_refresh_age(3600, 300, 1.0)


@pytest.mark.parametrize("up, down, lag", [(3600.0, 900.0, 0.0), (1.0, 3.0, 0.5)])
def test_outage_age_matches_a_monte_carlo(up, down, lag):
    # Exponential up times, outages of a fixed length; the age is the lag outside outages and
    # the lag plus the time since the outage began inside one.
    rng = np.random.default_rng(11)
    cycles = 200_000
    starts = np.cumsum(rng.exponential(up, cycles) + down) - down
    end = starts[-1] + down
    assert theory.outage_age(up, down, lag) == pytest.approx(
        lag + cycles * down ** 2 / 2 / end, rel=0.01)
    t = np.sort(rng.uniform(0, end, 400_000))
    k = np.searchsorted(starts, t, side="right") - 1
    inside = (k >= 0) & (t < starts[np.maximum(k, 0)] + down)
    age = lag + np.where(inside, t - starts[np.maximum(k, 0)], 0.0)
    assert age.mean() == pytest.approx(theory.outage_age(up, down, lag), rel=0.01)
    for a in lag + down * np.array([0.0, 0.25, 0.5, 0.99, 1.5]):
        assert theory.outage_age_survival(up, down, a, lag) == pytest.approx(
            (age > a).mean(), abs=0.003)
    assert theory.outage_age_survival(up, down, lag - 1e-3, lag) == 1.0


def test_verify_catches_failed_runs_that_still_publish(monkeypatch):
    # A control plane that publishes a failed run's features anyway sees no failures at all:
    # mean age 5 min + 30 min, not 65 min.
    from sim.engine import control

    original = control.Attempts.run

    def publish_anyway(self, env, scheduled_s, work_s, done):
        yield from original(self, env, scheduled_s, work_s, done)
        if self.incidents and self.incidents[-1].start_s == env.now:  # it failed just now
            done()

    monkeypatch.setattr(control.Attempts, "run", publish_anyway)
    rows = [c.row(0.99) for c in verify._failed_refreshes(4, "10d")]
    assert not rows[0]["passed"]
    assert not rows[1]["passed"]


def test_verify_catches_outages_that_hide_nothing(monkeypatch):
    # A stream processor whose outages do not hold its features back: the age stays 0.
    from sim.engine.architectures import backlog

    monkeypatch.setattr(backlog.StreamFlow, "processed_until",
                        lambda self, t_s: np.asarray(t_s, dtype=float).copy())
    rows = [c.row(0.99) for c in verify._stream_outages(4, "3d")]
    assert not rows[0]["passed"]
    assert not rows[1]["passed"]


def test_verify_catches_devices_that_never_miss_a_sync(monkeypatch):
    # Edge devices whose missed syncs are ignored: mean age T/2 (30 min), not 55.7 min.
    from sim.engine.architectures import edge

    original = edge.last_sync_s
    monkeypatch.setattr(edge, "last_sync_s", lambda t, slot, every, offline, salt:
                        original(t, slot, every, 0.0, salt))
    rows = [c.row(0.99) for c in verify._edge_syncs(4, "5d")]
    assert not rows[0]["passed"]
    assert not rows[1]["passed"]
