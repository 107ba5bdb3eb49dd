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

**Unit of randomisation.** That formula holds when the test splits *requests* at random. Most tests
split *users*, and the requests of one user are correlated (a user who clicks tends to click
again), so each request is worth less than an independent trial. The plan then multiplies the
sample by the design effect for clusters of unequal size (Eldridge, Ashby and Kerry, "Sample size
for cluster randomized trials: effect of coefficient of variation of cluster size and analysis
method", *Int. J. Epidemiol.* 35, 2006)::

    DE = 1 + ((cv^2 + 1) * m - 1) * ICC

with ``m`` the mean number of requests per user who shows up during the test, ``cv`` the
coefficient of variation of those counts and ``ICC`` the intra-user correlation of the outcome;
with equal counts (cv 0) it is the familiar ``1 + (m - 1) * ICC``. Requests needed = n x DE, users
needed = n x DE / m. ``m`` and ``cv`` are either given, or computed from a scenario's popularity:
with ``N`` requests spread over ``E`` users with probabilities ``p_k`` (Zipf: ``p_k ~ (k + 1)^-s``),
user ``k`` makes Poisson(``lambda_k = N p_k``) requests, so that, among users with at least one,

    users = sum_k (1 - exp(-lambda_k)),  m = N / users,
    mean of squares = sum_k (lambda_k + lambda_k^2) / users,  cv^2 = mean of squares / m^2 - 1

(exactly, from the probabilities; note ``(cv^2 + 1) m = 1 + N sum_k p_k^2``). Because ``m``, and
with it DE, grows with the test's length, the days are then the smallest whole number of days
whose requests reach n x DE at that length's DE.

Pure functions; :func:`plan_from_results` reads the rates and the traffic from a simulation.
:mod:`sim.studies.testplan` sets this test beside the other ways of testing a new model (shadow,
canary, interleaving, a Thompson-sampling bandit): days, extra cost and value lost of each.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from sim.units import DAY_S, human_duration

FORMULA = ("n = (z_{1-α/2}·sqrt(2·p̄(1−p̄)) + z_{1−β}·sqrt(p1(1−p1)+p2(1−p2)))² / (p2−p1)², "
           "p̄ = (p1+p2)/2")
DESIGN_EFFECT_FORMULA = "DE = 1 + ((cv² + 1)·m̄ − 1)·ICC"
DESIGN_EFFECT_SOURCE = "Eldridge, Ashby & Kerry 2006, clusters of unequal size"
UNITS = ("request", "user")
MAX_DAYS = 3650          # a user-split test longer than ten years is reported as impossible
HINT_ICC = 0.01          # the small ICC a request-split plan from a scenario illustrates
ICC_HELP = ("It is the share of the metric's variance that lies between users. Estimate it from "
            "a log of per-request outcomes by user (one-way ANOVA: ICC = (MSB − MSW) / (MSB + "
            "(m₀ − 1)·MSW)), or from a past user-split A/A test: ICC = (observed variance of "
            "the difference / binomial variance − 1) / ((cv² + 1)·m̄ − 1).")


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


def design_effect(icc: float, requests_per_user: float, cv: float = 0.0) -> float:
    """Design effect of splitting by user: ``1 + ((cv^2 + 1) m - 1) ICC`` (Eldridge, Ashby and
    Kerry 2006); with equal counts per user (``cv = 0``), ``1 + (m - 1) ICC``."""
    _check_user_inputs(icc, requests_per_user, cv)
    return 1.0 + ((cv * cv + 1.0) * requests_per_user - 1.0) * icc


@dataclass(frozen=True)
class UserSpread:
    """How ``requests`` spread over the users who show up: their expected number, the mean
    requests per such user and the coefficient of variation of those counts."""

    requests: float
    active_users: float
    mean: float
    cv: float


@dataclass(frozen=True)
class Population:
    """Who makes the requests: ``entities`` users with a popularity law over them (Zipf with
    ``exponent``, 0 = uniform), or explicit ``weights`` (a replayed log's requests per user)."""

    entities: int
    exponent: float = 0.0
    weights: np.ndarray | None = None
    description: str = ""

    def _probabilities(self):
        """The users' request probabilities, in chunks (E can be 10^7 and more)."""
        if self.weights is not None:
            w = np.asarray(self.weights, dtype=float)
            yield w[w > 0] / w.sum()
            return
        chunk = 1 << 20
        if self.exponent == 0:
            for start in range(0, self.entities, chunk):
                yield np.full(min(chunk, self.entities - start), 1.0 / self.entities)
            return
        norm = 0.0
        for start in range(0, self.entities, chunk):
            k = np.arange(start + 1, min(self.entities, start + chunk) + 1, dtype=float)
            norm += float(np.sum(k ** -self.exponent))
        for start in range(0, self.entities, chunk):
            k = np.arange(start + 1, min(self.entities, start + chunk) + 1, dtype=float)
            yield k ** -self.exponent / norm

    def spread(self, requests: float) -> UserSpread:
        """Users with at least one of ``requests`` (Poisson per user) and their requests' mean
        and coefficient of variation, exactly from the probabilities."""
        if not requests > 0:
            raise PlanError(f"requests must be > 0 (got {requests:g})", "daily_traffic")
        active = squares = 0.0
        for p in self._probabilities():
            lam = requests * p
            active += float(np.sum(-np.expm1(-lam)))
            squares += float(np.sum(lam * (1.0 + lam)))
        mean = requests / active
        cv2 = max(0.0, (squares / active) / mean ** 2 - 1.0)
        return UserSpread(requests, active, mean, math.sqrt(cv2))

    def concentration(self) -> float:
        """``sum_k p_k^2``: ``(cv^2 + 1) m = 1 + N sum_k p_k^2`` for any ``N``."""
        return float(sum(np.dot(p, p) for p in self._probabilities()))

    def top_share(self) -> float:
        """The share of all requests that the heaviest user makes."""
        return float(max(p.max() for p in self._probabilities()))


def user_spread(requests: float, entities: int, exponent: float = 0.0) -> UserSpread:
    """Mean and cv of requests per user among the users who show up, when ``requests`` spread
    over ``entities`` users by Zipf(``exponent``) popularity (``p_k ~ (k + 1)^-s``; 0 =
    uniform), each user's count being Poisson(``requests p_k``)."""
    if not (entities >= 1 and entities == int(entities)):
        raise PlanError(f"entities must be a whole number >= 1 (got {entities!r})", "entities")
    if not (math.isfinite(exponent) and exponent >= 0):
        raise PlanError(f"the Zipf exponent must be >= 0 (got {exponent!r})", "exponent")
    return Population(int(entities), float(exponent)).spread(requests)


def population_from_scenario(scenario) -> Population:
    """The scenario's entities as the users, with its popularity (or its trace's counts).
    Entities created during the run are left out."""
    workload = scenario.workload
    entities = int(workload.entities)
    trace = workload.arrivals.trace
    if trace is not None and trace.log.has_entities:
        counts = trace.log.counts
        return Population(entities, weights=counts,
                          description=f"the requests per user in the trace {trace.file} "
                                      f"({trace.log.n_entities:,} users who made a request)")
    if workload.popularity.kind == "uniform" or workload.popularity.exponent == 0:
        return Population(entities, 0.0, description=f"uniform popularity over the scenario's "
                                                     f"{_count(entities)} entities as users")
    s = workload.popularity.exponent
    return Population(entities, s, description=f"Zipf {s:g} popularity over the scenario's "
                                               f"{_count(entities)} entities as users")


@dataclass(frozen=True)
class ABPlan:
    """A planned A/B test: the rates, the test's settings, and how long it must run.

    ``n_per_arm`` is the requests each arm needs: ``n_independent`` (the z-test's, as if every
    request were an independent trial) times ``design_effect`` when the test splits by user.
    """

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
    unit: str = "request"       # the unit of randomisation: "request" or "user"
    n_independent: int | None = None   # requests per arm if they were independent trials
    icc: float | None = None    # intra-user correlation of the outcome (unit "user")
    requests_per_user: float | None = None   # m̄: mean requests per user who shows up
    cv: float | None = None     # coefficient of variation of requests per user who shows up
    design_effect: float = 1.0
    users_per_arm: int | None = None
    spread_method: str | None = None   # m̄ and cv: "given" by hand or from the "scenario"
    spread_source: str | None = None   # ... in words
    active_users: float | None = None  # users who show up during the test (from a scenario)
    solved_days: int | None = None     # whole days found by iteration (user, from a scenario)

    def __post_init__(self):
        if self.n_independent is None:
            object.__setattr__(self, "n_independent", self.n_per_arm)

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
    def total_users(self) -> int | None:
        return None if self.users_per_arm is None else 2 * self.users_per_arm

    @property
    def method(self) -> str:
        """How the sample was sized, in a few words."""
        if self.unit == "request":
            return "independent requests (no design effect)"
        how = ("m̄ and cv given" if self.spread_method == "given" else
               "m̄ and cv from the scenario's popularity, test length solved by iteration")
        return f"design effect for unequal requests per user ({how})"

    @property
    def days(self) -> float | None:
        """Days of traffic needed (fractional), or None without a daily traffic."""
        if self.solved_days is not None:
            return float(self.solved_days)
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
        ]
        test = f"Two-proportion z-test, {sided}, significance {self.alpha:g}, power {self.power:g}"
        if self.unit == "request":
            out.append(f"{test}: {self.n_per_arm:,} requests per arm, {self.total:,} in all.")
        else:
            out.append(self._user_line())
            out.append(f"{test}: {self.n_independent:,} requests per arm if requests were "
                       f"independent; × {self.design_effect:.3g} = {self.n_per_arm:,} requests "
                       f"per arm, {self.total:,} in all, from about {self.users_per_arm:,} "
                       f"users per arm ({self.total_users:,} in all).")
        if self.days is not None:
            out.extend(self._days_lines())
        if self.unit == "request":
            out.append(self._request_unit_line())
        out.append(f"Formula (normal approximation, no continuity correction): {FORMULA}.")
        if self.unit == "user":
            out.append(f"Design effect: {DESIGN_EFFECT_FORMULA} ({DESIGN_EFFECT_SOURCE}); "
                       f"equal requests per user (cv 0) give 1 + (m̄ − 1)·ICC.")
        return out

    def _user_line(self) -> str:
        m, cv, icc = self.requests_per_user, self.cv, self.icc
        if self.spread_method == "given":
            where = "as given"
        else:
            days = self.whole_days
            where = (f"computed from {self.spread_source} over the test's {days} "
                     f"day{'s' if days != 1 else ''}, each user's requests being Poisson; about "
                     f"{_count(self.active_users)} users show up")
        return (f"Unit of randomisation: the user. A user's requests are correlated "
                f"(intra-user correlation ICC {icc:g}), so they count for less than independent "
                f"trials. With m̄ = {m:.3g} requests per user who shows up during the test and "
                f"a coefficient of variation cv {cv:.3g} of those counts ({where}), the design "
                f"effect is 1 + (({cv:.3g}² + 1)·{m:.3g} − 1)·{icc:g} = "
                f"{self.design_effect:.3g}.")

    def _days_lines(self) -> list[str]:
        who = "traffic" if self.unit == "request" else "users"
        share = (f"all {who}" if self.traffic_share == 1 else
                 f"{self.traffic_share * 100:g}% of {who}")
        days = self.whole_days
        plural = "s" if days != 1 else ""
        head = (f"With {_count(self.daily_traffic)} requests a day and {share} in the test "
                f"(split evenly between the arms): ")
        if self.solved_days is not None:
            out = [head + f"run it for {days} day{plural}. A user makes more requests the longer "
                   f"the test runs, and the design effect grows with them, so the length was "
                   f"found by trying whole days: {days} day{plural} is the shortest whose "
                   f"requests reach the sample at that length's design effect."]
        else:
            span = (f"{self.days:.3g} days" if self.days >= 1 else
                    human_duration(self.days * DAY_S))
            out = [head + f"{span} of traffic, so run it for {days} day{plural}."]
            if self.unit == "user":
                out[0] = out[0][:-1] + " (m̄ and cv should be those of a test that long)."
        if days < 7:
            out.append("Run it for at least a full week anyway, so that every day of the "
                       "week is in both arms.")
        return out

    def _request_unit_line(self) -> str:
        text = ("Unit of randomisation: the request: each request counts as an independent trial "
                "(design effect 1). If the test splits by user instead, as most do, a user's "
                "requests are correlated and this understates the sample")
        if self.requests_per_user is None or self.whole_days > MAX_DAYS:
            return text + (": plan with --unit user --icc ICC --requests-per-user M "
                           "(sim.studies.abtest.plan(..., unit='user', icc=..., requests_per_user=...)).")
        de = 1 + ((self.cv ** 2 + 1) * self.requests_per_user - 1) * HINT_ICC
        return text + (f": in {self.whole_days} day{'s' if self.whole_days != 1 else ''} a user "
                       f"who shows up makes m̄ = {self.requests_per_user:.3g} requests (cv "
                       f"{self.cv:.3g}, from {self.spread_source}), so even an ICC of "
                       f"{HINT_ICC:g} would make the design effect {de:.3g}; plan with "
                       f"--unit user --icc ICC.")

    def to_dict(self) -> dict:
        out = asdict(self)
        out.update(absolute_uplift=self.absolute_uplift, relative_uplift=self.relative_uplift,
                   total=self.total, total_users=self.total_users, days=self.days,
                   whole_days=self.whole_days, method=self.method, formula=FORMULA,
                   design_effect_formula=DESIGN_EFFECT_FORMULA if self.unit == "user" else None)
        return out


