"""Arrivals, popularity and entities: the generators against their laws."""

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy import stats

from sim.engine.rng import Streams
from sim.scenario import ScenarioError, scenario_from_dict
from sim.engine.workload import Population, RateProfile, RequestSource, zipf_slots
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
# A duration is 0 or at least a nanosecond (the scenario refuses anything in between).
bursts = st.lists(st.fixed_dictionaries({"at": st.just(0.0) | st.floats(1e-9, 3 * DAY), "duration":
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


# --------------------------------------------------------------------------------------------
# Where new entities enter the popularity ranking (workload.new_entities)
# --------------------------------------------------------------------------------------------

def growing(new_entities=None, entities=50_000, per_day=1000, exponent=1.0):
    """A quickstart-like workload: 50,000 users, 1,000 sign-ups a day, Zipf 1.0."""
    raw = dict(BASE, architectures={"b": {"kind": "batch", "every": "1d",
                                          "throughput": "1000/s"}})
    raw["workload"] = {"entities": entities, "new_entities_per_day": per_day,
                       "popularity": {"zipf": exponent}, "arrivals": {"rate": "20/s"}}
    if new_entities is not None:
        raw["workload"]["new_entities"] = new_entities
    return scenario_from_dict(raw).workload


def new_entity_requests(population, t_s, seed=11, young_s=math.inf):
    """Requests at ``t_s`` about entities created during the run (less than ``young_s`` before
    the request): the count drawn, and the expected count with its binomial standard error from
    the Zipf probabilities of the slots the population gave them. A request at t picks slot k
    with probability w_k / (the sum of w_j over the entities existing at t), w_k = (k+1)^-s."""
    slots = population.sample(np.random.default_rng(seed), t_s)
    created = population.created_at_s(slots)
    drawn = int(np.count_nonzero((created > -np.inf) & (t_s - created < young_s)))
    every = np.arange(population.n_slots)
    born = population.created_at_s(every)
    weight = (every + 1.0) ** -population.popularity.exponent
    new = np.flatnonzero(born > -np.inf)
    order = new[np.argsort(born[new])]
    times = born[order]
    cumulative = np.concatenate([[0.0], np.cumsum(weight[order])])
    existing_new = cumulative[np.searchsorted(times, t_s, side="right")]
    young_new = existing_new - cumulative[np.searchsorted(times, t_s - young_s, side="right")]
    q = young_new / (weight[born == -np.inf].sum() + existing_new)
    return drawn, float(q.sum()), math.sqrt(float(np.sum(q * (1 - q))))


def test_new_entities_enter_at_the_tail_by_default():
    w = growing()
    assert w.new_entities.enter == "tail" and w.new_entities.share is None
    population = Population(w, 3 * DAY, Streams(7))
    created = population.created_at_s(np.arange(population.n_slots))
    # the new entities hold exactly the last slots, below every entity present at the start
    assert np.all(created[:50_000] == -np.inf) and np.all(created[50_000:] > 0)
    t = np.sort(np.random.default_rng(2).uniform(DAY, 3 * DAY, 400_000))
    drawn, expected, se = new_entity_requests(population, t)
    assert abs(drawn - expected) < 4 * se, (drawn, expected, se)
    assert expected / t.size < 0.005  # sign-ups make a small share of the requests


@pytest.mark.parametrize("rule", [{"enter": "random"}, {"first_week_share": 0.05},
                                  {"first_day_share": 0.01}])
def test_the_share_of_requests_to_new_entities_follows_their_slots(rule):
    population = Population(growing(rule), 3 * DAY, Streams(4))
    t = np.sort(np.random.default_rng(3).uniform(DAY, 3 * DAY, 300_000))
    drawn, expected, se = new_entity_requests(population, t)
    assert abs(drawn - expected) < 4 * se, (drawn, expected, se)


def test_random_entry_keeps_the_old_draws():
    # enter: random is the rule before workload.new_entities existed, draw for draw
    w, end_s = growing({"enter": "random"}), 3 * DAY
    population = Population(w, end_s, Streams(9))
    rng = Streams(9)["entities"]
    n_new = int(rng.poisson(1000 / DAY * end_s))
    created = np.sort(rng.random(n_new) * end_s)
    slots = np.sort(rng.choice(50_000 + n_new, size=n_new, replace=False))
    old = np.full(50_000 + n_new, -np.inf)
    old[slots] = created[rng.permutation(n_new)]
    assert population.n_slots == 50_000 + n_new
    assert np.array_equal(population.created_at_s(np.arange(population.n_slots)), old)
    assert np.count_nonzero(slots < 500) > 0  # some sign-ups rank among the top 1%


@pytest.mark.parametrize("rule", [None, {"enter": "random"}, {"first_week_share": 0.05}])
def test_new_entities_are_the_same_for_the_same_seed(rule):
    w = growing(rule)
    t = np.sort(np.random.default_rng(0).uniform(0, 3 * DAY, 20_000))
    runs = []
    for seed in (5, 5, 6):
        population = Population(w, 3 * DAY, Streams(seed))
        runs.append((population.created_at_s(np.arange(population.n_slots)),
                     population.sample(np.random.default_rng(seed), t)))
    assert all(np.array_equal(a, b) for a, b in zip(runs[0], runs[1]))
    assert not np.array_equal(runs[0][0], runs[2][0])


def test_a_first_week_share_is_what_a_week_of_new_entities_makes():
    w = growing({"first_week_share": 0.05}, entities=20_000, per_day=500)
    population = Population(w, 10 * DAY, Streams(3))
    assert 0 < population.band_start < 20_000  # neither the top nor the tail
    t = np.sort(np.random.default_rng(1).uniform(7 * DAY, 10 * DAY, 300_000))
    drawn, expected, se = new_entity_requests(population, t, young_s=7 * DAY)
    assert abs(drawn - expected) < 4 * se, (drawn, expected, se)
    # the band is placed for a week of new entities alone; older ones add a little mass
    assert expected / t.size == pytest.approx(0.05, rel=0.1)


def test_a_share_below_the_tails_is_the_tail():
    w = growing({"first_day_share": 1e-6})
    population = Population(w, 2 * DAY, Streams(1))
    assert population.band_start == 50_000


@pytest.mark.parametrize("rule, changes, message", [
    ({"enter": "top"}, {}, "workload.new_entities.enter: expected 'tail' or 'random' (got 'top')"),
    ({"first_week_share": 1.5}, {}, "workload.new_entities.first_week_share: must be < 1"),
    ({"first_week_share": 0}, {}, "workload.new_entities.first_week_share: must be > 0"),
    ({"enter": "tail", "first_week_share": 0.1}, {}, "workload.new_entities: give enter or "
                                                     "first_week_share, not both"),
    ({"first_day_share": 0.1, "first_week_share": 0.1}, {},
     "workload.new_entities: give first_day_share or first_week_share, not both"),
    ({"first_week_share": 0.1}, {"popularity": "uniform"},
     "workload: new_entities.first_week_share: needs popularity: {zipf: EXPONENT}"),
    ({"first_week_share": 0.1}, {"new_entities_per_day": 0},
     "workload: new_entities.first_week_share: needs new_entities_per_day > 0"),
    ({"first_day_share": 0.7}, {}, "workload: new_entities.first_day_share: expected at most "
                                   "0.656, what 1,000 new entities make at the most popular "
                                   "ranks among 50,000 entities with zipf 1 (got 0.7)"),
])
def test_bad_new_entity_rules_name_the_key(rule, changes, message):
    raw = dict(BASE, architectures={"b": {"kind": "batch", "every": "1d",
                                          "throughput": "1000/s"}})
    raw["workload"] = {"entities": 50_000, "new_entities_per_day": 1000,
                       "popularity": {"zipf": 1.0}, "arrivals": {"rate": "20/s"},
                       "new_entities": rule, **changes}
    with pytest.raises(ScenarioError) as info:
        scenario_from_dict(raw)
    assert any(p.startswith(f"<scenario>: {message}") for p in info.value.problems), \
        info.value.problems


@pytest.mark.parametrize("rule", [None, {"enter": "random"}, {"first_week_share": 0.02}])
def test_the_new_entity_rule_survives_the_resolved_scenario(rule):
    w = growing(rule)
    raw = dict(BASE, architectures={"b": {"kind": "batch", "every": "1d",
                                          "throughput": "1000/s"}})
    resolved = scenario_from_dict(dict(raw, workload=w.model_dump(mode="json")))
    assert resolved.workload.new_entities == w.new_entities
    assert w.model_dump(mode="json")["new_entities"] == (rule or {"enter": "tail"})
