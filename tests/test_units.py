"""Parsing and formatting of durations, rates and counts (sim/units.py)."""

from __future__ import annotations

import math

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sim.units import format_duration, parse_count, parse_duration, parse_rate

# --------------------------------------------------------------------------------------------
# parse_duration
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, seconds", [
    ("250ms", 0.25),
    ("30s", 30.0),
    ("15m", 900.0),
    ("6h", 21600.0),
    ("7d", 604800.0),
    ("1.5h", 5400.0),
    (".5s", 0.5),
    ("1e3ms", 1.0),
    ("100us", 1e-4),
    ("  5 s ", 5.0),
    ("2min", 120.0),
    ("0", 0.0),
    ("0s", 0.0),
    ("10", 10.0),      # a bare number in a string is seconds
    ("2.5", 2.5),
])
def test_parse_duration_strings(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds, rel=1e-12)


@pytest.mark.parametrize("number", [0, 1, 30, 0.015, 86400, 1e-6])
def test_parse_duration_bare_numbers_are_seconds(number):
    value = parse_duration(number)
    assert isinstance(value, float)
    assert value == float(number)


@pytest.mark.parametrize("bad", ["abc", "5 parsecs", "", "ms", "10 lightyears", "1h30m",
                                 True, False, None, [], {"s": 1}, float("nan"), float("inf")])
def test_parse_duration_rejects_bad_input_with_a_clear_message(bad):
    with pytest.raises(ValueError) as info:
        parse_duration(bad)
    message = str(info.value)
    assert "duration" in message
    if not isinstance(bad, float):  # nan/inf get a 'finite' message; the rest quote the input
        assert repr(bad) in message
        assert "250ms" in message  # shows the person an example of what is expected


# --------------------------------------------------------------------------------------------
# parse_rate
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, per_s", [
    ("50/s", 50.0),
    ("3000/min", 50.0),
    ("4.3M/day", 4.3e6 / 86400),
    ("10k/h", 10_000 / 3600),
    ("120/hour", 120 / 3600),
    ("1e3/s", 1000.0),
    ("50 / s", 50.0),
    ("100", 100.0),     # a bare number is per second
    ("0.5", 0.5),
])
def test_parse_rate_strings(text, per_s):
    assert parse_rate(text) == pytest.approx(per_s, rel=1e-12)


@pytest.mark.parametrize("number", [0, 1, 50, 0.25, 1e6])
def test_parse_rate_bare_numbers_are_per_second(number):
    value = parse_rate(number)
    assert isinstance(value, float)
    assert value == float(number)


def test_parse_rate_units_agree():
    assert parse_rate("3000/min") == pytest.approx(parse_rate("50/s"))
    assert parse_rate("180k/h") == pytest.approx(parse_rate("50/s"))
    assert parse_rate("4.32M/day") == pytest.approx(parse_rate("50/s"))


@pytest.mark.parametrize("bad", ["abc", "5 parsecs", "", "5/fortnight", "/s", "fast",
                                 True, False, None, [], float("nan")])
def test_parse_rate_rejects_bad_input_with_a_clear_message(bad):
    with pytest.raises(ValueError) as info:
        parse_rate(bad)
    message = str(info.value)
    assert "rate" in message
    assert repr(bad) in message
    assert "50/s" in message


# --------------------------------------------------------------------------------------------
# parse_count
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value, count", [
    ("200000", 200_000.0),
    ("200k", 200_000.0),
    ("31M", 31e6),
    ("1.5B", 1.5e9),
    ("2.5k", 2500.0),
    (200000, 200_000.0),
    (7, 7.0),
    (2.5, 2.5),
])
def test_parse_count(value, count):
    parsed = parse_count(value)
    assert isinstance(parsed, float)
    assert parsed == pytest.approx(count, rel=1e-12)


@pytest.mark.parametrize("bad", ["abc", "5 parsecs", "", "12x", "k", True, None, []])
def test_parse_count_rejects_bad_input_with_a_clear_message(bad):
    with pytest.raises(ValueError) as info:
        parse_count(bad)
    message = str(info.value)
    assert "count" in message
    assert repr(bad) in message


