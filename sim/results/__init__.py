"""What a run measured: ``metrics`` (per-request outcomes accumulated in fixed memory),
``catalogue`` (every reported metric: column, unit, JSON key, label, definition), ``results``
(the tables and the JSON contract), ``reliability`` (staleness over time and incidents) and
``replications`` (several runs, their confidence intervals and paired differences).
"""
