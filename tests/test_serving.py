"""The queueing kernel on hand-computed traces."""

import numpy as np
import pytest

from sim.engine.serving import ReplicaPool, fifo_queue


def serve(arrivals, services, replicas, timeout=None, pool=None):
    pool = pool or ReplicaPool(replicas, timeout)
    wait, started = pool.serve(np.array(arrivals, float), np.array(services, float))
    return wait.tolist(), started.tolist(), pool


def test_single_server_lindley_trace():
    # arrivals 0,1,2,10 with service 3: starts at 0,3,6,10
    wait, started, _ = serve([0, 1, 2, 10], [3, 3, 3, 3], replicas=1)
    assert wait == [0, 2, 4, 0]
    assert all(started)


def test_two_servers_take_the_earliest_free_replica():
    # both replicas busy until 2, then the third request takes one, the fourth the other
    wait, _, pool = serve([0, 0, 0, 1], [2, 2, 2, 2], replicas=2)
    assert wait == [0, 0, 2, 1]
    assert sorted(pool.free_at_s.tolist()) == [4, 4]


def test_requests_that_would_wait_past_the_timeout_give_up_without_occupying_a_replica():
    wait, started, pool = serve([0, 0, 0, 6], [5, 5, 5, 1], replicas=1, timeout=3)
    assert started == [True, False, False, True]
    assert wait == [0, 3, 3, 0]  # gave up after waiting the whole timeout
    assert pool.free_at_s.tolist() == [7]  # the abandoned requests left no work behind


def test_state_carries_over_between_chunks():
    _, _, pool = serve([0], [10], replicas=1)
    wait, _, _ = serve([4], [1], replicas=1, pool=pool)
    assert wait == [6]


def test_busy_time_is_the_sum_of_started_service():
    free = np.zeros(1)
    wait, started = np.empty(3), np.empty(3, bool)
    busy = fifo_queue(np.array([0.0, 0.0, 0.0]), np.array([5.0, 5.0, 5.0]), 3.0, free, wait,
                      started)
    assert busy == pytest.approx(5.0)
