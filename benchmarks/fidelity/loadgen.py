"""Load generator for the fidelity benchmark: open-loop Poisson arrivals, or one at a time.

``--mode open``: the send times are drawn up front (a Poisson process at ``--rate`` for
``--duration`` seconds, at most ``--max-requests``) and every request is sent at its scheduled
time whether or not earlier ones have been answered, so a slow server cannot slow the arrivals
down (no coordinated omission). One thread, one epoll set: due requests are sent first, then
ready responses are read; between events the loop sleeps in ``select()`` on the epoll descriptor
with a microsecond timeout (epoll's own timeout has millisecond resolution) and a timer slack of
1 ns. Each request records its scheduled time, the time it was actually sent (so the send lag,
actual minus scheduled, is measured), and the time its whole response was read.

``--mode closed``: calibration at low load. Every request of the request pool is sent exactly once,
in random order, one at a time, each after the previous response plus an exponential pause, so no
request ever queues: its client-observed latency minus its server-side service time is the fixed
network and protocol overhead. With ``--groups N`` (to calibrate a batching server) it also sends,
for every group size b = 2 .. ``--group-max``, N groups of b distinct random requests, all the
groups (those of one request included) in random order: the b requests of a group back to back,
the next group after every answer plus the pause, so a batching server sees batches of known
size and composition.

Requests come from a pool of ``--pool`` ranking requests (model.py: real feature vectors, a
varying number of candidates) built from ``--pool-seed``; open-loop runs draw from the same pool
at random, so calibration and load see the same request mix.

Bounded: stops sending after ``--duration`` or ``--max-requests``, or when more than
``--max-inflight`` requests are unanswered (the server cannot keep up: recorded as overload),
then waits at most ``--drain`` seconds for the answers. Writes an .npz file (``--out``).
"""

from __future__ import annotations

import argparse
import os
import ctypes
import gc
import json
import resource
import select
import socket
import struct
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import model as mlp  # noqa: E402

HEADER = struct.Struct("<IHH")
LINGER_RESET = struct.pack("ii", 1, 0)  # close with RST: no TIME_WAIT pile-up over many runs
SEND_BUFFER = 1 << 18  # a whole request always fits: sendall never waits for the server

# status of each request in the output
OK, NOT_SENT, NO_ANSWER, BAD_ANSWER, CONNECT_FAILED = 0, 1, 2, 3, 4


def request_pool(seed: int, size: int) -> tuple[np.ndarray, list[bytes]]:
    """``size`` ranking requests: candidates per request and their feature bytes."""
    rng = np.random.default_rng(seed)
    ks = mlp.candidates(rng, size)
    return ks, [mlp.request_features(rng, int(k)).tobytes() for k in ks]


def _set_timer_slack_ns(ns: int) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(29, ctypes.c_ulong(ns), 0, 0, 0) == 0  # PR_SET_TIMERSLACK
    except (OSError, AttributeError):
        return False


def _schedstat() -> tuple[float, float]:
    """(CPU time, time runnable but waiting for a CPU) of this process, in seconds."""
    try:
        run_ns, wait_ns, _ = Path("/proc/self/schedstat").read_text().split()
        return int(run_ns) / 1e9, int(wait_ns) / 1e9
    except (OSError, ValueError):
        return float("nan"), float("nan")


