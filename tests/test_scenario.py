"""Loading and validating scenarios (sim/scenario/): defaults, overrides and error messages."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from sim.distributions import Distribution
from sim.scenario import Scenario, ScenarioError, load_scenario, scenario_from_dict

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "scenarios" / "example.yaml"
QUICKSTART = ROOT / "scenarios" / "quickstart.yaml"


@pytest.fixture
def raw() -> dict:
    """The example scenario as plain data, a fresh copy for each test."""
    return yaml.safe_load(EXAMPLE.read_text())


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def problems_of(excinfo) -> list[str]:
    problems = excinfo.value.problems
    assert isinstance(problems, list) and problems
    assert all(isinstance(p, str) and "\n" not in p for p in problems)
    return problems


def delete(data: dict, dotted: str) -> None:
    *parents, last = dotted.split(".")
    node = data
    for part in parents:
        node = node[part]
    del node[last]


# --------------------------------------------------------------------------------------------
# The bundled scenarios
# --------------------------------------------------------------------------------------------


def test_example_loads_with_the_documented_values():
    s = load_scenario(EXAMPLE)
    assert isinstance(s, Scenario)
    assert s.name == "quickstart"
    assert s.horizon == 3 * 86400 and s.warmup == 86400 and s.seed == 7
    assert s.slo.latency_p99 == pytest.approx(0.1)
    assert s.workload.entities == 200_000
    assert s.workload.new_entities_per_day == 2000
    assert s.workload.popularity.kind == "zipf"
    assert s.workload.popularity.exponent == pytest.approx(1.1)
    assert s.workload.arrivals.rate == pytest.approx(50.0)
    assert s.workload.arrivals.pattern == "diurnal"
    assert s.quality.fresh == pytest.approx(0.05) and s.quality.fallback == pytest.approx(0.02)
    assert s.quality.feature_staleness.exponential.half_life == 6 * 3600
    assert s.training.every == 7 * 86400 and s.training.deploy_delay == 900
    assert [d.at for d in s.drift] == [2 * 86400]
    assert s.costs.replica_hour == pytest.approx(0.5)
    assert s.business.latency_penalty.per_100ms == pytest.approx(0.01)
    assert list(s.architectures) == ["batch", "online", "streaming"]
    assert {n: a.kind for n, a in s.architectures.items()} == {
        "batch": "batch", "online": "online", "streaming": "streaming"}
    batch = s.architectures["batch"]
    assert batch.every == 86400 and batch.throughput == pytest.approx(20_000)
    online = s.architectures["online"]
    assert online.serving.replicas == 2 and online.serving.timeout == pytest.approx(0.3)
    assert online.features.batch.duration == 1800
    streaming = s.architectures["streaming"]
    assert streaming.features.stream.window == Distribution.constant(60.0)
    assert streaming.features.stream.lag.mean == pytest.approx(10.0)


def test_quickstart_loads():
    s = load_scenario(QUICKSTART)
    assert set(s.architectures) >= {"batch", "online", "streaming"}
    assert s.horizon > 0


def test_load_accepts_str_paths_and_seed_argument():
    s = load_scenario(str(EXAMPLE), seed=123)
    assert s.seed == 123


def test_scenario_from_dict_matches_load_scenario(raw):
    assert scenario_from_dict(raw) == load_scenario(EXAMPLE)


# --------------------------------------------------------------------------------------------
# Optional sections
# --------------------------------------------------------------------------------------------

OPTIONAL = [
    "drift", "business", "slo", "training", "costs",
    "quality.feature_staleness", "quality.model_staleness",
    "workload.new_entities_per_day",
    "architectures.online.feature_lookup",
    "architectures.batch.lookup",
    "architectures.online.serving.timeout",
]


@pytest.mark.parametrize("dotted", OPTIONAL)
def test_each_optional_section_can_be_left_out(raw, dotted):
    delete(raw, dotted)
    s = scenario_from_dict(raw)
    assert isinstance(s, Scenario)


def test_all_optional_sections_left_out_at_once_give_neutral_defaults(raw, tmp_path):
    for dotted in OPTIONAL:
        delete(raw, dotted)
    s = load_scenario(write_yaml(tmp_path / "minimal.yaml", raw))
    assert s.drift == []
    assert s.training is None
    assert s.slo.latency_p99 is None
    assert s.costs.replica_hour == 0 and s.costs.batch_node_hour == 0
    assert s.costs.stream_node_hour == 0 and s.costs.training_run == 0
    assert s.business.value_per_outcome == 0
    assert s.business.latency_penalty.per_100ms == 0
    assert s.quality.feature_staleness is None and s.quality.model_staleness is None
    assert s.workload.new_entities_per_day == 0
    assert s.architectures["online"].feature_lookup.mean == 0
    assert s.architectures["batch"].lookup.mean == 0
    assert s.architectures["online"].serving.timeout is None


def test_a_uniform_popularity_and_constant_arrivals_are_accepted(raw):
    raw["workload"]["popularity"] = "uniform"
    raw["workload"]["arrivals"] = {"rate": "4.3M/day"}
    s = scenario_from_dict(raw)
    assert s.workload.popularity.kind == "uniform"
    assert s.workload.arrivals.pattern == "constant"
    assert s.workload.arrivals.rate == pytest.approx(4.3e6 / 86400)


@pytest.mark.parametrize("dist, mean", [
    (0, 0.0),
    ("5ms", 0.005),
    ({"constant": "20ms"}, 0.02),
    ({"exponential": {"mean": "10ms"}}, 0.01),
    ({"gamma": {"mean": "15ms", "cv": 0.5}}, 0.015),
])
def test_every_distribution_form_is_accepted(raw, dist, mean):
    raw["architectures"]["online"]["serving"]["service_time"] = dist
    s = scenario_from_dict(raw)
    assert s.architectures["online"].serving.service_time.mean == pytest.approx(mean)


# --------------------------------------------------------------------------------------------
# Overrides
# --------------------------------------------------------------------------------------------


def test_dict_overrides(raw):
    s = scenario_from_dict(raw, overrides={"architectures.online.serving.replicas": 8,
                                           "horizon": "2h", "workload.arrivals.rate": "3000/min"})
    assert s.architectures["online"].serving.replicas == 8
    assert s.horizon == 7200
    assert s.workload.arrivals.rate == pytest.approx(50.0)


def test_overrides_do_not_modify_the_callers_data(raw):
    before = copy.deepcopy(raw)
    scenario_from_dict(raw, overrides=["horizon=2h", "slo.latency_p99=50ms"])
    assert raw == before


def test_overrides_do_not_modify_the_callers_override_values(raw):
    # a section given as a value, then a dotted key inside it: the caller's section is untouched
    section = copy.deepcopy(raw["architectures"]["online"])
    before = copy.deepcopy(section)
    s = scenario_from_dict(raw, overrides={"architectures": {"online": section},
                                           "architectures.online.serving.replicas": 9})
    assert s.architectures["online"].serving.replicas == 9
    assert section == before


def test_list_overrides_parse_values_as_yaml(raw):
    s = scenario_from_dict(raw, overrides=[
        "architectures.online.serving.replicas=8",           # int
        "quality.fresh=0.06",                                 # float
        "slo.latency_p99=50ms",                               # a duration string
        "drift=[{at: 1d, quality_drop: 0.02}, {at: 2d, quality_drop: 0.01}]",  # flow YAML list
        "costs={replica_hour: 1.5}",                          # flow YAML mapping
        "name=my scenario",                                   # text with a space
        "workload.popularity=uniform",
    ])
    assert s.architectures["online"].serving.replicas == 8
    assert s.quality.fresh == pytest.approx(0.06)
    assert s.slo.latency_p99 == pytest.approx(0.05)
    assert [(d.at, d.quality_drop) for d in s.drift] == [(86400, 0.02), (172800, 0.01)]
    assert s.costs.replica_hour == pytest.approx(1.5) and s.costs.batch_node_hour == 0
    assert s.name == "my scenario"
    assert s.workload.popularity.kind == "uniform"


def test_list_override_value_may_contain_equals_sign(raw):
    s = scenario_from_dict(raw, overrides=["description=a=b"])
    assert s.description == "a=b"


def test_overrides_create_new_nested_keys(raw):
    del raw["slo"]
    del raw["training"]
    s = scenario_from_dict(raw, overrides=[
        "slo.latency_p99=80ms",
        "training.every=1d",
        "architectures.nightly.kind=batch",
        "architectures.nightly.every=12h",
        "architectures.nightly.throughput=1000/s",
    ])
    assert s.slo.latency_p99 == pytest.approx(0.08)
    assert s.training.every == 86400
    assert list(s.architectures)[-1] == "nightly"
    assert s.architectures["nightly"].kind == "batch"
    assert s.architectures["nightly"].every == 12 * 3600


def test_load_scenario_applies_overrides_and_seed(raw):
    s = load_scenario(EXAMPLE, ["horizon=2h", "seed=3"], seed=11)
    assert s.horizon == 7200
    assert s.seed == 11  # the explicit seed wins over everything


def test_override_to_an_unknown_key_is_reported_with_a_suggestion(raw):
    with pytest.raises(ScenarioError) as info:
        scenario_from_dict(raw, label="s.yaml",
                           overrides=["architectures.online.serving.replicaz=3"])
    (line,) = problems_of(info)
    assert line.startswith("s.yaml: ")
    assert "architectures.online.serving.replicaz" in line
    assert "did you mean 'replicas'" in line


@pytest.mark.parametrize("item", ["noequals", "=5", "  =x"])
def test_override_without_key_value_syntax_is_a_scenario_error(raw, item):
    with pytest.raises(ScenarioError) as info:
        scenario_from_dict(raw, label="s.yaml", overrides=[item])
    (line,) = problems_of(info)
    assert "KEY=VALUE" in line
    assert repr(item) in line or item in line


def test_override_through_a_value_that_is_not_a_section(raw):
    with pytest.raises(ScenarioError) as info:
        scenario_from_dict(raw, label="s.yaml", overrides=["horizon.days=3"])
    (line,) = problems_of(info)
    assert "horizon" in line and "not a section" in line


@pytest.mark.parametrize("item", ["noequals", "horizon.days=3"])
def test_override_problems_name_the_file(raw, item):
    with pytest.raises(ScenarioError) as info:
        scenario_from_dict(raw, label="s.yaml", overrides=[item])
    (line,) = problems_of(info)
    assert line.startswith("s.yaml: "), line


def test_override_problems_are_reported_together_with_the_files_problems(raw):
    raw["horizon"] = -1
    with pytest.raises(ScenarioError) as info:
        scenario_from_dict(raw, label="s.yaml", overrides=["noequals", "slo.latency_p99=50ms"])
    problems = problems_of(info)
    assert any("noequals" in p for p in problems), problems
    assert any("horizon" in p and "> 0" in p for p in problems), problems


# --------------------------------------------------------------------------------------------
# Errors: one line per problem, naming the file and the key path
# --------------------------------------------------------------------------------------------


def test_unknown_keys_get_did_you_mean_suggestions(raw):
    raw["horizn"] = "3d"
    raw["workload"]["entitys"] = 5
    raw["architectures"]["online"]["serving"]["servce_time"] = "10ms"
    raw["architectures"]["batch"]["throughput_"] = "1/s"
    with pytest.raises(ScenarioError) as info:
        scenario_from_dict(raw, label="s.yaml")
    problems = problems_of(info)
    expected = {
        "horizn": "'horizon'",
        "workload.entitys": "'entities'",
        "architectures.online.serving.servce_time": "'service_time'",
        "architectures.batch.throughput_": "'throughput'",
    }
    for path, suggestion in expected.items():
        [line] = [p for p in problems if f": {path}:" in p]
        assert "unknown key" in line
        assert f"did you mean {suggestion}" in line


def test_unknown_key_far_from_any_known_key_has_no_suggestion(raw):
    raw["workload"]["zzzzzz"] = 1
    with pytest.raises(ScenarioError) as info:
        scenario_from_dict(raw, label="s.yaml")
    (line,) = problems_of(info)
    assert "workload.zzzzzz" in line and "unknown key" in line
    assert "did you mean" not in line


def test_unknown_architecture_kind_gets_a_suggestion(raw):
    raw["architectures"]["online"]["kind"] = "onlin"
    with pytest.raises(ScenarioError) as info:
        scenario_from_dict(raw, label="s.yaml")
    (line,) = problems_of(info)
    assert line.startswith("s.yaml: architectures.online")
    assert "'online'" in line


@pytest.mark.parametrize("dotted, value, words", [
    ("architectures.online.serving.replicas", "two", ["whole number", "'two'"]),
    ("architectures.online.serving.replicas", 2.5, ["whole number"]),
    ("quality.fresh", "high", ["number", "'high'"]),
    ("workload", "lots", ["section"]),
    ("drift", {"at": "1d"}, ["list"]),
    ("name", 123, ["text"]),
])
def test_wrong_types_are_reported(raw, dotted, value, words):
    *parents, last = dotted.split(".")
    node = raw
    for part in parents:
        node = node[part]
    node[last] = value
    with pytest.raises(ScenarioError) as info:
        scenario_from_dict(raw, label="s.yaml")
    problems = problems_of(info)
    [line] = [p for p in problems if p.startswith(f"s.yaml: {dotted}")]
    for word in words:
        assert word in line


@pytest.mark.parametrize("override, dotted, words", [
    ("architectures.online.serving.replicas=0", "architectures.online.serving.replicas", [">= 1"]),
    ("horizon=-1", "horizon", ["> 0"]),
    ("horizon=0", "horizon", ["> 0"]),
    ("architectures.batch.throughput=0", "architectures.batch.throughput", ["> 0"]),
    ("architectures.batch.throughput=-5/s", "architectures.batch.throughput", ["> 0"]),
    ("warmup=-1h", "warmup", [">= 0"]),
    ("workload.arrivals.rate=0", "workload.arrivals.rate", ["> 0"]),
    ("workload.entities=0", "workload", ["entities", ">= 1"]),
    ("architectures.batch.every=0s", "architectures.batch.every", ["> 0"]),
    ("architectures.online.serving.timeout=0ms", "architectures.online.serving.timeout", ["> 0"]),
    ("quality.fresh=0", "quality.fresh", ["> 0"]),
    ("costs.replica_hour=-1", "costs.replica_hour", [">= 0"]),
])
def test_zero_and_negative_values_are_rejected(raw, override, dotted, words):
    with pytest.raises(ScenarioError) as info:
        scenario_from_dict(raw, label="s.yaml", overrides=[override])
    (line,) = problems_of(info)
    assert line.startswith(f"s.yaml: {dotted}")
    for word in words:
        assert word in line


@pytest.mark.parametrize("dotted, value, words", [
    ("warmup", "1 fortnight", ["duration", "'1 fortnight'"]),
    ("horizon", "abc", ["duration", "'abc'"]),
    ("architectures.online.serving.timeout", "5 parsecs", ["duration", "'5 parsecs'"]),
    ("architectures.batch.every", True, ["duration"]),
    ("workload.arrivals.rate", "fast", ["rate", "'fast'"]),
    ("workload.arrivals.rate", "5/fortnight", ["rate"]),
    ("architectures.batch.throughput", "lots", ["rate"]),
    ("workload.entities", "many", ["count", "'many'"]),
])
def test_unparseable_durations_rates_and_counts(raw, dotted, value, words):
    *parents, last = dotted.split(".")
    node = raw
    for part in parents:
        node = node[part]
    node[last] = value
    with pytest.raises(ScenarioError) as info:
        scenario_from_dict(raw, label="s.yaml")
    (line,) = problems_of(info)
    assert line.startswith(f"s.yaml: {dotted}")
    for word in words:
        assert word in line


@pytest.mark.parametrize("dist, words", [
    ({"lognormaal": {"median": "15ms", "p99": "60ms"}}, ["unknown distribution",
                                                         "did you mean 'lognormal'"]),
    ({"lognormal": {"median": "15ms"}}, ["p99"]),
    ({"lognormal": {"median": "15ms", "p99": "60ms", "mean": "1s"}}, ["median", "p99"]),
    ({"exponential": {"mean": "fast"}}, ["duration"]),
    ({"exponential": {"mean": 0}}, ["mean", "> 0"]),
    ({"gamma": {"mean": "10ms", "cv": -1}}, ["cv"]),
    ({"constant": "-5ms"}, [">= 0"]),
    ("slow", ["duration"]),
    ([1, 2], ["distribution"]),
    ({"constant": 1, "exponential": {"mean": 1}}, ["distribution"]),
])
def test_unparseable_distributions(raw, dist, words):
    raw["architectures"]["online"]["serving"]["service_time"] = dist
    with pytest.raises(ScenarioError) as info:
        scenario_from_dict(raw, label="s.yaml")
    (line,) = problems_of(info)
    assert line.startswith("s.yaml: architectures.online.serving.service_time")
    for word in words:
        assert word in line


def test_lognormal_p99_below_median_is_rejected(raw):
    raw["architectures"]["batch"]["lookup"] = {"lognormal": {"median": "50ms", "p99": "10ms"}}
    with pytest.raises(ScenarioError) as info:
        scenario_from_dict(raw, label="s.yaml")
    (line,) = problems_of(info)
    assert line.startswith("s.yaml: architectures.batch.lookup")
    assert "p99" in line and "median" in line


def test_missing_required_keys_are_reported(raw):
    del raw["horizon"]
    del raw["architectures"]["online"]["serving"]["replicas"]
    with pytest.raises(ScenarioError) as info:
        scenario_from_dict(raw, label="s.yaml")
    problems = problems_of(info)
    assert any(p.startswith("s.yaml: horizon") and "required" in p for p in problems)
    assert any(p.startswith("s.yaml: architectures.online.serving.replicas") and "required" in p
               for p in problems)


def test_several_problems_are_all_reported_one_line_each(raw, tmp_path):
    raw["horizon"] = -1
    raw["workload"]["entitys"] = 5
    raw["workload"]["arrivals"]["rate"] = "fast"
    raw["architectures"]["online"]["serving"]["replicas"] = 0
    raw["architectures"]["batch"]["lookup"] = {"lognormal": {"median": "50ms", "p99": "10ms"}}
    raw["architectures"]["streaming"]["serving"]["timeout"] = "5 parsecs"
    path = write_yaml(tmp_path / "many.yaml", raw)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    problems = problems_of(info)
    assert str(info.value) == "\n".join(problems)
    expected_paths = ["horizon", "workload.entitys", "workload.arrivals.rate",
                      "architectures.online.serving.replicas", "architectures.batch.lookup",
                      "architectures.streaming.serving.timeout"]
    assert len(problems) == len(expected_paths), problems
    for line in problems:
        assert line.startswith(f"{path}: "), line
    for dotted in expected_paths:
        assert sum(f"{path}: {dotted}:" in line for line in problems) == 1, (dotted, problems)


# --------------------------------------------------------------------------------------------
# Files: missing, not YAML, not a mapping
# --------------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    (line,) = problems_of(info)
    assert line.startswith(str(path))
    assert "not found" in line


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nhorizon: 3d\nworkload:\n  entities: 100\n  arrivals: [1, 2\n"
                    "  popularity: uniform\n")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    (line,) = problems_of(info)
    assert line.startswith(str(path))
    assert "YAML" in line
    assert "line 6" in line


def test_invalid_yaml_bad_indentation_names_the_line(tmp_path):
    path = tmp_path / "indent.yaml"
    path.write_text("name: x\nhorizon: 3d\n  warmup: 1d\n")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    (line,) = problems_of(info)
    assert line.startswith(str(path)) and "line 3" in line


@pytest.mark.parametrize("text", ["- a\n- b\n", "", "just text\n"])
def test_top_level_must_be_a_mapping(tmp_path, text):
    path = tmp_path / "flat.yaml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    (line,) = problems_of(info)
    assert line.startswith(str(path)) and "mapping" in line


def test_binary_file_is_a_scenario_error(tmp_path):
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    (line,) = problems_of(info)
    assert line.startswith(str(path))


# --------------------------------------------------------------------------------------------
# Empirical distributions from CSV files
# --------------------------------------------------------------------------------------------


@pytest.fixture
def scenario_dir(tmp_path) -> Path:
    folder = tmp_path / "team"
    (folder / "data").mkdir(parents=True)
    return folder


def with_empirical(raw: dict, folder: Path, file_value: str) -> Path:
    raw["architectures"]["online"]["serving"]["service_time"] = {"empirical": file_value}
    return write_yaml(folder / "scenario.yaml", raw)


def test_empirical_file_is_read_relative_to_the_scenario(raw, scenario_dir, tmp_path,
                                                         monkeypatch):
    (scenario_dir / "data" / "service.csv").write_text("service_time_ms\n10\n20\n30\n40\n")
    path = with_empirical(raw, scenario_dir, "data/service.csv")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the path must not depend on the working directory
    s = load_scenario(path)
    dist = s.architectures["online"].serving.service_time
    assert dist.kind == "empirical"
    assert sorted(dist.samples) == pytest.approx([0.010, 0.020, 0.030, 0.040])  # ms -> s
    assert dist.mean == pytest.approx(0.025, rel=0.2)


@pytest.mark.parametrize("column, factor", [("latency_s", 1.0), ("latency_ms", 1e-3),
                                            ("latency_us", 1e-6)])
def test_empirical_units_come_from_the_column_name(raw, scenario_dir, column, factor):
    (scenario_dir / "data" / "s.csv").write_text(f"request,{column}\na,5\nb,7\n")
    s = load_scenario(with_empirical(raw, scenario_dir, "data/s.csv"))
    samples = s.architectures["online"].serving.service_time.samples
    assert sorted(samples) == pytest.approx([5 * factor, 7 * factor])


def test_empirical_absolute_path(raw, scenario_dir, tmp_path):
    csv = tmp_path / "abs_samples.csv"
    csv.write_text("service_time_s\n0.01\n0.02\n")
    s = load_scenario(with_empirical(raw, scenario_dir, str(csv)))
    assert sorted(s.architectures["online"].serving.service_time.samples) == pytest.approx(
        [0.01, 0.02])


def test_empirical_missing_file(raw, scenario_dir):
    path = with_empirical(raw, scenario_dir, "data/missing.csv")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    (line,) = problems_of(info)
    assert line.startswith(f"{path}: architectures.online.serving.service_time")
    assert "not found" in line and "missing.csv" in line


@pytest.mark.parametrize("header", ["service_time", "value", "service_time_ms,latency_ms"])
def test_empirical_needs_exactly_one_unit_column(raw, scenario_dir, header):
    columns = header.count(",") + 1
    (scenario_dir / "data" / "nounit.csv").write_text(
        f"{header}\n" + ",".join(["10"] * columns) + "\n")
    path = with_empirical(raw, scenario_dir, "data/nounit.csv")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    (line,) = problems_of(info)
    assert line.startswith(f"{path}: architectures.online.serving.service_time")
    assert "nounit.csv" in line
    assert "unit" in line


@pytest.mark.parametrize("rows, bad_line", [
    (["10", "12", "abc", "5"], 4),     # header is line 1
    (["abc"], 2),
    (["10", "-3"], 3),
    (["10", "", "12", "abc"], 5),
])
def test_empirical_bad_row_names_its_line(raw, scenario_dir, rows, bad_line):
    (scenario_dir / "data" / "bad.csv").write_text("service_time_ms\n" + "\n".join(rows) + "\n")
    path = with_empirical(raw, scenario_dir, "data/bad.csv")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    (line,) = problems_of(info)
    assert line.startswith(f"{path}: architectures.online.serving.service_time")
    assert "bad.csv" in line
    assert f"line {bad_line}" in line


def test_empirical_file_without_samples(raw, scenario_dir):
    (scenario_dir / "data" / "empty.csv").write_text("service_time_ms\n")
    path = with_empirical(raw, scenario_dir, "data/empty.csv")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    (line,) = problems_of(info)
    assert line.startswith(f"{path}: architectures.online.serving.service_time")
    assert "no samples" in line


# --------------------------------------------------------------------------------------------
# The resolved scenario (defaults filled in) is itself a valid scenario
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(QUICKSTART.parent.glob("*.yaml")),
                         ids=lambda p: p.name)
def test_resolved_scenario_validates_to_the_same_scenario(path):
    """Every bundled scenario, printed with every default filled in (`predsim validate`),
    loads again as the same scenario (a measured batch_time beside fixed and per_item at 0,
    an evaluation's unused defaults, a variant's factors)."""
    s = load_scenario(path)
    again = scenario_from_dict(yaml.safe_load(yaml.safe_dump(s.to_yaml_dict())),
                               base_dir=path.parent)
    # the same values (a replayed log's file is written as an absolute path, so it loads
    # from anywhere: the objects then differ in that path alone)
    assert again.model_dump() == s.model_dump()
    if s.workload.arrivals.trace is None:
        assert again == s


def test_resolved_scenario_with_an_empirical_file_loads_from_another_folder(raw, scenario_dir,
                                                                            tmp_path):
    (scenario_dir / "data" / "service.csv").write_text("service_time_ms\n10\n20\n30\n")
    s = load_scenario(with_empirical(raw, scenario_dir, "data/service.csv"))
    out = tmp_path / "out"
    out.mkdir()
    resolved = write_yaml(out / "scenario.resolved.yaml", s.to_yaml_dict())
    again = load_scenario(resolved)
    assert sorted(again.architectures["online"].serving.service_time.samples) == pytest.approx(
        [0.01, 0.02, 0.03])