def plan(baseline_rate: float, uplift: float, *, relative: bool = False,
         daily_traffic: float | None = None, alpha: float = 0.05, power: float = 0.8,
         two_sided: bool = True, traffic_share: float = 1.0, metric: str = "rate",
         source: str | None = None, unit: str = "request", icc: float | None = None,
         requests_per_user: float | None = None, cv: float | None = None,
         population: Population | None = None) -> ABPlan:
    """Plan a test of ``baseline_rate`` against ``baseline_rate + uplift``.

    With ``relative=True`` the uplift is a share of the baseline rate (0.03 = +3%).
    ``traffic_share`` is the share of daily traffic (of users, when splitting by user) that
    enters the test.

    ``unit="user"`` plans a test that splits users: it needs ``icc``, and either
    ``requests_per_user`` (m̄ over the test, with ``cv``, default 0: equal counts) or a
    ``population`` (see :func:`population_from_scenario`) and ``daily_traffic``, from which m̄
    and cv are computed for each candidate length and the days are solved for. With
    ``unit="request"`` a ``population`` only adds, to the output, what m̄ and cv would be.
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
    check_unit(unit, icc, requests_per_user, cv, population is not None)
    n = sample_size_per_arm(baseline_rate, treatment, alpha, power, two_sided)
    common = (baseline_rate, treatment, alpha, power, two_sided)
    if unit == "request":
        hint = {}
        days = None if not daily_traffic else \
            max(1, math.ceil(2 * n / (daily_traffic * traffic_share) - 1e-9))
        if population is not None and days is not None and days <= MAX_DAYS:
            spread = population.spread(daily_traffic * days)
            hint = dict(requests_per_user=spread.mean, cv=spread.cv, spread_method="scenario",
                        spread_source=population.description, active_users=spread.active_users)
        return ABPlan(*common, n, daily_traffic, traffic_share, metric, source, **hint)
    n_raw = required_n(baseline_rate, treatment, alpha, power, two_sided)
    if requests_per_user is not None:
        cv = 0.0 if cv is None else cv
        de = design_effect(icc, requests_per_user, cv)
        extra = dict(requests_per_user=requests_per_user, cv=cv, spread_method="given",
                     spread_source="given")
    else:
        if not daily_traffic:
            raise PlanError("splitting by user with a population needs the daily traffic",
                            "daily_traffic")
        days, spread, de = _solve_days(n_raw, icc, population, daily_traffic, traffic_share)
        extra = dict(requests_per_user=spread.mean, cv=spread.cv, spread_method="scenario",
                     spread_source=population.description, active_users=spread.active_users,
                     solved_days=days)
    m = extra["requests_per_user"]
    return ABPlan(*common, _ceil(n_raw * de), daily_traffic, traffic_share, metric, source,
                  unit="user", n_independent=n, icc=icc, design_effect=de,
                  users_per_arm=_ceil(n_raw * de / m), **extra)


def check_unit(unit: str, icc: float | None, requests_per_user: float | None,
               cv: float | None, has_population: bool = False) -> None:
    """Check the unit of randomisation's inputs before any work (raises :class:`PlanError`)."""
    if unit not in UNITS:
        raise PlanError(f"unit must be 'request' or 'user' (got {unit!r})", "unit")
    given = [name for name, value in (("icc", icc), ("requests_per_user", requests_per_user),
                                      ("cv", cv)) if value is not None]
    if unit == "request":
        if given:
            raise PlanError("only when the test splits by user (unit 'user')", given[0])
        return
    if icc is None:
        raise PlanError(f"needed when the test splits by user: the intra-user correlation of "
                        f"the metric, between 0 and 1. {ICC_HELP}", "icc")
    if requests_per_user is None and not has_population:
        raise PlanError("needed when the test splits by user without a scenario: the mean "
                        "number of "
                        "requests per user who shows up during the test (m̄), with its "
                        "coefficient of variation as cv (default 0: every user the same)",
                        "requests_per_user")
    if cv is not None and requests_per_user is None:
        raise PlanError("give it together with the requests per user, or neither: both are "
                        "then computed from the scenario's popularity", "cv")
    _check_user_inputs(icc, 1.0 if requests_per_user is None else requests_per_user,
                       0.0 if cv is None else cv)


