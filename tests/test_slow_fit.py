"""Slow periods fitted to a time series of service times (sim/inputs/slow_fit.py, `predsim calibrate
latency` with a time column).

Synthetic series come from a two-state environment simulated here with exponential stays and
Poisson request times (not from the code under test); the fit must recover the parameters within
its own standard errors, and those standard errors must match the spread of repeated fits.
Independent series must be judged independent at the stated false-alarm rate (1%).

tests/data/slow_matmul_cpu.csv is a real series: 3,000 back-to-back timed calls of a 500x500
float64 numpy matmul (about 1.8 ms) on a 2-vCPU VM that other processes were using, recorded with

    rng = np.random.default_rng(0)
    a, b = rng.random((500, 500)), rng.random((500, 500))
    for _ in range(50):
        a @ b  # warm-up
    t0 = time.perf_counter()
    for _ in range(3000):
        t = time.perf_counter(); a @ b; took = time.perf_counter() - t
        # row: t - t0 as t_s (6 decimals), took * 1e3 as service_time_ms (4 decimals)

Its tests read the file only: nothing is timed at test time.
"""

from __future__ import annotations

import copy
import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from scipy import stats

from sim.cli.main import main
from sim.inputs.latency_fit import read_samples
from sim.scenario import scenario_from_dict
from sim.inputs.hmm import hmm_log_likelihood, hmm_log_likelihood_gradient
from sim.inputs.series import (ALPHA, WANDER_WINDOW_S, check_independence, read_series,
                               runs_p_value, speed_wander)
from sim.inputs.slow_fit import analyse_series, fit_slow_periods
from tests.conftest import BASE, online

ROOT = Path(__file__).resolve().parents[1]
RECORDED = ROOT / "tests" / "data" / "slow_matmul_cpu.csv"
Z999 = stats.norm.ppf(1 - 0.001 / 2)  # each parameter two-sided at 0.1%

# the true model: 2 ms of work (log-sd 0.2), 3.5x slower for 50 ms stays every 0.5 s or so;
# requests at 200/s, so about 10 per slow stay
TRUTH = dict(mu=math.log(0.002), sigma=0.2, slowdown=3.5, mean_normal=0.5, mean_slow=0.05)


def two_state_series(n: int, rate: float, seed: int, mu: float, sigma: float, slowdown: float,
                     mean_normal: float, mean_slow: float):
    """Poisson request times; the environment alternates exponential stays (drawn from its
    stationary state at time 0); a duration is lognormal work times the slowdown at its start."""
    rng = np.random.default_rng(seed)
    times = np.cumsum(rng.exponential(1 / rate, n))
    state = int(rng.random() < mean_slow / (mean_normal + mean_slow))
    edges, states, t = [0.0], [state], 0.0
    while t <= times[-1]:
        t += rng.exponential(mean_slow if state else mean_normal)
        state = 1 - state
        edges.append(t)
        states.append(state)
    slow = np.asarray(states)[np.searchsorted(edges, times, side="right") - 1]
    return times, rng.lognormal(mu, sigma, n) * np.where(slow == 1, slowdown, 1.0)


def true_theta(mu, sigma, slowdown, mean_normal, mean_slow) -> np.ndarray:
    """The fit's parameters: mu, log sigma, log log slowdown, log q01, log q10."""
    return np.array([mu, math.log(sigma), math.log(math.log(slowdown)), -math.log(mean_normal),
                     -math.log(mean_slow)])


def write_series(path: Path, times, durations_ms) -> Path:
    pd.DataFrame({"t_s": times, "service_time_ms": durations_ms}).to_csv(path, index=False)
    return path


# --------------------------------------------------------------------------------------------
# recovering known parameters
# --------------------------------------------------------------------------------------------

def test_fit_recovers_the_two_state_model_within_its_standard_errors():
    times, x = two_state_series(8000, 200.0, seed=3, **TRUTH)
    assert not check_independence(x).independent
    fit = fit_slow_periods(times, x, check_runs=0)
    assert fit.cov is not None and fit.converged and not fit.fixed.any()
    se = np.sqrt(np.diag(fit.cov))
    z = (fit.theta - true_theta(**TRUTH)) / se
    assert np.all(np.abs(z) < Z999), z
    # the same in the units printed: slowdown and mean stays
    errors = fit.standard_errors()
    assert abs(fit.slowdowns[1] - TRUTH["slowdown"]) < Z999 * errors["slowdown1"]
    assert abs(fit.mean_stays_s[1] - TRUTH["mean_slow"]) < Z999 * errors["stay1"]
    # persistence explains the data far better than the same speeds drawn independently
    assert fit.log_likelihood - fit.log_likelihood_mixture > 100


