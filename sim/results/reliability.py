"""Reliability over time: when the data in force was older than the freshness bound, and what
went wrong in the pipelines.

For a :class:`~sim.engine.freshness.Timeline` (stored predictions, batch features, stream windows)
the data in force between two visibility changes ``v_j <= t < v_{j+1}`` has the newest cut-off
``c`` seen so far, so its age ``t - c`` passes its class's bound ``B`` (``slo.freshness``) at
``c + B``: that stretch is
stale from ``max(v_j, c + B)`` to ``v_{j+1}`` (the whole time before the first refresh). A
stream whose every event is its own update (window 0) is stale where the newest processed event
is older than ``B`` (during outages and backlogs; its per-event lag aside). An architecture is
without fresh data wherever one of its sources is stale (the union).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sim.units import DAY_S


def stale_intervals(timeline, bound_s: float, start_s: float,
                    end_s: float) -> list[tuple[float, float]]:
    """The stretches of [start_s, end_s) in which ``timeline``'s data in force is older than
    ``bound_s``."""
    if len(timeline) == 0:
        return [(start_s, end_s)]
    arrays = timeline.arrays()
    visible, best, cutoff = arrays["visible_at_s"], arrays["best"], arrays["cutoff_s"]
    edges = np.r_[visible[1:], np.inf]
    stale_from = np.maximum(visible, cutoff[best] + bound_s)
    out = []
    if visible[0] > start_s:
        out.append((start_s, min(visible[0], end_s)))
    for a, b in zip(stale_from, edges):
        a, b = max(a, start_s), min(b, end_s)
        if b > a:
            out.append((float(a), float(b)))
    return out


def flow_stale_intervals(flow, bound_s: float, start_s: float,
                         end_s: float) -> list[tuple[float, float]]:
    """The stretches in which a stream processor's newest processed event is older than
    ``bound_s`` (:class:`sim.engine.architectures.backlog.StreamFlow`)."""
    if flow is None or not flow.active:
        return []
    if flow.grid is None:  # instant processing: stale from B into each outage to its end
        return [(float(max(a + bound_s, start_s)), float(min(b, end_s)))
                for a, b in zip(flow.outage_starts, flow.outage_ends)
                if min(b, end_s) > max(a + bound_s, start_s)]
    grid = flow.grid[(flow.grid >= start_s) & (flow.grid <= end_s)]
    if grid.size < 2:
        return []
    stale = grid - flow.processed_until(grid) > bound_s
    out, begin = [], None
    for t, is_stale in zip(grid, stale):
        if is_stale and begin is None:
            begin = float(t)
        elif not is_stale and begin is not None:
            out.append((begin, float(t)))
            begin = None
    if begin is not None:
        out.append((begin, float(grid[-1])))
    return out


def union_length(intervals: list[tuple[float, float]]) -> float:
    """The total length covered by possibly overlapping intervals."""
    total, reach = 0.0, -np.inf
    for a, b in sorted(intervals):
        if b <= reach:
            continue
        total += b - max(a, reach)
        reach = b
    return total


def sources(arch) -> tuple[list, list]:
    """An architecture's timelines (stored predictions, batch features, stream windows) and
    its stream processors whose every event is its own update, each with its class of data
    (``batch`` or ``stream``)."""
    timelines, flows = [], []
    store = getattr(arch, "store", None)
    if store is not None:
        timelines.append(("batch", store.jobs))
    features = getattr(arch, "features", None)
    if features is not None:
        timelines.append(("batch", features.refreshes))
    stream = getattr(arch, "stream", None)
    if stream is not None:
        if stream.spec.window.is_zero:
            flows.append(("stream", stream.flow))
        else:
            timelines.append(("stream", stream.windows))
    return timelines, flows


def stale_minutes_per_day(arch, slo, start_s: float, end_s: float) -> float:
    """Minutes per day of [start_s, end_s) in which some source of ``arch``'s data was older
    than its class's bound (``slo.freshness``); NaN without any bound. A class without a
    bound never counts as stale."""
    if not slo.has_freshness:
        return float("nan")
    timelines, flows = sources(arch)
    intervals = []
    for feature_class, timeline in timelines:
        bound = slo.freshness_bound(feature_class)
        if bound is not None:
            intervals += stale_intervals(timeline, bound, start_s, end_s)
    for feature_class, flow in flows:
        bound = slo.freshness_bound(feature_class)
        if bound is not None:
            intervals += flow_stale_intervals(flow, bound, start_s, end_s)
    return union_length(intervals) / 60.0 / ((end_s - start_s) / DAY_S)


def incidents(arch) -> list:
    """Every :class:`sim.engine.control.Incident` of an architecture's pipelines from the start of
    the simulation on (those of the control plane's lead before it left out), in time
    order."""
    found = []
    for part in ("store", "features", "stream"):
        found += getattr(getattr(arch, part, None), "incidents", [])
    return sorted((i for i in found if i.end_s >= 0), key=lambda i: (i.start_s, i.component))


def failures_per_day(arch, start_s: float, end_s: float) -> float:
    """Failed or preempted runs and stream outages that began in the window, per day."""
    began = sum(1 for i in incidents(arch) if start_s <= i.start_s < end_s)
    return began / ((end_s - start_s) / DAY_S)


def incident_frame(architectures) -> pd.DataFrame:
    """One row per incident: architecture, component, cause, start_s, end_s."""
    rows = [{"architecture": a.name, "component": i.component, "cause": i.cause,
             "start_s": i.start_s, "end_s": i.end_s}
            for a in architectures for i in incidents(a)]
    return pd.DataFrame(rows, columns=["architecture", "component", "cause", "start_s",
                                       "end_s"])
