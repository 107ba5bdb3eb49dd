"""``predsim verify``: the simulator against queueing theory and age of information, side by side.

Every case runs the *whole engine* on a scenario built for it, over independent replications,
and compares the mean with a closed form. A check passes when the closed form lies inside the
simulated mean's confidence interval. The intervals are Bonferroni-corrected (family-wise 99%
over all checks of a run), and quantities read from the log-bucketed histograms also allow the
histograms' stated 0.4% resolution, and a closed form that is a limit of the simulated model
(the M/M/1 at the mean speed, for speeds that switch fast) allows its exact distance from the
model, computed. Nothing else is tolerated: a failing case is a bug.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
from scipy import stats

from sim.studies import theory
from sim.engine.run import simulate
from sim.results.metrics import RESOLUTION as HISTOGRAM_RESOLUTION  # a percentile's relative error
from sim.results.metrics import BASE as BIN_BASE, SHIFT as BIN_SHIFT, bin_index
from sim.scenario import Scenario, scenario_from_dict

FAMILY_CONFIDENCE = 0.99


@dataclass
class Check:
    case: str
    quantity: str
    simulated: np.ndarray  # one value per replication
    expected: float
    from_histogram: bool = False
    reference: str = "closed form"

    allowance: float = 0.0  # the closed form's known distance from the simulated model, if a limit
    other: np.ndarray | None = None  # replications of an independent simulator, if any

    def row(self, level: float) -> dict:
        values = self.simulated[~np.isnan(self.simulated)]
        n = values.size
        mean = float(values.mean())
        if self.other is None:
            half = float(stats.t.ppf(0.5 + level / 2, n - 1) * values.std(ddof=1) / math.sqrt(n))
        else:
            from sim.results.replications import welch_half_width
            half = welch_half_width(values, self.other, level)
        allowance = HISTOGRAM_RESOLUTION * abs(self.expected) if self.from_histogram else 0.0
        allowance += self.allowance
        rel = (mean - self.expected) / self.expected if self.expected else float("nan")
        return {"case": self.case, "quantity": self.quantity, "simulated": mean,
                "ci": half, "expected": self.expected, "reference": self.reference,
                "relative_error": rel, "replications": n,
                "passed": bool(abs(mean - self.expected) <= half + allowance)}


def _scenario(rate: str, architectures: dict, horizon: str, warmup: str, **extra) -> Scenario:
    raw = {"name": "verify", "horizon": horizon, "warmup": warmup, "seed": 20261126,
           "workload": {"entities": 1000, "arrivals": {"rate": rate}},
           "quality": {"fresh": 1.0}, "architectures": architectures, **extra}
    return scenario_from_dict(raw, label="<verify>")


def _queue(replicas: int, service: object, features_every: str = "1d",
           features_duration: str = "0s") -> dict:
    return {"online": {"kind": "online",
                       "features": {"batch": {"every": features_every,
                                              "duration": features_duration}},
                       "serving": {"replicas": replicas, "service_time": service}}}


class _Requests:
    """Collects per-request outcomes (after warm-up) for checks on individual requests."""

    def __init__(self, warmup_s: float):
        self.warmup_s = warmup_s
        self.t, self.latency = [], []

    def __call__(self, name, outcomes):
        keep = outcomes.t_s >= self.warmup_s
        self.t.append(outcomes.t_s[keep])
        self.latency.append(outcomes.latency_s[keep])

    def littles_law(self, window_s: float) -> tuple[float, float]:
        """(time-average number in system sampled on a grid, arrival rate x mean sojourn)."""
        t = np.concatenate(self.t)
        sojourn = np.concatenate(self.latency)
        departures = np.sort(t + sojourn)
        grid = np.linspace(t[0], t[-1], 20001)[1:-1]
        in_system = np.searchsorted(t, grid, side="right") - np.searchsorted(departures, grid,
                                                                             side="right")
        return float(in_system.mean()), t.size / window_s * float(sojourn.mean())


def _replicate(scenario: Scenario, n: int, extract: Callable, observe: bool = False):
    values = []
    for r in range(n):
        requests = _Requests(scenario.warmup) if observe else None
        results = simulate(scenario, replication=r, observe=requests)
        row = results.summary.iloc[0]
        values.append(extract(results, row, requests))
    return np.array(values, dtype=float).T


def _mm1(rho: float, horizon: str, n: int) -> list[Check]:
    mu = 1000.0
    lam = rho * mu
    s = _scenario(f"{lam}/s", _queue(1, {"exponential": {"mean": "1ms"}}), horizon, "20s")
    wait, p99, (l_grid, l_little) = None, None, (None, None)
    values = _replicate(s, n, lambda res, row, req: (
        row["queue_wait_ms_mean"] / 1e3, row["latency_ms_p99"] / 1e3,
        *req.littles_law(s.horizon)), observe=True)
    wait, p99, l_grid, l_little = values
    case = f"M/M/1, rho {rho:g}"
    return [Check(case, "mean wait (s)", wait, lam / (mu * (mu - lam))),
            Check(case, "p99 response time (s)", p99, theory.mm1_response_quantile(lam, mu, 0.99),
                  from_histogram=True),
            Check(case, "Little's law: mean number in system", l_grid, float(np.mean(l_little)),
                  reference="arrival rate x mean time in system")]


def _mmc(rho: float, servers: int, horizon: str, n: int) -> list[Check]:
    mu = 1000.0
    lam = rho * mu * servers
    s = _scenario(f"{lam}/s", _queue(servers, {"exponential": {"mean": "1ms"}}), horizon, "10s")
    p_wait, mean_wait = theory.erlang_c(lam, mu, servers)
    wait, waited, l_grid, l_little = _replicate(s, n, lambda res, row, req: (
        row["queue_wait_ms_mean"] / 1e3, _share_waited(res), *req.littles_law(s.horizon)),
        observe=True)
    case = f"M/M/{servers}, rho {rho:g}"
    return [Check(case, "mean wait (s)", wait, mean_wait, reference="Erlang C"),
            Check(case, "probability of waiting", waited, p_wait, reference="Erlang C"),
            Check(case, "Little's law: mean number in system", l_grid, float(np.mean(l_little)),
                  reference="arrival rate x mean time in system")]


def _slow_queue(rho: float, stays_s: tuple[float, float], slowdown: float, horizon: str,
                n: int) -> tuple[float, Scenario, np.ndarray]:
    """One replica, exponential work of mean 1 ms at normal speed, on a speed that alternates
    between normal (slowdown 1) and ``slowdown`` with exponential stays of means ``stays_s``,
    at offered load ``rho`` against the mean speed. Returns (arrival rate, scenario, per
    replication: mean wait, utilisation, time-average number in system)."""
    mu = 1000.0
    shares = np.array(stays_s) / sum(stays_s)
    mean_speed = float(shares @ [1.0, 1.0 / slowdown])
    lam = rho * mu * mean_speed
    arch = _queue(1, {"exponential": {"mean": "1ms"}})
    arch["online"]["serving"]["slow_periods"] = {"scope": "replica", "states": [
        {"slowdown": 1, "mean": f"{stays_s[0] * 1e6:g}us"},
        {"slowdown": slowdown, "mean": f"{stays_s[1] * 1e6:g}us"}]}
    s = _scenario(f"{lam}/s", arch, horizon, "2s")
    values = _replicate(s, n, lambda res, row, req: (
        row["queue_wait_ms_mean"] / 1e3, row["utilization"], req.littles_law(s.horizon)[0]),
        observe=True)
    return lam, s, values


def _random_environment(rho: float, horizon: str, n: int) -> list[Check]:
    # Stays of a few services (4 ms at normal speed, 2 ms at a third of it): the queue builds up
    # in the slow stays (mu/3 < lambda), so the mean wait is 21% above the M/M/1's at the mean
    # speed, and the share of time busy above the offered load rho.
    stays, slowdown, mu = (0.004, 0.002), 3.0, 1000.0
    lam, _, (wait, busy, in_system) = _slow_queue(rho, stays, slowdown, horizon, n)
    exact = theory.mm1_random_environment(lam, [mu, mu / slowdown],
                                          theory.two_state_generator(stays))
    case = f"M/M/1 in a random environment (speed 1 or 1/3, stays 4/2 ms), rho {rho:g}"
    qbd = "QBD, matrix-geometric"
    return [Check(case, "mean wait (s)", wait, exact.mean_wait, reference=qbd),
            Check(case, "utilisation (share of time busy)", busy, exact.busy, reference=qbd),
            Check(case, "mean number in system", in_system, exact.mean_number, reference=qbd)]


def _fast_switching(rho: float, horizon: str, n: int) -> list[Check]:
    # Stays of 1/10 and 1/20 of a service: each service sees many of them, and the queue tends
    # to the M/M/1 with service rate mu x mean speed as stays shrink. The distance from that
    # limit is O(stay / service); its exact value (from the QBD: +0.57% on the mean wait, +0.14%
    # on the utilisation, +0.42% on the number in system) is allowed.
    stays, slowdown, mu = (0.0001, 0.00005), 3.0, 1000.0
    lam, s, (wait, busy, in_system) = _slow_queue(rho, stays, slowdown, horizon, n)
    rate = mu * s.architectures["online"].serving.slow_periods.mean_speed
    exact = theory.mm1_random_environment(lam, [mu, mu / slowdown],
                                          theory.two_state_generator(stays))
    limit_busy = lam / rate
    case = f"M/M/1, speed 1 or 1/3 switching fast (stays 0.1/0.05 ms), rho {rho:g}"
    checks = []
    for quantity, values, limit, model in (
            ("mean wait (s)", wait, lam / (rate * (rate - lam)), exact.mean_wait),
            ("utilisation (share of time busy)", busy, limit_busy, exact.busy),
            ("mean number in system", in_system, limit_busy / (1 - limit_busy),
             exact.mean_number)):
        checks.append(Check(case, quantity, values, limit, allowance=abs(model - limit),
                            reference=f"M/M/1 at the mean speed (QBD {model / limit - 1:+.2%})"))
    return checks


def _share_waited(results) -> float:
    counts = results.distributions["online"]["queue_wait_s"].counts
    return 1 - counts[0] / counts.sum()  # the lowest bin holds waits under 1 microsecond


def _erlang_example(horizon: str, n: int) -> list[Check]:
    # 100 arrivals per 30 minutes, 3-minute mean handling time, 14 servers:
    # P(wait) = 0.17413, mean wait 7.84 s (printed identically by two independent calculators)
    s = _scenario("200/h", _queue(14, {"exponential": {"mean": "3m"}}), horizon, "1d")
    p_wait, mean_wait = theory.erlang_c(100 / 1800, 1 / 180, 14)
    wait, waited = _replicate(s, n, lambda res, row, req: (row["queue_wait_ms_mean"] / 1e3,
                                                           _share_waited(res)))
    case = "Erlang C worked example (14 servers)"
    return [Check(case, "mean wait (s)", wait, mean_wait, reference="Erlang C (7.84 s)"),
            Check(case, "probability of waiting", waited, p_wait, reference="Erlang C (0.1741)")]


def _md1(rho: float, horizon: str, n: int) -> list[Check]:
    service = 0.001
    lam = rho / service
    s = _scenario(f"{lam}/s", _queue(1, {"constant": "1ms"}), horizon, "10s")
    wait, l_grid, l_little = _replicate(s, n, lambda res, row, req: (
        row["queue_wait_ms_mean"] / 1e3, *req.littles_law(s.horizon)), observe=True)
    case = f"M/D/1, rho {rho:g}"
    return [Check(case, "mean wait (s)", wait,
                  theory.pollaczek_khinchine_wait(lam, service, service ** 2),
                  reference="Pollaczek-Khinchine"),
            Check(case, "Little's law: mean number in system", l_grid, float(np.mean(l_little)),
                  reference="arrival rate x mean time in system")]


def _gated_batches(load: float, horizon: str, n: int) -> list[Check]:
    # Dynamic batching with no linger and a batch limit never reached: the free replica takes
    # everything waiting, and a batch takes 10 ms whatever its size.
    batch_s = 0.010
    lam = load / batch_s
    arch = _queue(1, None)
    arch["online"]["serving"] = {"replicas": 1, "batching": {
        "max_batch": 100000, "max_wait": "0s", "fixed": {"constant": "10ms"}}}
    s = _scenario(f"{lam}/s", arch, horizon, "10s")
    wait, l_grid, l_little = _replicate(s, n, lambda res, row, req: (
        row["queue_wait_ms_mean"] / 1e3, *req.littles_law(s.horizon)), observe=True)
    case = f"batching, take all waiting, 10 ms batches, {lam:g} requests/s"
    return [Check(case, "mean wait (s)", wait, theory.gated_batch_wait(lam, batch_s),
                  reference="p D/2, p = x/(x+1), x = lam D e^(lam D)"),
            Check(case, "Little's law: mean number in system", l_grid, float(np.mean(l_little)),
                  reference="arrival rate x mean time in system")]


def _periodic_features(n: int) -> list[Check]:
    period, lag = 3600.0, 600.0
    s = _scenario("5/s", _queue(8, {"constant": "1ms"}, "1h", "10m"), "1d", "2h")
    mean, oldest = _replicate(s, n, lambda res, row, req: (
        row["batch_feature_age_s_mean"],
        res.distributions["online"]["batch_feature_age_s"].quantile(1.0)))
    expected_mean, expected_max = theory.periodic_age(period, lag)
    case = "batch features every 1h, visible 10m after cut-off"
    return [Check(case, "mean feature age (s)", mean, expected_mean, reference="L + T/2"),
            Check(case, "maximum feature age (s)", oldest, expected_max, from_histogram=True,
                  reference="L + T")]


def _stream_windows(n: int) -> list[Check]:
    arch = _queue(8, {"constant": "1ms"})
    arch["online"]["kind"] = "streaming"
    arch["online"]["features"]["stream"] = {"lag": "5s", "window": "1m"}
    s = _scenario("5/s", arch, "6h", "10m")
    mean, oldest = _replicate(s, n, lambda res, row, req: (
        row["stream_feature_age_s_mean"],
        res.distributions["online"]["stream_feature_age_s"].quantile(1.0)))
    expected_mean, expected_max = theory.periodic_age(60.0, 5.0)
    case = "stream windows of 1m, lag 5s"
    return [Check(case, "mean feature age (s)", mean, expected_mean, reference="L + W/2"),
            Check(case, "maximum feature age (s)", oldest, expected_max, from_histogram=True,
                  reference="L + W")]


def _renewal_windows(n: int) -> list[Check]:
    # Windows closing at exponential intervals X (mean 1 min), each visible 5 s later:
    # mean age E[L] + E[X^2] / (2 E[X]) = 5 + 2 * 60^2 / (2 * 60) = 65 s.
    arch = _queue(8, {"constant": "1ms"})
    arch["online"]["kind"] = "streaming"
    arch["online"]["features"]["stream"] = {"lag": "5s", "window": {"exponential": {"mean": "1m"}}}
    s = _scenario("5/s", arch, "1d", "10m")
    mean = _replicate(s, n, lambda res, row, req: row["stream_feature_age_s_mean"])
    return [Check("stream windows closing at exponential intervals (mean 1m), lag 5s",
                  "mean feature age (s)", mean, theory.renewal_age_mean(5.0, 60.0, 2 * 60.0 ** 2),
                  reference="E[L] + E[X^2]/(2E[X])")]


def _share_above(histogram, age_s: float) -> tuple[float, float]:
    """(share of a histogram's values above the bin holding ``age_s``, that bin's upper edge):
    the share of values at or above the edge, exactly (a bin edge splits no bin)."""
    k = int(bin_index(np.array(age_s)))
    edge = float(np.array((k + BIN_BASE) << BIN_SHIFT, dtype=np.int64).view(np.float64))
    counts = histogram.counts
    return float(counts[k + 1:].sum() / counts.sum()), edge


def _failed_refreshes(n: int, horizon: str = "60d") -> list[Check]:
    # Features materialised every hour, visible 5 min after the cut-off; 30% of the runs fail and
    # are not retried, so requests keep the last good run's features. Gaps between good runs are
    # (K + 1) hours, K geometric: mean age 5 min + 1 h x 1.3 / 1.4 (65 min), and a share p of
    # requests have features older than 1 h 5 min (their last scheduled run failed). 60 days
    # are about 1,000 good runs per replication.
    period, lag, p = 3600.0, 300.0, 0.3
    arch = _queue(8, {"constant": "1ms"}, "1h", "5m")
    arch["online"]["features"]["batch"]["failures"] = {"probability": p}
    s = _scenario("0.2/s", arch, horizon, "1d")
    mean, above, edge = _replicate(s, n, lambda res, row, req: (
        row["batch_feature_age_s_mean"],
        *_share_above(res.distributions["online"]["batch_feature_age_s"], lag + period)))
    case = "batch features every 1h, visible 5m after cut-off, 30% of runs fail (no retry)"
    return [Check(case, "mean feature age (s)", mean,
                  theory.failing_refresh_age(period, lag, p),
                  reference="L + T(1+p)/(2(1-p))"),
            Check(case, f"share of feature ages over {edge[0]:.0f} s", above,
                  theory.failing_refresh_age_survival(period, lag, p, float(edge[0])),
                  reference="p^m (1 - r(1-p)/T), a - L = mT + r")]


def _stream_outages(n: int, horizon: str = "20d") -> list[Check]:
    # Every event its own update (window 0, lag 0): the stream-feature age is 0 but in outages,
    # where it grows from 0 to D. Outages of 15 min after exponential up times of mean 1 h: mean
    # age (D^2/2)/(U + D) = 90 s, and a share (D - b)/(U + D) of requests older than b (5 min).
    up, down, above_s = 3600.0, 900.0, 300.0
    arch = _queue(8, {"constant": "1ms"})
    arch["online"]["kind"] = "streaming"
    arch["online"]["features"]["stream"] = {"lag": "0s", "window": "0s",
                                            "outages": {"every": "1h", "duration": "15m"}}
    s = _scenario("0.25/s", arch, horizon, "1d")
    mean, above, edge = _replicate(s, n, lambda res, row, req: (
        row["stream_feature_age_s_mean"],
        *_share_above(res.distributions["online"]["stream_feature_age_s"], above_s)))
    case = "stream, every event an update, 15m outages after exponential up times (mean 1h)"
    return [Check(case, "mean feature age (s)", mean, theory.outage_age(up, down),
                  reference="(D^2/2)/(U+D)"),
            Check(case, f"share of feature ages over {edge[0]:.0f} s", above,
                  theory.outage_age_survival(up, down, float(edge[0])),
                  reference="(D-b)/(U+D)")]


def _edge_syncs(n: int, horizon: str = "20d") -> list[Check]:
    # On-device features synced every hour at each device's own phase, 30% of syncs missed
    # (the device offline): at a request the time since the device's last scheduled sync is
    # uniform on (0, T) and the misses before it geometric, the same renewal structure as
    # refreshes that fail with no lag: mean age T(1+p)/(2(1-p)) = T/2 + T p/(1-p), and a
    # share p^m (1 - (1-p) r/T) older than mT + r.
    period, p = 3600.0, 0.3
    arch = {"phone": {"kind": "edge", "device_time": "1ms",
                      "sync": {"every": "1h", "offline": p}}}
    s = _scenario("0.2/s", arch, horizon, "1d")
    mean, above, edge = _replicate(s, n, lambda res, row, req: (
        row["batch_feature_age_s_mean"],
        *_share_above(res.distributions["phone"]["batch_feature_age_s"], period)))
    case = "edge: features synced every 1h at each device's phase, 30% of syncs missed"
    return [Check(case, "mean feature age (s)", mean, theory.failing_refresh_age(period, 0.0, p),
                  reference="T/2 + Tp/(1-p)"),
            Check(case, f"share of feature ages over {edge[0]:.0f} s", above,
                  theory.failing_refresh_age_survival(period, 0.0, p, float(edge[0])),
                  reference="p^m (1 - r(1-p)/T), a = mT + r")]


def _batch_coverage(n: int) -> list[Check]:
    # Uniform popularity over N(t) = N0 + r t entities, a job at each midnight scoring those that
    # exist then: a request at t misses with probability r (t - midnight) / N(t). Online with
    # features materialised at the same midnights has the same share of cold starts.
    n0, per_day = 20000, 4000
    arch = {"batch": {"kind": "batch", "every": "1d", "throughput": "1e9/s"},
            **_queue(8, {"constant": "1ms"}, "1d", "0s")}
    s = _scenario("2/s", arch, "4d", "1d", workload={
        "entities": n0, "new_entities_per_day": per_day, "popularity": "uniform",
        "arrivals": {"rate": "2/s"}})
    t = np.linspace(s.warmup, s.end_s, 400001)
    rate_per_s = per_day / 86400
    missing = rate_per_s * (t % 86400) / (n0 + rate_per_s * t)
    coverage, cold = _replicate(s, n, lambda res, row, req: (
        row["coverage"], res.summary.set_index("architecture").loc["online", "cold_start_rate"]))
    return [Check("batch job daily, 4,000 new entities a day on 20,000", "coverage",
                  coverage, float(1 - missing.mean()),
                  reference="1 - E[new since last job / entities]"),
            Check("online, features daily, 4,000 new entities a day on 20,000",
                  "share of cold starts", cold, float(missing.mean()),
                  reference="E[new since last refresh / entities]")]


def mgc_against_ciw(servers: int = 3, rho: float = 0.8, ciw_runs: int = 6,
                    ciw_horizon_s: float = 400.0, n: int = 10) -> Check | None:
    """M/G/c with lognormal service: predsim's mean wait against Ciw's (an independent
    simulator), or None when Ciw is not installed. The check passes when the Welch interval
    of the difference between the two simulators' means contains zero."""
    try:
        import ciw
    except ImportError:
        return None
    median, p99 = 0.015, 0.060
    sigma = (math.log(p99) - math.log(median)) / 2.3263478740408408
    mean = median * math.exp(sigma ** 2 / 2)
    lam = rho * servers / mean
    s = _scenario(f"{lam}/s", _queue(servers, {"lognormal": {"median": "15ms", "p99": "60ms"}}),
                  "600s", "20s")
    ours = _replicate(s, n, lambda res, row, req: row["queue_wait_ms_mean"] / 1e3)
    theirs = []
    for seed in range(ciw_runs):
        network = ciw.create_network(
            arrival_distributions=[ciw.dists.Exponential(rate=lam)],
            service_distributions=[ciw.dists.Lognormal(mean=math.log(median), sd=sigma)],
            number_of_servers=[servers])
        ciw.seed(seed)
        q = ciw.Simulation(network)
        q.simulate_until_max_time(ciw_horizon_s)
        theirs.append(np.mean([r.waiting_time for r in q.get_all_records()
                               if r.arrival_date > ciw_horizon_s / 10]))
    theirs = np.array(theirs)
    # Compare against Ciw's mean, carrying Ciw's own uncertainty into our interval (Welch).
    check = Check(f"M/G/{servers}, lognormal service, rho {rho:g}", "mean wait (s)", ours,
                  float(theirs.mean()), reference=f"Ciw, {ciw_runs} runs")
    check.other = theirs
    return check


