"""The architecture kinds, in one place: each kind's scenario section, its runtime class, what it
is in plain words and what it has.

Every place that needs to tell the kinds apart asks this registry, by trait, rather than naming
kinds: building the runtime model (:func:`sim.engine.architectures.build`), the manager report's words
and remarks, ``explain``. To add a kind: write its scenario section (``sim/scenario/
architectures.py``, added to ``ARCHITECTURE_SPECS``), its runtime class (``kinds.py``, satisfying
:class:`sim.engine.architectures.Architecture`), and one :class:`Kind` here; ``tests/test_engine.py``
checks that every scenario kind has an entry and that the runtime classes satisfy the protocol.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.engine.architectures.edge import EdgeModel
from sim.engine.architectures.kinds import BatchModel, HybridModel, OnlineModel
from sim.scenario import (BatchArchitecture, EdgeArchitecture, HybridArchitecture,
                          OnlineArchitecture, StreamingArchitecture)


@dataclass(frozen=True)
class Kind:
    """One architecture kind."""

    name: str
    spec: type                 # its section of the scenario (pydantic model)
    model: type                # its runtime class
    words: str                 # what it is, in plain words
    stores_predictions: bool   # requests (some or all) read predictions a batch job stored
    predicts_online: bool      # requests (some or all) are predicted on serving replicas
    stream_features: bool      # it can have features from a stream processor
    on_device: bool = False    # requests are predicted on the user's device


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("batch", BatchArchitecture, BatchModel, "batch prediction",
         stores_predictions=True, predicts_online=False, stream_features=False),
    Kind("online", OnlineArchitecture, OnlineModel, "online prediction",
         stores_predictions=False, predicts_online=True, stream_features=False),
    Kind("streaming", StreamingArchitecture, OnlineModel, "streaming prediction",
         stores_predictions=False, predicts_online=True, stream_features=True),
    Kind("hybrid", HybridArchitecture, HybridModel,
         "hybrid prediction (stored for the most active entities, online for the rest)",
         stores_predictions=True, predicts_online=True, stream_features=True),
    Kind("edge", EdgeArchitecture, EdgeModel,
         "on-device prediction (on the user's phone, with a cloud path when configured)",
         stores_predictions=False, predicts_online=False, stream_features=False,
         on_device=True),
)}


def kind_of(spec) -> Kind:
    """The registry entry of a scenario's architecture section."""
    return KINDS[spec.kind]
