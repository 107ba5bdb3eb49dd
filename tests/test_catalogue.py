"""The metric catalogue (sim/results/catalogue.py) against what a run really reports: summary columns,
JSON keys, search's metric names, the replications' key metrics, plot labels and the glossary."""

from __future__ import annotations

import math
import re

import pytest

import sim
from sim.results import catalogue
from sim.results import replications
from sim.studies import search
from sim.report import sweep_plots
from sim.results.catalogue import METRICS
from tests.conftest import ROOT, SCENARIOS

NOT_METRICS = ("architecture", "kind", "queue_stable")  # summary columns that are no numbers
GLOSSARY = (ROOT / "docs" / "glossary.md").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def scenario():
    return sim.load_scenario(SCENARIOS / "quickstart.yaml", {"horizon": "1h", "warmup": "10m"})


@pytest.fixture(scope="module")
def one(scenario):
    return sim.simulate(scenario)


@pytest.fixture(scope="module")
def two(scenario):
    return sim.run(scenario, replications=2)


def _leaves(node, prefix=()):
    """Every leaf of a JSON object as a dotted path, in order."""
    for key, value in node.items():
        if isinstance(value, dict):
            yield from _leaves(value, prefix + (key,))
        else:
            yield ".".join(prefix + (key,))


def test_the_summary_columns_are_the_catalogues_in_its_order(one):
    columns = list(one.summary.columns)
    assert [c for c in columns if c not in NOT_METRICS] == list(catalogue.COLUMNS)
    assert set(columns) == set(catalogue.COLUMNS) | set(NOT_METRICS)
    numeric = [c for c in columns if c not in NOT_METRICS]
    assert all(one.summary[c].dtype.kind in "iuf" for c in numeric)


def test_replicated_summary_has_a_ci_for_every_metric(two):
    for column in catalogue.COLUMNS:
        assert column in two.summary and f"{column}_ci95" in two.summary


def test_the_json_keys_are_the_catalogues_paths_in_order(two):
    data = two.to_dict()
    for entry, row in zip(data["architectures"], two.summary.to_dict("records")):
        ci95 = entry.pop("ci95")
        assert list(entry)[:2] == ["name", "kind"] and list(entry)[-1] == "queue_stable"
        paths = [p for p in _leaves(entry) if p not in ("name", "kind", "queue_stable")]
        assert paths == catalogue.json_paths()
        assert list(_leaves(ci95)) == [m.json_path for m in catalogue.json_order()
                                       if not m.whole]
        for metric in METRICS:  # each path holds its column's number
            node, half = entry, ci95
            for part in metric.json:
                node = node[part]
                half = half.get(part) if isinstance(half, dict) else None
            value = row[metric.column]
            if metric.whole:
                assert node == int(round(value)) and isinstance(node, int)
                continue
            assert node == (None if math.isnan(value) else pytest.approx(value)), metric.column
            width = row[f"{metric.column}_ci95"]
            assert half == (None if math.isnan(width) else pytest.approx(width)), metric.column


def test_search_accepts_every_column_and_alias(scenario):
    assert search.COLUMNS == set(catalogue.COLUMNS)
    assert search.ALIASES == catalogue.aliases()
    for metric in METRICS:
        assert search.resolve_metric(metric.column, scenario) == metric.column
        for alias in metric.aliases:
            assert search.resolve_metric(alias, scenario) == metric.column
        assert search.is_load_metric(metric.column) is metric.load
        assert search.is_load_metric(f"{metric.column}_ci95") is metric.load
    assert search.resolve_metric("ctr", scenario) == "quality_mean"
    with pytest.raises(search.SearchError, match="unknown metric"):
        search.resolve_metric("latency_ms_p42", scenario)


@pytest.mark.parametrize("unit, bound, expected", [
    ("ms", "0.1s", 100.0), ("s", "6h", 21600.0), ("usd_per_day", "$1,500", 1500.0),
    ("share", "99%", 0.99), ("count", "12", 12.0), ("metric", "0.047", 0.047),
])
def test_bounds_are_read_in_each_metrics_unit(unit, bound, expected):
    for metric in (m for m in METRICS if m.unit == unit):
        constraint = search.Constraint.parse(f"{metric.column}>={bound}")
        assert constraint.bound == pytest.approx(expected), metric.column