def cases(quick: bool) -> list[Check]:
    """Run every case; ``quick`` keeps the whole run under a minute on one core."""
    n = 10 if quick else 20
    checks = []
    if quick:
        checks += _mm1(0.8, "600s", n)
        checks += _mmc(0.75, 4, "240s", n)
        checks += _erlang_example("60d", n)
        checks += _md1(0.7, "300s", n)
        checks += _gated_batches(2.0, "120s", n)
        checks += _random_environment(0.65, "120s", n)
        checks += _fast_switching(0.65, "120s", n)
    else:
        for rho, horizon in ((0.5, "300s"), (0.8, "600s"), (0.95, "3000s")):
            checks += _mm1(rho, horizon, n)
        for rho, horizon in ((0.5, "200s"), (0.75, "300s"), (0.9, "600s"), (0.95, "1200s")):
            checks += _mmc(rho, 4, horizon, n)
        checks += _erlang_example("120d", n)
        for rho, horizon in ((0.5, "300s"), (0.9, "1200s")):
            checks += _md1(rho, horizon, n)
        for load, horizon in ((0.5, "300s"), (2.0, "300s")):
            checks += _gated_batches(load, horizon, n)
        checks += _random_environment(0.65, "600s", n)
        checks += _fast_switching(0.65, "300s", n)
        ciw_check = mgc_against_ciw()
        if ciw_check is not None:
            checks.append(ciw_check)
    checks += _periodic_features(n)
    checks += _stream_windows(n)
    checks += _renewal_windows(n)
    checks += _failed_refreshes(n)
    checks += _stream_outages(n)
    checks += _edge_syncs(n)
    checks += _batch_coverage(n)
    return checks


def verify(quick: bool = False) -> pd.DataFrame:
    """The verification table: one row per check, with ``passed``."""
    checks = cases(quick)
    level = 1 - (1 - FAMILY_CONFIDENCE) / len(checks)
    return pd.DataFrame([c.row(level) for c in checks])
