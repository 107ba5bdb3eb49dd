"""The A/B test planner: how many requests, and how many days of traffic, confirm an uplift.

A two-arm test of a proportion (CTR, conversion...): the control arm sees the baseline rate
``p1``, the treatment arm ``p2``; each request is one Bernoulli trial. The sample size per arm
for a two-sided two-proportion z-test at significance ``alpha`` and power ``1 - beta`` is the
standard normal-approximation formula, without continuity correction (Fleiss, Levin and Paik,
*Statistical Methods for Rates and Proportions*, 3rd ed., 2003, ch. 4)::

    n = (z_{1-a/2} * sqrt(2 * pbar * (1 - pbar)) + z_{1-b} * sqrt(p1 (1 - p1) + p2 (1 - p2)))^2
        / (p2 - p1)^2,        pbar = (p1 + p2) / 2

rounded up. Example: p1 = 0.10, p2 = 0.12, alpha 0.05 two-sided, power 0.8 -> 3,841 per arm.
Days of traffic = 2 n / (daily traffic x share of traffic in the test), the test traffic being
split evenly between the two arms.

Pure functions; :func:`plan_from_results` reads the rates and the traffic from a simulation.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from scipy import stats

from sim.units import human_duration

DAY_S = 86400.0
FORMULA = ("n = (z_{1-α/2}·sqrt(2·p̄(1−p̄)) + z_{1−β}·sqrt(p1(1−p1)+p2(1−p2)))² / (p2−p1)², "
           "p̄ = (p1+p2)/2")


class PlanError(ValueError):
    """Inputs the planner cannot use; the message names the input and its value, ``field`` the
    parameter (``baseline_rate``, ``uplift``, ``daily_traffic``...) when there is one."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


def z(q: float) -> float:
    """Standard normal quantile."""
    return float(stats.norm.ppf(q))


def sample_size_per_arm(p1: float, p2: float, alpha: float = 0.05, power: float = 0.8,
                        two_sided: bool = True) -> int:
    """Requests per arm to detect ``p1`` -> ``p2`` (see the module docstring for the formula).

    ``two_sided=False`` uses ``z_{1-alpha}`` for a one-sided test.
    """
    _check_rate("baseline rate", p1, "baseline_rate")
    _check_rate("treatment rate", p2, "uplift")
    _check_probability("alpha", alpha)
    _check_probability("power", power)
    if p1 == p2:
        raise PlanError(f"the two rates are equal ({p1:g}): there is no difference to detect",
                        "uplift")
    # Guard against 3841.0000000001 becoming 3842 through rounding noise.
    return int(math.ceil(required_n(p1, p2, alpha, power, two_sided) - 1e-9))


def required_n(p1: float, p2: float, alpha: float = 0.05, power: float = 0.8,
               two_sided: bool = True) -> float:
    """The formula's value before rounding up (for checks against other implementations)."""
    z_alpha = z(1 - alpha / 2) if two_sided else z(1 - alpha)
    z_beta = z(power)
    pbar = (p1 + p2) / 2
    root = (z_alpha * math.sqrt(2 * pbar * (1 - pbar))
            + z_beta * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2)))
    return root ** 2 / (p2 - p1) ** 2


@dataclass(frozen=True)
class ABPlan:
    """A planned A/B test: the rates, the test's settings, and how long it must run."""

    baseline_rate: float
    treatment_rate: float
    alpha: float
    power: float
    two_sided: bool
    n_per_arm: int
    daily_traffic: float | None
    traffic_share: float
    metric: str = "rate"
    source: str | None = None   # where the rates came from (a scenario), for the output

    @property
    def absolute_uplift(self) -> float:
        return self.treatment_rate - self.baseline_rate

    @property
    def relative_uplift(self) -> float:
        return self.absolute_uplift / self.baseline_rate

    @property
    def total(self) -> int:
        """Requests in both arms together."""
        return 2 * self.n_per_arm

    @property
    def days(self) -> float | None:
        """Days of traffic needed (fractional), or None without a daily traffic."""
        if not self.daily_traffic:
            return None
        return self.total / (self.daily_traffic * self.traffic_share)

    @property
    def whole_days(self) -> int | None:
        days = self.days
        return None if days is None else max(1, math.ceil(days - 1e-9))

    def lines(self) -> list[str]:
        """The plan in plain sentences, with the formula it used."""
        sided = "two-sided" if self.two_sided else "one-sided"
        out = [
            f"Baseline {self.metric} {_rate(self.baseline_rate)}, treatment "
            f"{_rate(self.treatment_rate)} (uplift {self.absolute_uplift:+.4g} absolute, "
            f"{self.relative_uplift * 100:+.3g}% relative)"
            + (f", from {self.source}" if self.source else "") + ".",
            f"Two-proportion z-test, {sided}, significance {self.alpha:g}, power {self.power:g}: "
            f"{self.n_per_arm:,} requests per arm, {self.total:,} in all.",
        ]
        if self.days is not None:
            share = ("all traffic" if self.traffic_share == 1 else
                     f"{self.traffic_share * 100:g}% of traffic")
            span = (f"{self.days:.3g} days" if self.days >= 1 else
                    human_duration(self.days * DAY_S))
            out.append(f"With {_count(self.daily_traffic)} requests a day and {share} in the test "
                       f"(split evenly between the arms): {span} of traffic, so run it for "
                       f"{self.whole_days} day{'s' if self.whole_days != 1 else ''}.")
            if self.whole_days < 7:
                out.append("Run it for at least a full week anyway, so that every day of the "
                           "week is in both arms.")
        out.append(f"Formula (normal approximation, no continuity correction): {FORMULA}.")
        return out

    def to_dict(self) -> dict:
        out = asdict(self)
        out.update(absolute_uplift=self.absolute_uplift, relative_uplift=self.relative_uplift,
                   total=self.total, days=self.days, whole_days=self.whole_days,
                   formula=FORMULA)
        return out