def test_standard_errors_match_the_spread_of_repeated_fits():
    """25 fits of short series: the errors over the reported standard errors have a mean near 0
    and a standard deviation near 1 for every parameter (bounds: 99.9% for 25 draws)."""
    truth = dict(TRUTH, mean_normal=0.2, mean_slow=0.04)
    theta = true_theta(**truth)
    z = []
    for seed in range(25):
        times, x = two_state_series(2000, 200.0, seed=100 + seed, **truth)
        fit = fit_slow_periods(times, x, check_runs=0)
        assert fit.cov is not None
        z.append((fit.theta - theta) / np.sqrt(np.diag(fit.cov)))
    z = np.array(z)
    reps = z.shape[0]
    assert np.all(np.abs(z.mean(axis=0)) < Z999 / math.sqrt(reps)), z.mean(axis=0)
    low, high = (math.sqrt(stats.chi2.ppf(q, reps - 1) / (reps - 1)) for q in (0.0005, 0.9995))
    assert np.all((z.std(axis=0, ddof=1) > low) & (z.std(axis=0, ddof=1) < high)), \
        z.std(axis=0, ddof=1)


def test_check_reproduces_what_the_model_generated():
    times, x = two_state_series(4000, 200.0, seed=5, **TRUTH)
    fit = fit_slow_periods(times, x, check_runs=100)
    assert fit.check.reproduces


@pytest.mark.parametrize("k", [2, 3])
def test_gradient_is_the_derivative_of_the_likelihood(k):
    rng = np.random.default_rng(k)
    y, dt = rng.normal(0, 1, 400), rng.exponential(0.3, 399)
    theta = np.r_[0.1, math.log(0.7), rng.normal(0, 0.5, k - 1), rng.normal(0, 1, k * (k - 1))]
    # a reversible generator for three states: real eigenvalues, the analytic path
    if k == 3:
        theta[k + 1:] = np.log([1.0, 2.0, 1.0, 4.0, 1.0, 2.0])
    value, grad = hmm_log_likelihood_gradient(theta, y, dt, k)
    assert value == pytest.approx(hmm_log_likelihood(theta, y, dt, k), rel=1e-12)
    h = 1e-6
    numeric = [(hmm_log_likelihood(theta + h * e, y, dt, k)
                - hmm_log_likelihood(theta - h * e, y, dt, k)) / (2 * h)
               for e in np.eye(theta.size)]
    assert grad == pytest.approx(numeric, rel=1e-5, abs=1e-5)


# --------------------------------------------------------------------------------------------
# independence
# --------------------------------------------------------------------------------------------

def test_runs_p_value_is_the_exact_permutation_probability():
    n, m = 9, 4
    runs = []
    for ones in itertools.combinations(range(n), m):
        x = np.zeros(n, dtype=bool)
        x[list(ones)] = True
        runs.append(int(np.count_nonzero(x & ~np.r_[False, x[:-1]])))
    runs = np.array(runs)
    for r in range(1, m + 1):
        assert runs_p_value(n, m, r) == pytest.approx(np.mean(runs <= r), rel=1e-12)


def test_independent_series_is_judged_independent(tmp_path):
    rng = np.random.default_rng(11)
    times = np.cumsum(rng.exponential(0.005, 5000))
    x = rng.lognormal(math.log(2.0), 0.4, 5000)  # milliseconds
    test = check_independence(x)
    assert test.independent and test.p_value >= ALPHA
    result = CliRunner().invoke(main, ["calibrate", "latency",
                                       str(write_series(tmp_path / "s.csv", times, x))])
    assert result.exit_code == 0, result.output
    assert "independent? Yes" in result.output
    assert list(yaml.safe_load(result.output)) == ["service_time"]  # today's fit, as before


def test_alternating_durations_are_dependent_but_not_slow_periods(tmp_path):
    rng = np.random.default_rng(13)
    x = np.where(np.arange(400) % 2, 3.0, 1.0) * rng.lognormal(0, 0.1, 400)  # long, short, ...
    test = check_independence(x)
    assert not test.independent and test.lag1 < 0 and not test.slow_stretches
    result = CliRunner().invoke(main, ["calibrate", "latency", str(
        write_series(tmp_path / "s.csv", np.arange(400) * 0.01, x))])
    assert result.exit_code == 0 and "alternate" in result.output
    assert list(yaml.safe_load(result.output)) == ["service_time"]


