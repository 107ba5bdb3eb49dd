"""Arrivals, popularity and entities: the generators against their laws."""

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy import stats

from sim.rng import Streams
from sim.scenario import scenario_from_dict
from sim.workload import Population, RateProfile, RequestSource, zipf_slots
from tests.conftest import BASE

DAY = 86400.0


@pytest.mark.parametrize("exponent", [0.6, 1.0, 1.3])
def test_zipf_sampler_follows_the_zipf_law(exponent):
    rng = np.random.default_rng(3)
    n_slots, draws = 50, 400_000
    counts = np.bincount(zipf_slots(rng, n_slots, exponent, draws), minlength=n_slots)
    p = np.arange(1, n_slots + 1, dtype=float) ** -exponent
    p /= p.sum()
    chi2, p_value = stats.chisquare(counts, p * draws)
    assert p_value > 0.001, (chi2, p_value)


def test_zipf_sampler_stays_in_range_for_huge_populations():
    draws = zipf_slots(np.random.default_rng(1), 31_000_000, 1.1, 100_000)
    assert draws.min() >= 0 and draws.max() < 31_000_000
    harmonic = sum(float(np.sum(np.arange(a, min(a + 10**7, 31_000_001), dtype=float) ** -1.1))
                   for a in range(1, 31_000_001, 10**7))
    assert np.mean(draws == 0) == pytest.approx(1 / harmonic, rel=0.05)


def workload(**arrivals):
    raw = dict(BASE, architectures={"b": {"kind": "batch", "every": "1d",
                                          "throughput": "1000/s"}})
    raw["workload"] = {"entities": 1000, "arrivals": {"rate": "100/s", **arrivals}}
    return scenario_from_dict(raw).workload


def hourly_counts(w, days=2, seed=0):
    streams = Streams(seed)
    source = RequestSource(w, Population(w, days * DAY, streams), streams)
    t = np.concatenate([source.chunk(s, s + 7200.0).t_s for s in np.arange(0, days * DAY, 7200.0)])
    assert np.all(np.diff(t) >= 0)
    return np.bincount((t // 3600).astype(int), minlength=24 * days), t


@pytest.mark.parametrize("pattern", ["constant", "diurnal", "weekly"])
def test_arrivals_follow_the_rate_profile(pattern):
    w = workload(pattern=pattern, peak_to_trough=4, peak_hour=20)
    counts, _ = hourly_counts(w, days=7 if pattern == "weekly" else 2)
    profile = RateProfile(w.arrivals)
    hours = np.arange(counts.size) * 3600.0
    # expected count per hour: the integral of the rate over the hour (midpoint rule, fine here)
    grid = hours[:, None] + np.linspace(0, 3600, 61)[None, :]
    expected = np.trapezoid(profile(grid), grid, axis=1)
    chi2 = float(np.sum((counts - expected) ** 2 / expected))
    assert stats.chi2.sf(chi2, counts.size) > 0.001, chi2
    assert counts.sum() == pytest.approx(expected.sum(), rel=0.01)


patterns = st.one_of(
    st.fixed_dictionaries({"pattern": st.sampled_from(["constant", "diurnal", "weekly"]),
                           "peak_to_trough": st.floats(1.0, 10.0),
                           "peak_hour": st.floats(0.0, 23.99),
                           "weekend_factor": st.floats(0.1, 3.0)}),
    st.fixed_dictionaries({"profile": st.lists(st.floats(0.0, 5.0), min_size=24, max_size=24)
                           .filter(lambda p: sum(p) > 0)}))
bursts = st.lists(st.fixed_dictionaries({"at": st.floats(0, 3 * DAY), "duration":
                                         st.floats(1.0, DAY), "multiplier": st.floats(0.1, 8.0)}),
                  max_size=3)


@settings(max_examples=150, deadline=None)
@given(patterns, bursts, st.floats(0, 8 * DAY), st.sampled_from([0.0, 1.0, 90.0, 3600.0, 5e4,
                                                                  2e5, 9e5]))
def test_a_chunks_thinning_bounds_hold_over_the_chunk(pattern, bursts, start_s, span_s):
    # Thinning is exact only if the chunk's upper bound is never below the rate within it, and
    # the squeeze (keeping points under the lower bound unchecked) only if the lower bound is
    # never above it.
    profile = RateProfile(workload(**pattern, bursts=bursts).arrivals)
    t = np.concatenate([np.linspace(start_s, start_s + span_s, 4001), [start_s + span_s]])
    for b in bursts:  # just inside each burst's edges, where the rate jumps
        t = np.concatenate([t, [b["at"], b["at"] + b["duration"] * (1 - 1e-12)]])
    t = t[(t >= start_s) & (t <= start_s + span_s)]
    low, high = profile.bounds_between(start_s, start_s + span_s)
    rate = profile(t)
    assert high >= rate.max() * (1 - 1e-12)
    assert low <= rate.min() * (1 + 1e-12)
    assert high <= profile.peak_per_s


def test_diurnal_peak_to_trough_and_mean():
    profile = RateProfile(workload(pattern="diurnal", peak_to_trough=4, peak_hour=20).arrivals)
    t = np.linspace(0, DAY, 100001)
    rate = profile(t)
    assert rate.max() / rate.min() == pytest.approx(4, rel=1e-3)
    assert np.mean(rate) == pytest.approx(100, rel=1e-3)
    assert t[np.argmax(rate)] == pytest.approx(20 * 3600, abs=60)


def test_arrival_counts_are_poisson():
    # a constant-rate Poisson process: counts per second have variance equal to their mean
    _, t = hourly_counts(workload(), days=1)
    per_second = np.bincount(t.astype(int), minlength=int(DAY))
    assert per_second.var() / per_second.mean() == pytest.approx(1.0, abs=0.02)


def test_new_entities_arrive_at_their_rate_and_requests_only_reach_existing_ones():
    raw = dict(BASE, architectures={"b": {"kind": "batch", "every": "1d",
                                          "throughput": "1000/s"}})
    raw["workload"] = {"entities": 1000, "new_entities_per_day": 5000,
                       "arrivals": {"rate": "20/s"}, "popularity": {"zipf": 1.0}}
    w = scenario_from_dict(raw).workload
    streams = Streams(5)
    population = Population(w, 4 * DAY, streams)
    created = population.count_at(4 * DAY) - population.count_at(0)
    assert abs(created - 20000) < 5 * math.sqrt(20000)
    source = RequestSource(w, population, streams)
    chunk = source.chunk(DAY, 2 * DAY)
    assert np.all(population.created_at_s(chunk.slot) <= chunk.t_s)
    assert (population.created_at_s(chunk.slot) > 0).any()  # new entities do get requests