def plan(baseline_rate: float, uplift: float, *, relative: bool = False,
         daily_traffic: float | None = None, alpha: float = 0.05, power: float = 0.8,
         two_sided: bool = True, traffic_share: float = 1.0, metric: str = "rate",
         source: str | None = None) -> ABPlan:
    """Plan a test of ``baseline_rate`` against ``baseline_rate + uplift``.

    With ``relative=True`` the uplift is a share of the baseline rate (0.03 = +3%).
    ``traffic_share`` is the share of daily traffic that enters the test.
    """
    _check_rate("baseline rate", baseline_rate, "baseline_rate")
    if not math.isfinite(uplift) or uplift == 0:
        raise PlanError(f"uplift must be a number other than 0 (got {uplift:g})", "uplift")
    treatment = baseline_rate * (1 + uplift) if relative else baseline_rate + uplift
    if not 0 < treatment < 1:
        raise PlanError(f"baseline rate {baseline_rate:g} with uplift {uplift:g}"
                        f"{' (relative)' if relative else ''} gives a treatment rate of "
                        f"{treatment:g}, outside (0, 1)", "uplift")
    if daily_traffic is not None and not (math.isfinite(daily_traffic) and daily_traffic > 0):
        raise PlanError(f"daily traffic must be > 0 (got {daily_traffic:g})", "daily_traffic")
    if not 0 < traffic_share <= 1:
        raise PlanError(f"traffic share must be in (0, 1] (got {traffic_share:g})",
                        "traffic_share")
    n = sample_size_per_arm(baseline_rate, treatment, alpha, power, two_sided)
    return ABPlan(baseline_rate, treatment, alpha, power, two_sided, n, daily_traffic,
                  traffic_share, metric, source)


def plan_from_results(results, treatment: str, baseline: str | None = None, *,
                      alpha: float = 0.05, power: float = 0.8, two_sided: bool = True,
                      traffic_share: float = 1.0, daily_traffic: float | None = None) -> ABPlan:
    """Plan the test that would confirm ``treatment`` against ``baseline`` in ``results``.

    The rates are the simulated mean quality of the two architectures; the daily traffic is the
    scenario's mean arrival rate times a day (unless given). Each request counts as one trial of
    the metric, which fits per-request rates such as CTR or conversion.
    """
    scenario = results.scenario
    baseline = baseline or results.baseline
    summary = results.summary.set_index("architecture")
    for name in (treatment, baseline):
        if name not in summary.index:
            raise PlanError(f"{name!r} is not an architecture of {scenario.name} (choose from "
                            f"{', '.join(summary.index)})")
    if treatment == baseline:
        raise PlanError(f"the treatment and the baseline are the same architecture "
                        f"({treatment!r})")
    metric = scenario.quality.metric
    p1 = float(summary.loc[baseline, "quality_mean"])
    p2 = float(summary.loc[treatment, "quality_mean"])
    for name, p in ((baseline, p1), (treatment, p2)):
        if not 0 < p < 1:
            raise PlanError(f"{scenario.name}: {name}'s mean {metric} is {p:g}; the planner needs "
                            f"a rate strictly between 0 and 1")
    traffic = daily_traffic if daily_traffic is not None else \
        scenario.workload.arrivals.rate * DAY_S
    return plan(p1, p2 - p1, daily_traffic=traffic, alpha=alpha, power=power,
                two_sided=two_sided, traffic_share=traffic_share, metric=metric,
                source=f"the simulation of {scenario.name} ({treatment} vs {baseline})")


def _check_rate(name: str, p: float, field: str) -> None:
    if not (isinstance(p, (int, float)) and 0 < p < 1):
        raise PlanError(f"{name} must be a proportion strictly between 0 and 1 (got {p!r})",
                        field)


def _check_probability(name: str, p: float) -> None:
    if not (isinstance(p, (int, float)) and 0 < p < 1):
        raise PlanError(f"{name} must be strictly between 0 and 1 (got {p!r})", name)


def _rate(p: float) -> str:
    return f"{p:.4g}"


def _count(x: float) -> str:
    if x >= 1e6:
        return f"{x / 1e6:.3g}M"
    if x >= 1e4:
        return f"{x / 1e3:.3g}k"
    return f"{x:,.0f}"
