"""Latency samples: :func:`read_samples` reads measured latencies (one column whose name carries
its unit) and :func:`fit_latency` fits a lognormal and a gamma to them by maximum likelihood,
with the Kolmogorov-Smirnov statistic and the error at p50/p95/p99 of each. ``predsim
calibrate latency`` prints what it returns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import special, stats

from sim.distributions import Z_99, Distribution
from sim.inputs.fit import _p_text, _wrap_comment
from sim.inputs.logs import InputError
from sim.units import round_duration

SAMPLE_UNITS_S = {"_s": 1.0, "_sec": 1.0, "_seconds": 1.0, "_ms": 1e-3, "_us": 1e-6}
UNIT_NAMES_S = {"s": 1.0, "ms": 1e-3, "us": 1e-6}


def read_samples(path: str | Path, column: str | None = None,
                 unit: str | None = None) -> tuple[np.ndarray, str]:
    """Measured durations in seconds from a CSV file, and the column they came from.

    Without ``column``, the file must have exactly one column whose name carries its unit
    (``service_time_s``, ``latency_ms``, ``..._us``); with it, that column, whose unit is its
    name's suffix or ``unit`` (``s``, ``ms``, ``us``). Every value must be a number >= 0; the
    first bad one is reported with its line. Raises :class:`InputError`.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError([f"file not found: {path}"])
    try:
        frame = pd.read_csv(path, skip_blank_lines=False)
    except Exception as exc:  # pandas raises many kinds; the user needs only the message
        raise InputError([f"cannot read {path} as CSV: {exc}"]) from None
    frame.index = frame.index + 2  # the file line of each row (the header is line 1)
    frame = frame[~frame.isna().all(axis=1)]  # blank lines
    if column is None:
        named = [c for c in frame.columns if any(str(c).endswith(u) for u in SAMPLE_UNITS_S)]
        if len(named) != 1:
            raise InputError([f"{path}: expected one column whose name carries its unit, such "
                              f"as service_time_s or latency_ms (got columns "
                              f"{list(frame.columns)})"])
        column = str(named[0])
    elif column not in frame.columns:
        raise InputError([f"{path}: no column {column!r} (the columns are "
                          f"{', '.join(map(str, frame.columns))})"])
    scale = column_scale(str(path), str(column), unit, "give the unit")
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna() | (values < 0)
    if bad.any():
        line = int(values.index[bad.to_numpy()][0])
        raise InputError([f"{path}: line {line}: {column} must be a number >= 0 "
                          f"(got {str(frame[column].loc[line])!r})"])
    if len(values) == 0:
        raise InputError([f"{path}: no samples in column {column}"])
    return values.to_numpy(float) * scale, str(column)


def column_scale(label: str, column: str, unit: str | None, how: str) -> float:
    """Seconds per unit of a duration column: ``unit`` (``s``, ``ms``, ``us``) when given, else
    its name's suffix (``latency_ms``); ``how`` tells the user how to give the unit."""
    if unit is not None:
        if unit not in UNIT_NAMES_S:
            raise InputError([f"unit must be one of {', '.join(UNIT_NAMES_S)} (got {unit!r})"])
        return UNIT_NAMES_S[unit]
    scale = next((s for u, s in SAMPLE_UNITS_S.items() if column.endswith(u)), None)
    if scale is None:
        raise InputError([f"{label}: the unit of column {column!r} is not in its name "
                          f"(such as latency_ms or service_time_s); {how}"])
    return scale


QUANTILES = {"p50": 0.50, "p95": 0.95, "p99": 0.99}


@dataclass
class Candidate:
    """One distribution fitted by maximum likelihood, with how well it fits the samples."""

    name: str
    distribution: Distribution
    parameters: dict[str, float]
    log_likelihood: float
    ks_statistic: float
    ks_p_value: float
    quantile_errors: dict[str, float]  # (model - measured) / measured at p50, p95, p99


