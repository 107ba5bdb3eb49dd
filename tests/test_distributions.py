"""Sampling by inverse transform: the draws have the moments each distribution reports."""

import numpy as np
import pytest

from sim.distributions import Distribution

DISTRIBUTIONS = {
    "constant": Distribution.constant(0.015),
    "exponential": Distribution.exponential(0.02),
    "lognormal": Distribution.lognormal(0.015, 0.06),
    "gamma": Distribution.gamma(0.025, 0.5),
    "empirical": Distribution.empirical(np.array([1.0, 1.0, 1.0, 10.0]), source="heavy.csv"),
}


@pytest.mark.parametrize("name", DISTRIBUTIONS)
def test_draws_have_the_reported_mean_and_second_moment(name):
    d = DISTRIBUTIONS[name]
    x = d.ppf(np.random.default_rng(0).random(1_000_000))
    # 5 standard errors of the sample mean of x and of x^2
    assert abs(x.mean() - d.mean) <= 5 * x.std() / 1000 + 1e-15
    assert abs((x * x).mean() - d.second_moment) <= 5 * (x * x).std() / 1000 + 1e-15


def test_empirical_draws_every_sample_with_equal_probability():
    d = Distribution.empirical(np.array([3.0, 1.0, 2.0, 4.0]), source="s.csv")
    assert d.ppf(np.array([0.0, 0.24, 0.25, 0.5, 0.75, 0.999])).tolist() == [1, 1, 2, 3, 4, 4]


# --- The normal quantile from a table (sim/normal_quantile.py) ---------------------------------

def test_the_normal_quantile_table_is_within_its_stated_accuracy():
    from scipy import special

    from sim import normal_quantile as nq
    rng = np.random.default_rng(11)
    u = rng.random(10_000_000)  # what the engine draws
    assert np.max(np.abs(nq.ndtri(u) - special.ndtri(u))) <= nq.MAX_ERROR
    # the tails, octave by octave down to the smallest uniform a Generator draws, on both sides
    v = 10.0 ** rng.uniform(-16, np.log10(0.5), 1_000_000)
    for w in (v, 1.0 - v):
        assert np.max(np.abs(nq.ndtri(w) - special.ndtri(w))) <= nq.MAX_ERROR
    # the middle of every interval, where a cubic between its two ends is furthest off
    o = np.arange(nq.OCTAVES)[:, None]
    j = np.arange(nq.PER_OCTAVE)[None, :]
    middles = (np.ldexp(1.0, -(o + 2)) * (1 + (j + 0.5) / nq.PER_OCTAVE)).ravel()
    assert np.max(np.abs(nq.ndtri(middles) - special.ndtri(middles))) <= nq.MAX_ERROR


def test_the_normal_quantile_table_at_the_edges_and_in_any_shape():
    from scipy import special

    from sim import normal_quantile as nq
    edges = np.array([0.0, 1.0, 0.5, 2.0 ** -53, 1 - 2.0 ** -53, 1e-300, 5e-324, np.nan, -0.1,
                      1.1])
    np.testing.assert_allclose(nq.ndtri(edges), special.ndtri(edges), rtol=1e-12, atol=0)
    assert nq.ndtri(0.5) == 0.0 and nq.ndtri(np.array(0.25)).shape == ()
    grid = np.random.default_rng(2).random((3, 4))
    assert nq.ndtri(grid).shape == (3, 4)
    np.testing.assert_allclose(nq.ndtri(grid), special.ndtri(grid), rtol=0, atol=nq.MAX_ERROR)


def test_lognormal_draws_are_the_exact_quantiles_to_the_tables_accuracy():
    from scipy import special

    from sim import normal_quantile as nq
    d = Distribution("lognormal", {"median": 0.015, "p99": 0.06})
    u = np.random.default_rng(5).random(200_000)
    mu, sigma = np.log(0.015), (np.log(0.06) - np.log(0.015)) / 2.3263478740408408
    exact = np.exp(mu + sigma * special.ndtri(u))
    assert np.max(np.abs(d.ppf(u) / exact - 1)) <= 2 * sigma * nq.MAX_ERROR + 1e-15
