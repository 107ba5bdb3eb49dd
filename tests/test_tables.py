"""The terminal tables: the key columns fit a 100-column terminal without cutting a number;
--wide adds the rest."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

import sim
from sim.report.output import print_results
from tests.conftest import SCENARIOS


@pytest.fixture(scope="module")
def results():
    scenario = sim.load_scenario(SCENARIOS / "quickstart.yaml", {"horizon": "1h", "warmup": "10m"})
    return sim.run(scenario, 2, workers=1)


def _printed(results, width: int, wide: bool = False) -> str:
    buffer = io.StringIO()
    print_results(results, Console(file=buffer, width=width), wide=wide)
    return buffer.getvalue()


def test_the_key_columns_fit_100_columns_whole(results):
    text = _printed(results, 100)
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 100
    summary = results.summary.set_index("architecture")
    for name, row in summary.iterrows():
        # every architecture's mean metric and net value appear whole, not folded or cut
        assert f"{row['quality_mean']:.4g}" in text, name
        assert f"{row['net_value_usd_per_day']:,.0f}" in text, name
        assert f"{row['cold_start_rate'] * 100:.2f}" in text, name
    assert "value\n" not in text and "p50" in text  # model age p50; latency p50 only with --wide


def test_wide_adds_the_other_columns(results):
    narrow, wide = _printed(results, 200), _printed(results, 200, wide=True)
    for header in ("preds %", "util %", "value", "p95"):
        assert header in wide
    assert "preds %" not in narrow and "util %" not in narrow and "p95" not in narrow
    summary = results.summary.set_index("architecture")
    assert f"{summary.loc['online', 'value_usd_per_day']:,.0f}" in wide
