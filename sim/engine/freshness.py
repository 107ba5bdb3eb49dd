"""Feature age, model age and quality.

A :class:`Timeline` records refreshes (a batch job finishing, a materialisation, a stream window
becoming visible, a model deploy) as the control plane produces them; requests then look up, in
bulk, the freshest refresh visible at their time. Quality is the team's metric as a function of
the age of each feature class and of the model (DESIGN.md): the losses against ``fresh`` of each
class (its staleness, a cold start, or its absence, :func:`feature_losses`), of model age and of
drift add up, and the result is clamped to [0, fresh].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from sim.scenario import Curve, Drift, Quality
from sim.units import DAY_S


class Timeline:
    """Refreshes appended in time order; lookup of the freshest one visible at given times.

    Each refresh has a ``visible_at_s`` (non-decreasing: the SimPy control plane appends in time
    order), a data ``cutoff_s`` and any other named values. Refreshes may finish out of order of
    their cut-offs (a slow job overtaken by a later one); a lookup returns the visible refresh
    with the newest cut-off.
    """

    def __init__(self, name: str):
        self.name = name
        self._rows: list[dict] = []
        self._arrays: dict[str, np.ndarray] | None = None
        self.current: int = -1  # the refresh in force now (newest cut-off so far), for SimPy

    def append(self, visible_at_s: float, cutoff_s: float, **values: float) -> int:
        if self._rows and visible_at_s < self._rows[-1]["visible_at_s"]:
            raise ValueError("refreshes must be appended in time order")
        self._rows.append({"visible_at_s": visible_at_s, "cutoff_s": cutoff_s, **values})
        self._arrays = None
        index = len(self._rows) - 1
        if self.current < 0 or cutoff_s > self._rows[self.current]["cutoff_s"]:
            self.current = index
        return index

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def rows(self) -> list[dict]:
        return self._rows

    def arrays(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            keys = self._rows[0].keys() if self._rows else ("visible_at_s", "cutoff_s")
            arrays = {k: np.array([r[k] for r in self._rows], dtype=float) for k in keys}
            cutoff = arrays["cutoff_s"]
            # best[i]: index of the newest cut-off among refreshes 0..i
            running = np.maximum.accumulate(cutoff) if cutoff.size else cutoff
            is_new_best = np.r_[True, running[1:] > running[:-1]] if cutoff.size else cutoff
            best = np.maximum.accumulate(np.where(is_new_best, np.arange(cutoff.size), 0))
            arrays["best"] = best.astype(np.int64)
            self._arrays = arrays
        return self._arrays

    def at(self, t_s: np.ndarray, key: str, missing: float = np.nan) -> np.ndarray:
        """``key`` of the refresh in force at each of the (time-ordered) ``t_s``: the visible
        refresh with the newest cut-off; ``missing`` before any."""
        arrays = self.arrays()
        t_s = np.asarray(t_s, dtype=float)
        out = np.full(t_s.shape, missing)
        if t_s.size and arrays[key].size:
            _value_in_force(arrays["visible_at_s"], arrays["best"], arrays[key], t_s, out)
        return out

    def cutoff_at(self, t_s: float) -> float:
        """The data cut-off in force at one time (scalar form, for control-plane processes)."""
        cutoff = -np.inf
        for row in self._rows:
            if row["visible_at_s"] > t_s:
                break
            cutoff = max(cutoff, row["cutoff_s"])
        return cutoff


@njit(cache=True, nogil=True)
def _last_visible(visible_at_s, t0):
    """Index of the last refresh visible at ``t0`` (-1 if none): a binary search."""
    lo, hi = 0, visible_at_s.shape[0]
    while lo < hi:
        mid = (lo + hi) // 2
        if visible_at_s[mid] <= t0:
            lo = mid + 1
        else:
            hi = mid
    return lo - 1


@njit(cache=True, nogil=True)
def _value_in_force(visible_at_s, best, column, t_s, out):
    """``column`` of the freshest refresh visible at each sorted request time (``out`` keeps
    its value before any): a merge of the two sorted sequences, O(n + m), and a gather."""
    m = visible_at_s.shape[0]
    j = _last_visible(visible_at_s, t_s[0])
    for i in range(t_s.shape[0]):
        while j + 1 < m and visible_at_s[j + 1] <= t_s[i]:
            j += 1
        if j >= 0:
            out[i] = column[best[j]]


def curve_value(curve: Curve, fresh: float, age_s: np.ndarray) -> np.ndarray:
    """The metric at each age according to ``curve`` (the other age held at zero)."""
    if curve.exponential is not None:
        c = curve.exponential
        return c.floor + (fresh - c.floor) * np.exp2(-age_s / c.half_life)
    if curve.linear is not None:  # max(floor, fresh + per_day * age / 1 day), in place
        c = curve.linear
        value = np.multiply(age_s, c.per_day / DAY_S)
        value += fresh
        return np.maximum(value, c.floor, out=value)
    ages = np.array([a for a, _ in curve.table])
    values = np.array([v for _, v in curve.table])
    return np.interp(age_s, ages, values)


@dataclass
class FeatureAges:
    """The age of each feature class a request's prediction used.

    ``batch_s`` and ``stream_s`` are per-request ages, NaN where the entity has none of those
    features yet (a cold start), or None when the architecture has no such class at all;
    ``request`` says whether it computes request-time features (always age zero). A class with
    a ``ttl`` (``ttl_batch``, ``ttl_stream``) is expired where its age is above it: the store
    has dropped those features, so the prediction is made without them (as for a cold start,
    but counted apart); the ages a prediction *used* (:meth:`used`) are NaN there.
    """

    batch_s: np.ndarray | None
    stream_s: np.ndarray | None
    request: bool = False
    ttl_batch: float | None = None
    ttl_stream: float | None = None

    def _ttl(self, feature_class: str) -> float | None:
        return self.ttl_batch if feature_class == "batch" else self.ttl_stream

    def present(self) -> list[tuple[str, np.ndarray]]:
        return [(c, a) for c, a in (("batch", self.batch_s), ("stream", self.stream_s))
                if a is not None]

    def expired_in(self, feature_class: str, age: np.ndarray) -> np.ndarray | bool:
        """Where the class's features had expired (older than its ttl)."""
        ttl = self._ttl(feature_class)
        return False if ttl is None else np.greater(age, ttl)

    def used(self, feature_class: str) -> np.ndarray | None:
        """The class's age where the prediction used its features (NaN if none or expired)."""
        age = self.batch_s if feature_class == "batch" else self.stream_s
        if age is None or self._ttl(feature_class) is None:
            return age
        return np.where(self.expired_in(feature_class, age), np.nan, age)

    def _combined(self, pick) -> np.ndarray | None:
        ages = [self.used(c) for c, _ in self.present()]
        if not ages:
            return None
        out = ages[0]
        for a in ages[1:]:
            out = pick(out, a)  # np.fmax / np.fmin: a NaN (cold) class gives way to the other
        return out

    def oldest_s(self) -> np.ndarray | None:
        """Per request, the age of its stalest features (the headline feature age); NaN when
        it has no aged features at all."""
        return self._combined(np.fmax)

    def newest_s(self) -> np.ndarray | None:
        """Per request, the age of its freshest aged features (what drift can be seen in)."""
        return self._combined(np.fmin)

    def cold(self) -> np.ndarray | bool:
        """Per request, whether some feature class had nothing for its entity yet."""
        cold = False
        for _, a in self.present():
            cold = np.isnan(a) | cold
        return cold

    def expired(self) -> np.ndarray | bool:
        """Per request, whether some feature class had expired."""
        expired = False
        for c, a in self.present():
            expired = self.expired_in(c, a) | expired
        return expired


