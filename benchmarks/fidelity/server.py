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
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # one core per worker: set before numpy loads BLAS

import argparse  # noqa: E402
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
HOST = "127.0.0.1"


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
    args = parser.parse_args(argv)
    started = time.monotonic()
    args.log_dir.mkdir(parents=True, exist_ok=True)
    model, info = mlp.train(seed=args.seed)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((HOST, args.port))
    listener.listen(args.backlog)
    listener.setblocking(False)  # workers accept without blocking (see worker())
    lifetime_s = max(1.0, args.lifetime - (time.monotonic() - started))
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
    for pid in remaining:  # our own children, by pid
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    listener.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
