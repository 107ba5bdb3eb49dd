"""A real model server for the fidelity benchmark: C worker processes behind one TCP socket.

The parent trains the model (model.py), listens on 127.0.0.1 and forks ``--workers`` worker
processes that all accept connections on the same listening socket: the classic pre-fork
server (gunicorn's sync workers, for one). Each connection carries one request; a worker accepts
it, reads the features, runs the model, writes the scores back and closes. Requests that find
every worker busy wait in the kernel's accept queue, which is FIFO and shared by the workers, so
the server is a C-server FIFO queue: what predsim models. (Idle workers wait in epoll with
EPOLLEXCLUSIVE, as nginx does, so one connection wakes one worker.) Workers are processes, so
they do not share a GIL, and each uses single-threaded BLAS.

Protocol (little-endian): request = header (request id u32, k u16, features u16) + k x features
float32; response = header (request id, k, status 0) + k float32 click probabilities.

Every worker logs, per request, on the system-wide monotonic clock (``time.perf_counter``, the
same clock the load generator uses): when the worker took the request (just before
``accept()``), when the request was read, when the model call finished, when the worker was free
again, and the worker's CPU time for the request. ``free - accepted`` is how long the request
occupied the worker: its service time.

The server stops by itself: on SIGTERM/SIGINT, when its ``--lifetime`` is up, or when the process
that started it goes away. It prints one JSON line (port, worker pids, model quality) when ready
and writes ``worker<i>.npy`` logs into ``--log-dir`` on the way out, and on SIGUSR1 (a snapshot,
taken while the server is idle).

    python server.py --workers 4 --log-dir DIR [--lifetime 600] [--seed 0]

**Dynamic batching** (``--batching MAX_BATCH --max-wait-ms W``): the policy predsim models
(``sim.engine.serving.batch_queue``), with C worker slots. The parent process is the batcher: one
single-threaded event loop (epoll; timeouts through ``select()`` for microsecond resolution,
timer slack 1 ns) that accepts connections, reads each whole request and appends it to a FIFO
(its *enqueued* time is the request's arrival at the queue). A batch leaves the queue as soon as
a worker is free and either MAX_BATCH requests wait or the oldest has waited W ms; it takes up
to MAX_BATCH from the head. The batcher copies the batch's feature rows into the worker's shared
memory buffer and hands the worker the client sockets themselves (``SCM_RIGHTS`` over a
``SOCK_SEQPACKET`` socket pair); the worker runs the model once on the concatenated rows, writes
every client its scores (in batch order), closes the sockets and tells the batcher it is free.
The C workers are processes, as in the pre-fork mode: measured on the 2-vCPU machine the table was
made on, two threads calling the model concurrently in one process served 77 batches/s against
81 for one thread (OpenBLAS serialises concurrent calls even with one BLAS thread; the GIL does
the rest), two processes 100/s.

The batcher logs one row per request (``dispatcher.npy``, columns ``BATCH_LOG_COLUMNS``):
``accepted_s`` is when the batch was dispatched (the worker slot is taken) and ``free_s`` when
the batcher learnt that the worker was free again, so ``free_s - accepted_s`` is how long the
batch occupied its worker slot (its service time, shared by the batch's requests); ``read_s`` is
when the request entered the queue; ``worker_got_s``, ``model_done_s`` and ``worker_done_s`` are
the worker's own times (got the batch, model call finished, every answer written), ``cpu_s`` the
worker's CPU time for the whole batch; ``batch_id`` and ``batch_size`` group the requests.
Without ``--batching`` the server is the pre-fork server above, unchanged.

**Another model** (``--model MODULE:FUNCTION --model-options JSON``, with ``--batching`` only):
instead of the MLP trained in the parent, each batch worker builds its own model after the fork,
``FUNCTION(options, worker_index)`` from MODULE in this folder, which returns an object with
``predict(rows) -> scores`` (rows: float32 array (n, 32), one score per row) and a dict ``info``.
Nothing of it is imported in the parent, so a GPU model initialises CUDA only in the workers,
never in a process that forks later. The batcher waits (``--ready-timeout``) until every worker
has built its model and reports their ``info`` in its ready line (``model.workers``).
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # one core per worker: set before numpy loads BLAS

import argparse  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import select  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import model as mlp  # noqa: E402

HEADER = struct.Struct("<IHH")
LOG_COLUMNS = ("request_id", "k", "accepted_s", "read_s", "model_done_s", "free_s", "cpu_s",
               "worker")
BATCH_LOG_COLUMNS = LOG_COLUMNS + ("batch_id", "batch_size", "worker_got_s", "worker_done_s")
HOST = "127.0.0.1"
# batcher <-> worker control messages (SOCK_SEQPACKET): dispatch = (batch id, dispatched at,
# n) + n request ids (u32) + n k (u32); done = (batch id, got, model done, all answered, cpu)
DISPATCH = struct.Struct("<QdI")
DONE = struct.Struct("<Qdddd")


class LazyModel:
    """A model each batch worker builds after the fork (``--model MODULE:FUNCTION``)."""

    def __init__(self, spec: str, options: dict):
        module, _, function = spec.partition(":")
        if not module or not function:
            raise ValueError(f"--model wants MODULE:FUNCTION or mlp, not {spec!r}")
        self.spec, self.module, self.function, self.options = spec, module, function, options

    def build(self, index: int):
        return getattr(importlib.import_module(self.module), self.function)(self.options, index)


class Stop(BaseException):
    """Raised by the signal handlers to leave the accept loop."""


def _raise_stop(signum, frame):
    raise Stop()


def _recv_exact(conn: socket.socket, view: memoryview) -> None:
    got = 0
    while got < len(view):
        n = conn.recv_into(view[got:])
        if n == 0:
            raise ConnectionError("client closed the connection early")
        got += n


def _save(path: Path, rows: np.ndarray) -> None:
    tmp = path.with_name(path.stem + ".tmp.npy")
    np.save(tmp, rows)
    tmp.replace(path)


def worker(index: int, listener: socket.socket, model: mlp.MLP, log_path: Path,
           capacity: int, lifetime_s: float) -> None:
    """Accept, read, predict, reply, close; forever, until stopped. Logs every request."""
    log = np.zeros((capacity, len(LOG_COLUMNS)))
    count = [0]
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    signal.signal(signal.SIGALRM, _raise_stop)
    signal.signal(signal.SIGUSR1, lambda *_: _save(log_path, log[:count[0]]))  # a snapshot
    signal.alarm(int(lifetime_s) + 2)  # a last resort if the parent is gone
    header = bytearray(HEADER.size)
    header_view = memoryview(header)
    body = bytearray(mlp.K_MAX * mlp.N_FEATURES * 4)
    body_view = memoryview(body)
    clock, cpu = time.perf_counter, time.thread_time
    # Wait for connections in epoll with EPOLLEXCLUSIVE (one idle worker is woken per connection,
    # no thundering herd), accept without blocking. The service clock starts before accept(), so
    # a worker that goes straight on to a queued request counts everything it does for it.
    idle = select.epoll()
    idle.register(listener.fileno(), select.EPOLLIN | select.EPOLLEXCLUSIVE)
    try:
        while True:
            accepted = clock()
            cpu0 = cpu()
            try:
                conn, _ = listener.accept()
            except BlockingIOError:
                idle.poll()
                continue
            conn.setblocking(True)
            rid = k = 0
            read = done = accepted
            try:
                _recv_exact(conn, header_view)
                rid, k, n_features = HEADER.unpack(header)
                if not 1 <= k <= mlp.K_MAX or n_features != mlp.N_FEATURES:
                    conn.sendall(HEADER.pack(rid, k, 1))
                    continue
                _recv_exact(conn, body_view[:k * n_features * 4])
                read = clock()
                x = np.frombuffer(body, np.float32, k * n_features).reshape(k, n_features)
                scores = model.predict(x).astype(np.float32)
                done = clock()
                conn.sendall(HEADER.pack(rid, k, 0) + scores.tobytes())
            except (ConnectionError, OSError):
                pass
            finally:
                conn.close()
            n = count[0]
            if n < capacity:
                log[n] = (rid, k, accepted, read, done, 0.0, 0.0, index)
                # free as late as possible: only the loop back to accept() is left out
                log[n, 6] = cpu() - cpu0
                log[n, 5] = clock()
                count[0] = n + 1
    except Stop:
        pass
    finally:
        _save(log_path, log[:count[0]])


# ---------------------------------------------------------------------------------------------
# Dynamic batching: one batcher (the parent) and C worker processes
# ---------------------------------------------------------------------------------------------

def _set_timer_slack_ns(ns: int) -> None:
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(29, ctypes.c_ulong(ns), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def batch_worker(index: int, ctrl: socket.socket, shared, model: mlp.MLP, max_batch: int,
                 lifetime_s: float) -> None:
    """Wait for a batch, run the model once on all its rows, answer every client, report."""
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    signal.signal(signal.SIGALRM, _raise_stop)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.alarm(int(lifetime_s) + 2)
    if isinstance(model, LazyModel):  # build it here, after the fork; tell the batcher
        try:
            model = model.build(index)
        except BaseException:
            ctrl.send(json.dumps({"error": traceback.format_exc()[-3000:]}).encode())
            raise
        ctrl.send(json.dumps({"ready": getattr(model, "info", {})}).encode())
    rows = np.frombuffer(shared, np.float32).reshape(-1, mlp.N_FEATURES)
    clock, cpu = time.perf_counter, time.thread_time
    try:
        while True:
            msg, fds, _, _ = socket.recv_fds(ctrl, 65536, max_batch)
            if not msg:
                return  # the batcher is gone
            got = clock()
            cpu0 = cpu()
            batch_id, _, n = DISPATCH.unpack_from(msg)
            rids = np.frombuffer(msg, np.uint32, n, DISPATCH.size)
            ks = np.frombuffer(msg, np.uint32, n, DISPATCH.size + 4 * n)
            total = int(ks.sum())
            scores = model.predict(rows[:total]).astype(np.float32)
            done = clock()
            at = 0
            for rid, k, fd in zip(rids, ks, fds):
                conn = socket.socket(fileno=fd)
                try:
                    conn.setblocking(True)
                    conn.sendall(HEADER.pack(int(rid), int(k), 0) + scores[at:at + k].tobytes())
                except OSError:
                    pass
                finally:
                    conn.close()
                at += int(k)
            answered = clock()
            ctrl.send(DONE.pack(batch_id, got, done, answered, cpu() - cpu0))
    except (Stop, ConnectionError, OSError):
        pass


class _Pending:
    """A connection whose request is still being read."""
    __slots__ = ("conn", "buf", "need")

    def __init__(self, conn):
        self.conn, self.buf, self.need = conn, bytearray(), HEADER.size


def _wait_ready(workers: list, timeout_s: float) -> list:
    """Each worker's ready message (a ``LazyModel`` built after the fork): its model's info.
    Stops the workers and raises if one fails, dies or is not ready within ``timeout_s``."""
    infos: dict[int, dict] = {}
    give_up = time.monotonic() + timeout_s
    try:
        while len(infos) < len(workers):
            left = give_up - time.monotonic()
            waiting = {w[1].fileno(): i for i, w in enumerate(workers) if i not in infos}
            ready, _, _ = select.select(list(waiting), [], [], max(left, 0.0))
            if not ready:
                raise RuntimeError(f"workers {sorted(waiting.values())} did not build their "
                                   f"model within {timeout_s:g} s")
            for fd in ready:
                i = waiting[fd]
                msg = workers[i][1].recv(65536)
                if not msg:
                    raise RuntimeError(f"batch worker {i} died building its model")
                reply = json.loads(msg)
                if "error" in reply:
                    raise RuntimeError(f"batch worker {i} could not build its model:\n"
                                       + reply["error"])
                infos[i] = reply["ready"]
    except BaseException:
        stop_workers([w[0] for w in workers])
        raise
    return [infos[i] for i in range(len(workers))]


def batching_server(args, model: mlp.MLP, info: dict, listener: socket.socket,
                    lifetime_s: float, started: float) -> int:
    """The batcher's event loop (see the module docstring); returns when stopped."""
    import mmap
    max_batch, max_wait = args.batching, args.max_wait_ms / 1e3
    rows_bytes = max_batch * mlp.K_MAX * mlp.N_FEATURES * 4
    workers = []  # (pid, control socket, shared buffer)
    for index in range(args.workers):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        shared = mmap.mmap(-1, rows_bytes)
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                ours.close()
                listener.close()
                for _, other, _ in workers:
                    other.close()
                batch_worker(index, theirs, shared, model, max_batch, lifetime_s)
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        theirs.close()
        workers.append((pid, ours, shared))
    pids = [w[0] for w in workers]
    if isinstance(model, LazyModel):
        info = {**info, "workers": _wait_ready(workers, min(args.ready_timeout, lifetime_s))}
    _set_timer_slack_ns(1)
    log = np.zeros((args.capacity, len(BATCH_LOG_COLUMNS)))
    count = 0
    log_path = args.log_dir / "dispatcher.npy"
    stop, snapshot = [], []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    signal.signal(signal.SIGUSR1, lambda *_: snapshot.append(1))
    parent = os.getppid()
    print(json.dumps({"port": listener.getsockname()[1], "host": HOST, "workers": pids,
                      "model": info, "startup_s": round(time.monotonic() - started, 3),
                      "batching": {"max_batch": max_batch, "max_wait_ms": args.max_wait_ms}}),
          flush=True)
    clock = time.perf_counter
    poller = select.epoll()
    epfd = poller.fileno()
    poller.register(listener.fileno(), select.EPOLLIN)
    ctrl_fds = {w[1].fileno(): i for i, w in enumerate(workers)}
    for fd in ctrl_fds:
        poller.register(fd, select.EPOLLIN)
    pending: dict[int, _Pending] = {}
    queue: list = []  # FIFO of (enqueued_s, rid, k, body bytes, conn)
    qhead = 0
    free = list(range(len(workers)))
    busy_rows: dict[int, list[int]] = {}  # worker -> log rows of its batch
    batch_id = 0
    deadline = time.monotonic() + lifetime_s
    next_check = 0.0
    try:
        while True:
            now = clock()
            # 1. dispatch: a free worker and (a full batch or the oldest waited max_wait)
            while free and qhead < len(queue):
                waiting = len(queue) - qhead
                if waiting < max_batch and now < queue[qhead][0] + max_wait:
                    break
                w = free.pop(0)
                pid, ctrl, shared = workers[w]
                batch = queue[qhead:qhead + min(waiting, max_batch)]
                qhead += len(batch)
                at = 0
                for _, _, k, body, _ in batch:
                    shared[at:at + len(body)] = body
                    at += len(body)
                batch_id += 1
                dispatched = clock()
                msg = (DISPATCH.pack(batch_id, dispatched, len(batch))
                       + np.array([b[1] for b in batch], np.uint32).tobytes()
                       + np.array([b[2] for b in batch], np.uint32).tobytes())
                socket.send_fds(ctrl, [msg], [b[4].fileno() for b in batch])
                rows = []
                for enq, rid, k, _, conn in batch:
                    conn.close()  # the worker has its own descriptor now
                    if count < args.capacity:
                        log[count, :4] = (rid, k, dispatched, enq)
                        log[count, 7:10] = (w, batch_id, len(batch))
                        rows.append(count)
                        count += 1
                busy_rows[w] = rows
                now = clock()
            if qhead > 4096 and qhead * 2 > len(queue):
                del queue[:qhead]
                qhead = 0
            if snapshot:
                snapshot.clear()
                _save(log_path, log[:count])
            if now > next_check:
                next_check = now + 0.1
                if stop or time.monotonic() > deadline or os.getppid() != parent:
                    break
            # 2. sleep until an event or the oldest request's max_wait is up (if a worker is free)
            timeout = 0.05
            if free and qhead < len(queue):
                timeout = max(0.0, min(timeout, queue[qhead][0] + max_wait - now))
            if timeout > 0:
                try:
                    select.select([epfd], [], [], timeout)
                except InterruptedError:
                    pass
            for fd, _ in poller.poll(0):
                if fd == listener.fileno():
                    while True:  # accept everything waiting
                        try:
                            conn, _ = listener.accept()
                        except (BlockingIOError, InterruptedError):
                            break
                        conn.setblocking(False)
                        pending[conn.fileno()] = _Pending(conn)
                        poller.register(conn.fileno(), select.EPOLLIN)
                elif fd in ctrl_fds:
                    w = ctrl_fds[fd]
                    msg = workers[w][1].recv(DONE.size)
                    freed = clock()
                    if not msg:
                        raise RuntimeError(f"batch worker {w} died")
                    _, got, model_done, answered, cpu_s = DONE.unpack(msg)
                    for row in busy_rows.pop(w, ()):
                        log[row, 4:7] = (model_done, freed, cpu_s)
                        log[row, 10:12] = (got, answered)
                    free.append(w)
                else:
                    p = pending.get(fd)
                    if p is None:
                        continue
                    try:
                        chunk = p.conn.recv(max(p.need - len(p.buf), 0) or 65536)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        chunk = b""
                    if not chunk:
                        poller.unregister(fd)
                        p.conn.close()
                        del pending[fd]
                        continue
                    p.buf += chunk
                    if len(p.buf) == HEADER.size and p.need == HEADER.size:
                        rid, k, n_features = HEADER.unpack(p.buf)
                        if not 1 <= k <= mlp.K_MAX or n_features != mlp.N_FEATURES:
                            poller.unregister(fd)
                            try:
                                p.conn.setblocking(True)
                                p.conn.sendall(HEADER.pack(rid, k, 1))
                            except OSError:
                                pass
                            p.conn.close()
                            del pending[fd]
                            continue
                        p.need = HEADER.size + k * n_features * 4
                    if len(p.buf) >= p.need and p.need > HEADER.size:
                        enqueued = clock()
                        poller.unregister(fd)
                        del pending[fd]
                        rid, k, _ = HEADER.unpack_from(p.buf)
                        queue.append((enqueued, rid, k, bytes(p.buf[HEADER.size:p.need]),
                                      p.conn))
    finally:
        stop_workers(pids)
        _save(log_path, log[:count])
        listener.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--log-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--lifetime", type=float, default=900.0,
                        help="stop after this many seconds whatever happens")
    parser.add_argument("--backlog", type=int, default=4096)
    parser.add_argument("--capacity", type=int, default=400_000,
                        help="requests each worker can log")
    parser.add_argument("--batching", type=int, default=0, metavar="MAX_BATCH",
                        help="dynamic batching with batches of at most MAX_BATCH (0: off)")
    parser.add_argument("--max-wait-ms", type=float, default=2.0,
                        help="with --batching: longest the oldest request waits for a fuller "
                             "batch")
    parser.add_argument("--model", default="mlp",
                        help="mlp (model.py, trained here at start-up) or, with --batching, "
                             "MODULE:FUNCTION: a factory each worker calls after the fork as "
                             "FUNCTION(options, worker index) (see the module docstring)")
    parser.add_argument("--model-options", default="{}", help="JSON for the --model factory")
    parser.add_argument("--ready-timeout", type=float, default=300.0,
                        help="with --model MODULE:FUNCTION: longest the workers may take to "
                             "build their model")
    args = parser.parse_args(argv)
    if args.model != "mlp" and not args.batching:
        parser.error("--model MODULE:FUNCTION needs --batching")
    started = time.monotonic()
    args.log_dir.mkdir(parents=True, exist_ok=True)
    if args.model == "mlp":
        model, info = mlp.train(seed=args.seed)
    else:
        options = json.loads(args.model_options)
        model, info = LazyModel(args.model, options), {"factory": args.model, "options": options}
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((HOST, args.port))
    listener.listen(args.backlog)
    listener.setblocking(False)  # workers accept without blocking (see worker())
    lifetime_s = max(1.0, args.lifetime - (time.monotonic() - started))
    if args.batching:
        return batching_server(args, model, info, listener, lifetime_s, started)
    pids = []
    for index in range(args.workers):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                worker(index, listener, model, args.log_dir / f"worker{index}.npy",
                       args.capacity, lifetime_s)
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        pids.append(pid)

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    signal.signal(signal.SIGUSR1, lambda *_: [os.kill(pid, signal.SIGUSR1) for pid in pids])
    parent = os.getppid()
    print(json.dumps({"port": listener.getsockname()[1], "host": HOST, "workers": pids,
                      "model": info, "startup_s": round(time.monotonic() - started, 3)}),
          flush=True)
    deadline = time.monotonic() + lifetime_s
    while not stop and time.monotonic() < deadline and os.getppid() == parent:
        time.sleep(0.1)
    stop_workers(pids)
    listener.close()
    return 0


def stop_workers(pids: list[int]) -> None:
    """SIGTERM our worker processes, wait up to 10 s for them to save their logs, then kill
    those still running (our own children, by pid)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    give_up = time.monotonic() + 10.0
    remaining = set(pids)
    while remaining and time.monotonic() < give_up:
        for pid in list(remaining):
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                remaining.discard(pid)
        time.sleep(0.02)
    for pid in remaining:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


if __name__ == "__main__":
    sys.exit(main())
