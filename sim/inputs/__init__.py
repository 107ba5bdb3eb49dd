"""From the team's data and words to a scenario: ``logs`` (reading request logs), ``fit`` (a
workload section fitted to a log: traffic, entities, popularity), ``mmpp_fit`` (its bursts),
``latency_fit`` (latency distributions fitted to samples), ``slow_fit`` (slow periods),
``calibrate`` (batch curves, freshness curves), ``starter`` (``predsim init``), ``explain``
(a scenario in plain sentences) and ``preflight`` (what a run will cost before it starts).
"""