def _check_user_inputs(icc, requests_per_user, cv) -> None:
    if not (isinstance(icc, (int, float)) and 0 <= icc <= 1):
        raise PlanError(f"the intra-user correlation (ICC) must be between 0 and 1 "
                        f"(got {icc!r})", "icc")
    if not (isinstance(requests_per_user, (int, float)) and math.isfinite(requests_per_user)
            and requests_per_user >= 1):
        raise PlanError(f"the mean requests per user who shows up must be >= 1 "
                        f"(got {requests_per_user!r})", "requests_per_user")
    if not (isinstance(cv, (int, float)) and math.isfinite(cv) and cv >= 0):
        raise PlanError(f"the coefficient of variation of requests per user must be >= 0 "
                        f"(got {cv!r})", "cv")


def _solve_days(n_raw: float, icc: float, population: Population, daily: float,
                share: float) -> tuple[int, UserSpread, float]:
    """The smallest whole number of days ``d`` with share x daily x d >= 2 n DE(d), DE(d) from
    the m̄ and cv of d days' requests; its spread and design effect."""

    def evaluate(days):
        spread = population.spread(daily * days)
        de = 1.0 + ((spread.cv ** 2 + 1.0) * spread.mean - 1.0) * icc
        return share * daily * days >= 2 * n_raw * de, spread, de

    # Requests grow like d, the requirement like 2 n (1 + ICC N sum p^2), N = daily x d: some
    # length reaches it only if the first grows faster.
    slope = share - 2 * n_raw * icc * population.concentration()
    if slope <= 0:
        ceiling = share / (2 * icc * population.concentration())
        raise PlanError(f"no test length is enough when splitting by user: with ICC {icc:g}, "
                        f"the heaviest users' requests weigh so much that even an endless test "
                        f"of this population gives at most the equivalent of "
                        f"{ceiling:,.0f} independent requests per arm, and {n_raw:,.0f} are "
                        f"needed ({population.description}: the heaviest user alone makes "
                        f"{population.top_share():.2%} of all requests). Put more users in the "
                        f"test, test a larger uplift, or cap each user's requests in the "
                        f"analysis and plan with --requests-per-user and --cv", None)
    low = max(0, math.ceil(2 * n_raw / (share * daily) - 1e-9) - 1)   # DE >= 1: too short
    high = low + 1
    found = evaluate(high)
    while not found[0]:
        if high >= MAX_DAYS:
            raise PlanError(f"splitting by user, the test would have to run more than "
                            f"{MAX_DAYS:,} days (ten years)", None)
        low, high = high, min(MAX_DAYS, 2 * high)
        found = evaluate(high)
    while high - low > 1:
        mid = (low + high) // 2
        trial = evaluate(mid)
        if trial[0]:
            high, found = mid, trial
        else:
            low = mid
    return high, found[1], found[2]


