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

from sim import normal_quantile
from sim.units import format_duration

Z_99 = 2.3263478740408408  # standard normal 0.99 quantile


@dataclass(frozen=True)
class Distribution:
    """A non-negative duration distribution, in seconds.

    ``kind`` is one of ``constant``, ``exponential``, ``lognormal``, ``gamma``, ``percentiles``,
    ``empirical``. ``params`` holds the parameters as written (in seconds; for ``percentiles``,
    ``{"p50": value, "p99": value, ...}`` in increasing order); ``samples`` the sorted samples
    of an empirical distribution and ``source`` the file they came from.
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
    def percentiles(cls, values_s: dict[str, float]) -> "Distribution":
        """Through measured percentiles, ``{"p50": 0.012, "p99": 0.080}``: a lognormal through
        two of them; through more, piecewise lognormal (log value linear in the standard normal
        quantile between neighbouring percentiles), continued beyond the outermost two along
        their segments. Keys are ``p`` and a percentage in (0, 100); values must not decrease."""
        ordered = sorted(values_s.items(), key=lambda kv: percentile_probability(kv[0]))
        return cls("percentiles", {k: float(v) for k, v in ordered})

    @classmethod
    def empirical(cls, samples_s: np.ndarray, source: str) -> "Distribution":
        ordered = np.sort(np.asarray(samples_s, dtype=float))
        return cls("empirical", {}, samples=ordered, source=source)

    def scaled(self, factor: float) -> "Distribution":
        """The same shape with every value multiplied by ``factor`` (a faster model variant)."""
        f = float(factor)
        if self.kind == "gamma":
            return Distribution("gamma", {"mean": self.params["mean"] * f,
                                          "cv": self.params["cv"]})
        if self.kind == "empirical":
            return Distribution("empirical", {}, samples=self.samples * f,
                                source=f"{self.source} x {f:g}")
        return Distribution(self.kind, {k: v * f for k, v in self.params.items()})

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
        if self.kind == "percentiles":
            return self._percentiles_moment(1)
        return float(np.mean(self.samples))

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
        if self.kind == "percentiles":
            return self._percentiles_moment(2)
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
            return np.exp(mu + sigma * normal_quantile.ndtri(u))
        if self.kind == "gamma":
            shape = 1.0 / p["cv"] ** 2
            return special.gammaincinv(shape, u) * (p["mean"] / shape)
        if self.kind == "percentiles":
            z = normal_quantile.ndtri(u)
            z_k, log_k, slope = self._percentile_segments()
            i = np.clip(np.searchsorted(z_k, z) - 1, 0, len(z_k) - 2)
            with np.errstate(invalid="ignore"):  # a flat segment at u = 0: 0 * -inf
                step = np.where(slope[i] == 0, 0.0, slope[i] * (z - z_k[i]))
            return np.exp(log_k[i] + step)
        # Each measured sample with equal probability (the inverted empirical CDF), so the draws
        # have exactly the samples' mean and second moment.
        s = self.samples
        return s[np.minimum((np.asarray(u) * len(s)).astype(np.int64), len(s) - 1)]

    def _lognormal_mu_sigma(self) -> tuple[float, float]:
        median, p99 = self.params["median"], self.params["p99"]
        return math.log(median), (math.log(p99) - math.log(median)) / Z_99

    def _percentile_segments(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Normal quantiles of the given percentiles, their log values, and the slope of each
        segment between neighbours (log value per unit of normal quantile)."""
        z_k = special.ndtri(np.array([percentile_probability(k) for k in self.params]))
        log_k = np.log(np.array(list(self.params.values())))
        return z_k, log_k, np.diff(log_k) / np.diff(z_k)

    def _percentiles_moment(self, order: int) -> float:
        """E[X^order], segment by segment in closed form: on a segment where
        ``log x = a + b z`` for ``z`` in (lo, hi), ``E[X^r; segment] =
        exp(r a + r^2 b^2 / 2) (Phi(hi - r b) - Phi(lo - r b))``."""
        z_k, log_k, slope = self._percentile_segments()
        edges = np.concatenate([[-np.inf], z_k[1:-1], [np.inf]])
        total = 0.0
        for i, b in enumerate(slope):
            a = log_k[i] - b * z_k[i]
            rb = order * b
            total += math.exp(order * a + rb * rb / 2) * (special.ndtr(edges[i + 1] - rb) -
                                                          special.ndtr(edges[i] - rb))
        return float(total)

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
        if self.kind == "percentiles":
            return {"percentiles": {k: format_duration(v) for k, v in p.items()}}
        return {"empirical": self.source}

    def describe(self, fmt=format_duration) -> str:
        """One line for people: ``lognormal, median 15ms, p99 60ms`` (durations by ``fmt``)."""
        p = self.params
        if self.kind == "constant":
            return fmt(p["value"])
        if self.kind == "exponential":
            return f"exponential, mean {fmt(p['mean'])}"
        if self.kind == "lognormal":
            return f"lognormal, median {fmt(p['median'])}, p99 {fmt(p['p99'])}"
        if self.kind == "gamma":
            return f"gamma, mean {fmt(p['mean'])}, cv {p['cv']:g}"
        if self.kind == "percentiles":
            shape = "lognormal" if len(p) == 2 else "piecewise lognormal"
            points = ", ".join(f"{k} {fmt(v)}" for k, v in p.items())
            return f"{shape} through {points}"
        return f"measured samples from {Path(self.source).name} (n={len(self.samples)})"


ZERO = Distribution.constant(0.0)


def percentile_probability(key: str) -> float:
    """``'p99'`` -> 0.99, ``'p99.9'`` -> 0.999; ValueError unless ``p`` and a percentage
    strictly between 0 and 100."""
    text = str(key)
    try:
        percent = float(text[1:]) if text.startswith("p") and text[1:2].isdigit() else math.nan
    except ValueError:
        percent = math.nan
    if not 0 < percent < 100:
        raise ValueError(f"expected a percentile such as p50, p95, p99 or p99.9 (got {key!r})")
    return percent / 100
