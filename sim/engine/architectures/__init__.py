"""The four prediction architectures behind one small protocol.

An architecture starts its control-plane processes on the shared SimPy environment
(:meth:`start`), turns a chunk of requests into :class:`~sim.results.metrics.Outcomes` (:meth:`serve`),
and reports what it cost (:meth:`cost_usd_per_day`) and how many of its precomputed predictions
nobody used (:meth:`wasted`). Building blocks shared by several kinds live in ``parts.py``.
"""

from __future__ import annotations

from sim.engine.architectures.base import Architecture, World
from sim.engine.architectures.kinds import BatchModel, HybridModel, OnlineModel, build
from sim.engine.architectures.registry import KINDS, Kind, kind_of

__all__ = ["Architecture", "World", "BatchModel", "OnlineModel", "HybridModel", "build", "KINDS",
           "Kind", "kind_of"]
