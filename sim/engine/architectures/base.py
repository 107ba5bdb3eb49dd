"""What every architecture sees (the World) and what it provides (the Architecture protocol)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import simpy

from sim.results.metrics import Outcomes
from sim.engine.rng import Streams
from sim.scenario import Scenario
from sim.engine.training import ModelLifecycle
from sim.engine.workload import Chunk, Population


@dataclass
class World:
    """What an architecture sees in a run: the same entities as every other, and the model
    history it serves with (shared, or its own when it has a training section)."""

    scenario: Scenario
    streams: Streams
    population: Population
    model: ModelLifecycle
    history_start_s: float  # the control plane starts here (< 0) to be in steady state at 0


class Architecture(Protocol):
    """What the engine, the reference engine and the results need of an architecture; every
    kind in ``sim.engine.architectures.kinds`` implements all of it (tests/test_engine.py checks)."""

    name: str
    kind: str
    losses: dict[str, float]  # metric lost by the measured real predictions, by cause

    def lead_s(self, population_size: int) -> float:
        """How far before time 0 this architecture's schedules must start."""

    def start(self, env: simpy.Environment, world: World) -> None:
        """Start the control-plane processes (jobs, materialisations, stream windows)."""

    def serve(self, chunk: Chunk) -> Outcomes:
        """Per-request outcomes for a time-ordered chunk of requests."""

    def finish(self) -> Outcomes | None:
        """Outcomes of the requests still undecided when arrivals end (batching, autoscaling)."""

    def fusable(self, chunk: Chunk, accumulator) -> bool:
        """Whether :meth:`serve_fused` can serve this chunk (the fused kernels of
        ``sim.engine.architectures.fused``); else :meth:`serve` and ``accumulator.add``."""

    def serve_fused(self, chunk: Chunk, accumulator, keep: bool) -> Outcomes | None:
        """:meth:`serve` and ``accumulator.add`` in one, the same bits, faster; the chunk's
        outcomes only when ``keep``."""

    def cost_usd_per_day(self, start_s: float, end_s: float) -> dict[str, float]:
        """Cost per component per day over a window."""

    def wasted(self, start_s: float, end_s: float) -> tuple[int, int]:
        """(predictions scored, predictions never used) for jobs superseded in the window."""

    def trainings(self, start_s: float, end_s: float) -> int:
        """Training runs started in the window by the model history it serves with."""

    def serving_stats(self) -> dict | None:
        """Replicas and mean occupancy per request, for utilisation and stability."""


def empty_outcomes(n: int, t_s: np.ndarray) -> dict:
    return dict(t_s=t_s, latency_s=np.zeros(n), queue_wait_s=np.zeros(n),
                fallback=np.zeros(n, bool), timed_out=np.zeros(n, bool),
                feature_age_s=np.full(n, np.nan), model_age_s=np.full(n, np.nan),
                quality=np.zeros(n), busy_s=np.zeros(n), service_start_s=t_s.copy(),
                queued=np.zeros(n, bool), service_s=np.full(n, np.nan),
                batch_age_s=np.full(n, np.nan), stream_age_s=np.full(n, np.nan),
                cold_start=np.zeros(n, bool), expired=np.zeros(n, bool),
                answer=np.zeros(n, np.int8), network_s=np.zeros(n), device_s=np.zeros(n))


def full_answers(out: dict) -> dict:
    """``out`` with ``expired`` and ``answer`` as arrays (None means: nothing expired, and
    every fallback answered by the default), so that parts can be merged."""
    n = out["t_s"].size if "t_s" in out else out["fallback"].size
    if out.get("expired") is None:
        out["expired"] = np.zeros(n, bool)
    if out.get("answer") is None:
        out["answer"] = np.where(out["fallback"], 2, 0).astype(np.int8)
    for key in ("network_s", "device_s"):
        if out.get(key) is None:
            out[key] = np.zeros(n)
    return out
