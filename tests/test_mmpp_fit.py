"""Fitting an MMPP to request times (sim/inputs/mmpp_fit.py): known parameters recovered from logs made
by the simulator's own arrival generator, within the fit's standard errors; Poisson traffic and a
plain daily cycle are not called bursty; bad input is refused with a clear message."""

import copy
import math
import re

import numpy as np
import pytest

from sim.inputs.mmpp_fit import fit_mmpp
from sim.engine.rng import Streams
from sim.scenario import scenario_from_dict
from sim.engine.workload import Population, RequestSource
from tests.conftest import BASE

HOUR = 3600.0


def workload(**arrivals):
    raw = copy.deepcopy(BASE)
    raw["architectures"] = {"b": {"kind": "batch", "every": "1d", "throughput": "1000/s"}}
    raw["workload"] = {"entities": 10, "arrivals": arrivals}
    return scenario_from_dict(raw).workload


def arrival_times(w, end_s, seed=0):
    """Request times from the engine's generator (RequestSource, chunk by chunk)."""
    streams = Streams(seed)
    source = RequestSource(w, Population(w, end_s, streams), streams)
    t = np.concatenate([source.chunk(s, min(s + HOUR, end_s)).t_s
                        for s in np.arange(0.0, end_s, HOUR)])
    return t, source


def text(fit):
    """The comment lines as one paragraph (wrapping undone)."""
    return re.sub(r"\n#\s+", " ", "\n".join(fit.lines()))


def assert_recovers(fit, mmpp):
    """Every multiplier and mean sojourn within 4 of its standard errors of the truth; the
    multipliers average 1 over the fitted stationary shares."""
    truth_m = mmpp.normalised_multipliers
    truth_d = np.asarray(mmpp.mean_sojourn, dtype=float)
    assert fit.states == truth_m.size
    assert np.all(np.isfinite(fit.multiplier_se)) and np.all(fit.multiplier_se > 0)
    assert np.all(np.abs(fit.multipliers - truth_m) < 4 * fit.multiplier_se), \
        (fit.multipliers, fit.multiplier_se, truth_m)
    assert np.all(np.abs(fit.mean_sojourn_s - truth_d) < 4 * fit.mean_sojourn_se), \
        (fit.mean_sojourn_s, fit.mean_sojourn_se, truth_d)
    assert np.all(fit.multiplier_ci95[:, 0] < fit.multipliers)
    assert np.all(fit.multipliers < fit.multiplier_ci95[:, 1])
    assert float(fit.stationary @ fit.multipliers) == pytest.approx(1.0)


@pytest.mark.parametrize("mmpp", [
    {"multipliers": [1, 5], "mean_sojourn": ["10m", "1m"]},   # well separated
    {"multipliers": [1, 2], "mean_sojourn": ["5m", "5m"]},    # milder
])
def test_two_states_are_recovered_within_their_standard_errors(mmpp):
    w = workload(rate="1/s", mmpp=mmpp)
    t, _ = arrival_times(w, 8 * HOUR)
    fit = fit_mmpp(t, max_states=2)
    assert_recovers(fit, w.arrivals.mmpp)
    assert fit.bursty and fit.preferred_states == 2
    assert fit.rate_per_s == pytest.approx(t.size / t[-1], rel=0.05)
    # the model's index of dispersion matches the log's at the shorter timescales
    short = [d for d in fit.dispersion if d.interval_s <= 60]
    assert short and all(d.measured > 1.5 for d in short)
    assert all(abs(d.predicted / d.measured - 1) < 0.2 for d in short)
    # the section pastes into a scenario and gives about the fitted multipliers
    again = workload(rate="1/s", **fit.section())
    assert again.arrivals.mmpp.normalised_multipliers == pytest.approx(fit.multipliers,
                                                                       rel=0.01)
    assert all(line.startswith("#") and len(line) <= 100 for line in fit.lines())
    assert "arrivals.mmpp gives that" in text(fit) and "95% CI" in text(fit)


def test_poisson_arrivals_are_not_called_bursty():
    t, _ = arrival_times(workload(rate="2/s"), 4 * HOUR)
    fit = fit_mmpp(t, max_states=2)
    assert fit.preferred_states == 1 and not fit.bursty
    assert fit.lr_statistic < 2 * math.log(t.size)  # far below the BIC's price of 3 parameters
    assert all(d.predicted < 1.2 for d in fit.dispersion)
    assert "No bursts beyond Poisson" in text(fit)


def test_a_daily_cycle_is_not_taken_for_bursts_when_the_profile_is_given():
    w = workload(rate="0.1/s", pattern="diurnal", peak_to_trough=3, peak_hour=20)
    t, source = arrival_times(w, 2 * 86400.0)
    blind = fit_mmpp(t, max_states=2)
    assert blind.bursty and blind.mean_sojourn_s.min() > HOUR  # the cycle, as slow states

    def profile(x):
        return source.profile(x) / 0.1

    for given in (profile, profile(t)):  # a callable, or the multiplier at each request
        fit = fit_mmpp(t, profile=given, max_states=2)
        assert fit.profile_given and fit.preferred_states == 1 and not fit.bursty
        assert fit.rate_per_s == pytest.approx(0.1, rel=0.05)


