"""Studies built on many runs: ``sweep`` (grids and random designs), ``search`` (optimize and
capacity), ``advice`` (retraining intervals), ``robustness`` (breakeven and sensitivity),
``abtest`` (the A/B test planner), ``verify`` with ``theory`` (the engine against queueing
theory and closed forms), and ``executors`` (local processes or Dask for all of them).
"""
