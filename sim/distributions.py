"""Probability distributions of durations, sampled by inverse transform.

Every distribution maps a uniform draw ``u`` in [0, 1) to a value with :meth:`Distribution.ppf`.
The engine draws the uniforms once per request from a named stream and every architecture maps
them through its own distribution, so architectures see *common random numbers*: a request that
is slow to serve under one architecture is slow under the other too, and differences between
architectures are not noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import special

from sim.units import format_duration

Z_99 = 2.3263478740408408  # standard normal 0.99 quantile


@dataclass(frozen=True)
class Distribution:
    """A non-negative duration distribution, in seconds.

    ``kind`` is one of ``constant``, ``exponential``, ``lognormal``, ``gamma``, ``empirical``.
    ``params`` holds the parameters as written (in seconds); ``samples`` the sorted samples of an
    empirical distribution and ``source`` the file they came from.
    """

    kind: str
    params: dict = field(default_factory=dict)
    samples: np.ndarray | None = field(default=None, compare=False, repr=False)
    source: str | None = None

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def constant(cls, value_s: float) -> "Distribution":
        return cls("constant", {"value": float(value_s)})

    @classmethod
    def exponential(cls, mean_s: float) -> "Distribution":
        return cls("exponential", {"mean": float(mean_s)})

    @classmethod
    def lognormal(cls, median_s: float, p99_s: float) -> "Distribution":
        return cls("lognormal", {"median": float(median_s), "p99": float(p99_s)})

    @classmethod
    def gamma(cls, mean_s: float, cv: float) -> "Distribution":
        return cls("gamma", {"mean": float(mean_s), "cv": float(cv)})

    @classmethod
    def empirical(cls, samples_s: np.ndarray, source: str) -> "Distribution":
        ordered = np.sort(np.asarray(samples_s, dtype=float))
        return cls("empirical", {}, samples=ordered, source=source)

    # -- moments --------------------------------------------------------------------------------
    @property
    def mean(self) -> float:
        p = self.params
        if self.kind == "constant":
            return p["value"]
        if self.kind == "exponential":
            return p["mean"]
        if self.kind == "lognormal":
            mu, sigma = self._lognormal_mu_sigma()
            return math.exp(mu + sigma * sigma / 2)
        if self.kind == "gamma":
            return p["mean"]
        return float(self._interpolated_mean())

    @property
    def second_moment(self) -> float:
        """E[X^2], used by the Pollaczek-Khinchine check and the offered-load estimate."""
        p = self.params
        if self.kind == "constant":
            return p["value"] ** 2
        if self.kind == "exponential":
            return 2 * p["mean"] ** 2
        if self.kind == "lognormal":
            mu, sigma = self._lognormal_mu_sigma()
            return math.exp(2 * mu + 2 * sigma * sigma)
        if self.kind == "gamma":
            return p["mean"] ** 2 * (1 + p["cv"] ** 2)
        s = self.samples
        return float(np.mean(s * s))

    @property
    def is_zero(self) -> bool:
        return self.kind == "constant" and self.params["value"] == 0.0

    # -- sampling -------------------------------------------------------------------------------
    def ppf(self, u: np.ndarray) -> np.ndarray:
        """The quantile function: value at cumulative probability ``u`` (vectorised)."""
        p = self.params
        if self.kind == "constant":
            return np.full(np.shape(u), p["value"])
        if self.kind == "exponential":
            return -p["mean"] * np.log1p(-u)
        if self.kind == "lognormal":
            mu, sigma = self._lognormal_mu_sigma()
            return np.exp(mu + sigma * special.ndtri(u))
        if self.kind == "gamma":
            shape = 1.0 / p["cv"] ** 2
            return special.gammaincinv(shape, u) * (p["mean"] / shape)
        s = self.samples
        return np.interp(u * (len(s) - 1), np.arange(len(s)), s)

    def _lognormal_mu_sigma(self) -> tuple[float, float]:
        median, p99 = self.params["median"], self.params["p99"]
        return math.log(median), (math.log(p99) - math.log(median)) / Z_99

    def _interpolated_mean(self) -> float:
        # The mean of the piecewise-linear quantile function used by ppf.
        s = self.samples
        if len(s) == 1:
            return float(s[0])
        return float(np.mean((s[:-1] + s[1:]) / 2))

    # -- display --------------------------------------------------------------------------------
    def to_yaml(self) -> object:
        """The scenario-file form of this distribution, with durations in readable units."""
        p = self.params
        if self.kind == "constant":
            return format_duration(p["value"]) if p["value"] else 0
        if self.kind == "exponential":
            return {"exponential": {"mean": format_duration(p["mean"])}}
        if self.kind == "lognormal":
            return {"lognormal": {"median": format_duration(p["median"]),
                                  "p99": format_duration(p["p99"])}}
        if self.kind == "gamma":
            return {"gamma": {"mean": format_duration(p["mean"]), "cv": p["cv"]}}
        return {"empirical": self.source}

    def describe(self) -> str:
        """One line for people: ``lognormal, median 15ms, p99 60ms``."""
        p = self.params
        if self.kind == "constant":
            return format_duration(p["value"])
        if self.kind == "exponential":
            return f"exponential, mean {format_duration(p['mean'])}"
        if self.kind == "lognormal":
            return f"lognormal, median {format_duration(p['median'])}, p99 {format_duration(p['p99'])}"
        if self.kind == "gamma":
            return f"gamma, mean {format_duration(p['mean'])}, cv {p['cv']:g}"
        return f"measured samples from {Path(self.source).name} (n={len(self.samples)})"


ZERO = Distribution.constant(0.0)
