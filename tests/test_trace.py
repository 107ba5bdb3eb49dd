"""Replayed request logs, and the shapes of generated traffic: profiles, bursts and MMPP.

A replay must give back the log's own times (shifted to start at 0, divided by the speed-up),
every request of it, in any chunking; bad rows are reported by line. The generated shapes are
checked against their laws with chi-square tests and confidence intervals.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from sim.engine import run as engine
from sim.engine.run import Run
from sim.inputs.logs import read_log
from sim.engine.rng import Streams
from sim.scenario import ScenarioError, scenario_from_dict
from sim.engine.workload import MarkovModulation, Population, RateProfile, RequestSource
from tests.conftest import BASE, ci_half_width, online
from tests.test_reference import assert_same

PREDSIM = Path(sys.executable).parent / "predsim"
BATCH = {"kind": "batch", "every": "10m", "throughput": "1000/s"}


def write_log(folder: Path, n=3000, span_s=6 * 3600.0, seed=0, iso=False, name="log.csv",
              ids=400, ties=True) -> tuple[Path, pd.DataFrame]:
    """A log in file order (not sorted), with Zipf-like ids and, if ``ties``, equal times."""
    rng = np.random.default_rng(seed)
    t = 1_700_000_000.0 + np.sort(rng.random(n)) * span_s
    if ties:
        t[::7] = np.round(t[::7])  # some requests share a second with another
    t = rng.permutation(t)
    entity = [f"user{k}" for k in np.minimum(rng.zipf(1.6, n), ids)]
    frame = pd.DataFrame({"ts": t, "who": entity})
    if iso:
        frame["ts"] = pd.to_datetime(frame["ts"], unit="s").dt.strftime("%Y-%m-%dT%H:%M:%S.%f")
    path = folder / name
    frame.to_csv(path, index=False)
    return path, frame


def trace_scenario(folder: Path, trace: dict | str, architectures=None, **changes):
    raw = copy.deepcopy(BASE)
    raw["workload"] = {"arrivals": {"trace": trace}}
    raw["architectures"] = architectures or {"b": BATCH}
    return scenario_from_dict(raw, base_dir=folder, overrides=changes)


def replayed(scenario) -> tuple[np.ndarray, np.ndarray, Run]:
    run = Run(scenario)
    chunks = [run.source.chunk(s, e) for s, e in run.chunk_bounds()]
    for (s, e), c in zip(run.chunk_bounds(), chunks):
        assert np.all((c.t_s >= s) & (c.t_s < e))
    return np.concatenate([c.t_s for c in chunks]), np.concatenate([c.slot for c in chunks]), run


def log_times_s(frame: pd.DataFrame, iso: bool) -> np.ndarray:
    """The log's times since its first request, computed independently of sim.inputs.fit."""
    if iso:
        ns = pd.to_datetime(frame["ts"]).to_numpy("datetime64[ns]").astype(np.int64)
        return np.sort((ns - ns.min()) / 1e9)
    raw = frame["ts"].to_numpy(float)
    return np.sort(raw - raw.min())


# --------------------------------------------------------------------------------------------
# Replay
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("speedup", [1, 2, 3])
@pytest.mark.parametrize("iso", [False, True], ids=["epoch", "iso"])
def test_replay_reproduces_the_log_times_exactly(tmp_path, monkeypatch, speedup, iso):
    monkeypatch.setattr(engine, "REQUESTS_PER_CHUNK", 256)  # many chunks
    path, frame = write_log(tmp_path, iso=iso)
    span = log_times_s(frame, iso)[-1] / speedup
    s = trace_scenario(tmp_path, {"file": path.name, "timestamp_column": "ts",
                                  "entity_column": "who", "speedup": speedup},
                       horizon=span - 599, warmup="10m")  # past the last request
    t, slot, run = replayed(s)
    expected = log_times_s(frame, iso)
    assert np.array_equal(t, expected / speedup)  # every request, bit for bit
    period_s = s.workload.arrivals.trace.period_s / speedup
    assert s.workload.arrivals.rate == pytest.approx(len(frame) / period_s, rel=1e-12)
    # each request is about its own entity: the slot's id is the log's id, in time order
    order = np.argsort(frame["ts"].to_numpy() if not iso else pd.to_datetime(frame["ts"]),
                       kind="stable")
    ids = s.workload.arrivals.trace.log.ids
    assert list(ids[slot]) == list(frame["who"].to_numpy()[order])


