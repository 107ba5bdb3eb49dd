"""Where simulations run: in this process, in a pool of local processes, or on a Dask cluster.

One home for the process pools of replications (:mod:`sim.results.replications`), sweeps and searches
(:mod:`sim.studies.sweep`, :mod:`sim.studies.search`, :mod:`sim.studies.advice`) and the report's breakeven and
sensitivity runs (:mod:`sim.studies.robustness`). An executor is a context manager with
``map(fn, tasks, on_done)`` (results in the tasks' order) and ``map_unordered(fn, tasks)``
(``(index, result)`` as they complete); ``fn`` must be a module-level function, so it pickles.
Results never depend on the executor: every task carries its own seed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, Callable


class ExecutorError(ValueError):
    """An executor that cannot start (a Dask scheduler that does not answer); the message
    names the option."""


class LocalExecutor:
    """Tasks in this process (``workers=1``) or in a pool of ``workers`` processes."""

    def __init__(self, workers: int | None = None):
        self.workers = max(1, int(workers or os.cpu_count() or 1))
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def describe(self) -> str:
        return f"{self.workers} local process{'es' if self.workers != 1 else ''}"

    def map(self, fn: Callable, tasks: Sequence[tuple],
            on_done: Callable[[int], None] | None = None) -> list:
        """``fn(*task)`` for every task, in the tasks' order; ``on_done(i)`` after each result
        (in that order too)."""
        out = [None] * len(tasks)
        if self.workers == 1 or len(tasks) <= 1:
            for i, task in enumerate(tasks):
                out[i] = fn(*task)
                if on_done is not None:
                    on_done(i)
            return out
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.workers)
        futures = [self._pool.submit(fn, *task) for task in tasks]
        try:
            for i, future in enumerate(futures):
                out[i] = future.result()
                if on_done is not None:
                    on_done(i)
        finally:
            for future in futures:
                future.cancel()
        return out

    def map_unordered(self, fn: Callable, tasks: Sequence[tuple]) -> Iterator[tuple[int, Any]]:
        """``(index, fn(*task))`` for every task, in order of completion."""
        if self.workers == 1 or len(tasks) <= 1:
            for i, task in enumerate(tasks):
                yield i, fn(*task)
            return
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.workers)
        index = {self._pool.submit(fn, *task): i for i, task in enumerate(tasks)}
        pending = set(index)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=index.__getitem__):
                    yield index[future], future.result()
        finally:
            for future in pending:
                future.cancel()


class DaskExecutor:
    """Tasks on a Dask distributed cluster at ``address`` (``'local'``: a LocalCluster of
    ``workers`` single-threaded processes started here, for trying it)."""

    def __init__(self, address: str, workers: int | None = None):
        self.address = address
        self.workers = workers
        self.client = None
        self._cluster = None

    def __enter__(self):
        try:
            from distributed import Client, LocalCluster
        except ImportError:  # pragma: no cover - a dependency of predsim
            raise ExecutorError("--dask: the 'distributed' package is not installed "
                             "(pip install 'dask[distributed]')") from None
        try:
            if self.address == "local":
                self._cluster = LocalCluster(
                    n_workers=self.workers or os.cpu_count() or 1, threads_per_worker=1,
                    processes=True, dashboard_address=None, silence_logs=logging.ERROR)
                self.client = Client(self._cluster)
            else:
                self.client = Client(self.address, timeout="10s")
        except (OSError, TimeoutError, ValueError) as exc:
            self.close()
            raise ExecutorError(f"--dask {self.address}: cannot connect to a Dask scheduler "
                             f"there ({exc}); give an address such as tcp://host:8786, or "
                             f"'local'") from None
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.client is not None:
            self.client.close()
            self.client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

    def describe(self) -> str:
        if self.address == "local":
            n = self.workers or os.cpu_count() or 1
            return f"a local Dask cluster of {n} worker{'s' if n != 1 else ''}"
        return f"the Dask cluster at {self.address}"

    def map_unordered(self, fn: Callable, tasks: Sequence[tuple]) -> Iterator[tuple[int, Any]]:
        from distributed import as_completed
        futures = [self.client.submit(fn, *task, pure=False) for task in tasks]
        index = {future.key: i for i, future in enumerate(futures)}
        try:
            for future in as_completed(futures):
                yield index[future.key], future.result()
        finally:
            for future in futures:
                future.cancel()


def make_executor(workers: int | None = None, dask: str | None = None):
    """A Dask executor when ``dask`` is an address (or ``'local'``), else local processes."""
    if dask:
        return DaskExecutor(dask, workers)
    return LocalExecutor(workers)
