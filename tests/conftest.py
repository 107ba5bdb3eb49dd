"""Shared helpers: small scenarios built in code, and confidence intervals over replications."""

from __future__ import annotations

import copy
import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

import sim

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "scenarios"

BASE = {
    "name": "test",
    "horizon": "1h",
    "warmup": "10m",
    "seed": 1,
    "workload": {"entities": 1000, "arrivals": {"rate": "10/s"}},
    "quality": {"metric": "ctr", "fresh": 0.05, "fallback": 0.02},
    "architectures": {},
}


def make_scenario(architectures: dict, **changes) -> sim.Scenario:
    """A scenario from BASE with the given architectures and dotted-key changes."""
    raw = copy.deepcopy(BASE)
    raw["architectures"] = architectures
    return sim.scenario_from_dict(raw, overrides={k.replace("__", "."): v
                                                  for k, v in changes.items()})


def online(replicas=1, service=None, timeout=None, features_every="1d", duration="0s",
           feature_lookup=0):
    serving = {"replicas": replicas, "service_time": service or {"exponential": {"mean": "10ms"}}}
    if timeout is not None:
        serving["timeout"] = timeout
    return {"kind": "online", "features": {"batch": {"every": features_every,
                                                     "duration": duration}},
            "feature_lookup": feature_lookup, "serving": serving}


def replicate(scenario: sim.Scenario, metric: str, architecture: str, n: int,
              extract=None) -> np.ndarray:
    """One value of ``metric`` per independent replication."""
    values = []
    for r in range(n):
        results = sim.run(scenario, replication=r)
        if extract is not None:
            values.append(extract(results))
        else:
            row = results.summary.set_index("architecture").loc[architecture]
            values.append(float(row[metric]))
    return np.array(values)


def ci_half_width(values: np.ndarray, level: float = 0.99) -> float:
    """Student-t confidence half-width of the mean of independent replications."""
    n = len(values)
    return float(stats.t.ppf(0.5 + level / 2, n - 1) * values.std(ddof=1) / math.sqrt(n))


@pytest.fixture
def scenario_dir() -> Path:
    return SCENARIOS


def load_fidelity(name: str):
    """``benchmarks/fidelity/<name>.py`` as a module (the harness is a script folder, not a
    package), loaded once per test session."""
    key = f"predsim_fidelity_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            key, ROOT / "benchmarks" / "fidelity" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]