def test_bursts_on_top_of_a_daily_cycle_are_recovered_with_the_profile():
    mmpp = {"multipliers": [1, 5], "mean_sojourn": ["10m", "1m"]}
    w = workload(rate="0.5/s", pattern="diurnal", peak_to_trough=3, peak_hour=20, mmpp=mmpp)
    t, source = arrival_times(w, 86400.0)
    fit = fit_mmpp(t, profile=lambda x: source.profile(x) / 0.5, max_states=2)
    assert_recovers(fit, w.arrivals.mmpp)
    assert "around the given rate profile" in text(fit)


def test_three_states_are_recovered_on_a_clear_case():
    w = workload(rate="1/s", mmpp={"multipliers": [0.3, 1.5, 6],
                                   "mean_sojourn": ["10m", "4m", "1m"]})
    t, _ = arrival_times(w, 8 * HOUR)
    fit = fit_mmpp(t, states="auto")
    assert fit.preferred_states == 3 and fit.states == 3
    assert fit.scores[3].bic < fit.scores[2].bic < fit.scores[1].bic
    assert_recovers(fit, w.arrivals.mmpp)
    assert len(fit.section()["mmpp"]["mean_sojourn"]) == 3


def test_a_bootstrap_p_value_is_the_smallest_possible_for_clear_bursts():
    w = workload(rate="1/s", mmpp={"multipliers": [1, 5], "mean_sojourn": ["5m", "30s"]})
    t, _ = arrival_times(w, 1800.0)
    fit = fit_mmpp(t, max_states=2, bootstrap=19, seed=1)
    assert fit.bootstrap_p_value == pytest.approx(1 / 20) and fit.bursty
    assert "parametric bootstrap p = 0.050 (19 Poisson logs refitted)" in text(fit)


@pytest.mark.parametrize("times, profile, message", [
    (np.arange(10.0), None, "at least 50 requests"),
    (np.full(200, 5.0), None, "at the same time"),
    (np.append(np.arange(100.0), np.nan), None, "finite"),
    (np.arange(100.0), np.where(np.arange(100) == 7, 0.0, 1.0), "> 0 at every request"),
    (np.arange(100.0), np.ones(99), "one multiplier per request"),
])
def test_degenerate_input_is_refused_clearly(times, profile, message):
    with pytest.raises(ValueError, match=message):
        fit_mmpp(times, profile=profile)
    with pytest.raises(ValueError, match="states must be 2, 3 or 'auto'"):
        fit_mmpp(np.arange(100.0), states=4)


# -- predsim workload fit ----------------------------------------------------------------------

def _log_file(folder, times_s):
    import pandas as pd
    stamps = pd.Timestamp("2024-05-06") + pd.to_timedelta(times_s, unit="s")
    path = folder / "log.csv"
    pd.DataFrame({"timestamp": stamps.strftime("%Y-%m-%dT%H:%M:%S.%f")}).to_csv(path,
                                                                                 index=False)
    return path


def test_workload_fit_writes_the_fitted_mmpp_into_a_section_that_reloads(tmp_path):
    from sim.inputs.fit import fit_workload
    from sim.inputs.logs import read_log
    mmpp = {"multipliers": [1, 5], "mean_sojourn": ["10m", "1m"]}
    times, _ = arrival_times(workload(rate="1/s", mmpp=mmpp), 6 * 3600.0)
    fit = fit_workload(read_log(_log_file(tmp_path, times)), profile="none")
    assert fit.bursts is not None and fit.bursts.bursty
    section = fit.section()["arrivals"]["mmpp"]
    assert section == fit.bursts.section()["mmpp"]
    import yaml
    text = fit.to_yaml()
    assert "# Bursts: a 2-state MMPP" in text or "# Bursts: a 3-state MMPP" in text
    raw = copy.deepcopy(BASE)
    raw["workload"] = {**yaml.safe_load(text)["workload"], "entities": 1000}
    raw["architectures"] = {"b": {"kind": "batch", "every": "1d", "throughput": "1000/s"}}
    reloaded = scenario_from_dict(raw).workload.arrivals.mmpp
    assert reloaded is not None and max(reloaded.normalised_multipliers) > 1.5


def test_workload_fit_of_poisson_traffic_adds_no_mmpp(tmp_path):
    from sim.inputs.fit import fit_workload
    from sim.inputs.logs import read_log
    times, _ = arrival_times(workload(rate="2/s"), 3 * 3600.0, seed=3)
    fit = fit_workload(read_log(_log_file(tmp_path, times)), profile="none")
    assert "mmpp" not in fit.section()["arrivals"]