@dataclass
class LatencyFit:
    """Lognormal and gamma fits to measured durations; :attr:`best` has the highest
    likelihood (both have two parameters, so this is also the lowest AIC)."""

    samples_s: np.ndarray = field(repr=False)
    candidates: list[Candidate]

    @property
    def best(self) -> Candidate:
        return max(self.candidates, key=lambda c: c.log_likelihood)

    @property
    def measured(self) -> dict[str, float]:
        return {k: float(np.quantile(self.samples_s, q)) for k, q in QUANTILES.items()}

    def lines(self, label: str = "samples") -> list[str]:
        """The comparison as comment lines."""
        m = self.measured
        out = [f"# predsim calibrate latency: {label}: {self.samples_s.size:,} samples; measured "
               + ", ".join(f"{k} {round_duration(v)}" for k, v in m.items())
               + f", mean {round_duration(float(self.samples_s.mean()))}.",
               f"# {'fit':<10} {'log-lik':>12} {'KS':>7} {'KS p':>7} "
               + " ".join(f"{k + ' err':>8}" for k in QUANTILES)]
        for c in self.candidates:
            out.append(f"# {c.name:<10} {c.log_likelihood:>12.1f} {c.ks_statistic:>7.4f} "
                       f"{_p_text(c.ks_p_value).lstrip('= '):>7} "
                       + " ".join(f"{c.quantile_errors[k]:>+8.1%}" for k in QUANTILES))
        best = self.best
        out.append(f"# best: {best.name} (the higher likelihood; both have two parameters).")
        if best.ks_p_value < 0.01:
            out.append("# The Kolmogorov-Smirnov test rejects it (p < 0.01): if the tail matters, "
                       "use the samples themselves, {empirical: FILE}.")
        return [wrapped for line in out for wrapped in _wrap_comment(line)]

    def snippet(self, key: str = "service_time") -> str:
        """The best fit as a YAML line, durations rounded to 3 significant digits."""
        d = self.best.distribution
        if d.kind == "lognormal":
            text = (f"{{lognormal: {{median: {round_duration(d.params['median'])}, "
                    f"p99: {round_duration(d.params['p99'])}}}}}")
        else:
            cv = float(f"{d.params['cv']:.3g}")
            text = f"{{gamma: {{mean: {round_duration(d.params['mean'])}, cv: {cv:g}}}}}"
        return f"{key}: {text}"


def fit_latency(samples_s: np.ndarray) -> LatencyFit:
    """Fit a lognormal and a gamma to positive samples by maximum likelihood.

    Lognormal: ``mu`` and ``sigma`` are the mean and the (1/n) standard deviation of the log
    samples. Gamma: the mean is the sample mean and the shape ``k`` solves
    ``log k - digamma(k) = log(mean) - mean(log x)`` (Newton's method from Minka's start).
    Raises :class:`InputError` for fewer than two samples or samples that are not > 0.
    """
    x = np.asarray(samples_s, dtype=float)
    if x.size < 2:
        raise InputError([f"a fit needs at least two samples (got {x.size})"])
    if not np.all(x > 0):
        zeros = int(np.count_nonzero(x <= 0))
        raise InputError([f"lognormal and gamma fits need samples > 0 ({zeros} of {x.size} are "
                          f"0); measure with a finer unit, or use {{empirical: FILE}}"])
    logs = np.log(x)
    mu, sigma = float(logs.mean()), float(logs.std())
    if sigma == 0:
        raise InputError([f"every sample is {round_duration(float(x[0]))}: use "
                          f"{{constant: {round_duration(float(x[0]))}}}"])
    candidates = []
    lognormal = stats.lognorm(sigma, scale=math.exp(mu))
    candidates.append(_candidate("lognormal", Distribution.lognormal(
        math.exp(mu), math.exp(mu + Z_99 * sigma)), {"mu": mu, "sigma": sigma}, lognormal, x))
    mean = float(x.mean())
    shape = gamma_shape_mle(math.log(mean) - float(logs.mean()))
    gamma = stats.gamma(shape, scale=mean / shape)
    candidates.append(_candidate("gamma", Distribution.gamma(mean, 1 / math.sqrt(shape)),
                                 {"shape": shape, "mean": mean}, gamma, x))
    return LatencyFit(samples_s=x, candidates=candidates)


def gamma_shape_mle(s: float) -> float:
    """The gamma shape ``k`` with ``log k - digamma(k) = s`` (s > 0)."""
    k = (3 - s + math.sqrt((s - 3) ** 2 + 24 * s)) / (12 * s)
    for _ in range(50):
        step = (math.log(k) - special.digamma(k) - s) / (1 / k - special.polygamma(1, k))
        k = max(k - step, k / 10)
        if abs(step) < 1e-12 * k:
            break
    return k


def _candidate(name, distribution, parameters, frozen, x) -> Candidate:
    ks = stats.kstest(x, frozen.cdf)
    errors = {k: float(frozen.ppf(q) / np.quantile(x, q) - 1) for k, q in QUANTILES.items()}
    return Candidate(name=name, distribution=distribution, parameters=parameters,
                     log_likelihood=float(np.sum(frozen.logpdf(x))),
                     ks_statistic=float(ks.statistic), ks_p_value=float(ks.pvalue),
                     quantile_errors=errors)