def _ceil(x: float) -> int:
    # Guard against 3841.0000000001 becoming 3842 through rounding noise.
    return int(math.ceil(x - 1e-9))


def arm_rates(results, treatment: str, baseline: str | None) -> tuple[str, float, float]:
    """(baseline, its mean quality, the treatment's) from ``results``, checked: two different
    architectures of the scenario whose metric is a rate strictly between 0 and 1."""
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
    p1 = float(summary.loc[baseline, "quality_mean"])
    p2 = float(summary.loc[treatment, "quality_mean"])
    for name, p in ((baseline, p1), (treatment, p2)):
        if not 0 < p < 1:
            raise PlanError(f"{scenario.name}: {name}'s mean {scenario.quality.metric} is "
                            f"{p:g}; the planner needs a rate strictly between 0 and 1")
    return baseline, p1, p2


def plan_from_results(results, treatment: str, baseline: str | None = None, *,
                      alpha: float = 0.05, power: float = 0.8, two_sided: bool = True,
                      traffic_share: float = 1.0, daily_traffic: float | None = None,
                      unit: str = "request", icc: float | None = None,
                      requests_per_user: float | None = None,
                      cv: float | None = None) -> ABPlan:
    """Plan the test that would confirm ``treatment`` against ``baseline`` in ``results``.

    The rates are the simulated mean quality of the two architectures; the daily traffic is the
    scenario's mean arrival rate times a day (unless given). With ``unit="request"`` each
    request counts as one trial of the metric, which fits per-request rates such as CTR or
    conversion when requests are split at random. With ``unit="user"`` (give ``icc``) the
    scenario's entities are the users and m̄ and cv come from its popularity (unless
    ``requests_per_user`` is given), for each candidate length of the test.
    """
    scenario = results.scenario
    check_unit(unit, icc, requests_per_user, cv, True)
    baseline, p1, p2 = arm_rates(results, treatment, baseline)
    traffic = daily_traffic if daily_traffic is not None else \
        scenario.workload.arrivals.rate * DAY_S
    population = None if requests_per_user is not None else population_from_scenario(scenario)
    return plan(p1, p2 - p1, daily_traffic=traffic, alpha=alpha, power=power,
                two_sided=two_sided, traffic_share=traffic_share, metric=scenario.quality.metric,
                source=f"the simulation of {scenario.name} ({treatment} vs {baseline})",
                unit=unit, icc=icc, requests_per_user=requests_per_user, cv=cv,
                population=population)


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