def feature_losses(spec: Quality, ages: FeatureAges):
    """Metric lost to features, per request: ``(staleness, cold_start, missing, expired)``.

    Each class the architecture has loses ``fresh - curve(age)`` (its staleness) or, for an
    entity with none of its features yet, ``fresh - cold_start``, or the same when its
    features had expired (past the class's ttl); each class it lacks loses ``fresh -
    without`` for every request (a constant). See :class:`sim.scenario.Quality`.
    """
    staleness = cold = expired = 0.0
    for feature_class, age in ages.present():
        gone = ages.expired_in(feature_class, age)
        lost = spec.fresh - spec.cold_start(feature_class)
        loss = staleness_loss(spec.curve(feature_class), spec.fresh, age)
        if not np.isscalar(gone):
            np.copyto(loss, 0.0, where=gone)
            if gone.any():
                expired = expired + np.where(gone, lost, 0.0)
        staleness = loss if np.isscalar(staleness) else np.add(staleness, loss, out=staleness)
        missing_data = np.isnan(age)
        if missing_data.any():
            cold = cold + np.where(missing_data, lost, 0.0)
    lacked = [c for c, a in (("batch", ages.batch_s), ("stream", ages.stream_s)) if a is None]
    if not ages.request:
        lacked.append("request")
    missing = sum(spec.fresh - spec.without(c) for c in lacked)
    return staleness, cold, missing, expired


