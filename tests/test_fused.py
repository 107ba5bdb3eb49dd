"""The fused kernels (sim/engine/architectures/fused.py) against the staged path: the same bits.

The staged path (``serve`` then ``Accumulator.add``) is itself checked against the reference
engine request by request (tests/test_reference.py) and against queueing theory
(tests/test_theory.py); the fused kernels must change nothing but time: the same summary, time
series, histograms and per-request outcomes, to the bit, on every bundled scenario and on
generated ones.
"""

from collections import defaultdict

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import sim
from sim.engine import run as engine
from sim.engine.architectures import kinds
from sim.results.metrics import Outcomes
from tests.conftest import SCENARIOS
from tests.test_reference import scenarios as generated_scenarios

pytestmark = pytest.mark.slow

OUTCOME_FIELDS = tuple(Outcomes.__dataclass_fields__)


def _run(scenario, fused: bool, monkeypatch, observe: bool = True):
    """Results, per-request outcomes by architecture, and the architectures the fused kernels
    served at least one chunk of."""
    monkeypatch.setattr(engine, "FUSED", fused)
    served = set()
    original = kinds._Common.fusable

    def fusable(self, chunk, accumulator):
        ok = original(self, chunk, accumulator)
        if ok:
            served.add(self.name)
        return ok

    monkeypatch.setattr(kinds._Common, "fusable", fusable)
    seen = defaultdict(list)
    results = sim.simulate(scenario, observe=(lambda name, out: seen[name].append(out))
                           if observe else None)
    return results, seen, served


def _same_array(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype.kind == "f" or b.dtype.kind == "f":
        return a.shape == b.shape and np.array_equal(a.astype(float), b.astype(float),
                                                     equal_nan=True)
    return np.array_equal(a, b)


def assert_same_bits(staged, fused) -> None:
    """Summary, time series and every histogram identical."""
    a, b = staged.summary, fused.summary
    assert list(a.columns) == list(b.columns)
    for column in a.columns:
        assert a[column].equals(b[column]), column
    assert staged.timeseries.equals(fused.timeseries)
    for arch, histograms in staged.distributions.items():
        for key, histogram in histograms.items():
            assert np.array_equal(histogram.counts, fused.distributions[arch][key].counts), \
                (arch, key)


def assert_same_outcomes(staged, fused) -> None:
    """Every field of every chunk's outcomes identical (a None field stands for a default the
    other path may have written out: all NaN, all False, or nothing expired)."""
    assert staged.keys() == fused.keys()
    for name in staged:
        assert len(staged[name]) == len(fused[name]), name
        for s, f in zip(staged[name], fused[name]):
            for field in OUTCOME_FIELDS:
                x, y = getattr(s, field), getattr(f, field)
                if x is None or y is None:
                    given = y if x is None else x
                    if given is not None:
                        assert not np.any(np.nan_to_num(np.asarray(given, dtype=float))), \
                            (name, field)
                    continue
                assert _same_array(x, y), (name, field)


def _check(scenario, monkeypatch) -> set:
    staged, staged_requests, none = _run(scenario, False, monkeypatch)
    assert not none  # the staged path really ran staged
    fused, fused_requests, served = _run(scenario, True, monkeypatch)
    assert_same_bits(staged, fused)
    assert_same_outcomes(staged_requests, fused_requests)
    # without anyone observing, the kernels write no per-request outcomes: the same numbers
    quiet, _, _ = _run(scenario, True, monkeypatch, observe=False)
    assert_same_bits(staged, quiet)
    return served


# Which architectures of each bundled scenario the fused kernels serve (the others use what
# the kernels do not do: dynamic batching, autoscaling, fallback chains, expiring features,
# request-time features, the edge kind).
FUSED_IN = {
    "ads-ctr": {"online", "streaming"},
    "azure-llm-router": set(),
    "example": {"batch", "online", "streaming"},
    "food-delivery": {"batch", "online", "hybrid"},
    "fragile-streaming": set(),
    "fraud-streaming": {"batch", "online", "streaming"},
    "mobile-ranking": {"cloud", "cloud_int8"},
    "quickstart": {"batch", "online", "streaming", "hybrid"},
    "serving-at-scale": {"batch", "online"},
}


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.yaml")), ids=lambda p: p.stem)
def test_bundled_scenarios_give_the_same_bits(path, monkeypatch):
    monkeypatch.setattr(engine, "REQUESTS_PER_CHUNK", 1 << 14)  # many chunks
    overrides = {"horizon": "26h", "warmup": "1h"}
    scenario = sim.load_scenario(path, overrides)
    if scenario.workload.arrivals.rate > 20:  # a day of every schedule, kept quick
        scenario = sim.load_scenario(path, {**overrides, "workload.arrivals.rate": "20/s"})
    assert _check(scenario, monkeypatch) == FUSED_IN[path.stem]


def test_every_bundled_scenario_is_listed():
    assert {p.stem for p in SCENARIOS.glob("*.yaml")} == set(FUSED_IN)


@given(scenario=generated_scenarios())
@settings(max_examples=15, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
def test_generated_scenarios_give_the_same_bits(scenario, monkeypatch):
    monkeypatch.setattr(engine, "REQUESTS_PER_CHUNK", 1024)
    _check(scenario, monkeypatch)


def test_a_hybrid_whose_chunks_lack_a_part(monkeypatch):
    """Chunks of a few requests, most of them the hybrid's head: some chunks have no online
    request at all, some no stored one; with a network, drift and freshness bounds."""
    monkeypatch.setattr(engine, "REQUESTS_PER_CHUNK", 8)
    scenario = sim.load_scenario(SCENARIOS / "quickstart.yaml", {
        "horizon": "20m", "warmup": "2m", "workload.arrivals.rate": "5/s",
        "architectures.hybrid.head_share": 0.9,
        "slo.freshness": {"batch": "1h", "stream": "1m"},
        "network": {"regions": [{"name": "near", "share": 0.5, "rtt": "10ms"},
                                {"name": "far", "share": 0.5,
                                 "rtt": {"exponential": {"mean": "80ms"}}}]}})
    assert "hybrid" in _check(scenario, monkeypatch)


def test_the_first_pass_takes_a_chunk_without_online_requests():
    """A hybrid chunk whose requests are all in the head hands the first pass no request: it
    must not read the first one (numba checks no bounds, so the Python form is run)."""
    from sim.engine.architectures import fused
    e, f, i = np.empty(0), np.empty(0, np.bool_), np.empty(0, np.int64)
    free = np.zeros(2)
    fused.online_ages.py_func(e, e, e, e, np.inf, free, True, np.zeros(1), np.zeros(1, np.int64),
                              np.zeros(1), fused.NO_STREAM, e, i, e, e, np.zeros(1),
                              np.zeros(1, np.int64), np.zeros(1), e, f, e, e, e)
    assert np.array_equal(free, np.zeros(2))


def test_a_broken_kernel_is_caught(monkeypatch):
    """The comparison can fail: a fused kernel that scores every prediction a hair better is
    told apart from the staged path."""
    from sim.engine.architectures import fused
    scenario = sim.load_scenario(SCENARIOS / "quickstart.yaml",
                                 {"horizon": "2h", "warmup": "10m"})
    staged, _, _ = _run(scenario, False, monkeypatch, observe=False)
    original = fused.QualityPlan.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.missing -= 1e-12

    monkeypatch.setattr(fused.QualityPlan, "__init__", init)
    broken, _, served = _run(scenario, True, monkeypatch, observe=False)
    assert served
    with pytest.raises(AssertionError):
        assert_same_bits(staged, broken)