def test_loop_repeats_the_log_to_fill_the_horizon(tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "REQUESTS_PER_CHUNK", 500)
    path, frame = write_log(tmp_path, n=1000, span_s=3600.0)
    once = log_times_s(frame, iso=False)
    for loop, period in ((True, once[-1] * len(once) / (len(once) - 1)), ("2h", 7200.0)):
        s = trace_scenario(tmp_path, {"file": path.name, "timestamp_column": "ts",
                                      "entity_column": "who", "speedup": 2, "loop": loop},
                           horizon="5h", warmup="0s")
        t, slot, _ = replayed(s)
        replay_period = period / 2
        k = np.floor(t / replay_period).astype(int)
        last = int(np.ceil(5 * 3600 / replay_period)) - 1  # the loop cut by the end of the run
        assert k.max() == last
        for i in range(last):  # every whole loop is the log again, request for request
            assert np.array_equal(t[k == i], once / 2 + i * replay_period if i else once / 2)
            assert np.array_equal(slot[k == i], slot[k == 0])
        assert len(t) == np.sum(once / 2 + last * replay_period < 5 * 3600) + last * 1000


def test_a_log_shorter_than_the_run_must_loop(tmp_path):
    path, _ = write_log(tmp_path, n=200, span_s=3600.0)
    with pytest.raises(ScenarioError) as info:
        trace_scenario(tmp_path, {"file": str(path), "timestamp_column": "ts",
                                  "entity_column": "who"}, horizon="2h")
    (line,) = info.value.problems
    assert "workload.arrivals.trace" in line and "loop: true" in line


def test_entities_rank_by_requests_and_are_created_at_their_first_request(tmp_path):
    path = tmp_path / "tiny.csv"
    path.write_text("timestamp,entity_id\n0,a\n10,b\n20,b\n30,c\n40,c\n50,c\n60,a\n7200,a\n")
    s = trace_scenario(tmp_path, "tiny.csv", horizon="1h", warmup="0s",
                       **{"workload.entities": 5})
    run = Run(s)
    pop = run.population
    assert list(s.workload.arrivals.trace.log.ids) == ["a", "c", "b"]  # a, c: 3 each; a first
    assert pop.created_at_s(np.arange(5)).tolist() == [0, 30, 10, -np.inf, -np.inf]
    assert [pop.count_at(t) for t in (-1, 0, 15, 30, 1e6)] == [2, 3, 4, 5, 5]
    assert pop.count_at(15, head_slots=2) == 1 and pop.count_at(15, head_slots=4) == 3


def test_rate_replays_the_log_at_that_mean_rate(tmp_path):
    path, frame = write_log(tmp_path, n=1000)
    trace = {"file": path.name, "timestamp_column": "ts", "entity_column": "who", "loop": True}
    base = trace_scenario(tmp_path, trace).workload.arrivals
    faster = trace_scenario(tmp_path, trace, **{"workload.arrivals.rate":
                                                base.rate * 4}).workload.arrivals
    assert faster.replay_speedup == pytest.approx(4, rel=1e-12)
    with pytest.raises(ScenarioError, match="not both"):
        trace_scenario(tmp_path, dict(trace, speedup=2), **{"workload.arrivals.rate": "5/s"})


