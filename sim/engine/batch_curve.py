"""A batch's time from measured batch times: ``serving.batching.batch_time``.

On a GPU a batch takes about the same time at every size until the device is full, then grows
linearly (``../shared/DATA.md``: a 6-layer encoder 1.26 ms at batch 1, about 1.8 ms from 2 to
64, 3.52 ms at 256, 6.83 ms at 512), a knee that ``fixed + per_item x size`` cannot follow. So a
scenario can give the time at the sizes measured instead, each a distribution, and a batch of
``k`` takes, at the same quantile ``u`` of every size's distribution (one draw per batch):

- between two sizes given, the straight line between their times;
- below the smallest size given, the smallest's time;
- beyond the largest, the line through the last two sizes extended (never below the largest's
  time), or the one size's time when only one is given.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

import numpy as np
from numba import njit

from sim.units import round_duration


@njit(cache=True, nogil=True)
def batch_time_at(sizes, times, k):
    """The time of a batch of ``k`` requests, from ``times[j]``, the time at ``sizes[j]``
    (ascending), as the module docstring says."""
    m = sizes.shape[0]
    if m == 1 or k <= sizes[0]:
        return times[0]
    j = 1
    while j < m and sizes[j] < k:
        j += 1
    if j == m:  # beyond the largest size measured: extend the last segment
        slope = (times[m - 1] - times[m - 2]) / (sizes[m - 1] - sizes[m - 2])
        return max(times[m - 1], times[m - 1] + slope * (k - sizes[m - 1]))
    w = (k - sizes[j - 1]) / (sizes[j] - sizes[j - 1])
    return times[j - 1] + w * (times[j] - times[j - 1])


# --------------------------------------------------------------------------------------------
# Calibration: `predsim calibrate latency` on (batch size, duration) pairs
# --------------------------------------------------------------------------------------------

MIN_FOR_P99 = 20  # samples at a size below which only its median is given
LINE_TOLERANCE = 0.05  # the line is good enough when it puts every size's median this close


@dataclass
class BatchCurveFit:
    """Measured batch times by size, and the two forms a scenario can take them in.

    ``line``: ``fixed + per_item x size`` by least squares over every batch. ``table``:
    ``batch_time`` with each measured size's median and p99 (its median alone below
    :data:`MIN_FOR_P99` batches). Each form is judged by how far it puts each size's median:
    the line at every size; the table at each inner size left out (interpolated from its
    neighbours), the honest measure of how it does between the sizes measured.
    """

    sizes: np.ndarray          # distinct batch sizes, ascending
    counts: np.ndarray
    medians_s: np.ndarray
    p99s_s: np.ndarray
    fixed_s: float
    per_item_s: float
    line_errors: np.ndarray     # relative error of the line's time at each size's median
    table_errors: np.ndarray    # left-one-out error at inner sizes (NaN at the ends)

    @property
    def line_rms(self) -> float:
        return float(np.sqrt(np.mean(self.line_errors ** 2)))

    @property
    def table_rms(self) -> float:
        inner = self.table_errors[~np.isnan(self.table_errors)]
        return float(np.sqrt(np.mean(inner ** 2))) if inner.size else 0.0

    @property
    def best(self) -> str:
        """``line`` when it puts every size's median within :data:`LINE_TOLERANCE` (and runs
        above zero): two numbers that are easy to vary in a sweep; else ``table``, which
        gives every measured size its own times."""
        if self.fixed_s < 0 or self.per_item_s < 0:
            return "table"
        return "line" if np.max(np.abs(self.line_errors)) <= LINE_TOLERANCE else "table"

    def table_yaml(self) -> str:
        rows = []
        for k, n, p50, p99 in zip(self.sizes, self.counts, self.medians_s, self.p99s_s):
            if n >= MIN_FOR_P99 and p99 > p50:
                value = (f"{{percentiles: {{p50: {round_duration(p50)}, "
                         f"p99: {round_duration(p99)}}}}}")
            else:
                value = round_duration(p50)
            rows.append(f"      {int(k)}: {value}")
        return "\n".join(rows)

    def lines(self, label: str) -> list[str]:
        out = [f"# predsim calibrate latency: {label}: {int(self.counts.sum()):,} batches at "
               f"{self.sizes.size} sizes ({int(self.sizes[0])} to {int(self.sizes[-1])}).",
               "# size  batches   median      p99    line err   table err (left out)"]
        for k, n, p50, p99, le, te in zip(self.sizes, self.counts, self.medians_s, self.p99s_s,
                                          self.line_errors, self.table_errors):
            te_text = "        -" if np.isnan(te) else f"{te:+9.1%}"
            out.append(f"# {int(k):>4} {int(n):>8,} {round_duration(p50):>8} "
                       f"{round_duration(p99):>8} {le:+10.1%}   {te_text}")
        out.append(f"# line: fixed {round_duration(self.fixed_s)} + per_item "
                   f"{round_duration(self.per_item_s)} x size (least squares), rms error "
                   f"{self.line_rms:.1%}; table: interpolated between the sizes measured, rms "
                   f"error {self.table_rms:.1%} at sizes left out.")
        worst = float(np.max(np.abs(self.line_errors)))
        if self.best == "table":
            out.append(f"# best: the table: the line is off by up to {worst:.0%} at a measured "
                       f"size (more than {LINE_TOLERANCE:.0%}): these times are not a straight "
                       f"line (a GPU is typically flat until it is full, then linear).")
        else:
            out.append(f"# best: the line: within {worst:.1%} of every size's median (the table "
                       f"works too).")
        return [w for line in out for w in textwrap.wrap(
            line, 100, subsequent_indent="#   ", break_on_hyphens=False)]

    def snippet(self) -> str:
        if self.best == "table":
            return "batching:\n  batch_time:\n" + self.table_yaml().replace("      ", "    ") + \
                "\n"
        return (f"batching: {{fixed: {round_duration(max(self.fixed_s, 0.0))}, per_item: "
                f"{round_duration(max(self.per_item_s, 0.0))}}}\n")


def fit_batch_curve(sizes, durations_s) -> BatchCurveFit:
    """Fit both forms to batches of ``sizes`` that took ``durations_s`` (see
    :class:`BatchCurveFit`)."""
    sizes = np.asarray(sizes, dtype=float)
    durations_s = np.asarray(durations_s, dtype=float)
    distinct = np.unique(sizes)
    if distinct.size < 2:
        raise ValueError("batches of at least two different sizes are needed to tell a line "
                         "from a curve")
    counts = np.array([np.count_nonzero(sizes == k) for k in distinct])
    medians = np.array([np.median(durations_s[sizes == k]) for k in distinct])
    p99s = np.array([np.quantile(durations_s[sizes == k], 0.99) for k in distinct])
    per_item, fixed = np.polyfit(sizes, durations_s, 1)
    line_errors = (fixed + per_item * distinct - medians) / medians
    table_errors = np.full(distinct.size, np.nan)
    for j in range(1, distinct.size - 1):
        keep = np.arange(distinct.size) != j
        guess = batch_time_at(distinct[keep], medians[keep], float(distinct[j]))
        table_errors[j] = (guess - medians[j]) / medians[j]
    return BatchCurveFit(distinct, counts, medians, p99s, float(fixed), float(per_item),
                         line_errors, table_errors)
