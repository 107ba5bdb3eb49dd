"""Queueing kernels for serving replicas: pure functions over numpy arrays, compiled by numba.

The multi-replica FIFO queue is the Kiefer-Wolfowitz recursion: keep the times at which each of
the ``c`` replicas becomes free in a min-heap; request ``n`` starts at
``max(A_n, min_free)`` and its replica becomes free again at ``start + S_n``. With ``c = 1`` this
is Lindley's recursion ``W_{n+1} = max(0, W_n + S_n - (A_{n+1} - A_n))``. A request whose wait
would reach its ``patience`` (the timeout) leaves the queue before it starts and never occupies a
replica; equivalently, a replica that frees up skips requests whose deadline has passed. Checked
against Erlang C (M/M/c) and Pollaczek-Khinchine (M/G/1) in ``tests/test_theory.py``.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _sift_down(heap, value):
    """Replace the heap's root with ``value`` and restore the min-heap property."""
    n = heap.shape[0]
    i = 0
    while True:
        left = 2 * i + 1
        if left >= n:
            break
        child = left
        right = left + 1
        if right < n and heap[right] < heap[left]:
            child = right
        if heap[child] >= value:
            break
        heap[i] = heap[child]
        i = child
    heap[i] = value


@njit(cache=True, nogil=True)
def fifo_queue(arrival_s, occupancy_s, patience_s, free_at_s, wait_s, started):
    """Multi-server FIFO queue with reneging, over one time-ordered chunk of requests.

    ``free_at_s`` (length c, a min-heap) carries the replicas' state from chunk to chunk and is
    updated in place. Fills ``wait_s`` (time until a replica took the request, or until it gave
    up) and ``started`` (False for requests that gave up in the queue). Returns the total busy
    time added.
    """
    busy = 0.0
    for i in range(arrival_s.shape[0]):
        a = arrival_s[i]
        free = free_at_s[0]
        start = a if a > free else free
        w = start - a
        if w >= patience_s:
            wait_s[i] = patience_s
            started[i] = False
            continue
        wait_s[i] = w
        started[i] = True
        _sift_down(free_at_s, start + occupancy_s[i])
        busy += occupancy_s[i]
    return busy


class ReplicaPool:
    """The serving replicas of one architecture, carried across chunks."""

    def __init__(self, replicas: int, timeout_s: float | None, start_s: float = 0.0):
        self.replicas = replicas
        self.patience_s = np.inf if timeout_s is None else float(timeout_s)
        self.free_at_s = np.full(replicas, start_s, dtype=float)

    def serve(self, arrival_s: np.ndarray, occupancy_s: np.ndarray):
        """Queue wait and whether each request started; arrivals must be in time order."""
        n = arrival_s.size
        wait_s = np.empty(n)
        started = np.empty(n, dtype=np.bool_)
        if n:
            fifo_queue(np.ascontiguousarray(arrival_s, dtype=np.float64),
                       np.ascontiguousarray(occupancy_s, dtype=np.float64),
                       self.patience_s, self.free_at_s, wait_s, started)
        return wait_s, started