def test_the_resolved_scenario_reloads_from_anywhere(tmp_path, monkeypatch):
    path, _ = write_log(tmp_path, n=500)
    s = trace_scenario(tmp_path, {"file": path.name, "timestamp_column": "ts",
                                  "entity_column": "who", "speedup": 2, "loop": True})
    monkeypatch.chdir(tmp_path.parent)
    again = scenario_from_dict(s.to_yaml_dict())
    assert again.workload.arrivals.replay_speedup == pytest.approx(2, rel=1e-12)
    assert again.workload.entities == s.workload.entities
    assert "pattern" not in s.to_yaml_dict()["workload"]["arrivals"]


@pytest.mark.parametrize("key, value", [("workload.popularity", {"zipf": 1.1}),
                                        ("workload.new_entities_per_day", 10),
                                        ("workload.arrivals.pattern", "diurnal"),
                                        ("workload.arrivals.bursts", [{"at": 0, "duration": 1,
                                                                       "multiplier": 2}]),
                                        ("workload.entities", 3)])
def test_what_the_log_decides_cannot_also_be_given(tmp_path, key, value):
    path, _ = write_log(tmp_path, n=500)
    with pytest.raises(ScenarioError) as info:
        trace_scenario(tmp_path, {"file": path.name, "timestamp_column": "ts",
                                  "entity_column": "who", "loop": True}, **{key: value})
    assert any(p.startswith("<scenario>: workload") for p in info.value.problems)


BAD_LOG = ("timestamp,entity_id\n"
           "2024-05-01T10:00:00,a\n"      # line 2
           "2024-05-01T10:00:05,b\n"      # line 3
           "yesterday,c\n"                # line 4: not a time
           "\n"                           # line 5: blank, not a row
           "2024-05-01T10:00:09,\n"       # line 6: no entity
           "2024-05-01T10:00:09+02:00,d\n")  # line 7: an offset unlike the others


def test_bad_rows_are_reported_with_their_lines(tmp_path):
    (tmp_path / "bad.csv").write_text(BAD_LOG)
    with pytest.raises(ScenarioError) as info:
        trace_scenario(tmp_path, "bad.csv")
    (line,) = info.value.problems
    assert line.startswith("<scenario>: workload.arrivals.trace: ")
    for n in (4, 6, 7):
        assert f"bad.csv: line {n}:" in line
    assert "line 5" not in line and "line 2" not in line


@pytest.mark.parametrize("command", [["validate", "scenario.yaml"],
                                     ["workload", "fit", "bad.csv"]])
def test_bad_rows_exit_2_without_a_traceback(tmp_path, command):
    (tmp_path / "bad.csv").write_text(BAD_LOG)
    raw = dict(copy.deepcopy(BASE), architectures={"b": BATCH})
    raw["workload"] = {"arrivals": {"trace": "bad.csv"}}
    (tmp_path / "scenario.yaml").write_text(yaml.safe_dump(raw))
    result = subprocess.run([str(PREDSIM), *command], cwd=tmp_path, capture_output=True,
                            text=True)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert all(f"line {n}" in result.stderr for n in (4, 6, 7)), result.stderr


# -- logs that name no entities (timestamps only, as public inference traces) --------------------

def _rate(text: str) -> float:
    from sim.scenario import _rate as parse_rate
    return parse_rate(text)


def write_times_only(folder: Path, n=3000, span_s=2 * 3600.0, seed=1, sizes=True) -> Path:
    rng = np.random.default_rng(seed)
    t = pd.Timestamp("2023-11-16 18:15") + pd.to_timedelta(np.sort(rng.random(n)) * span_s,
                                                           unit="s")
    frame = pd.DataFrame({"TIMESTAMP": t.strftime("%Y-%m-%d %H:%M:%S.%f")})
    if sizes:
        frame["ContextTokens"] = rng.integers(10, 4000, n)
    path = folder / "times.csv"
    frame.to_csv(path, index=False)
    return path


