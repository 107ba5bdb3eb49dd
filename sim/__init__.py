"""predsim: compare batch, online, streaming and hybrid ML prediction on your own workload.

    >>> import sim
    >>> scenario = sim.load_scenario("scenarios/quickstart.yaml")
    >>> results = sim.run(scenario)
    >>> results.summary[["architecture", "quality_mean", "net_value_usd_per_day"]]
"""

from sim.engine.run import simulate
from sim.results.replications import run
from sim.results.results import Results
from sim.scenario import Scenario, ScenarioError, load_scenario, scenario_from_dict

__all__ = ["load_scenario", "scenario_from_dict", "run", "simulate", "Results", "Scenario", "ScenarioError"]
