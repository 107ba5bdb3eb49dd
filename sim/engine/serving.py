"""Queueing kernels for serving replicas: pure functions over numpy arrays, compiled by numba.

The multi-replica FIFO queue is the Kiefer-Wolfowitz recursion: keep the times at which each of
the ``c`` replicas becomes free in a min-heap; request ``n`` starts at
``max(A_n, min_free)`` and its replica becomes free again at ``start + S_n``. With ``c = 1`` this
is Lindley's recursion ``W_{n+1} = max(0, W_n + S_n - (A_{n+1} - A_n))``. A request whose wait
would reach its ``patience`` (the timeout) leaves the queue before it starts and never occupies a
replica; equivalently, a replica that frees up skips requests whose deadline has passed. Checked
against Erlang C (M/M/c) and Pollaczek-Khinchine (M/G/1) in ``tests/test_theory.py``.

Dynamic batching and autoscaling need more than one decision per request (a batch waits for
later arrivals; the autoscaler acts between arrivals), so they run in ``batch_queue``: an event
loop over arrivals, give-ups, dispatches and autoscaler evaluations that can stop at a chunk's
end and resume, carrying the requests still waiting. With one request per batch, no linger and
no autoscaler it gives exactly the recursion's waits (``tests/test_batching.py``); the gated
batch closed form and Little's law check it in ``predsim verify``.

With ``serving.after_idle`` a replica's work is multiplied by a slowdown read off at the time
the replica stood idle before the request (:func:`idle_factor`): the start minus the time the
replica taking it became free, 0 for a request that waited. The heap's root is the replica free
longest, the one that takes the next request, so the recursion still holds with the work
multiplied as each request starts (:func:`fifo_queue_idle`, a kernel of its own so that the
plain one stays as it is); the batching loop does the same for the replica that takes a batch,
remembering when each replica (by number) was last free.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from sim.engine.batch_curve import batch_time_at
from sim.engine.rng import Streams
from sim.engine.slow_periods import SlowPath, finish_at


@njit(cache=True, nogil=True)
def _down(heap, n, value):
    """Put ``value`` at the root of the min-heap ``heap[:n]`` and sift it down."""
    i = 0
    while True:
        left = 2 * i + 1
        if left >= n:
            break
        child = left
        if left + 1 < n:
            # the smaller child, as arithmetic rather than a branch: the comparison is a coin
            # flip, so a branch on it would be mispredicted half the time
            child = left + np.int64(heap[left + 1] < heap[left])
        if heap[child] >= value:
            break
        heap[i] = heap[child]
        i = child
    heap[i] = value


@njit(cache=True, nogil=True, inline="always")
def take_replica(a, free, patience_s):
    """A request arriving at ``a`` for the replica free longest (free at ``free``): ``(start,
    wait, started)``, the wait the patience and ``started`` False when it would reach it (the
    request gives up in the queue)."""
    start = a if a > free else free
    w = start - a
    if w >= patience_s:
        return start, patience_s, False
    return start, w, True


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
        start, wait_s[i], ok = take_replica(arrival_s[i], free_at_s[0], patience_s)
        started[i] = ok
        if not ok:
            continue
        _down(free_at_s, free_at_s.shape[0], start + occupancy_s[i])
        busy += occupancy_s[i]
    return busy


@njit(cache=True, nogil=True)
def idle_factor(idle, knots, factors):
    """The ``serving.after_idle`` slowdown at ``idle`` seconds of idling: straight lines between
    the points ``(knots, factors)``, flat below the first and beyond the last (``inf``, a replica
    that never served, reads the last)."""
    n = knots.shape[0]
    if idle <= knots[0]:
        return factors[0]
    if idle >= knots[n - 1]:
        return factors[n - 1]
    lo = np.searchsorted(knots, idle, side="right") - 1  # knots[lo] <= idle < knots[lo + 1]
    hi = lo + 1
    share = (idle - knots[lo]) / (knots[hi] - knots[lo])
    return factors[lo] + share * (factors[hi] - factors[lo])


@njit(cache=True, nogil=True)
def fifo_queue_idle(arrival_s, lookup_s, work_s, patience_s, free_at_s, knots, factors,
                    wait_s, started, occupancy_s):
    """:func:`fifo_queue` with ``serving.after_idle``: a request's ``work_s`` is multiplied by
    :func:`idle_factor` at the time its replica (the heap's root, free longest) stood idle
    before it, ``start - free`` (0 when it waited; ``inf`` for a replica that never served,
    whose free time is ``-inf``); the feature lookup ``lookup_s`` is not. Fills ``wait_s``,
    ``started`` and ``occupancy_s`` (NaN for a request that gave up); returns the busy time
    added."""
    busy = 0.0
    for i in range(arrival_s.shape[0]):
        free = free_at_s[0]
        start, wait_s[i], ok = take_replica(arrival_s[i], free, patience_s)
        started[i] = ok
        if not ok:
            occupancy_s[i] = np.nan
            continue
        occ = lookup_s[i] + work_s[i] * idle_factor(start - free, knots, factors)
        occupancy_s[i] = occ
        _down(free_at_s, free_at_s.shape[0], start + occ)
        busy += occ
    return busy


@njit(cache=True, nogil=True)
def _before(a, ia, b, ib):
    """(a, ia) < (b, ib): earlier free time first, then the lower replica number."""
    return a < b or (a == b and ia < ib)


@njit(cache=True, nogil=True)
def _down_id(heap, ids, n, value, vid):
    """:func:`_down` for a heap of (free time, replica number) pairs."""
    i = 0
    while True:
        left = 2 * i + 1
        if left >= n:
            break
        child = left
        if left + 1 < n and _before(heap[left + 1], ids[left + 1], heap[left], ids[left]):
            child = left + 1
        if not _before(heap[child], ids[child], value, vid):
            break
        heap[i] = heap[child]
        ids[i] = ids[child]
        i = child
    heap[i] = value
    ids[i] = vid


@njit(cache=True, nogil=True)
def _push_id(heap, ids, n, value, vid):
    """Add ``(value, vid)`` to the heap of (free time, replica number) pairs ``[:n]`` (which
    has room for one more)."""
    i = n
    while i > 0:
        parent = (i - 1) // 2
        if not _before(value, vid, heap[parent], ids[parent]):
            break
        heap[i] = heap[parent]
        ids[i] = ids[parent]
        i = parent
    heap[i] = value
    ids[i] = vid


@njit(cache=True, nogil=True)
def fifo_queue_slow(arrival_s, lookup_s, work_s, patience_s, free_at_s, ids, pt, pw, ps, pn,
                    host, first, wait_s, started, occupancy_s, knots, factors):
    """:func:`fifo_queue` on replicas with slow periods, from request ``first`` on.

    A request takes the replica that has been free longest (the lower number on a tie),
    looks up its features for ``lookup_s`` and then does ``work_s`` of work (times
    :func:`idle_factor` at its replica's idle time before it, with ``serving.after_idle``:
    ``knots`` not empty), stretched by the slow periods of its replica's path (path 0 for
    every replica with ``host``). Fills
    ``occupancy_s`` (how long it held the replica). Returns ``(next, busy, path)``: ``next`` is
    the number of requests done, less than their count when request ``next``'s work runs past
    the end of ``path``'s drawn speed (draw more and call again from ``next``); ``busy`` the
    replica time added.
    """
    busy = 0.0
    c = free_at_s.shape[0]
    for i in range(first, arrival_s.shape[0]):
        free = free_at_s[0]
        start, w, ok = take_replica(arrival_s[i], free, patience_s)
        if not ok:
            wait_s[i] = w
            started[i] = False
            occupancy_s[i] = np.nan
            continue
        p = 0 if host else ids[0]
        work = work_s[i]
        if knots.shape[0] > 0:
            work *= idle_factor(start - free, knots, factors)
        end = finish_at(pt[p], pw[p], ps[p], pn[p], start + lookup_s[i], work)
        if np.isnan(end):
            return i, busy, p
        wait_s[i] = w
        started[i] = True
        occupancy_s[i] = end - start
        _down_id(free_at_s, ids, c, end, ids[0])
        busy += end - start
    return arrival_s.shape[0], busy, -1


_NO_KNOTS = np.empty(0)


class ReplicaPool:
    """The serving replicas of one architecture, carried across chunks.

    With ``slow`` (a :class:`~sim.engine.slow_periods.SlowPath`) the replicas' work is stretched by
    slow periods and each replica is tracked by number, so that it meets its own. With
    ``after_idle`` (``serving.after_idle``, a :class:`~sim.scenario.architectures.AfterIdle`)
    each request's work is multiplied by the slowdown at its replica's idle time before it;
    the replicas start as never having served (free since ``-inf``: the last slowdown). Both
    need the feature lookup and the work apart: serve them with :meth:`serve_split`.
    """

    def __init__(self, replicas: int, timeout_s: float | None, start_s: float = 0.0,
                 slow: SlowPath | None = None, host: bool = True, after_idle=None):
        self.replicas = replicas
        self.patience_s = np.inf if timeout_s is None else float(timeout_s)
        self.free_at_s = np.full(replicas, -np.inf if after_idle is not None else start_s,
                                 dtype=float)
        self.ids = np.arange(replicas, dtype=np.int64)
        self.slow = slow
        self.host = host
        self.after_idle = after_idle
        self._knots, self._factors = (after_idle.arrays() if after_idle is not None
                                      else (_NO_KNOTS, _NO_KNOTS))

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

    def serve_split(self, arrival_s: np.ndarray, lookup_s, work_s):
        """Queue wait, whether each request started, and how long it held its replica
        (``(wait_s, started, occupancy_s)``; occupancy NaN for a request that gave up), given
        each request's feature lookup ``lookup_s`` and its work on the replica ``work_s``
        (inference and request-time features; arrays or scalars): the work is stretched by slow
        periods (``slow``) and multiplied by the ``after_idle`` slowdown, the lookup neither.
        Without either it is :meth:`serve` of ``lookup_s + work_s``, to the bit."""
        n = arrival_s.size
        if self.slow is not None:
            return self._serve_slow(arrival_s, lookup_s, work_s)
        if self.after_idle is None:
            occupancy_s = np.broadcast_to(lookup_s + work_s, n).astype(float)
            wait_s, started = self.serve(arrival_s, occupancy_s)
            return wait_s, started, np.where(started, occupancy_s, np.nan)
        wait_s, occupancy_s = np.empty(n), np.empty(n)
        started = np.empty(n, dtype=np.bool_)
        if n:
            fifo_queue_idle(np.ascontiguousarray(arrival_s, dtype=np.float64),
                            np.ascontiguousarray(np.broadcast_to(lookup_s, n), dtype=np.float64),
                            np.ascontiguousarray(np.broadcast_to(work_s, n), dtype=np.float64),
                            self.patience_s, self.free_at_s, self._knots, self._factors,
                            wait_s, started, occupancy_s)
        return wait_s, started, occupancy_s

    def _serve_slow(self, arrival_s: np.ndarray, lookup_s, work_s):
        """:meth:`serve_split` with slow periods (and any ``after_idle`` slowdown)."""
        n = arrival_s.size
        wait_s, occupancy_s = np.empty(n), np.empty(n)
        started = np.empty(n, dtype=np.bool_)
        if not n:
            return wait_s, started, occupancy_s
        slow = self.slow
        a = np.ascontiguousarray(arrival_s, dtype=np.float64)
        lookup = np.ascontiguousarray(np.broadcast_to(lookup_s, n), dtype=np.float64)
        work = np.ascontiguousarray(np.broadcast_to(work_s, n), dtype=np.float64)
        done = 0
        while True:
            done, _, short = fifo_queue_slow(a, lookup, work, self.patience_s, self.free_at_s,
                                             self.ids, slow.t, slow.w, slow.s, slow.n,
                                             self.host, done, wait_s, started, occupancy_s,
                                             self._knots, self._factors)
            if short < 0:
                return wait_s, started, occupancy_s
            # no request from here on starts before a[done]: forget the path before it, draw
            # the next block (drawn as needed, the path held stays short whatever the chunk)
            slow.trim(float(a[done]))
            slow.draw_block(short)


# --------------------------------------------------------------------------------------------
# Dynamic batching and autoscaling: an event loop over arrivals, dispatches, give-ups and
# autoscaler evaluations, compiled, resumable from chunk to chunk.
# --------------------------------------------------------------------------------------------

INF = np.inf
# Carried state, by index (one float64 array per pool).
(N_REPLICAS, NEXT_EVAL, LAST_SCALE, BUSY_ASSIGNED, BUSY_AT_EVAL, QUEUE_AREA, QUEUE_AREA_AT_EVAL,
 LAST_EVENT, N_WARMING, PREV_EVAL, N_LOG, SHORT_PATH, ACT_AT, ACT_TARGET, PENDING_UP, COUNT_T,
 N_AREA, UP_AREA, POOL_READY, N_REFILL, LAG_POS, START_POS) = range(22)
STATE_SIZE = 22
# What a call of batch_queue stopped for.
DONE, LOG_FULL, PATH_SHORT, DRAWS_SHORT = range(4)
# Autoscaler settings, by index.
(A_ON, A_MIN, A_MAX, A_TARGET_UTIL, A_TARGET_QUEUE, A_EVERY, A_TOLERANCE, A_WARM_POOL,
 A_COOLDOWN) = range(9)
# Columns of the autoscaler log: one row per evaluation, describing the interval before it
# (replica-seconds paid for, ready, asked for and starting; busy time; the queue's area) and
# the state just after it (replicas running, ready and asked for).
LOG_COLUMNS = ("t_s", "replica_s", "ready_replica_s", "busy_s", "queue_area", "queue_now",
               "replicas", "ready_replicas", "utilization", "asked_replica_s",
               "starting_replica_s", "asked_replicas")
(L_T, L_REPLICA_S, L_READY_S, L_BUSY_S, L_QUEUE_AREA, L_QUEUE_NOW, L_REPLICAS, L_READY,
 L_UTIL, L_ASKED_S, L_STARTING_S, L_ASKED) = range(len(LOG_COLUMNS))
LOG_ROWS_PER_CALL = 4096  # the log buffer of one kernel call; a call that fills it resumes


@njit(cache=True, nogil=True)
def batch_queue(arrival, lookup, item, fixed, head, i, patience, max_batch, max_wait, until,
                final, eval_until, heap, ids, warming, state, auto, log, wait, start, occupancy,
                started, busy, pt, pw, ps, pn, slow, host, tsizes, tq, refill, lags, startups,
                knots, factors, last_free):
    """FIFO replicas with dynamic batching and an optional autoscaler, as an event loop.

    Requests ``[head, i)`` have arrived and are waiting; those from ``i`` on arrive at
    ``arrival``. Events at one instant happen in this order: arrivals, give-ups
    (a request waiting ``patience`` leaves), dispatches, an autoscaler decision taking
    effect, autoscaler evaluations. A batch is
    dispatched when a replica is free and either ``max_batch`` requests wait or the oldest has
    waited ``max_wait``; it takes up to ``max_batch`` from the head of the queue and occupies
    the replica for ``max(lookup) + fixed[first] + sum(item)``, or with measured batch times
    (``tsizes`` not empty) ``max(lookup) + T(k) + sum(item)``, ``T(k)`` interpolated from the
    first request's row of ``tq`` (its draw of the time at each of ``tsizes``, see
    :mod:`sim.engine.batch_curve`); with ``slow`` (slow periods
    on the paths ``pt``, ``pw``, ``ps``, ``pn``) the work ``fixed + sum(item)`` is stretched by
    the slow periods of the replica's path (the replica's number in ``ids``, or path 0 for
    every replica with ``host``). A free replica is the one free longest (the lower number on a
    tie). With ``serving.after_idle`` (``knots`` not empty) the batch's work is first
    multiplied by :func:`idle_factor` at the time the replica taking it stood idle, ``t`` minus
    ``last_free`` (by replica number: when its last batch ended, ``-inf`` for one that never
    served).

    Without ``final`` the loop stops before the first event at or after ``until`` (the next
    chunk's requests could come first); the requests still waiting then are a suffix of the
    input. Evaluations (and decisions taking effect) go on to ``eval_until`` and, in the
    ``final`` call, for as long as requests wait. Returns ``(head, i, stopped)``: the requests
    before ``head`` have their outcome (``wait``, ``start``, ``occupancy``, ``started``,
    ``busy`` filled); ``stopped`` is ``DONE``, or ``LOG_FULL`` when the loop stopped before an
    evaluation because ``log`` had no room (call again with ``head`` and ``i`` and an emptied
    log), or ``PATH_SHORT`` when a batch's work would run past the drawn end of path
    ``state[SHORT_PATH]`` (draw more, call again), or ``DRAWS_SHORT`` when fewer start-up
    delays are left in ``lags`` (decision lags, from ``state[LAG_POS]``) and ``startups``
    (node start + model load per replica asked for, from ``state[START_POS]``) than the next
    autoscaler event could use (draw more, call again). ``heap`` and ``ids`` (free-at times
    and numbers of the replicas, ``state[N_REPLICAS]`` of them, including those starting;
    ``ids`` beyond them are the free numbers), ``warming`` (row 0: ready times of replicas
    still starting, row 1: when each was asked for), ``refill`` (ready times of warm-pool
    replicas still starting), ``last_free`` and ``state`` carry over between calls.
    """
    n = arrival.shape[0]
    every = auto[A_EVERY]
    most_new = int(auto[A_MAX])
    while True:
        t_arr = arrival[i] if i < n else INF
        qlen = i - head
        t_exp = INF
        t_disp = INF
        t_last = state[LAST_EVENT]
        if qlen > 0:
            t_exp = arrival[head] + patience
            t_disp = heap[0]
            if qlen < max_batch:
                t_disp = max(t_disp, arrival[head] + max_wait)
            t_disp = max(t_disp, t_last)
        t_eval = state[NEXT_EVAL]
        t_act = state[ACT_AT]
        if not (final and qlen > 0):
            if t_eval > eval_until:
                t_eval = INF
            if t_act > eval_until:
                t_act = INF
        t = min(min(t_arr, t_exp), min(t_disp, min(t_act, t_eval)))
        if t == INF or (not final and t >= until):
            break
        if t_arr > t and t_exp > t and t_disp > t:  # the autoscaler's turn
            if state[LAG_POS] + 1 > lags.shape[0] or \
                    state[START_POS] + most_new > startups.shape[0]:
                return head, i, DRAWS_SHORT
            if t_act > t and state[N_LOG] >= log.shape[0]:
                return head, i, LOG_FULL
        state[QUEUE_AREA] += qlen * (t - t_last)
        state[LAST_EVENT] = t
        if t_arr <= t:
            i += 1
        elif t_exp <= t:
            wait[head] = patience
            start[head] = t
            occupancy[head] = np.nan
            started[head] = False
            busy[head] = 0.0
            head += 1
        elif t_disp <= t:
            k = min(qlen, max_batch)
            longest = 0.0
            if tsizes.shape[0] > 0:
                total = batch_time_at(tsizes, tq[head], float(k))
            else:
                total = fixed[head]
            for j in range(head, head + k):
                if lookup[j] > longest:
                    longest = lookup[j]
                total += item[j]
            if knots.shape[0] > 0:
                total *= idle_factor(t - last_free[ids[0]], knots, factors)
            occ = longest + total
            if slow:
                p = 0 if host else ids[0]
                end = finish_at(pt[p], pw[p], ps[p], pn[p], t + longest, total)
                if np.isnan(end):
                    state[SHORT_PATH] = p
                    return head, i, PATH_SHORT
                occ = end - t
            last_free[ids[0]] = t + occ
            _down_id(heap, ids, int(state[N_REPLICAS]), t + occ, ids[0])
            state[BUSY_ASSIGNED] += occ
            for j in range(head, head + k):
                wait[j] = t - arrival[j]
                start[j] = t
                occupancy[j] = occ
                started[j] = True
                busy[j] = 0.0
            busy[head] = occ
            head += k
        elif t_act <= t:
            _act(t, int(state[ACT_TARGET]), heap, ids, warming, refill, state, startups,
                 last_free)
        else:
            _evaluate(t, heap, ids, warming, refill, state, auto, log, qlen, lags, startups,
                      last_free)
            state[NEXT_EVAL] = t + every
    return head, i, DONE


@njit(cache=True, nogil=True)
def _count_to(state, t):
    """Integrate the replicas running and the scale-up waiting to take effect up to ``t``."""
    dt = t - state[COUNT_T]
    state[N_AREA] += state[N_REPLICAS] * dt
    state[UP_AREA] += state[PENDING_UP] * dt
    state[COUNT_T] = t


@njit(cache=True, nogil=True)
def _act(t, target, heap, ids, warming, refill, state, startups, last_free):
    """A decision takes effect at ``t``: go to ``target`` replicas.

    Up: each new replica takes the next start-up draw; a loaded warm-pool replica serves at
    once and the draw is its replacement's (ready for the pool that much later), otherwise the
    new replica serves that much later; it has never served (``last_free`` ``-inf``, whatever
    its number did before). Down: the idle replicas free longest go (never a busy one), as
    many as there are, down to ``target``.
    """
    _count_to(state, t)
    n = int(state[N_REPLICAS])
    n_warm = int(state[N_WARMING])
    if target > n:
        # warm-pool replicas whose refill has finished are loaded now
        pool = int(state[POOL_READY])
        kept = 0
        for j in range(int(state[N_REFILL])):
            if refill[j] <= t:
                pool += 1
            else:
                refill[kept] = refill[j]
                kept += 1
        pos = int(state[START_POS])
        for _ in range(target - n):
            delay = startups[pos]
            pos += 1
            if pool > 0:
                pool -= 1
                refill[kept] = t + delay
                kept += 1
                ready_at = t
            else:
                ready_at = t + delay
            number = ids[n]  # a free number: ids[n:] are unused
            last_free[number] = -INF
            _push_id(heap, ids, n, ready_at, number)
            n += 1
            if ready_at > t:
                warming[0, n_warm] = ready_at
                warming[1, n_warm] = t
                n_warm += 1
        state[START_POS] = pos
        state[POOL_READY] = pool
        state[N_REFILL] = kept
        state[LAST_SCALE] = t
    elif target < n:
        removed = 0
        while n > target and heap[0] <= t:  # idle replicas only
            n -= 1
            gone = ids[0]
            _down_id(heap, ids, n, heap[n], ids[n])
            ids[n] = gone
            removed += 1
        if removed:
            state[LAST_SCALE] = t
    state[N_REPLICAS] = n
    state[N_WARMING] = n_warm
    state[PENDING_UP] = 0.0
    state[ACT_AT] = INF


@njit(cache=True, nogil=True)
def _evaluate(t, heap, ids, warming, refill, state, auto, log, qlen, lags, startups,
              last_free):
    """One autoscaler evaluation at ``t``: measure the last interval, log it, decide.

    A decision (up, or down while no replica starts and ``cooldown`` has passed since the last
    change) takes the next decision-lag draw: at 0 it takes effect now, otherwise at ``t`` plus
    the lag, and until then evaluations measure but decide nothing.
    """
    _count_to(state, t)
    n = int(state[N_REPLICAS])
    prev = state[PREV_EVAL]
    n_warm = int(state[N_WARMING])
    busy_now = state[BUSY_ASSIGNED]
    for j in range(n):
        if heap[j] > t:
            busy_now -= heap[j] - t  # work booked after t (each replica's is contiguous)
    starting = 0.0
    for j in range(n_warm):
        if warming[0, j] > t:
            busy_now += warming[0, j] - t  # a starting replica's free-at includes its start-up
        starting += max(0.0, min(warming[0, j], t) - max(warming[1, j], prev))
    span = t - prev
    ready_s = state[N_AREA] - starting
    busy_s = busy_now - state[BUSY_AT_EVAL]
    area = state[QUEUE_AREA] - state[QUEUE_AREA_AT_EVAL]
    util = busy_s / ready_s if ready_s > 0 else 0.0
    row = int(state[N_LOG])
    log[row, L_T] = t
    log[row, L_REPLICA_S] = state[N_AREA] + auto[A_WARM_POOL] * span
    log[row, L_READY_S] = ready_s
    log[row, L_BUSY_S] = busy_s
    log[row, L_QUEUE_AREA] = area
    log[row, L_QUEUE_NOW] = qlen
    log[row, L_UTIL] = util
    log[row, L_ASKED_S] = state[N_AREA] + state[UP_AREA]
    log[row, L_STARTING_S] = starting
    # replicas that finished starting are ready now
    kept = 0
    for j in range(n_warm):
        if warming[0, j] > t:
            warming[0, kept] = warming[0, j]
            warming[1, kept] = warming[1, j]
            kept += 1
    n_warm = kept
    state[N_WARMING] = n_warm
    ready = n - n_warm
    if state[ACT_AT] == INF:  # decide, unless a decision is still to take effect
        desired = n
        if ready > 0:
            if auto[A_TARGET_UTIL] > 0:
                ratio = util / auto[A_TARGET_UTIL]
            else:
                ratio = area / span / ready / auto[A_TARGET_QUEUE]
            if abs(ratio - 1.0) > auto[A_TOLERANCE]:
                desired = int(np.ceil(ready * ratio - 1e-9))
        desired = max(int(auto[A_MIN]), min(int(auto[A_MAX]), desired))
        if desired > n or (desired < n and n_warm == 0 and
                           t - state[LAST_SCALE] >= auto[A_COOLDOWN]):
            pos = int(state[LAG_POS])
            effect = t + lags[pos]
            state[LAG_POS] = pos + 1
            if effect > t:
                state[ACT_AT] = effect
                state[ACT_TARGET] = desired
                state[PENDING_UP] = max(desired - n, 0)
            else:
                _act(t, desired, heap, ids, warming, refill, state, startups, last_free)
    n = int(state[N_REPLICAS])
    log[row, L_REPLICAS] = n
    log[row, L_READY] = n - int(state[N_WARMING])
    log[row, L_ASKED] = n + state[PENDING_UP]
    state[N_LOG] = row + 1
    state[BUSY_AT_EVAL] = busy_now
    state[QUEUE_AREA_AT_EVAL] = state[QUEUE_AREA]
    state[PREV_EVAL] = t
    state[N_AREA] = 0.0
    state[UP_AREA] = 0.0


class StartupDraws:
    """The autoscaler's delays, drawn ahead in blocks from random streams of their own:
    decision lags (one per decision, stream ``autoscaling/decision_lag``) and start-ups (one
    per replica asked for, a warm-pool refill included: node start then model load, two
    uniforms in that order from stream ``autoscaling/startup``). The streams are named after
    what they draw, not the architecture, so every architecture of a scenario meets the same
    delays, and the reference engine, drawing one at a time from its own copy of the streams,
    the very same ones."""

    BLOCK = 256

    def __init__(self, auto, streams):
        self.auto = auto
        self.first, self.second = auto.startup
        self._lag_rng = streams.fresh("autoscaling/decision_lag")
        self._start_rng = streams.fresh("autoscaling/startup")
        self.lags = np.empty(0)
        self.startups = np.empty(0)

    def refill(self, state: np.ndarray) -> None:
        """Forget the draws used (up to the positions in ``state``) and draw the next blocks,
        so that at least one lag and ``max`` start-ups are left."""
        lag_pos, start_pos = int(state[LAG_POS]), int(state[START_POS])
        self.lags = self.lags[lag_pos:]
        self.startups = self.startups[start_pos:]
        state[LAG_POS] = state[START_POS] = 0
        if self.lags.size < 1:
            u = self._lag_rng.random(self.BLOCK)
            self.lags = np.ascontiguousarray(np.r_[self.lags, self.auto.decision_lag.ppf(u)],
                                             dtype=np.float64)
        if self.startups.size < self.auto.max:
            m = max(self.BLOCK, 2 * self.auto.max)  # at least max more: refills stay rare
            u = self._start_rng.random((m, 2))
            delays = self.first.ppf(u[:, 0]) + self.second.ppf(u[:, 1])
            self.startups = np.ascontiguousarray(np.r_[self.startups, delays], dtype=np.float64)


class _NoPath:
    """Stand-in path arrays for pools without slow periods (never read)."""
    t = w = s = np.zeros((1, 2))
    n = np.full(1, 2, dtype=np.int64)


_NO_PATH = _NoPath()


class _NoDraws:
    """Stand-in delays for pools without an autoscaler (never read)."""
    lags = startups = np.zeros(1)


_NO_DRAWS = _NoDraws()


class BatchingPool:
    """Serving replicas with dynamic batching and/or an autoscaler, carried across chunks
    (``serving.slow_periods`` and ``serving.after_idle`` included: it is given the whole
    ``serving`` section).

    Requests still waiting at the end of a chunk (their batch, or their give-up, depends on
    requests not generated yet) are carried into the next call, with their ``payload`` (any
    per-request arrays the caller wants back alongside the outcomes); :meth:`serve` returns
    outcomes for the requests decided so far, in arrival order.
    """

    def __init__(self, serving, eval_until_s: float, start_s: float = 0.0,
                 slow: SlowPath | None = None, streams=None):
        self.spec = serving
        self.slow = slow
        self.host = serving.slow_periods is None or serving.slow_periods.scope == "host"
        auto = serving.autoscaling
        batching = serving.batching
        self.patience_s = np.inf if serving.timeout is None else float(serving.timeout)
        self.max_batch = batching.max_batch if batching else 1
        self.max_wait_s = batching.max_wait if batching else 0.0
        self.table_sizes = batching.table_sizes if batching else np.empty(0)
        capacity = auto.max if auto else serving.replicas
        self.heap = np.full(capacity, start_s, dtype=float)
        self.ids = np.arange(capacity, dtype=np.int64)
        # serving.after_idle: when each replica (by number) was last free, -inf for never
        self.last_free = np.full(capacity, -np.inf)
        self.after_idle = serving.after_idle
        self._knots, self._factors = (serving.after_idle.arrays()
                                      if serving.after_idle is not None
                                      else (_NO_KNOTS, _NO_KNOTS))
        self.warming = np.zeros((2, capacity))
        self.refill = np.zeros(max(auto.warm_pool if auto else 0, 1))
        self.state = np.zeros(STATE_SIZE)
        self.state[N_REPLICAS] = serving.replicas
        self.state[NEXT_EVAL] = start_s + auto.every if auto else np.inf
        self.state[LAST_SCALE] = -np.inf
        self.state[LAST_EVENT] = start_s
        self.state[PREV_EVAL] = start_s
        self.state[COUNT_T] = start_s
        self.state[ACT_AT] = np.inf
        self.auto = np.zeros(9)
        self.draws = None
        if auto:
            self.auto[:] = (1, auto.min, auto.max, auto.target_utilization or 0.0,
                            auto.target_queue or 0.0, auto.every, auto.tolerance,
                            auto.warm_pool, auto.cooldown)
            self.state[POOL_READY] = auto.warm_pool  # pre-warmed at the start
            self.use_streams(streams if streams is not None else Streams(0))
        self.eval_until_s = eval_until_s
        self.log_rows: list[np.ndarray] = []
        self._carry: dict[str, np.ndarray] | None = None

    def use_streams(self, streams) -> None:
        """Draw the autoscaler's delays from the run's random ``streams`` (before serving)."""
        self.draws = StartupDraws(self.spec.autoscaling, streams)
        self.draws.refill(self.state)

    @property
    def replicas_now(self) -> int:
        return int(self.state[N_REPLICAS])

    def serve(self, inputs: dict[str, np.ndarray], until_s: float, final: bool = False):
        """Outcomes of the requests decided by ``until_s`` (or all, with ``final``).

        ``inputs`` holds ``t_s``, ``lookup_s``, ``item_s`` and ``fixed_s`` per new request
        (and ``table_s``, each request's draw of the time at every measured batch size, with
        ``batching.batch_time``) and any payload arrays. Returns a dict with those arrays for the decided requests plus
        ``wait_s``, ``start_s``, ``occupancy_s``, ``started`` and ``busy_s``.
        """
        carried = 0
        if self._carry is not None:
            carried = self._carry["t_s"].size
            inputs = {k: np.concatenate([self._carry[k], v]) for k, v in inputs.items()}
        n = inputs["t_s"].size
        out = dict(wait_s=np.empty(n), start_s=np.empty(n), occupancy_s=np.empty(n),
                   started=np.empty(n, dtype=np.bool_), busy_s=np.empty(n))
        every = self.auto[A_EVERY] if self.auto[A_ON] else 0.0
        span_end = self.eval_until_s if final else until_s
        expected = int((span_end - self.state[NEXT_EVAL]) / every) + 2 if every > 0 else 0
        log = np.empty((min(max(expected, 1), LOG_ROWS_PER_CALL), len(LOG_COLUMNS)))
        f64 = {k: np.ascontiguousarray(inputs[k], dtype=np.float64)
               for k in ("t_s", "lookup_s", "item_s", "fixed_s")}
        table = (np.ascontiguousarray(inputs["table_s"], dtype=np.float64)
                 if "table_s" in inputs else np.empty((n, 0)))
        decided, arrived = 0, carried
        slow = self.slow if self.slow is not None else _NO_PATH
        draws = self.draws if self.draws is not None else _NO_DRAWS
        while True:  # resumed when the log fills up, a slow-period path or the draws run out
            self.state[N_LOG] = 0
            decided, arrived, stopped = batch_queue(
                f64["t_s"], f64["lookup_s"], f64["item_s"], f64["fixed_s"], decided, arrived,
                self.patience_s, self.max_batch, self.max_wait_s, until_s, final,
                self.eval_until_s, self.heap, self.ids, self.warming, self.state, self.auto,
                log, out["wait_s"], out["start_s"], out["occupancy_s"], out["started"],
                out["busy_s"], slow.t, slow.w, slow.s, slow.n, self.slow is not None,
                self.host, self.table_sizes, table, self.refill, draws.lags, draws.startups,
                self._knots, self._factors, self.last_free)
            if self.state[N_LOG]:
                self.log_rows.append(log[:int(self.state[N_LOG])].copy())
            if stopped == PATH_SHORT:  # nothing is dispatched before the last event any more
                self.slow.trim(float(self.state[LAST_EVENT]))
                self.slow.draw_block(int(self.state[SHORT_PATH]))
            elif stopped == DRAWS_SHORT:
                self.draws.refill(self.state)
            elif stopped == DONE:
                break
        self._carry = {k: v[decided:] for k, v in inputs.items()} if decided < n else None
        result = {k: v[:decided] for k, v in inputs.items()}
        result.update({k: v[:decided] for k, v in out.items()})
        return result

    def log(self) -> dict[str, np.ndarray]:
        """The autoscaler's evaluations so far, one row each (columns ``LOG_COLUMNS``)."""
        rows = (np.concatenate(self.log_rows) if self.log_rows
                else np.empty((0, len(LOG_COLUMNS))))
        return {name: rows[:, k] for k, name in enumerate(LOG_COLUMNS)}