def test_a_log_without_ids_replays_its_times_with_entities_from_the_popularity(tmp_path,
                                                                               monkeypatch):
    monkeypatch.setattr(engine, "REQUESTS_PER_CHUNK", 256)
    path = write_times_only(tmp_path)
    log = read_log(path)  # TIMESTAMP found whatever its case; no entity column
    assert not log.has_entities and log.n_entities == 0
    s = trace_scenario(tmp_path, path.name, horizon="100m", warmup="10m",
                       **{"workload.entities": 5000, "workload.popularity": {"zipf": 1.1}})
    t, slot, run = replayed(s)
    assert np.array_equal(t, log.times_s[log.times_s < s.end_s])  # the log's own times
    assert slot.min() >= 0 and slot.max() < 5000
    # entities drawn from the Zipf popularity: slot 0's share is 1 / H(5000, 1.1), binomial
    p0 = 1 / np.sum(np.arange(1, 5001) ** -1.1)
    share = np.mean(slot == 0)
    assert abs(share - p0) < 4 * np.sqrt(p0 * (1 - p0) / slot.size)
    again, _, _ = replayed(s)
    assert np.array_equal(again, t)


def test_a_log_without_ids_needs_entities_and_an_asked_for_column_must_exist(tmp_path):
    path = write_times_only(tmp_path)
    with pytest.raises(ScenarioError, match="entities is required: the log times.csv names no "
                                            "entities"):
        trace_scenario(tmp_path, path.name)
    with pytest.raises(ScenarioError, match="no column 'who'"):
        trace_scenario(tmp_path, {"file": path.name, "entity_column": "who"},
                       **{"workload.entities": 10})


