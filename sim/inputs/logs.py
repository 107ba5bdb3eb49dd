"""Request logs: :func:`read_log` reads a log (CSV or Parquet: a timestamp, and an entity id
and a size per request when the log has them) into a :class:`RequestLog`. A trace replay
(``workload.arrivals.trace``) and :func:`sim.inputs.fit.fit_workload` both start from it. Every
bad row is reported with its line; nothing is dropped. :class:`InputError` is how any input file
here (a log, latency samples) says what is wrong with it.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

WEEK_HOURS = 168
MAX_REPORTED_ROWS = 10
PARQUET_SUFFIXES = (".parquet", ".pq")


class InputError(Exception):
    """A log or sample file that cannot be used; ``problems`` holds one line per problem, each
    naming the file (and the line, for a bad row)."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True, eq=False)
class RequestLog:
    """A request log in time order, its entities numbered as popularity slots.

    ``times_s`` are seconds since the first request (ascending; rows with equal times keep
    their order in the file). Entities are numbered by request count, most requests first
    (ties: first seen first), so slot 0 is the most popular, as in the simulator.
    ``start`` is the wall-clock time of the first request, in ``clock`` ("as written" for
    ISO-8601 times without an offset, else "UTC"). A log that names no entities (timestamps
    only, as many public inference traces) has ``slot``, ``ids`` and ``first_seen_s`` None:
    it gives arrival times, and the scenario's popularity model gives the entities.
    ``sizes`` is each request's size (tokens, candidates) when the log has a size column.
    """

    source: str
    times_s: np.ndarray
    slot: np.ndarray | None
    ids: np.ndarray | None = field(repr=False)
    first_seen_s: np.ndarray | None = field(repr=False)
    start: pd.Timestamp
    clock: str
    sizes: np.ndarray | None = field(default=None, repr=False)
    size_column: str | None = None

    @property
    def has_entities(self) -> bool:
        """Whether the log says which entity each request is about."""
        return self.ids is not None

    @property
    def n_requests(self) -> int:
        return int(self.times_s.size)

    @property
    def n_entities(self) -> int:
        """Distinct entity ids in the log (0 when it names none)."""
        return int(self.ids.size) if self.ids is not None else 0

    @property
    def span_s(self) -> float:
        """From the first request to the last."""
        return float(self.times_s[-1])

    @property
    def counts(self) -> np.ndarray:
        """Requests per slot (descending; empty when the log names no entities)."""
        if self.slot is None:
            return np.zeros(0, dtype=np.int64)
        return np.bincount(self.slot, minlength=self.n_entities)

    @property
    def period_s(self) -> float:
        """The log's length as a repeating period: the span plus one mean gap between requests,
        so that the last request and the next loop's first are a mean gap apart."""
        return self.span_s * self.n_requests / (self.n_requests - 1)

    @property
    def mean_rate_per_s(self) -> float:
        """Requests per second over :attr:`period_s`."""
        return self.n_requests / self.period_s


DEFAULT_TIMESTAMP_COLUMN = "timestamp"
DEFAULT_ENTITY_COLUMN = "entity_id"
DEFAULT_SIZE_COLUMN = "size"