def test_the_key_metrics_come_from_the_catalogue(two):
    assert replications.KEY_METRICS == catalogue.key_metrics()
    assert replications.KEY_METRICS[:3] == ("net_value_usd_per_day", "value_usd_per_day",
                                           "cost_usd_per_day")
    d = two.differences
    for name in d["architecture"].unique():
        shown = list(d[d["architecture"] == name]["metric"])
        leading = [m for m in catalogue.key_metrics() if m in shown]
        assert shown[:len(leading)] == leading


def test_units_match_the_column_suffixes():
    for m in METRICS:
        c = m.column
        expected = ("ms" if "_ms_" in c else "s" if "_s_" in c
                    else "usd_per_day" if "_usd_per_day" in c
                    else "per_day" if c.endswith("_per_day")
                    else "share" if c.endswith("_rate") or c in ("coverage", "utilization")
                    else None)
        if expected is not None:
            assert m.unit == expected, c
        else:
            assert m.unit in ("count", "replicas", "ratio", "metric"), c
        assert m.unit in catalogue.UNITS
        # a label names the unit where the column does
        if m.unit in ("ms", "s"):
            assert m.label.endswith(f"({m.unit})"), c
        if m.unit == "usd_per_day":
            assert m.label.endswith("(US$ per day)"), c


def test_labels_and_definitions():
    labels = [m.label for m in METRICS]
    assert len(set(labels)) == len(labels)
    for m in METRICS:
        assert sweep_plots.label(m.column) == m.label
        assert m.definition.endswith(".") and "\n" not in m.definition
        assert len(m.definition) < 120, m.column
    assert sweep_plots.label("arrival_rate_per_s") == "arrival rate per s"


def _glossary_sections() -> dict[str, str]:
    """'### heading' -> its text (heading line included), up to the next heading."""
    sections, heading = {}, None
    for line in GLOSSARY.splitlines():
        if line.startswith("#"):
            heading = line[4:].strip() if line.startswith("### ") else None
            if heading is not None:
                sections[heading] = line + "\n"
        elif heading is not None:
            sections[heading] += line + "\n"
    return sections


def _documented(column: str, text: str) -> bool:
    """Named in ``text``: literally, or as a pattern ``stem_*`` / ``stem_<word>`` whose
    remainder (``mean``, ``serving``) the text also names in backticks."""
    if re.search(rf"`{column}`", text):
        return True
    for stem in re.findall(r"`([a-z_]+_)(?:\*|<[a-z_]+>)`", text):
        rest = column.removeprefix(stem)
        if column.startswith(stem) and re.search(rf"`{rest}`", text):
            return True
    return False


def test_the_glossary_defines_every_column_under_its_heading():
    sections = _glossary_sections()
    anchors = {catalogue.slug(h) for h in sections}
    for m in METRICS:
        assert m.glossary in sections, f"{m.column}: no '### {m.glossary}' in docs/glossary.md"
        assert m.anchor.split("#", 1)[1] in anchors
        assert _documented(m.column, sections[m.glossary]), \
            f"{m.column} is not named under '### {m.glossary}' in docs/glossary.md"


def test_the_markdown_table_has_a_row_per_metric_linked_to_the_glossary():
    table = catalogue.markdown_table()
    rows = table.splitlines()[2:]
    assert len(rows) == len(METRICS)
    anchors = {catalogue.slug(h) for h in _glossary_sections()}
    for row, m in zip(rows, METRICS):
        link = re.match(r"\| \[`([a-z0-9_]+)`\]\(#([^)]+)\)", row)
        assert link and link.group(1) == m.column and link.group(2) in anchors
        assert f"`{m.json_path}`" in row


def test_the_glossary_shows_the_catalogue_table_as_generated():
    text = (ROOT / "docs" / "glossary.md").read_text()
    shown = text.split("<!-- catalogue table: start -->\n", 1)[1].split(
        "<!-- catalogue table: end -->", 1)[0]
    assert shown == catalogue.markdown_table(), (
        "docs/glossary.md's table is out of date: paste sim.results.catalogue.markdown_table() between "
        "its catalogue table markers")


def test_slug_is_githubs():
    assert catalogue.slug("Percentiles: log-bucketed histograms") == \
        "percentiles-log-bucketed-histograms"  # as docs/glossary.md links it
    assert catalogue.slug("`offered_load` and `queue_stable`") == "offered_load-and-queue_stable"
