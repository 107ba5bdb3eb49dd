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
