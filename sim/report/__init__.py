"""Results rendered for people: ``output`` (terminal tables, the files of ``--out``, written
atomically), ``plots`` and ``sweep_plots`` (figures) and ``manager_report`` (the one-page
report for a manager).
"""