# --------------------------------------------------------------------------------------------
# format_duration and round trips
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seconds, text", [
    (0, "0s"),
    (0.25, "250ms"),
    (0.015, "15ms"),
    (30, "30s"),
    (900, "15m"),
    (21600, "6h"),
    (604800, "7d"),
    (86400, "1d"),
    (0.00044, "0.44ms"),  # under a millisecond: a fraction of one, not 0.00044s
    (0.0001, "0.1ms"),
])
def test_format_duration_picks_the_natural_unit(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize("text", ["250ms", "30s", "15m", "6h", "7d", "1d", "12h", "500ms",
                                  "1.5h", "90s", "45m"])
def test_duration_text_round_trips(text):
    seconds = parse_duration(text)
    again = parse_duration(format_duration(seconds))
    assert again == pytest.approx(seconds, rel=1e-12)


@given(n=st.integers(min_value=1, max_value=10_000),
       unit=st.sampled_from(["ms", "s", "m", "h", "d"]))
@example(n=25, unit="h")
@settings(max_examples=200, database=None, deadline=None, derandomize=True)
def test_whole_numbers_of_a_unit_round_trip(n, unit):
    seconds = parse_duration(f"{n}{unit}")
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds, rel=1e-9)


@given(x=st.floats(min_value=1e-6, max_value=1e8, allow_nan=False, allow_infinity=False))
@example(x=123456.789)
@settings(max_examples=300, database=None, deadline=None, derandomize=True)
def test_format_duration_parses_back_within_1e6_relative(x):
    text = format_duration(x)
    assert math.isclose(parse_duration(text), x, rel_tol=1e-6), (x, text)


@given(x=st.floats(min_value=1e-6, max_value=1e8, allow_nan=False, allow_infinity=False))
@settings(max_examples=200, database=None, deadline=None)
def test_format_duration_output_is_always_parseable(x):
    text = format_duration(x)
    assert isinstance(text, str) and text
    assert parse_duration(text) > 0


def test_money_reads_as_people_write_it():
    from sim.units import format_usd, format_usd_range
    assert format_usd(3311.4) == "$3,311"
    assert format_usd(66.4) == "$66.40"
    assert format_usd(-66.4) == "-$66.40"
    assert format_usd(-0.004) == "$0.00"          # never "-$0.00"
    assert format_usd(12.5, sign=True) == "+$12.50"
    assert format_usd(float("nan")) == "-"
    assert format_usd_range(3900, 4300) == "$3,900–$4,300"
    assert format_usd_range(-120, 80) == "-$120 to $80.00"
    assert format_usd_range(float("nan"), 1) == "no CI"


def test_numbers_for_people():
    from sim import units
    assert units.count_short(50000) == "50,000" and units.count_short(1.73e6) == "1.73M"
    assert units.count_words(3.2e6) == "3.2 million" and units.count_words(50000) == "50,000"
    for x in (200000, 2e6, 1234, 1.5e9 + 1):
        assert units.parse_count(units.count_exact(x)) == x  # reads back exactly
    assert units.rate_short(1000) == "1,000/s" and units.rate_short(0.05) == "3/min"
    assert units.rate_rounded(23.15) == "23.1/s" and units.rate_estimate(None) == "?"
    assert units.rate_estimate(3.2e6) == "3.2M/s"
    assert units.usd_short(0.001) == "under $0.01" and units.usd_short(1250) == "$1,250"
    assert units.share_text(1.0) == "100%" and units.share_text(0.125) == "12.5%"
    assert units.share_rounded(float("nan")) == "-" and units.share_rounded(0.05) == "5.0%"
    assert units.duration_words(12600) == "3.5 hours" and units.duration_words(40) == "40 seconds"
    assert units.duration_up(7) == "10s" and units.duration_up(50 * 60) == "1h"