def staleness_loss(curve: Curve | None, fresh: float, age_s: np.ndarray) -> np.ndarray:
    """Metric lost to one age alone (the other held at zero): ``fresh - curve(age)``; no loss
    without a curve or where the age is NaN."""
    age_s = np.asarray(age_s, dtype=float)
    if curve is None:
        return np.zeros(age_s.shape)
    if curve.exponential is not None:  # (fresh - floor)(1 - 2^(-age / half-life)), in place
        c = curve.exponential
        loss = np.multiply(age_s, -1.0 / c.half_life)
        np.exp2(loss, out=loss)
        np.subtract(1.0, loss, out=loss)
        loss *= fresh - c.floor
    else:
        loss = fresh - curve_value(curve, fresh, age_s)
    if loss.ndim:
        np.copyto(loss, 0.0, where=np.isnan(loss))
        return loss
    return np.where(np.isnan(loss), 0.0, loss)


# Feature data times are derived as request time minus feature age, which may round a cut-off
# that is exactly at a sudden shift to a hair before it; this much slack absorbs that.
FEATURE_TIME_SLACK_S = 1e-6


def shift_since(drift: Drift, data_time_s: np.ndarray, t_s: np.ndarray) -> np.ndarray:
    """How much of ``drift`` happened between ``data_time_s`` and ``t_s``, in [0, 1].

    sudden: 1 when ``data_time < at <= t``; gradual: ``max(0, S(t) - S(data_time))`` with
    ``S(x) = clip((x - at) / ramp, 0, 1)``; recurring: ``(1 - cos(2 pi (p(t) - p(data_time)) /
    period)) / 2`` with ``p(x) = max(x, at)`` (see :class:`sim.scenario.Drift`).
    """
    if drift.kind == "sudden":
        return ((t_s >= drift.at) & (data_time_s < drift.at)).astype(float)
    if drift.kind == "gradual":
        now = np.clip((t_s - drift.at) / drift.ramp, 0.0, 1.0)
        then = np.clip((data_time_s - drift.at) / drift.ramp, 0.0, 1.0)
        return np.maximum(0.0, now - then)
    phase = np.maximum(t_s, drift.at) - np.maximum(data_time_s, drift.at)
    return (1.0 - np.cos(2.0 * np.pi * phase / drift.period)) / 2.0


def drift_loss(drifts: list[Drift], t_s: np.ndarray, model_cutoff_s: np.ndarray,
               feature_cutoff_s: np.ndarray | None = None) -> np.ndarray:
    """Metric lost to drift: each shift hurts predictions that have not caught up with it.

    A model has caught up with the shift up to its data cut-off minus ``recovery_data``; the
    features up to their own data time ``feature_cutoff_s`` (request time minus feature age;
    None or NaN: unknown, so they help nothing). Per drift, with ``m`` and ``f`` the shift since
    those data times (:func:`shift_since`) and ``v = visible_in_features``:
    ``quality_drop * (m - v * (m - min(m, f)))``. With the defaults (sudden, no recovery data,
    nothing visible in features) this is ``quality_drop`` when ``model_cutoff < at <= t``.
    """
    t_s = np.asarray(t_s, dtype=float)
    model_cutoff_s = np.asarray(model_cutoff_s, dtype=float)
    loss = np.zeros(np.shape(t_s))
    for d in drifts:
        model_shift = shift_since(d, model_cutoff_s - d.recovery_data, t_s)
        if d.visible_in_features > 0 and feature_cutoff_s is not None:
            feature_time = np.asarray(feature_cutoff_s, dtype=float) + FEATURE_TIME_SLACK_S
            feature_shift = shift_since(d, feature_time, t_s)
            feature_shift = np.where(np.isnan(feature_time), model_shift, feature_shift)
            model_shift = model_shift - d.visible_in_features * (
                model_shift - np.minimum(model_shift, feature_shift))
        loss += d.quality_drop * model_shift
    return loss
