"""The bundled real log: scenarios/azure-llm-router.yaml (a trace without ids, measured batch
curves, a serving section priced apart)."""

from pathlib import Path

import numpy as np
import pytest

import sim
from sim.inputs.logs import read_log

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "scenarios" / "azure-llm-router.yaml"


@pytest.fixture(scope="module")
def results():
    scenario = sim.load_scenario(SCENARIO, ["horizon=5m", "warmup=30s"])
    return scenario, sim.simulate(scenario)


def test_it_replays_the_azure_trace_at_its_rate_with_entities_from_the_popularity(results):
    scenario, out = results
    log = read_log(ROOT / "scenarios" / "data" / "azure_llm_conv_2023.csv",
                   size_column="ContextTokens")
    assert not log.has_entities and log.n_requests == 19_366
    assert log.sizes is not None and log.size_column == "ContextTokens"
    speedup = scenario.workload.arrivals.replay_speedup
    assert speedup == pytest.approx(276 / log.mean_rate_per_s)
    # the requests of the measured window [30 s, 330 s) are the log's, sped up and looped
    period = log.period_s / speedup
    t = np.concatenate([log.times_s / speedup + k * period for k in range(int(330 / period) + 1)])
    expected = np.count_nonzero((t >= 30) & (t < 330))
    requests = out.summary.set_index("architecture")["requests"]
    assert (requests == expected).all()


def test_each_serving_section_is_paid_at_its_own_price(results):
    _, out = results
    cost = out.summary.set_index("architecture")["cost_usd_per_day_serving"]
    assert cost["gpu"] == pytest.approx(24 * 4.00 * 1)     # costs.replica_hour, one GPU
    assert cost["cpu"] == pytest.approx(24 * 0.40 * 4)     # serving.replica_hour, four nodes


def test_the_gpu_answers_faster_than_the_cpu_nodes(results):
    _, out = results
    s = out.summary.set_index("architecture")
    assert s.loc["gpu", "latency_ms_p99"] < 20 < s.loc["cpu", "latency_ms_p50"]


def test_work_can_grow_with_each_request_size_in_both_engines(tmp_path):
    from tests.test_reference import assert_same
    per_token = "2us"
    scenario = sim.load_scenario(SCENARIO, ["horizon=20s", "warmup=5s", "workload.arrivals.rate=40/s",
                                            f"architectures.cpu.serving.time_per_size={per_token}",
                                            "architectures.gpu.serving.batching.max_batch=4"])
    assert_same(scenario)
    plain = sim.simulate(sim.load_scenario(SCENARIO, ["horizon=20s", "warmup=5s",
                                                      "workload.arrivals.rate=40/s"]))
    sized = sim.simulate(scenario)
    s0 = plain.summary.set_index("architecture")
    s1 = sized.summary.set_index("architecture")
    # a CPU batch's time grows by 2 us x its requests' tokens (about 1,155 per request)
    grown = s1.loc["cpu", "service_ms_mean"] - s0.loc["cpu", "service_ms_mean"]
    assert 1.0 < grown < 40.0


def test_time_per_size_needs_requests_with_a_size():
    with pytest.raises(sim.ScenarioError, match="time_per_size: requests have no size"):
        sim.load_scenario(ROOT / "scenarios" / "quickstart.yaml",
                          ["architectures.online.serving.time_per_size=1us"])
