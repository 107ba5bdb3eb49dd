"""From the team's data and words to a scenario: ``fit`` (request logs: traffic, entities,
popularity), ``mmpp_fit`` (bursts), ``calibrate`` and ``slow_fit`` (latency distributions,
slow periods, batch curves, freshness curves), ``starter`` (``predsim init``), ``explain``
(a scenario in plain sentences) and ``preflight`` (what a run will cost before it starts).
"""