def read_log(path: str | Path, timestamp_column: str = DEFAULT_TIMESTAMP_COLUMN,
             entity_column: str | None = None, size_column: str | None = None,
             option_names: tuple[str, str, str] = ("timestamp_column", "entity_column",
                                                   "size_column")) -> RequestLog:
    """Read a request log: CSV (any other suffix) or Parquet (``.parquet``, ``.pq``).

    Timestamps are epoch seconds (numbers) or ISO-8601 times, decided by the first row; entity
    ids are read as text. A column named differently only in case (``TIMESTAMP``) is found.
    Without ``entity_column`` the ids come from an ``entity_id`` column when there is one, and
    a log without it gives times only (:attr:`RequestLog.has_entities` False); likewise sizes
    from ``size_column`` or a ``size`` column. Raises :class:`InputError` listing bad rows by
    line (the header is line 1; Parquet rows are counted from 1). ``option_names`` name the
    settings that choose the columns, for the message when a column is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError([f"{path}: file not found"])
    stat = path.stat()
    return _read_log_cached(str(path), str(path.resolve()), stat.st_mtime_ns, stat.st_size,
                            timestamp_column, entity_column, size_column, tuple(option_names))


def _find_column(columns: list[str], name: str) -> str | None:
    """``name`` among ``columns``, or the one column equal to it but for case."""
    if name in columns:
        return name
    same = [c for c in columns if c.lower() == name.lower()]
    return same[0] if len(same) == 1 else None


@functools.lru_cache(maxsize=4)
def _read_log_cached(label: str, resolved: str, mtime_ns: int, size: int, timestamp_column: str,
                     entity_column: str | None, size_column: str | None,
                     option_names: tuple[str, str, str]) -> RequestLog:
    """The same file, unchanged, is read once: sweeps and reports validate a scenario many
    times. (Its arrays are shared: treat a RequestLog as read-only.)"""
    path = Path(label)
    frame, first_line, row_word = _read_table(path, label)
    columns = [str(c) for c in frame.columns]
    asked = [(timestamp_column, option_names[0], True),
             (entity_column or DEFAULT_ENTITY_COLUMN, option_names[1], entity_column is not None),
             (size_column or DEFAULT_SIZE_COLUMN, option_names[2], size_column is not None)]
    found = [_find_column(columns, name) for name, _, _ in asked]
    missing = [(name, option) for (name, option, required), column in zip(asked, found)
               if required and column is None]
    if missing:
        raise InputError([f"{label}: no column {name!r} (the columns are {', '.join(columns)}); "
                          f"choose one with {option}" for name, option in missing])
    time_col, entity_col, size_col = found
    lines = np.arange(len(frame)) + first_line
    stamps = frame[time_col]
    ids = frame[entity_col] if entity_col is not None else None
    sizes = frame[size_col] if size_col is not None else None
    blank = _is_blank(stamps) & (_is_blank(ids) if ids is not None else True)
    if row_word == "line":  # blank lines of a CSV are not rows
        keep = ~blank
        stamps, lines = stamps[keep], lines[keep]
        ids = ids[keep] if ids is not None else None
        sizes = sizes[keep] if sizes is not None else None
    problems: list[tuple[int, str]] = []
    seconds, start, clock = _parse_times(stamps, time_col, lines, problems)
    id_text = None
    if ids is not None:
        id_text = ids.astype(str).str.strip().where(~_is_blank(ids), "")
        for line in lines[(id_text == "").to_numpy()]:
            problems.append((int(line), f"{entity_col}: missing entity id"))
    size_values = None
    if sizes is not None:
        size_values = pd.to_numeric(sizes, errors="coerce").to_numpy(dtype=float)
        bad = ~(np.isfinite(size_values) & (size_values >= 0))
        for line, raw in zip(lines[bad], sizes[bad]):
            problems.append((int(line), f"{size_col}: expected a size of 0 or more, such as a "
                                        f"number of tokens (got {str(raw)!r})"))
    if problems:
        problems.sort()
        out = [f"{label}: {row_word} {line}: {message}"
               for line, message in problems[:MAX_REPORTED_ROWS]]
        if len(problems) > MAX_REPORTED_ROWS:
            out.append(f"{label}: and {len(problems) - MAX_REPORTED_ROWS} more bad rows; "
                       f"nothing was dropped")
        raise InputError(out)
    if len(seconds) < 2 or seconds.max() == seconds.min():
        raise InputError([f"{label}: a log needs at least two requests at different times "
                          f"(got {len(seconds)} request{'s' if len(seconds) != 1 else ''})"])
    return _build_log(label, seconds, None if id_text is None else id_text.to_numpy(dtype=object),
                      start, clock, size_values, size_col)


def _read_table(path: Path, label: str) -> tuple[pd.DataFrame, int, str]:
    if path.suffix.lower() in PARQUET_SUFFIXES:
        try:
            return pd.read_parquet(path), 1, "row"
        except Exception as exc:  # pyarrow raises many kinds; the user needs the message
            raise InputError([f"{label}: cannot read as Parquet: {exc}"]) from None
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skip_blank_lines=False)
    except UnicodeDecodeError:
        raise InputError([f"{label}: not a text file (a CSV log, or Parquet named .parquet)"]) \
            from None
    except Exception as exc:  # pandas raises many kinds; the user needs only the message
        raise InputError([f"{label}: cannot read as CSV: {exc}"]) from None
    return frame, 2, "line"


def _is_blank(values: pd.Series) -> np.ndarray:
    """Missing values and empty (or all-space) text."""
    blank = values.isna().to_numpy(copy=True)
    if values.dtype == object or pd.api.types.is_string_dtype(values):
        blank |= (values.astype(str).str.strip() == "").to_numpy()
    return blank


_OFFSET = re.compile(r"(?:Z|[+-]\d\d(?::?\d\d)?)$", re.I)


def _parse_times(stamps: pd.Series, column: str, lines: np.ndarray,
                 problems: list) -> tuple[np.ndarray, pd.Timestamp | None, str]:
    """Seconds since the earliest time (in file order, NaN where bad), the wall-clock time of
    the earliest, and the clock it is in. Bad rows are appended to ``problems``."""
    present = ~_is_blank(stamps)
    for line in lines[~present]:
        problems.append((int(line), f"{column}: missing timestamp"))
    seconds = np.full(len(stamps), np.nan)
    if not present.any():
        return seconds, None, "UTC"
    values, where, at = stamps[present], np.flatnonzero(present), lines[present]
    first = values.iloc[0]
    if isinstance(first, (pd.Timestamp, np.datetime64)):  # a Parquet timestamp column
        aware = getattr(first, "tzinfo", None) is not None
        parsed = pd.to_datetime(values, errors="coerce", utc=aware)
        clock = "UTC" if aware else "as written"
    elif not math.isnan(float(pd.to_numeric(pd.Series([first]), errors="coerce").iloc[0])):
        epoch = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
        good = np.isfinite(epoch)
        for line, raw in zip(at[~good], values[~good]):
            problems.append((int(line), f"{column}: expected epoch seconds, like the first row "
                                        f"(got {str(raw)!r})"))
        if not good.any():
            return seconds, None, "UTC"
        t0 = float(np.min(epoch[good]))
        seconds[where] = epoch - t0
        return seconds, pd.Timestamp(t0, unit="s"), "UTC"
    else:
        text = values.astype(str).str.strip()
        offsets = text.str.contains(_OFFSET).to_numpy()
        aware = bool(offsets[0])
        mixed = offsets != aware
        for line, raw in zip(at[mixed], text[mixed]):
            problems.append((int(line), f"{column}: {'no' if aware else 'a'} UTC offset, unlike "
                                        f"the first row (got {raw!r}); give every time in the "
                                        f"same form"))
        parsed = pd.to_datetime(text.where(~mixed), format="ISO8601", errors="coerce",
                                utc=aware)
        bad = parsed.isna().to_numpy() & ~mixed
        for line, raw in zip(at[bad], text[bad]):
            problems.append((int(line), f"{column}: expected an ISO-8601 time such as "
                                        f"2024-05-01T12:30:00, or epoch seconds (got {raw!r})"))
        clock = "UTC" if aware else "as written"
    if aware:
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    good = ~parsed.isna().to_numpy()
    if not good.any():
        return seconds, None, clock
    ns = parsed.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    ns0 = int(ns[good].min())
    seconds[where[good]] = (ns[good] - ns0) / 1e9  # whole nanoseconds, then one rounding
    return seconds, pd.Timestamp(ns0, unit="ns"), clock


def _build_log(label: str, seconds: np.ndarray, ids: np.ndarray | None, start: pd.Timestamp,
               clock: str, sizes: np.ndarray | None = None,
               size_column: str | None = None) -> RequestLog:
    order = np.argsort(seconds, kind="stable")
    times = seconds[order]
    sizes = sizes[order] if sizes is not None else None
    if ids is None:
        return RequestLog(source=label, times_s=times, slot=None, ids=None, first_seen_s=None,
                          start=start, clock=clock, sizes=sizes, size_column=size_column)
    codes, uniques = pd.factorize(ids[order])  # codes in order of first appearance
    counts = np.bincount(codes, minlength=len(uniques))
    by_count = np.lexsort((np.arange(len(uniques)), -counts))  # most requests first, then first seen
    slot_of_code = np.empty(len(uniques), dtype=np.int64)
    slot_of_code[by_count] = np.arange(len(uniques))
    first_index = np.full(len(uniques), len(times), dtype=np.int64)
    np.minimum.at(first_index, codes, np.arange(len(times)))
    first_seen = np.empty(len(uniques))
    first_seen[slot_of_code] = times[first_index]
    slot_ids = np.empty(len(uniques), dtype=object)
    slot_ids[slot_of_code] = np.asarray(uniques, dtype=object)
    return RequestLog(source=label, times_s=times, slot=slot_of_code[codes], ids=slot_ids,
                      first_seen_s=first_seen, start=start, clock=clock, sizes=sizes,
                      size_column=size_column)