def run(host: str, port: int, mode: str, pool_ks: np.ndarray, pool_bodies: list[bytes],
        seed: int, id_offset: int, rate: float = 0.0, duration: float = 0.0,
        max_requests: int = 1_000_000, think_s: float = 0.002, max_inflight: int = 2000,
        drain_s: float = 10.0, groups: int = 0, group_max: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    clock = time.perf_counter
    if mode == "open":
        gaps = rng.exponential(1.0 / rate, size=int(rate * duration * 1.3) + 100)
        offsets = np.cumsum(gaps)
        offsets = offsets[offsets < duration][:max_requests]
        pick = rng.integers(0, len(pool_bodies), size=offsets.size)
    else:
        pick = rng.permutation(len(pool_bodies))[:max_requests]
        offsets = np.zeros(pick.size)
        pauses = rng.exponential(think_s, size=pick.size)
    # closed mode: the size of the group that starts at each request (1: one at a time)
    group_len = np.ones(pick.size, np.int64)
    if mode == "closed" and groups > 0 and group_max > 1:
        # every request alone, then `groups` groups of each size, all in random order (so
        # a drift of the machine's speed does not line up with the group size)
        grng = np.random.default_rng(seed + 7919)
        members = [[int(j)] for j in pick]
        for b in range(2, group_max + 1):
            members += [list(grng.choice(len(pool_bodies), size=b, replace=False))
                        for _ in range(groups)]
        members = [members[g] for g in grng.permutation(len(members))]
        pick = np.array([j for group in members for j in group], np.int64)
        group_len = np.array([len(group) if m == 0 else 0 for group in members
                              for m in range(len(group))], np.int64)
        pauses = grng.exponential(think_s, size=pick.size)
    n = pick.size
    scheduled = np.full(n, np.nan)
    sent = np.full(n, np.nan)
    send_done = np.full(n, np.nan)
    answered = np.full(n, np.nan)
    status = np.full(n, NOT_SENT, dtype=np.int8)
    rids = (id_offset + np.arange(n)).astype(np.int64)
    if rids.size and rids[-1] >= 2 ** 32:
        raise ValueError("request ids must fit in 32 bits")
    messages = [None] * n
    for i in range(n):
        j = pick[i]
        messages[i] = HEADER.pack(int(rids[i]), int(pool_ks[j]), mlp.N_FEATURES) + pool_bodies[j]
    expected = HEADER.size + 4 * pool_ks[pick]
    addr = (host, port)
    poller = select.epoll()
    epfd = poller.fileno()
    inflight: dict[int, tuple[int, socket.socket, bytearray]] = {}
    overloaded = False
    gc.collect()
    gc.disable()
    cpu0, wait0 = _schedstat()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    start = clock() + 0.05
    if mode == "open":
        scheduled[:] = start + offsets
    next_due = start
    i = 0
    group_left = 0  # closed mode: requests of the current group still to send
    sending = n > 0
    stopped_at = None
    hard_stop = start + duration + drain_s if mode == "open" else float("inf")
    while True:
        now = clock()
        # 1. send everything that is due (open loop: on schedule, whatever is in flight)
        while sending and i < n:
            due = scheduled[i] if mode == "open" else next_due
            if mode == "closed" and group_left == 0:
                if due > now or inflight:
                    break
                group_left = int(group_len[i])
            elif mode == "open" and due > now:
                break
            if len(inflight) >= max_inflight:
                overloaded, sending = True, False
                break
            if mode == "closed":
                scheduled[i] = due
                group_left -= 1
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
            sent[i] = clock()
            try:
                sock.connect(addr)
                sock.sendall(messages[i])
            except OSError:
                status[i] = CONNECT_FAILED
                sock.close()
            else:
                send_done[i] = clock()
                sock.setblocking(False)
                poller.register(sock.fileno(), select.EPOLLIN)
                inflight[sock.fileno()] = (i, sock, bytearray())
                status[i] = NO_ANSWER
            messages[i] = None
            i += 1
            now = clock()
        if i >= n:
            sending = False
        # 2. read every response that is ready
        for fd, _ in poller.poll(0):
            entry = inflight.get(fd)
            if entry is None:
                continue
            j, sock, buf = entry
            try:
                chunk = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            if chunk:
                buf += chunk
                if len(buf) < expected[j]:
                    continue
                answered[j] = clock()
                rid, _, code = HEADER.unpack_from(buf)
                status[j] = OK if (rid == rids[j] and code == 0) else BAD_ANSWER
            else:
                status[j] = BAD_ANSWER
            poller.unregister(fd)
            sock.close()
            del inflight[fd]
            if mode == "closed":
                next_due = clock() + pauses[j]
        # 3. finished?
        now = clock()
        if not sending:
            hard_stop = min(hard_stop, now + drain_s) if stopped_at is None else hard_stop
            stopped_at = now if stopped_at is None else stopped_at
            if not inflight or now > hard_stop:
                break
        elif now > hard_stop:
            break
        # 4. sleep until the next send is due or a response arrives
        timeout = 0.05
        if sending and not (mode == "closed" and inflight and group_left == 0):
            timeout = min((scheduled[i] if mode == "open" else next_due) - now, timeout)
            if mode == "closed" and group_left > 0:
                timeout = 0.0
        if timeout > 0:
            select.select([epfd], [], [], timeout)
    for j, sock, _ in inflight.values():
        sock.close()
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu1, wait1 = _schedstat()
    gc.enable()
    poller.close()
    return {
        "request_id": rids, "pool_index": pick, "k": pool_ks[pick], "scheduled_s": scheduled,
        "sent_s": sent, "send_done_s": send_done, "answered_s": answered, "status": status,
        "meta": json.dumps({
            "mode": mode, "policy": os.sched_getscheduler(0), "rate_per_s": rate,
            "duration_s": duration, "requests": int(n),
            "sent": int(np.isfinite(sent).sum()), "overloaded": overloaded,
            "started_s": start, "finished_s": clock(),
            "cpu_s": (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime),
            "runqueue_wait_s": wait1 - wait0, "sched_cpu_s": cpu1 - cpu0,
            "involuntary_switches": ru1.ru_nivcsw - ru0.ru_nivcsw}),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--mode", choices=("open", "closed"), default="open")
    p.add_argument("--rate", type=float, default=0.0, help="open: requests per second")
    p.add_argument("--duration", type=float, default=0.0, help="open: seconds of sending")
    p.add_argument("--max-requests", type=int, default=1_000_000)
    p.add_argument("--think", type=float, default=0.002, help="closed: mean pause (s)")
    p.add_argument("--groups", type=int, default=0,
                   help="closed: then this many groups of each size 2 .. --group-max")
    p.add_argument("--group-max", type=int, default=1)
    p.add_argument("--max-inflight", type=int, default=2000)
    p.add_argument("--drain", type=float, default=10.0)
    p.add_argument("--pool", type=int, default=4096)
    p.add_argument("--pool-seed", type=int, default=12345)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--id-offset", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        p.error("loopback only")
    if args.mode == "open" and not (args.rate > 0 and args.duration > 0):
        p.error("open mode needs --rate and --duration")
    slack = _set_timer_slack_ns(1)
    ks, bodies = request_pool(args.pool_seed, args.pool)
    out = run(args.host, args.port, args.mode, ks, bodies, args.seed, args.id_offset,
              rate=args.rate, duration=args.duration, max_requests=args.max_requests,
              think_s=args.think, max_inflight=args.max_inflight, drain_s=args.drain,
              groups=args.groups, group_max=args.group_max)
    meta = json.loads(out["meta"])
    meta["timer_slack_1ns"] = slack
    out["meta"] = json.dumps(meta)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp.npz")
    np.savez(tmp, **out)
    tmp.replace(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
