"""The histograms behind every percentile: stated resolution, and the compiled binning agrees."""

import math

import numpy as np
from hypothesis import given, settings, strategies as st

from sim.engine.architectures.base import empty_outcomes
from sim.results.metrics import (HIGH_S, LOW_S, N_BINS, RESOLUTION, Accumulator, Histogram, Outcomes,
                         bin_index, bin_value)

durations = st.floats(min_value=LOW_S, max_value=HIGH_S, exclude_max=True)


def test_resolution_is_under_half_a_percent():
    assert 0 < RESOLUTION < 0.005


@given(st.lists(durations, min_size=1, max_size=50))
def test_a_value_is_reported_within_the_stated_resolution(values):
    x = np.array(values)
    reported = bin_value(bin_index(x))
    assert np.all(np.abs(reported / x - 1) <= RESOLUTION + 1e-12)


@given(durations, durations)
def test_bins_keep_the_order_of_values(a, b):
    lo, hi = min(a, b), max(a, b)
    assert bin_index(np.array([lo]))[0] <= bin_index(np.array([hi]))[0]


def test_the_edges():
    k = bin_index(np.array([0.0, -1.0, np.nan, LOW_S / 2, LOW_S, HIGH_S, np.inf]))
    assert k.tolist() == [0, 0, 0, 0, 1, N_BINS - 1, N_BINS - 1]
    assert bin_value(0) == 0.0
    assert bin_value(N_BINS - 2) < HIGH_S


@settings(max_examples=50)
@given(st.lists(durations, min_size=1, max_size=200), st.sampled_from([0.5, 0.9, 0.99, 1.0]))
def test_a_percentile_is_the_ranked_value_within_the_resolution(values, q):
    h = Histogram()
    h.add(np.array(values))
    ranked = sorted(values)[max(1, math.ceil(q * len(values) - 1e-9)) - 1]
    assert abs(h.quantile(q) / ranked - 1) <= RESOLUTION + 1e-12


def test_the_compiled_pass_bins_as_bin_index_does():
    rng = np.random.default_rng(3)
    n = 20_000
    t = np.sort(rng.uniform(0, 100, n))
    out = empty_outcomes(n, t)
    latency = np.exp(rng.uniform(math.log(1e-8), math.log(1e10), n))
    latency[:50] = 0.0
    age = np.exp(rng.uniform(math.log(1e-7), math.log(1e11), n))
    age[::7] = np.nan
    out.update(latency_s=latency, queue_wait_s=latency / 3, queued=np.ones(n, bool),
               feature_age_s=age, model_age_s=age * 2, service_s=latency / 2)
    acc = Accumulator("a", "online", 1, 100.0, 0.0, 100.0, None, 0.0)
    acc.add(Outcomes(**out))

    def counts(values):
        values = values[~np.isnan(values)]
        return np.bincount(bin_index(values), minlength=N_BINS)

    assert np.array_equal(acc.latency.counts, counts(latency))
    assert np.array_equal(acc.queue_wait.counts, counts(latency / 3))
    assert np.array_equal(acc.service.counts, counts(latency / 2))
    assert np.array_equal(acc.feature_age.counts, counts(age))
    assert np.array_equal(acc.model_age.counts, counts(age * 2))
    assert np.array_equal(acc.series_latency[0], acc.latency.counts)
