"""The engine: what happens to requests, given a scenario.

``run`` (the run loop: SimPy for the control plane, numpy chunks for the request plane),
``control`` (schedules, retries, incidents), ``training`` (the model history), ``workload``
(entities and requests), ``rng`` (named random streams), ``freshness`` (timelines, feature
and model ages, quality), ``serving``, ``slow_periods`` and ``batch_curve`` (the serving
queue's kernels), ``architectures/`` (the four kinds, built from stores, pipelines and
serving) and ``reference`` (every request as its own SimPy process, to check the fast path).
"""
