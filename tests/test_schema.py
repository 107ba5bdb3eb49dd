"""The JSON Schema of scenario files (`predsim schema`, schema/scenario.schema.json).

The schema is generated from the pydantic models in sim/scenario/; these tests check that the
copy in the repository is current, that it accepts every bundled scenario, and that it rejects
what the loader rejects for the common mistakes (an unknown key, a wrong kind, a negative
count), so an editor flags them while the file is being written.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from sim.cli.main import main
from sim.scenario import Scenario, ScenarioError, scenario_from_dict
from sim.units import parse_count, parse_duration, parse_rate

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_FILE = ROOT / "schema" / "scenario.schema.json"
BUNDLED = sorted((ROOT / "scenarios").glob("*.yaml"))
MODELINE = "# yaml-language-server: $schema=../schema/scenario.schema.json"


@pytest.fixture(scope="module")
def schema() -> dict:
    return Scenario.model_json_schema()


@pytest.fixture(scope="module")
def validator(schema) -> jsonschema.Draft202012Validator:
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.fixture
def example() -> dict:
    return yaml.safe_load((ROOT / "scenarios" / "example.yaml").read_text())


def test_repository_copy_is_what_the_code_generates(schema):
    assert json.loads(SCHEMA_FILE.read_text()) == schema, (
        "schema/scenario.schema.json is out of date: regenerate it with "
        "`predsim schema --out schema/scenario.schema.json`")


def test_predsim_schema_prints_the_repository_copy_byte_for_byte(tmp_path):
    printed = CliRunner().invoke(main, ["schema"])
    assert printed.exit_code == 0, printed.output
    assert printed.output == SCHEMA_FILE.read_text()
    written = CliRunner().invoke(main, ["schema", "--out", str(tmp_path / "s.json")])
    assert written.exit_code == 0, written.output
    assert (tmp_path / "s.json").read_text() == SCHEMA_FILE.read_text()


def test_schema_out_into_a_missing_folder_is_bad_input(tmp_path):
    result = CliRunner().invoke(main, ["schema", "--out", str(tmp_path / "no" / "s.json")])
    assert result.exit_code == 2
    assert "does not exist" in result.output


def _properties_without_description(node, path=""):
    if isinstance(node, dict):
        for key, sub in (node.get("properties") or {}).items():
            if "description" not in sub:
                yield f"{path}/properties/{key}"
        for key, sub in node.items():
            yield from _properties_without_description(sub, f"{path}/{key}")
    elif isinstance(node, list):
        for i, sub in enumerate(node):
            yield from _properties_without_description(sub, f"{path}/{i}")


def test_every_field_has_a_description(schema):
    assert list(_properties_without_description(schema)) == []
    assert schema["$schema"].startswith("https://json-schema.org/")


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: p.name)
def test_every_bundled_scenario_is_accepted_and_points_editors_at_the_schema(path, validator):
    text = path.read_text()
    assert text.splitlines()[0] == MODELINE
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
              for e in validator.iter_errors(yaml.safe_load(text))]
    assert errors == []


def _set(data: dict, dotted: str, value) -> dict:
    data = copy.deepcopy(data)
    node = data
    *parents, last = dotted.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    return data


MALFORMED = {
    "unknown top-level key": ("horizn", "3d"),
    "unknown nested key": ("workload.arrivals.peak_to_trugh", 4),
    "unknown architecture kind": ("architectures.online.kind", "onlin"),
    "negative replicas": ("architectures.online.serving.replicas", -1),
    "zero replicas": ("architectures.online.serving.replicas", 0),
    "fractional replicas": ("architectures.online.serving.replicas", 1.5),
    "duration without a number": ("horizon", "soon"),
    "negative horizon": ("horizon", -1),
    "negative warmup text": ("warmup", "-1h"),
    "rate with an unknown unit": ("workload.arrivals.rate", "50/fortnight"),
    "negative rate": ("workload.arrivals.rate", -5),
    "count as a word": ("workload.entities", "many"),
    "unknown pattern": ("workload.arrivals.pattern", "hourly"),
    "popularity by another name": ("workload.popularity", {"pareto": 1.1}),
    "negative zipf exponent": ("workload.popularity", {"zipf": -1}),
    "unknown distribution": ("architectures.online.serving.service_time", {"normal": "15ms"}),
    "lognormal without p99": ("architectures.online.serving.service_time",
                              {"lognormal": {"median": "15ms"}}),
    "negative price": ("costs.replica_hour", -0.5),
    "architectures not a mapping": ("architectures", ["batch"]),
}


@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
def test_malformed_scenarios_are_rejected_by_the_schema_and_the_loader(case, example,
                                                                         validator):
    data = _set(example, *MALFORMED[case])
    assert not validator.is_valid(data)
    with pytest.raises(ScenarioError):
        scenario_from_dict(data)


@pytest.mark.parametrize("value", ["uniform", {"zipf": 0}, {"zipf": 1.1}])
def test_popularity_in_both_forms(value, example, validator):
    data = _set(example, "workload.popularity", value)
    assert validator.is_valid(data)
    scenario_from_dict(data)


def _accepts(validator, data) -> bool:
    return validator.is_valid(data)


@pytest.mark.parametrize("text", ["250ms", "30s", "15m", "6h", "7d", "1.5h", " 2 days ", "1e3s",
                                  "10", ".5s", "3w", "2 hr", "5µs", "soon", "1h30m", "h", "3 ds",
                                  "15 mins", ""])
def test_duration_text_matches_the_schema_exactly_when_the_parser_reads_it(text, example,
                                                                           validator):
    try:
        parse_duration(text)
        parses = True
    except ValueError:
        parses = False
    assert _accepts(validator, _set(example, "slo.latency_p99", text)) == parses


@pytest.mark.parametrize("text", ["50/s", "3000/min", "4.3M/day", "20k/h", "7", "1e2/sec",
                                  "5 /minute", "50/fortnight", "fast", "5M", "/s", "50/S"])
def test_rate_text_matches_the_schema_exactly_when_the_parser_reads_it(text, example, validator):
    try:
        parses = parse_rate(text) > 0
    except ValueError:
        parses = False
    assert _accepts(validator, _set(example, "workload.arrivals.rate", text)) == parses


@pytest.mark.parametrize("text", ["200000", "200k", "31M", "1.5B", "2G", "10K", "many", "5m",
                                  "3 M", ""])
def test_count_text_matches_the_schema_exactly_when_the_parser_reads_it(text, example, validator):
    try:
        parse_count(text)
        parses = True
    except ValueError:
        parses = False
    assert _accepts(validator, _set(example, "workload.new_entities_per_day", text)) == parses
