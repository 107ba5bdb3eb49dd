"""One seed -> named, independent random streams.

Each stream is derived from the scenario seed, the replication number and the stream's *name*
(``numpy.random.SeedSequence(seed, spawn_key=(replication, crc32(name)))``), so adding a stream
never shifts the numbers another stream produces, and nothing touches global random state.
"""

from __future__ import annotations

import zlib

import numpy as np


class Streams:
    """Named random generators for one run (one replication) of a scenario."""

    def __init__(self, seed: int, replication: int = 0):
        self.seed = int(seed)
        self.replication = int(replication)
        self._generators: dict[str, np.random.Generator] = {}

    def __getitem__(self, name: str) -> np.random.Generator:
        generator = self._generators.get(name)
        if generator is None:
            generator = self.fresh(name)
            self._generators[name] = generator
        return generator

    def fresh(self, name: str) -> np.random.Generator:
        """A new generator for stream ``name``, from its first number: for inputs that two
        engines draw each for itself and must see alike (the slow periods' paths)."""
        key = (self.replication, zlib.crc32(name.encode()))
        return np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=key))
