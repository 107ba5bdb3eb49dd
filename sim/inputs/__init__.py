"""From the team's data and words to a scenario: ``logs`` (reading request logs), ``fit`` (a
workload section fitted to a log: traffic, entities, popularity), ``mmpp_fit`` (its bursts),
``latency_fit`` (latency distributions fitted to samples), ``series`` (time-ordered service
times and whether they come independently), ``hmm`` and ``slow_fit`` (slow periods fitted to
them), ``calibrate`` (batch curves, freshness curves), ``starter`` (``predsim init``),
``explain`` (a scenario in plain sentences) and ``preflight`` (what a run will cost before it
starts).
"""
