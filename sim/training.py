"""Retraining: scheduled training runs and the deploys that change the model requests see."""

from __future__ import annotations

import simpy

from sim.control import Run, periodic
from sim.freshness import Timeline
from sim.scenario import Training


class ModelLifecycle:
    """The deployed model over time, as a :class:`Timeline` of deploys with data cut-offs.

    Without a ``training`` section the model is never retrained: it was trained on data up to
    the start of the simulation (cut-off 0). With one, runs start every ``every`` (with cut-off
    at their start) and deploy ``duration + deploy_delay`` later; the schedule is taken to have
    been running before the simulation starts, so the model in service at time 0 is already as
    old as the schedule implies.
    """

    def __init__(self, training: Training | None):
        self.training = training
        self.deploys = Timeline("model")
        self.runs: list[Run] = []

    @property
    def lead_s(self) -> float:
        """How long before time 0 the schedule must start to be in steady state."""
        t = self.training
        return 0.0 if t is None else 2 * t.every + t.duration + t.deploy_delay

    def start(self, env: simpy.Environment, since_s: float) -> None:
        if self.training is None:
            self.deploys.append(env.now, 0.0, version=0)
            return
        t = self.training
        env.process(periodic(env, t.every, t.start_at, since_s, self._train))

    def _train(self, env: simpy.Environment, scheduled_s: float):
        t = self.training
        self.runs.append(Run(scheduled_s, t.duration, 1, t.every))
        yield env.timeout(t.duration + t.deploy_delay)
        self.deploys.append(env.now, scheduled_s, version=len(self.deploys))