def test_false_alarm_rate_is_at_most_one_percent():
    """400 independent series: the number judged dependent is within what a 1% rate allows
    (99.9% binomial bound)."""
    rng = np.random.default_rng(12)
    alarms = sum(not check_independence(rng.lognormal(0, 0.5, 500)).independent
                 for _ in range(400))
    assert alarms <= stats.binom.ppf(0.999, 400, ALPHA)


# --------------------------------------------------------------------------------------------
# does the speed hold still over seconds?
# --------------------------------------------------------------------------------------------

def test_independent_draws_are_rarely_judged_to_wander():
    """400 independent series of 3,000 requests at 150/s (10 windows each): the number judged
    to wander within what a 1% rate allows (99.9% binomial bound), and their measured wander
    mostly the sampling part alone."""
    rng = np.random.default_rng(21)
    results = []
    for _ in range(400):
        times = np.cumsum(rng.exponential(1 / 150, 3000))
        results.append(speed_wander(times, rng.lognormal(math.log(1.5e-3), 0.4, 3000)))
    assert sum(r.wanders for r in results) <= stats.binom.ppf(0.999, 400, ALPHA)
    assert np.median([r.wander for r in results]) < 0.5 * np.median(
        [r.sampling_sd for r in results])


def test_a_speed_that_wanders_over_seconds_is_measured(tmp_path):
    """The speed drawn anew for each 2-second window (log-sd 4%), requests at 300/s over 80 s:
    judged to wander, and the wander measured is the windows' own spread, within what the
    sampling inside the windows allows (its noise on the between-window variance: the
    cross term 2 x truth x sampling / sqrt(W) and the sampling variance's own sqrt(2 / W), at
    3 standard errors). The command says so, with what it does to the queue."""
    rng = np.random.default_rng(22)
    times = np.cumsum(rng.exponential(1 / 300, 24_000))
    window = np.floor((times - times[0]) / WANDER_WINDOW_S).astype(int)
    speed = np.exp(0.04 * rng.standard_normal(window.max() + 1))
    x = rng.lognormal(math.log(1.5e-3), 0.4, times.size) * speed[window]
    w = speed_wander(times, x)
    seen = np.bincount(window)
    truth = float(np.std(speed[seen >= 30], ddof=1) / np.mean(speed[seen >= 30]))
    bound = 3 * (2 * truth * w.sampling_sd / math.sqrt(w.windows)
                 + w.sampling_sd ** 2 * math.sqrt(2 / w.windows))
    assert w.wanders and w.p < 1e-6
    assert abs(w.wander ** 2 - truth ** 2) <= bound, (w, truth)
    result = CliRunner().invoke(main, ["calibrate", "latency", str(
        write_series(tmp_path / "s.csv", times, x * 1e3))])
    assert result.exit_code == 0, result.output
    text = " ".join(line.lstrip("# ") for line in result.output.splitlines())
    assert "Does the speed hold still from one 2-second window to the next? No:" in text
    assert f"wanders by ±{w.wander:.1%} over seconds" in text
    assert f"±{w.wait_shift(0.9):.0%} at 0.9 (Pollaczek-Khinchine)" in text


def test_the_wait_shift_is_the_pollaczek_khinchine_derivative():
    """M/G/1: W = lambda E[S^2] / (2 (1 - rho)); scaling every service time by 1 + e moves
    ln W by (1 + 1 / (1 - rho)) e to first order."""
    w = speed_wander(np.arange(3000) / 300.0, np.ones(3000))
    w.wander = 1e-6
    lam, es, es2 = 500.0, 1.5e-3, 2.6e-6
    for rho in (0.5, 0.8, 0.9):
        lam = rho / es
        wait = [lam * es2 * f * f / (2 * (1 - lam * es * f)) for f in (1.0, 1 + 1e-6)]
        assert math.log(wait[1] / wait[0]) == pytest.approx(w.wait_shift(rho), rel=1e-4)


# --------------------------------------------------------------------------------------------
# the command, on the recorded series
# --------------------------------------------------------------------------------------------