def test_workload_fit_of_a_log_without_ids_gives_the_arrivals_and_says_so(tmp_path):
    path = write_times_only(tmp_path)
    result = subprocess.run([str(PREDSIM), "workload", "fit", path.name, "--size-column",
                             "ContextTokens"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "3,000 requests (no entity ids)" in out and "the log names none" in out
    assert "Sizes (ContextTokens): mean" in out
    section = yaml.safe_load(out)["workload"]
    assert set(section) == {"arrivals"}
    assert _rate(section["arrivals"]["rate"]) == pytest.approx(3000 / 7200, rel=0.01)
    missing = subprocess.run([str(PREDSIM), "workload", "fit", path.name, "--entity-column",
                              "user"], cwd=tmp_path, capture_output=True, text=True)
    assert missing.returncode == 2 and "no column 'user'" in missing.stderr
    assert "--entity-column" in missing.stderr and "Traceback" not in missing.stderr


def test_a_bad_size_is_reported_by_line(tmp_path):
    (tmp_path / "sizes.csv").write_text("timestamp,size\n1,10\n2,-3\n3,lots\n4,7\n")
    with pytest.raises(ScenarioError) as info:
        trace_scenario(tmp_path, "sizes.csv", **{"workload.entities": 10})
    (line,) = info.value.problems
    assert "line 3: size: expected a size of 0 or more" in line and "line 4" in line


def test_parquet_logs_read_like_csv(tmp_path):
    path, frame = write_log(tmp_path, n=800)
    frame.to_parquet(tmp_path / "log.parquet")
    a = read_log(path, "ts", "who")
    b = read_log(tmp_path / "log.parquet", "ts", "who")
    assert np.array_equal(a.times_s, b.times_s) and np.array_equal(a.ids, b.ids)


def test_fast_path_equals_the_reference_engine_on_a_replayed_log(tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "REQUESTS_PER_CHUNK", 512)
    path, _ = write_log(tmp_path, n=2500, span_s=1800.0, ids=300)
    streaming = online(2, {"lognormal": {"median": "20ms", "p99": "200ms"}}, timeout="150ms",
                       features_every="5m", duration="30s")
    streaming.update(kind="streaming")
    streaming["features"]["stream"] = {"lag": {"exponential": {"mean": "2s"}}, "window": "30s"}
    hybrid = online(1, {"percentiles": {"p50": "10ms", "p95": "40ms", "p99": "90ms"}})
    hybrid.update(kind="hybrid", head_share=0.2, every="7m", throughput="100/s",
                  lookup={"exponential": {"mean": "2ms"}})
    scenario = trace_scenario(
        tmp_path, {"file": path.name, "timestamp_column": "ts", "entity_column": "who",
                   "speedup": 1.5, "loop": True},
        architectures={"batch": dict(BATCH, every="6m"), "streaming": streaming,
                       "hybrid": hybrid, "online": online(1, timeout="100ms")},
        horizon="40m", warmup="5m",
        **{"workload.entities": 400, "training": {"every": "9m", "duration": "1m"},
           "quality.feature_staleness": {"exponential": {"half_life": "5m", "floor": 0.03}}})
    assert_same(scenario)


# --------------------------------------------------------------------------------------------
# Traffic shapes: hourly profiles, bursts, MMPP
# --------------------------------------------------------------------------------------------

def generated_workload(**arrivals):
    raw = dict(copy.deepcopy(BASE), architectures={"b": BATCH})
    raw["workload"] = {"entities": 100, "arrivals": {"rate": "2/s", **arrivals}}
    return scenario_from_dict(raw).workload


def arrival_times(w, end_s, seed=0, chunk_s=3600.0):
    streams = Streams(seed)
    source = RequestSource(w, Population(w, end_s, streams), streams)
    t = np.concatenate([source.chunk(s, min(s + chunk_s, end_s)).t_s
                        for s in np.arange(0, end_s, chunk_s)])
    assert np.all(np.diff(t) >= 0)
    return t, source


def test_an_hourly_profile_sets_the_rate_of_each_hour():
    profile = [1, 2, 3, 4, 5, 6] * 4  # scaled to mean 1 on load
    w = generated_workload(profile=profile)
    rate = RateProfile(w.arrivals)
    assert rate.peak_per_s == pytest.approx(2 * 6 / 3.5)
    t, _ = arrival_times(w, 3 * 86400.0)
    counts = np.bincount((t // 3600).astype(int), minlength=72)
    expected = 2 * 3600 * np.tile(np.array(profile) / 3.5, 3)
    assert stats.chi2.sf(np.sum((counts - expected) ** 2 / expected), 72) > 0.001


@pytest.mark.parametrize("bad, message", [({"profile": [1] * 23}, "24 hour-of-day or 168"),
                                          ({"profile": [0] * 24}, "must not all be 0"),
                                          ({"profile": [1] * 24, "pattern": "diurnal"},
                                           "not both")])
def test_bad_profiles_are_rejected(bad, message):
    with pytest.raises(ScenarioError, match=message):
        generated_workload(**bad)


def test_bursts_raise_the_rate_only_inside_their_window():
    bursts = [{"at": "2h", "duration": "30m", "multiplier": 5},
              {"at": "140m", "duration": "30m", "multiplier": 2}]  # overlapping: x10
    w = generated_workload(bursts=bursts)
    profile = RateProfile(w.arrivals)
    assert profile.peak_per_s == pytest.approx(2 * 10)  # the thinning bound covers the overlap
    t, _ = arrival_times(w, 4 * 3600.0)
    per_minute = np.bincount((t // 60).astype(int), minlength=240)
    minutes = np.arange(240) * 60.0
    factor = np.select([(minutes >= 7200) & (minutes < 8400), (minutes >= 8400) & (minutes < 9000),
                        (minutes >= 9000) & (minutes < 10200)], [5, 10, 2], 1)
    expected = 2 * 60 * factor
    chi2 = np.sum((per_minute - expected) ** 2 / expected)
    assert stats.chi2.sf(chi2, 240) > 0.001, chi2
    outside = factor == 1
    assert abs(per_minute[outside].sum() - expected[outside].sum()) < \
        4 * np.sqrt(expected[outside].sum())


def test_mmpp_long_run_rate_is_the_stationary_mix():
    mmpp = {"multipliers": [1, 6, 0.5], "mean_sojourn": ["20m", "5m", "1h"]}
    w = generated_workload(mmpp=mmpp)
    pi = np.array([20, 5, 60]) / 85
    mix = float(pi @ np.array([1, 6, 0.5]))
    t, source = arrival_times(w, 40 * 86400.0, seed=3, chunk_s=6 * 3600.0)
    # the long-run rate: daily counts as batch means (a day holds many sojourns)
    daily = np.bincount((t // 86400).astype(int), minlength=40) / 86400.0
    assert abs(daily.mean() - 2.0) < ci_half_width(daily)  # rate x (mix / mix) = the mean rate
    # the multipliers are the given ones over the stationary mix, and the time shares are pi
    assert source.modulation.multipliers == pytest.approx(np.array([1, 6, 0.5]) / mix)
    starts, states = source.modulation.path(40 * 86400.0)
    lengths = np.diff(np.append(starts, 40 * 86400.0))
    batches = np.array_split(np.arange(len(states)), 40)
    shares = np.array([[lengths[b][states[b] == i].sum() / lengths[b].sum() for i in range(3)]
                       for b in batches])
    for i in range(3):
        assert abs(shares[:, i].mean() - pi[i]) < ci_half_width(shares[:, i]), i
    # given the path, arrivals in each state come at that state's rate (Poisson)
    visit = np.searchsorted(starts, t, side="right") - 1
    for i in range(3):
        exposure = lengths[states == i].sum() * 2.0 * source.modulation.multipliers[i]
        count = np.count_nonzero(states[visit] == i)
        assert abs(count - exposure) < 4 * np.sqrt(exposure), i


def test_the_mmpp_path_does_not_depend_on_chunking():
    w = generated_workload(mmpp={"multipliers": [1, 3], "mean_sojourn": ["1m", "1m"]})
    a, _ = arrival_times(w, 6 * 3600.0, seed=1, chunk_s=3600.0)
    b = MarkovModulation(w.arrivals.mmpp, Streams(1)["mmpp"])
    c = MarkovModulation(w.arrivals.mmpp, Streams(1)["mmpp"])
    b(np.array([6 * 3600.0]))
    for t in np.linspace(0, 6 * 3600.0, 50):
        c(np.array([t]))
    assert np.array_equal(b.path(6 * 3600.0)[0], c.path(6 * 3600.0)[0])
    assert a.size > 0


def test_the_schema_accepts_the_new_keys_and_rejects_their_misspellings():
    schema = json.loads((Path(__file__).parents[1] / "schema" / "scenario.schema.json")
                        .read_text())
    validator = jsonschema.Draft202012Validator(schema)
    good = dict(copy.deepcopy(BASE), architectures={"o": online(service={"percentiles": {
        "p50": "12ms", "p99.9": "80ms"}})})
    good["workload"]["arrivals"].update(
        profile=[1] * 24, bursts=[{"at": "1h", "duration": "10m", "multiplier": 3}],
        mmpp={"multipliers": [1, 2], "mean_sojourn": ["1m", "30s"]})
    assert list(validator.iter_errors(good)) == []
    for arrivals in ({"trace": "log.csv"}, {"trace": {"file": "log.csv", "speedup": 2,
                                                      "loop": "7d"}}):
        assert validator.is_valid(dict(good, workload={"arrivals": arrivals}))
    for bad in ({"trace": {"file": "log.csv", "sped": 2}},
                {"rate": "1/s", "bursts": [{"at": "1h", "multiplier": 3}]},
                {"rate": "1/s", "mmpp": {"multipliers": [1, 2]}}):
        assert not validator.is_valid(dict(good, workload={"entities": 5, "arrivals": bad}))
    service = good["architectures"]["o"]["serving"]
    service["service_time"] = {"percentiles": {"p50": "12ms", "q99": "80ms"}}
    assert not validator.is_valid(good)
