"""Studies built on many runs: ``designs`` (the points of a sweep or search: values, knobs,
grids and random designs), ``sweep`` (simulating them, resumably, into one table), ``search``
(optimize and capacity) with ``windows`` (where their constraints are judged), ``advice``
(retraining intervals), ``robustness`` (breakeven and sensitivity), ``abtest`` (the A/B test
planner), ``verify`` with ``theory`` (the engine against queueing theory and closed forms), and
``executors`` (local processes or Dask for all of them).
"""