def test_recorded_series_gives_slow_periods_that_paste_into_a_scenario(tmp_path):
    normal = tmp_path / "normal.csv"
    result = CliRunner().invoke(main, ["calibrate", "latency", str(RECORDED), "--normal-out",
                                       str(normal)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "independent? No" in out and "runs test p < 0.001" in out
    snippet = yaml.safe_load(out)
    assert list(snippet) == ["slow_periods", "service_time"]
    series = read_series(RECORDED)
    analysis = analyse_series(series)
    slowdown = analysis.fit.slowdowns[1]
    assert snippet["slow_periods"]["states"][1]["slowdown"] == pytest.approx(slowdown, rel=5e-3)
    assert slowdown > 1.5 * analysis.independence.slow_above  # the slow ones are really slow
    arch = online(service=snippet["service_time"])
    arch["serving"]["slow_periods"] = snippet["slow_periods"]
    s = scenario_from_dict(dict(copy.deepcopy(BASE), architectures={"o": arch}))
    assert s.architectures["o"].serving.slow_periods.states[1].slowdown == pytest.approx(
        slowdown, rel=5e-3)
    # the work at normal speed, as an empirical file: each duration over its expected slowdown
    work, _ = read_samples(normal)
    assert work == pytest.approx(series.durations_s / analysis.fit.expected_slowdown, rel=1e-6)
    assert np.quantile(work, 0.99) < np.quantile(series.durations_s, 0.99) / 3


def test_three_states_on_the_recorded_series():
    analysis = analyse_series(read_series(RECORDED), states=3)
    fit = analysis.fit
    assert fit.states == 3 and np.all(np.diff(fit.slowdowns) > 0)
    assert fit.log_likelihood > analyse_series(read_series(RECORDED)).fit.log_likelihood
    text = analysis.to_text()
    states = yaml.safe_load(text)["slow_periods"]["states"]
    assert [sum(s["next"]) for s in states] == pytest.approx([1, 1, 1], abs=1e-9)


# --------------------------------------------------------------------------------------------
# reading, and bad input
# --------------------------------------------------------------------------------------------

def test_iso_times_and_file_order(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("timestamp,latency_ms\n2024-05-01T12:00:00.500,3\n"
                    "2024-05-01T12:00:00.000,1\n2024-05-01T12:00:00.250,2\n" * 1
                    + "".join(f"2024-05-01T12:00:{1 + i // 100:02d}.{i % 100:02d}0,{4 + i}\n"
                              for i in range(30)))
    s = read_series(path)
    assert s.time_column == "timestamp" and s.column == "latency_ms"
    assert s.times_s[:3] == pytest.approx([0.0, 0.25, 0.5])
    assert s.durations_s[:3] == pytest.approx([0.001, 0.002, 0.003])


def test_a_file_of_samples_alone_is_read_as_before(tmp_path):
    (tmp_path / "s.csv").write_text("time_s\n" + "".join(f"{0.01 + i * 1e-4}\n"
                                                         for i in range(50)))
    result = CliRunner().invoke(main, ["calibrate", "latency", str(tmp_path / "s.csv")])
    assert result.exit_code == 0 and "independent" not in result.output


ROWS = "".join(f"{i * 0.01:.2f},{2 + (i % 3)}\n" for i in range(30))


@pytest.mark.parametrize("content, args, expected", [
    ("t_s,latency_ms\n0,5\n0.1,abc\n" + ROWS, [], ["line 3", "latency_ms", "'abc'"]),
    ("t_s,latency_ms\n0,5\nsoon,6\n" + ROWS, [], ["line 3", "t_s", "'soon'"]),
    ("t_s,latency_ms\n" + ROWS, ["--time-column", "when"], ["no column 'when'", "t_s"]),
    ("t_s,a_ms,b_ms\n0,1,2\n", [], ["--column", "a_ms"]),
    ("t_s,latency_ms\n0,0\n" + ROWS, [], ["line 2", "latency_ms", "> 0"]),
    ("t_s,latency_ms\n0,1\n1,2\n", [], ["at least 20"]),
    ("t_s,took\n" + ROWS, ["--column", "took"], ["unit", "took"]),
    ("latency_ms\n5\n6\n", ["--states", "3"], ["--states", "no time column"]),
    ("t_s,latency_ms\n" + "".join(f"{i},5\n" for i in range(30)), [], ["every duration is 5ms"]),
    ("t_s,latency_ms\n" + "".join(f"7,{i + 1}\n" for i in range(30)), [], ["t_s", "same time"]),
])
def test_bad_input_exits_2_naming_file_and_column(tmp_path, content, args, expected):
    (tmp_path / "s.csv").write_text(content)
    result = CliRunner().invoke(main, ["calibrate", "latency", str(tmp_path / "s.csv"), *args])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output and "s.csv" in result.output
    for text in expected:
        assert text in result.output, result.output
