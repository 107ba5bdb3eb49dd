"""The ``predsim`` command line: the commands are in ``main``; ``entry`` is what the
``predsim`` script runs, and ``python -m sim.cli`` runs it too."""

from sim.cli.main import entry

__all__ = ["entry"]
