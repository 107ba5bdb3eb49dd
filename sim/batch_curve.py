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

import numpy as np
from numba import njit


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
