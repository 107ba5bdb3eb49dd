"""predsim against a real model server: calibrate, predict, compare (``make fidelity``).

For each number of worker processes C (1 and 4):

1. start the real server (server.py: C pre-forked workers on 127.0.0.1 serving an MLP); the
   same server process is calibrated and then loaded;
2. calibrate at low load (loadgen.py --mode closed): every request of the request pool once, one
   at a time, so none queues. Server-side, the time each request occupied a worker is its service
   time; client-side latency minus that is the fixed network/protocol overhead;
3. write the service times as an empirical distribution (``service_time_s`` CSV) and build a
   predsim scenario: one ``online`` architecture with ``replicas: C``, ``service_time:
   {empirical: FILE}`` and constant (Poisson) arrivals at rate rho * C / E[service time];
4. drive the server open loop at that rate (Poisson, sent on schedule whatever the responses) for
   rho in 0.3, 0.5, 0.7, 0.8, 0.9 and measure client-observed latency;
5. simulate the scenario and compare p50, p95, p99 and mean latency.

The overhead (connect, send, the kernel, the client reading the answer) does not occupy a worker,
so it is not put into ``feature_lookup`` (which predsim counts as replica time and would raise the
utilisation): predicted latency = predsim's latency + the mean overhead measured at low load.

Besides the table it measures what can make the two differ: the load generator's send lag
(actual minus scheduled send time), the service times the server actually had under load against
the calibrated ones and how much they vary from second to second, requests that took several
times the CPU time their size predicts (and whether such requests come in clusters), how long
workers had a core (CPU time / wall time), the CPU work offered against the cores there are, CPU
used by other processes, and diagnostics that take the inputs away from the prediction one at a
time (not predictions): predsim fed the service times of the run itself; the measured send times
and service times, shuffled, through predsim's FIFO kernel; the same in their real order (the
replay: is the real server the queue predsim models?); and, with more workers than cores,
predsim given the cores as replicas.

With dynamic batching (``--batching on``, or ``both``, the default): the same for C = 1 and 4,
with the server batching (server.py ``--batching 8 --max-wait-ms 2``: a batch leaves when a worker
is free and 8 requests wait or the oldest has waited 2 ms, predsim's policy). The calibration
sends every request of the pool alone and BATCH_GROUPS groups of each size 2..8 at once, in
random order, so the server forms batches of known size and composition; ``fit_batching`` fits
batch time = fixed + a x size + c x candidates (robust least squares) and gives predsim
``fixed`` (the intercept, constant) and ``per_item`` (empirical: each request's time alone minus
``fixed``). The utilisation of a batching case is predsim's own (``Serving.mean_occupancy_s``):
rate x (fixed / 8 + E[per_item]) / C, the arrival rate over the most the server can serve (full
batches); the same rate drives the server and predsim. Batching runs last BATCH_DURATION_SCALE
(half) of the unbatched durations, to keep ``make fidelity`` near ten minutes. Diagnostics: the
measured arrivals at the batcher's queue and the measured batch times through predsim's batching
kernel (the replay), the batch sizes formed, how late the batcher's timer fired, how much CPU the
batcher took from the workers.

Two predictions per case. *Independent draws*: predsim draws each service time (or per_item)
independently from the calibrated distribution. *With slow periods*: the calibration's service
times, in the order the worker took them (with batching: each calibration batch's time over the
robust line's time for its size and candidates, in dispatch order), go through
``sim.inputs.slow_fit`` as ``predsim calibrate latency`` would take them: the independence tests and,
when slow ones come in stretches, the continuous-time hidden Markov model of slow periods
(``fit_slow``); predsim is then given ``serving.slow_periods`` (scope replica) and the service
times at normal speed (each divided by its posterior-expected slowdown; with batching, per_item
from each batch of one's normal-speed time). Both are fitted on the low-load calibration only,
never on the run being predicted. A third, *idle-aware*: ``serving.after_idle`` too, fitted
on the calibration as ``predsim calibrate latency`` fits it (``fit_idle``: does a service time
depend on how long the worker was idle before it, and by how much at a few idle times), the
slow-period test and fit then made on the service times divided by their idle multiplier;
when the calibration shows no such dependence it is the slow-period prediction. A fourth, the
*in-minute* prediction (since 2026-12-05): the server's own log recorded under load just before
and just after each case (open loop at RHO_LOG for BRACKET_S seconds each, ``measure_bracket``),
as a team would take its production log at today's traffic to ask about tomorrow's: the
service times (with batching: the batch-time line, ``fixed`` and ``per_item`` from the batches
that load formed) with ``after_idle`` and slow periods fitted on them (``fit_in_minute``,
``fit_batching_in_minute``), never on the case itself; ``level_vs_log`` says how the machine's
speed in the case differed from the log's, and how much of that the idle model explains. The
verdict (``verdict``) is on the in-minute prediction (in results from before it, on the
idle-aware one, and before that on the slow-period one): "yes" within the target at p50, p95
and p99; "no" when some error is beyond the target by more than the measured statistic's
own 95% half-width (sectioning); "unresolved" when it is beyond the target but within that
half-width; "not judgeable" when the machine did not have the cores
(more workers than cores free of other processes' work, or CPU work offered at least the free
cores). Where the measured p99's half-width exceeds the target, the table says so: the
measurement cannot resolve the target there. Reported beside it, not counted in it: how far the
machine's speed wandered within the case (``speed_wander``, as ``predsim calibrate latency``
measures it) and what that alone moves predsim's p50 and p99 (``speed_band``).

The raw record (worker logs, load generator records, measurement.json) stays in --runs-dir, so
the analysis can be redone without measuring again (--reanalyse: it costs predsim's
simulations only, and writes the generated CSVs and scenarios next to the record again).

    python benchmarks/fidelity/fidelity.py [--json benchmarks/fidelity/results.json]
        [--replicas 1,4] [--rhos 0.3,0.5,0.7,0.8,0.9] [--duration-scale 1] [--pool 3072]
        [--batching off|on|both] [--batch-groups 100]
        [--priority high|normal] [--runs-dir DIR] [--reanalyse] [--markdown]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
RUNS = HERE / "runs"  # generated: CSVs, scenarios, raw logs (git-ignored)

RHOS = (0.3, 0.5, 0.7, 0.8, 0.9)
REPLICAS = (1, 4)
DURATION_S = {0.3: 30.0, 0.5: 30.0, 0.7: 40.0, 0.8: 50.0, 0.9: 60.0}
TARGET = {0.3: 0.05, 0.5: 0.05, 0.7: 0.05, 0.8: 0.05, 0.9: 0.10}
STATS = ("p50", "p95", "p99", "mean")
QUANTILES = {"p50": 0.50, "p95": 0.95, "p99": 0.99}
WARMUP_S = 2.0          # of each measured run, left out (the server starts empty)
SECTIONS = 10           # sectioning for the measured statistics' confidence intervals
T_975_9 = 2.2621571627  # Student t, 97.5%, 9 degrees of freedom
SIM_REQUESTS = 2_000_000
POOL = 3072             # distinct requests in the request mix (each calibrated once)
THINK_S = 0.004         # calibration: mean pause between requests (worker busy ~40%)
MAX_INFLIGHT = 1000     # open loop: more unanswered than this = the server cannot keep up
# Dynamic batching (server.py --batching): the batcher's settings, the calibration's groups of
# each size 2..max_batch, and the batching rows' run length as a share of DURATION_S (to keep
# `make fidelity` near ten minutes)
BATCHING = {"max_batch": 8, "max_wait_ms": 2.0}
BATCH_GROUPS = 100
BATCH_DURATION_SCALE = 0.5
# The in-minute calibration (since 2026-12-05): around each case, a log recorded under load
# like a team's production log, open loop at RHO_LOG for BRACKET_S seconds just before the case
# and again just after it (a bracket: a level that drifts steadily through the minute is
# measured at both ends); the prediction is fitted on those two segments only, never on the
# case (batching cases too: their runs are shorter, their logs not, for batches of every size).
RHO_LOG = 0.5
BRACKET_S = 10.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
# --priority high (the default) shields the measurement from other work on a shared machine: the
# server runs in a scheduler autogroup of its own at nice SERVER_NICE (Linux groups processes by
# session and shares the CPU between groups, so a plain nice value would not count against other
# people's sessions), and the load generator, the measuring instrument, runs SCHED_FIFO so that it
# sends on time and reads answers as they come (it uses a few percent of a core). Falls back to
# normal priority when not permitted; the results record what was in force.
PRIORITY = {"mode": "high"}
SERVER_NICE = -20
LOADGEN_RT_PRIORITY = 10


def _server_priority() -> None:
    """In the server child before exec (a new session, so a new autogroup)."""
    if PRIORITY["mode"] != "high":
        return
    for action in (lambda: Path("/proc/self/autogroup").write_text(str(SERVER_NICE)),
                   lambda: os.setpriority(os.PRIO_PROCESS, 0, SERVER_NICE)):
        try:
            action()
        except OSError:
            pass  # not permitted or no autogroups: see priority_in_force()


def _loadgen_priority() -> None:
    if PRIORITY["mode"] != "high":
        return
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(LOADGEN_RT_PRIORITY))
    except OSError:
        pass


def priority_in_force(server_pid: int, loadgen_policy: int | None) -> dict:
    """What the scheduler actually applied (read back from the processes)."""
    out = {"requested": PRIORITY["mode"], "server_nice": os.getpriority(os.PRIO_PROCESS,
                                                                        server_pid)}
    try:
        out["server_autogroup"] = Path(f"/proc/{server_pid}/autogroup").read_text().strip()
    except OSError:
        out["server_autogroup"] = None
    if loadgen_policy is not None:
        out["loadgen_policy"] = {os.SCHED_FIFO: "SCHED_FIFO", os.SCHED_OTHER: "SCHED_OTHER"}.get(
            loadgen_policy, str(loadgen_policy))
    return out


# ---------------------------------------------------------------------------------------------
# CPU accounting: the machine, our processes, other people's processes
# ---------------------------------------------------------------------------------------------

def machine_cpu() -> dict[str, float]:
    """Cumulative CPU seconds of the whole machine, by kind (/proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:9]
    user, nice, system, idle, iowait, irq, softirq, steal = (int(x) / CLK_TCK for x in fields)
    return {"task": user + nice + system, "irq": irq + softirq, "idle": idle + iowait,
            "steal": steal}


def process_cpu(pid: int) -> tuple[float, float]:
    """(CPU seconds, seconds runnable but waiting for a CPU) of one process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        parts = stat[stat.rindex(")") + 2:].split()
        cpu = (int(parts[11]) + int(parts[12])) / CLK_TCK
        run_ns, wait_ns, _ = Path(f"/proc/{pid}/schedstat").read_text().split()
        return cpu, int(wait_ns) / 1e9
    except (OSError, ValueError, IndexError):
        return float("nan"), float("nan")


def others_cores(seconds: float = 1.0, ours: list[int] = ()) -> float:
    """CPU (in cores) used by processes other than ``ours`` over the next ``seconds``."""
    m0, p0 = machine_cpu(), sum(process_cpu(p)[0] for p in ours)
    time.sleep(seconds)
    m1, p1 = machine_cpu(), sum(process_cpu(p)[0] for p in ours)
    return max(0.0, (m1["task"] - m0["task"]) - (p1 - p0)) / seconds


def wait_for_quiet(budget: list[float], ours: list[int], limit_cores: float = 0.15,
                   log=print) -> float:
    """Wait (from a shared time budget) until other processes use under ``limit_cores``."""
    load = others_cores(0.5, ours)
    while load > limit_cores and budget[0] > 0:
        log(f"  waiting for a quiet machine: other processes use {load:.2f} cores",
            flush=True)
        started = time.monotonic()
        load = others_cores(2.0, ours)
        budget[0] -= time.monotonic() - started
    return load


def machine_description() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    hypervisor = "yes" if "hypervisor" in Path("/proc/cpuinfo").read_text() else "no"
    try:
        clocksource = Path("/sys/devices/system/clocksource/clocksource0/"
                           "current_clocksource").read_text().strip()
    except OSError:
        clocksource = "unknown"
    reads = [time.perf_counter() for _ in range(10001)]
    import numpy
    return {"cpu": cpu, "cores": os.cpu_count(), "virtual_machine": hypervisor,
            "kernel": platform.release(), "python": platform.python_version(),
            "numpy": numpy.__version__, "clocksource": clocksource,
            "clock_resolution_ns": time.get_clock_info("perf_counter").resolution * 1e9,
            "clock_read_ns": round((reads[-1] - reads[0]) / 10000 * 1e9, 1),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
                                / 2 ** 30, 1)}


# ---------------------------------------------------------------------------------------------
# The real system: server and load generator as child processes
# ---------------------------------------------------------------------------------------------

class Server:
    """server.py as a child process; ``stop()`` returns every worker's request log."""

    def __init__(self, workers: int, log_dir: Path, lifetime_s: float,
                 batching: dict | None = None):
        self.log_dir = log_dir
        self.batching = batching
        for old in [*log_dir.glob("worker*.npy"), *log_dir.glob("dispatcher*.npy")]:
            old.unlink()
        log_dir.mkdir(parents=True, exist_ok=True)
        extra = ([] if not batching else
                 ["--batching", str(batching["max_batch"]),
                  "--max-wait-ms", str(batching["max_wait_ms"])])
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "server.py"), "--workers", str(workers),
             "--log-dir", str(log_dir), "--lifetime", str(lifetime_s), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=_server_priority, start_new_session=PRIORITY["mode"] == "high")
        ready, _, _ = select.select([self.proc.stdout], [], [], 60.0)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.stop()
            raise RuntimeError(f"the server did not start: {self.proc.stderr.read()[-2000:]}")
        self.info = json.loads(line)
        self.port = self.info["port"]
        self.pids = [self.proc.pid, *self.info["workers"]]

    @staticmethod
    def read_logs(log_dir: Path) -> np.ndarray:
        # pre-fork: one log per worker; batching: the batcher's one log (more columns)
        logs = [np.load(p) for p in [*sorted(log_dir.glob("worker[0-9]*.npy")),
                                     *log_dir.glob("dispatcher.npy")]]
        logs = [x for x in logs if x.size]
        return np.concatenate(logs) if logs else np.zeros((0, 8))

    def _logs(self) -> np.ndarray:
        return self.read_logs(self.log_dir)

    def snapshot(self) -> np.ndarray:
        """Every request logged so far (the workers write their logs on SIGUSR1)."""
        pattern = "dispatcher.npy" if self.batching else "worker[0-9]*.npy"
        expected = 1 if self.batching else len(self.pids) - 1
        for old in self.log_dir.glob(pattern):
            old.unlink()
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 15
        while len(list(self.log_dir.glob(pattern))) < expected:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("the server did not write its logs")
            time.sleep(0.02)
        return self._logs()

    def stop(self) -> np.ndarray:
        """Stop the server (bounded) and return every request it logged."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()  # our own child, by pid
                self.proc.wait()
        return self._logs()


def loadgen(port: int, out: Path, **options) -> dict:
    """Run loadgen.py to completion (bounded) and load what it recorded."""
    args = [sys.executable, str(HERE / "loadgen.py"), "--port", str(port), "--out", str(out)]
    for key, value in options.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    limit = float(options.get("duration", 60)) + float(options.get("drain", 10)) + 120
    subprocess.run(args, check=True, timeout=limit, preexec_fn=_loadgen_priority)
    return load_record(out)


def load_record(path: Path) -> dict:
    with np.load(path) as data:
        record = {k: data[k] for k in data.files}
    record["meta"] = json.loads(str(record["meta"]))
    return record


# ---------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------

def join(record: dict, log: np.ndarray) -> dict:
    """The client record of each answered request next to its server-side log entry."""
    ids = log[:, 0].astype(np.int64)
    order = np.argsort(ids)
    ids = ids[order]
    pos = np.clip(np.searchsorted(ids, record["request_id"]), 0, max(len(ids) - 1, 0))
    found = (record["status"] == 0) & (ids[pos] == record["request_id"]) if len(ids) else \
        np.zeros(len(record["status"]), bool)
    rows = log[order][pos[found]]
    r = {k: v[found] for k, v in record.items() if isinstance(v, np.ndarray)}
    r.update(accepted_s=rows[:, 2], read_s=rows[:, 3], model_done_s=rows[:, 4],
             free_s=rows[:, 5], cpu_s=rows[:, 6], worker=rows[:, 7])
    if log.shape[1] > 8:  # the batcher's log (server.py BATCH_LOG_COLUMNS)
        r.update(batch_id=rows[:, 8], batch_size=rows[:, 9], worker_got_s=rows[:, 10],
                 worker_done_s=rows[:, 11])
    r["latency_s"] = r["answered_s"] - r["sent_s"]
    r["service_s"] = r["free_s"] - r["accepted_s"]
    r["model_s"] = r["model_done_s"] - r["read_s"]
    r["meta"] = record["meta"]
    r["unanswered"] = int((record["status"] != 0).sum())
    r["not_sent"] = int((record["status"] == 1).sum())
    return r


def quantile(x: np.ndarray, q: float) -> float:
    """The q-quantile as predsim defines it: the smallest value with at least q of the mass."""
    return float(np.quantile(x, q, method="inverted_cdf"))


def statistics_ms(latency_s: np.ndarray) -> dict[str, float]:
    out = {name: quantile(latency_s, q) * 1e3 for name, q in QUANTILES.items()}
    out["mean"] = float(latency_s.mean()) * 1e3
    return out


def sectioned_ci(times_s: np.ndarray, latency_s: np.ndarray) -> dict[str, float]:
    """95% half-widths (ms) of each statistic by sectioning the run into equal time slices."""
    edges = np.linspace(times_s.min(), times_s.max() + 1e-9, SECTIONS + 1)
    per = [statistics_ms(latency_s[(times_s >= a) & (times_s < b)])
           for a, b in zip(edges[:-1], edges[1:]) if ((times_s >= a) & (times_s < b)).sum() > 20]
    if len(per) < 3:
        return {s: float("nan") for s in STATS}
    return {s: float(T_975_9 * np.std([p[s] for p in per], ddof=1) / math.sqrt(len(per)))
            for s in STATS}


def calibration_summary(r: dict) -> dict:
    overhead = r["latency_s"] - r["service_s"]
    return {
        "requests": int(r["latency_s"].size),
        "service_ms": {"mean": r["service_s"].mean() * 1e3,
                       "p50": quantile(r["service_s"], 0.5) * 1e3,
                       "p99": quantile(r["service_s"], 0.99) * 1e3,
                       "cv": float(r["service_s"].std() / r["service_s"].mean())},
        "model_call_ms_mean": r["model_s"].mean() * 1e3,
        "cpu_ms_mean": r["cpu_s"].mean() * 1e3,
        "overhead_ms": {"mean": overhead.mean() * 1e3, "p50": quantile(overhead, 0.5) * 1e3,
                        "p99": quantile(overhead, 0.99) * 1e3},
        "worker_cpu_per_wall": float(r["cpu_s"].sum() / r["service_s"].sum()),
        "answer_read_us": _answer_read_us(r),
        "stalls": stall_statistics(r["k"], r["cpu_s"], r["accepted_s"]),
    }


def stall_statistics(k: np.ndarray, cpu_s: np.ndarray, started_s: np.ndarray) -> dict:
    """Requests whose CPU time is over 3x what their size predicts (a robust straight-line fit
    of CPU time on the number of candidates): how many, how much longer, and whether they come
    in clusters (the chance that the next request is one too)."""
    if k.size < 50:
        return {}
    x = np.vstack([np.ones(k.size), k.astype(float)]).T
    fit = np.ones(k.size, bool)
    for _ in range(3):  # refit without the slowest tenth
        coef = np.linalg.lstsq(x[fit], cpu_s[fit], rcond=None)[0]
        ratio = cpu_s / np.maximum(x @ coef, 1e-9)
        fit = ratio <= np.quantile(ratio, 0.9)
    order = np.argsort(started_s)
    slow = (ratio > 3.0)[order]
    extra = (cpu_s - x @ coef)[order][slow]
    after = slow[1:][slow[:-1]]
    return {"share": float(slow.mean()),
            "extra_ms_p50": float(np.median(extra) * 1e3) if extra.size else float("nan"),
            "next_also_slow": float(after.mean()) if after.size else float("nan"),
            "cpu_us_per_candidate": float(coef[1] * 1e6)}


def _answer_read_us(r: dict) -> dict:
    """Worker free -> client has read the whole answer (us): mostly the client's own delay."""
    x = r["answered_s"] - r["free_s"]
    return {"p50": quantile(x, 0.5) * 1e6, "p99": quantile(x, 0.99) * 1e6}


def replay_latency_s(replicas: int, arrival_s: np.ndarray, service_s: np.ndarray) -> np.ndarray:
    """Queue wait + service of each request (in time order) in predsim's FIFO kernel."""
    from sim.engine.serving import ReplicaPool
    pool = ReplicaPool(replicas, None, start_s=float(arrival_s[0]) if arrival_s.size else 0.0)
    wait, _ = pool.serve(arrival_s, service_s)
    return wait + service_s


@dataclass
class Case:
    replicas: int
    rho: float
    rate_per_s: float
    duration_s: float
    record: dict = field(default_factory=dict)
    cpu: dict = field(default_factory=dict)
    others_before: float = float("nan")


def measure_case(server: Server, case: Case, index: int, run_dir: Path, seed: int,
                 pool: int) -> None:
    """Drive the server open loop at the case's rate and keep the raw record."""
    m0 = machine_cpu()
    p0 = {pid: process_cpu(pid) for pid in server.pids}
    t0 = time.monotonic()
    case.record = loadgen(server.port, run_dir / f"load_c{case.replicas}_rho{case.rho}.npz",
                          mode="open", rate=f"{case.rate_per_s:.6f}",
                          duration=case.duration_s, seed=seed + index,
                          id_offset=(index + 1) * 2_000_000, max_inflight=MAX_INFLIGHT,
                          pool=pool, drain=10)
    wall = time.monotonic() - t0
    m1 = machine_cpu()
    p1 = {pid: process_cpu(pid) for pid in server.pids}
    meta = case.record["meta"]
    server_cpu = sum(p1[p][0] - p0[p][0] for p in server.pids)
    workers_wait = sum(p1[p][1] - p0[p][1] for p in server.pids[1:])
    ours = server_cpu + meta["cpu_s"]
    case.cpu = {
        "wall_s": wall,
        "server_cores": server_cpu / wall,
        "loadgen_cores": meta["cpu_s"] / wall,
        "others_cores": max(0.0, (m1["task"] - m0["task"]) - ours) / wall,
        "irq_cores": (m1["irq"] - m0["irq"]) / wall,
        "steal_cores": (m1["steal"] - m0["steal"]) / wall,
        "idle_cores": (m1["idle"] - m0["idle"]) / wall,
        "workers_runqueue_wait_s": workers_wait,
        "loadgen_runqueue_wait_s": meta["runqueue_wait_s"],
    }


def bracket_name(replicas: int, rho: float, when: str) -> str:
    return f"log_{when}_c{replicas}_rho{rho}.npz"


def measure_bracket(server: Server, out: Path, rate_per_s: float, duration_s: float,
                    seed: int, id_offset: int, pool: int) -> None:
    """One segment of the in-minute calibration: open loop at ``rate_per_s`` (RHO_LOG), the
    raw record kept in ``out``; no wait for quiet, so that it is the case's minute."""
    loadgen(server.port, out, mode="open", rate=f"{rate_per_s:.6f}", duration=duration_s,
            seed=seed, id_offset=id_offset, max_inflight=MAX_INFLIGHT, pool=pool, drain=10)


def bracket_join(run_dir: Path, log: np.ndarray, replicas: int, rho: float) -> dict | None:
    """The server's log of the two segments around a case (``join`` of each, one after the
    other), or None for records measured before the in-minute calibration."""
    paths = [run_dir / bracket_name(replicas, rho, when) for when in ("before", "after")]
    if not all(p.exists() for p in paths):
        return None
    parts = [join(load_record(p), log) for p in paths]
    out = {k: np.concatenate([p[k] for p in parts]) for k, v in parts[0].items()
           if isinstance(v, np.ndarray)}
    out["segments"] = [{"requests": int(p["latency_s"].size), "unanswered": p["unanswered"],
                        "start_s": float(p["accepted_s"].min()),
                        "end_s": float(p["free_s"].max())} for p in parts]
    out["segment"] = np.concatenate([np.full(p["latency_s"].size, i)
                                     for i, p in enumerate(parts)])
    return out


def analyse_case(case: Case, log: np.ndarray, calib: dict) -> dict:
    r = join(case.record, log)
    meta = r["meta"]
    start = meta["started_s"] + WARMUP_S
    keep = r["sent_s"] >= start
    if keep.sum() < 100:  # an overloaded run stopped within its warm-up: judge what there is
        keep = np.ones_like(keep)
    lat, sent = r["latency_s"][keep], r["sent_s"][keep]
    service = r["service_s"][keep]
    lag = (case.record["sent_s"] - case.record["scheduled_s"])
    lag = lag[np.isfinite(lag)]
    send_cost = case.record["send_done_s"] - case.record["sent_s"]  # connect + send
    window = sent.max() - sent.min() if sent.size > 1 else float("nan")
    measured = statistics_ms(lat) if lat.size else {s: float("nan") for s in STATS}
    realised_rate = lat.size / window if window > 0 else float("nan")
    wait = (r["accepted_s"] - r["sent_s"])[keep]
    n_all = int(r["latency_s"].size)
    # Non-stationarity: how much the mean service time moves from one second to the next,
    # against what independent draws from one distribution would give.
    second = np.floor(r["accepted_s"][keep] - r["accepted_s"][keep].min()).astype(int)
    counts = np.bincount(second)
    full = counts >= 20
    per_second = (np.bincount(second, service) / np.maximum(counts, 1))[full]
    iid = (service.std() / service.mean()) / np.sqrt(counts[full].mean()) if full.any() else 0
    # Replay: the measured send times and per-request service times through predsim's own
    # FIFO c-server kernel. Checks the queueing model alone, with the real inputs. Shuffled:
    # the same service times in random order, which keeps their distribution and destroys any
    # correlation in time (what predsim's independent draws assume).
    order = np.argsort(r["sent_s"])
    in_order = r["service_s"][order]
    shuffled = np.random.default_rng(0).permutation(in_order)
    replays = {}
    for label, service_in_order in (("diagnostic_replay", in_order),
                                    ("diagnostic_replay_shuffled", shuffled)):
        latency = np.empty(order.size)
        latency[order] = replay_latency_s(case.replicas, r["sent_s"][order], service_in_order)
        latency = latency[keep] + calib["overhead_ms"]["mean"] / 1e3
        stats = statistics_ms(latency) if latency.size else {s: float("nan") for s in STATS}
        replays[label] = {"predicted": stats, "relative_error": relative_errors(measured, stats)}
    return {
        "measured": measured,
        "measured_ci95": sectioned_ci(sent, lat) if lat.size > 200 else {},
        **replays,
        "requests": int(lat.size),
        "unanswered": r["unanswered"],
        "overloaded": bool(meta["overloaded"]) or r["unanswered"] > 0,
        # the CPU work offered (server + load generator) is more than the machine has: no
        # steady state, whatever the queueing model says
        "cpu_saturated": bool(case.rate_per_s * calib["cpu_ms_mean"] / 1e3
                              + case.cpu["loadgen_cores"] >= (os.cpu_count() or 1)),
        "realised_rate_per_s": realised_rate,
        "realised_utilisation": realised_rate * service.mean() / case.replicas,
        "service_ms_mean": service.mean() * 1e3,
        "service_drift": service.mean() / (calib["service_ms"]["mean"] / 1e3) - 1,
        "worker_cpu_per_wall": float(r["cpu_s"][keep].sum() / service.sum()),
        "stalls": stall_statistics(r["k"][keep], r["cpu_s"][keep], r["accepted_s"][keep]),
        "service_per_second_cv": {"measured": float(per_second.std() / per_second.mean())
                                  if per_second.size > 2 else float("nan"),
                                  "if_independent": float(iid)},
        "cpu_demand_cores": case.rate_per_s * calib["cpu_ms_mean"] / 1e3 + case.cpu[
            "loadgen_cores"],
        "queue_wait_ms_mean": float(wait.mean() * 1e3),
        "send_lag_us": {"p50": quantile(lag, 0.5) * 1e6, "p99": quantile(lag, 0.99) * 1e6,
                        "max": float(lag.max() * 1e6)},
        "answer_read_us": _answer_read_us({k: v[keep] for k, v in r.items()
                                           if isinstance(v, np.ndarray)}),
        "send_cost_us_p50": quantile(send_cost[np.isfinite(send_cost)], 0.5) * 1e6,
        "workers_runqueue_wait_ms_per_request": (case.cpu["workers_runqueue_wait_s"]
                                                  / max(n_all, 1) * 1e3),
        "workers_runqueue_wait_share": (case.cpu["workers_runqueue_wait_s"]
                                        / max(float(r["service_s"].sum()), 1e-9)),
        "loadgen_runqueue_wait_s": case.cpu["loadgen_runqueue_wait_s"],
        "cpu_cores": {k: case.cpu[k] for k in ("server_cores", "loadgen_cores", "others_cores",
                                                "irq_cores", "steal_cores", "idle_cores")},
        "others_cores_before": case.others_before,
        "_service_samples": service,
        "_k": r["k"][keep],
        "_accepted_s": r["accepted_s"][keep],
        "_idle_s": idle_per_request(r["accepted_s"], r["free_s"], r["worker"])[keep],
    }


# ---------------------------------------------------------------------------------------------
# Predictions
# ---------------------------------------------------------------------------------------------

def write_samples(path: Path, column: str, values_s: np.ndarray) -> None:
    path.write_text(column + "\n" + "\n".join(f"{v:.9f}" for v in values_s) + "\n")


def predict(name: str, replicas: int, rate_per_s: float, service_csv: Path, overhead_ms: float,
            run_dir: Path, seed: int = 1, slow_periods: dict | None = None,
            after_idle: dict | None = None) -> dict:
    """predsim's latency statistics for the case (ms), plus the fixed overhead; with
    ``slow_periods``, the scenario's ``serving.slow_periods`` (``service_csv`` then holds the
    service times at normal speed); with ``after_idle``, its ``serving.after_idle``
    (``service_csv`` then holds the service times divided by their idle multiplier)."""
    serving = {"replicas": replicas, "service_time": {"empirical": service_csv.name}}
    if slow_periods is not None:
        serving["slow_periods"] = slow_periods
    if after_idle is not None:
        serving["after_idle"] = after_idle
    return _simulate(name, serving, rate_per_s, overhead_ms, run_dir, seed)


def _simulate(name: str, serving: dict, rate_per_s: float, overhead_ms: float, run_dir: Path,
              seed: int) -> dict:
    """Write and simulate the one-architecture scenario of a case with this ``serving``
    section; its latency statistics (ms) plus the fixed overhead, utilisation, stability."""
    import sim
    scenario = {
        "name": name,
        "description": "generated by benchmarks/fidelity/fidelity.py",
        "horizon": round(float(SIM_REQUESTS / rate_per_s), 3),
        "warmup": 60,
        "seed": seed,
        "workload": {"entities": 1000, "popularity": "uniform",
                     "arrivals": {"rate": round(float(rate_per_s), 6), "pattern": "constant"}},
        "quality": {"metric": "ctr", "fresh": 0.2},
        "architectures": {"server": {
            "kind": "online",
            "features": {"batch": {"every": "1d"}},
            "serving": serving}},
    }
    path = run_dir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(scenario, sort_keys=False))
    results = sim.simulate(sim.load_scenario(path))
    row = results.summary.iloc[0]
    out = {s: float(row[f"latency_ms_{s}"]) + overhead_ms for s in STATS}
    out["utilisation"] = float(row["utilization"])
    out["stable"] = bool(row["queue_stable"])
    return out


def relative_errors(measured: dict, predicted: dict) -> dict:
    return {s: (predicted[s] - measured[s]) / measured[s] for s in STATS}


# ---------------------------------------------------------------------------------------------
# Slow periods: fitted on the calibration's time-ordered service times (sim.inputs.slow_fit)
# ---------------------------------------------------------------------------------------------

SLOW_STATES = 2  # states of the slow-period model fitted (normal and one slow speed)


def fit_slow(times_s: np.ndarray, durations_s: np.ndarray,
             expected_s: np.ndarray | None = None, states: int = SLOW_STATES) -> dict:
    """The slow-period model of a time-ordered series, as ``predsim calibrate latency`` fits it
    (``sim.inputs.slow_fit``): the independence tests, and when slow ones come in stretches the
    continuous-time hidden Markov model of slow periods, by maximum likelihood.

    ``expected_s`` (optional, one per duration): what each one should take at normal speed
    given its size (a batch's size and candidates); the model is then fitted to duration /
    expected, so that size is not taken for speed. Returns ``slow_periods`` (the scenario's
    ``serving.slow_periods``, scope replica, or None when the series is independent),
    ``_slowdown`` (each duration's posterior-expected slowdown, in the order given; ones
    without a fit: divide by it for the normal-speed duration) and a JSON summary."""
    from sim.inputs import series, slow_fit
    t = np.asarray(times_s, dtype=float)
    x = np.asarray(durations_s, dtype=float)
    ok = np.isfinite(t) & np.isfinite(x) & (x > 0)
    if expected_s is not None:
        e = np.asarray(expected_s, dtype=float)
        ok &= np.isfinite(e) & (e > 0)
    order = np.flatnonzero(ok)[np.argsort(t[ok], kind="stable")]
    y = x[order] / (np.asarray(expected_s, dtype=float)[order] if expected_s is not None else 1)
    slowdown = np.ones(x.size)
    test = series.check_independence(y)
    summary = {"series": int(y.size), "span_s": float(t[order][-1] - t[order][0]),
               "normalised_by_expected": expected_s is not None,
               "lag1_autocorrelation": test.lag1, "lag1_p": test.lag1_p,
               "slow_share": test.slow_share, "next_slow_share": test.next_slow_share,
               "next_slow_share_if_independent": test.expected_next_slow_share,
               "runs_p": test.runs_p, "independent": test.independent,
               "slow_stretches": test.slow_stretches}
    if not test.slow_stretches:
        return {"slow_periods": None, "_slowdown": slowdown, "summary": summary}
    fit = slow_fit.fit_slow_periods(t[order], y, states=states)
    slowdown[order] = np.maximum(fit.expected_slowdown, 1.0)
    stays = fit.mean_stays_s
    spec = {"scope": "replica", "states": []}
    nxt = fit.next_probabilities
    for j in range(fit.states):
        state = {"slowdown": 1.0 if j == 0 else round(float(fit.slowdowns[j]), 4),
                 "mean": f"{stays[j] * 1e3:.6g}ms"}
        if fit.states > 2:
            state["next"] = slow_fit._rounded_probabilities(nxt[j], j)
        spec["states"].append(state)
    c = fit.check
    summary.update({
        "states": fit.states, "slowdowns": fit.slowdowns, "mean_stays_ms": stays * 1e3,
        "time_shares": fit.time_shares, "work_median": float(np.exp(fit.mu)),
        "work_log_sd": fit.sigma,
        "log_likelihood_gain_over_iid": fit.log_likelihood - fit.log_likelihood_iid,
        "log_likelihood_gain_over_mixture": fit.log_likelihood - fit.log_likelihood_mixture,
        "converged": fit.converged, "parameters_at_bounds": fit.parameters_at_bounds(),
        "check": None if c is None else {
            "lag1_data": c.lag1_data, "lag1_simulated": c.lag1_mean,
            "lag1_range": c.lag1_range, "next_slow_data": c.next_slow_data,
            "next_slow_simulated": c.next_slow_mean, "next_slow_range": c.next_slow_range,
            "reproduces": c.reproduces},
        "mean_slowdown_divided_out": float(slowdown[order].mean()),
        "slow_periods": spec})
    return {"slow_periods": spec, "_slowdown": slowdown, "summary": summary}


def size_line(k: np.ndarray, service_s: np.ndarray) -> np.ndarray:
    """What each request's service time should be for its number of candidates ``k``: a
    least-squares line, refitted three times without the slowest tenth (as ``stall_statistics``
    does for CPU time)."""
    x = np.vstack([np.ones(k.size), np.asarray(k, dtype=float)]).T
    fit = np.ones(k.size, bool)
    for _ in range(3):
        coef = np.linalg.lstsq(x[fit], service_s[fit], rcond=None)[0]
        ratio = service_s / np.maximum(x @ coef, 1e-9)
        fit = ratio <= np.quantile(ratio, 0.9)
    return np.maximum(x @ coef, 1e-9)


def idle_per_request(start_s: np.ndarray, free_s: np.ndarray,
                     worker: np.ndarray) -> np.ndarray:
    """How long each request's (or batch's) worker had been idle when it took it: its start
    minus the time that worker was last free (``inf`` for a worker's first)."""
    idle = np.full(start_s.size, np.inf)
    for w in np.unique(worker):
        mine = np.flatnonzero(worker == w)
        mine = mine[np.argsort(start_s[mine], kind="stable")]
        idle[mine[1:]] = start_s[mine[1:]] - free_s[mine[:-1]]
    return idle


def fit_idle(start_s: np.ndarray, free_s: np.ndarray, worker: np.ndarray,
             expected_s: np.ndarray | None = None) -> dict:
    """``serving.after_idle`` fitted on the calibration as ``predsim calibrate latency`` fits it
    (``sim.inputs.slow_fit.fit_after_idle``): on the series of the busiest worker in the order
    it took its requests (or batches), each service time over ``expected_s`` (what its size
    should take) when given. Returns ``after_idle`` (the scenario's ``serving.after_idle``, or
    None when the calibration shows no dependence or cannot tell), ``_factor`` (each request's
    multiplier, in the order given: divide by it for the work at the calibration's average; 1
    without a fit) and a JSON summary."""
    from sim.inputs import slow_fit
    service = free_s - start_s
    factor = np.ones(start_s.size)
    ok = np.isfinite(start_s) & np.isfinite(service) & (service > 0)
    if expected_s is not None:
        ok &= np.isfinite(expected_s) & (expected_s > 0)
    busiest = np.bincount(worker[ok].astype(np.int64)).argmax()
    mine = np.flatnonzero(ok & (worker == busiest))
    mine = mine[np.argsort(start_s[mine], kind="stable")]
    fit = slow_fit.fit_after_idle(start_s[mine], service[mine],
                                  None if expected_s is None else expected_s[mine])
    if fit is None:
        return {"after_idle": None, "_factor": factor,
                "summary": {"tested": False, "series": int(mine.size)}}
    summary = {"tested": True, "series": fit.n + 1, "worker": int(busiest),
               "normalised_by_expected": fit.normalised, "spearman": fit.spearman,
               "partial_given_previous": fit.partial, "p": fit.p, "found": fit.found,
               "idle_ms": (fit.knots_s * 1e3).tolist(), "factors": fit.factors.tolist(),
               "half_widths": fit.half_widths.tolist(),
               "bins": [{"idle_ms": [b.low_s * 1e3, b.high_s * 1e3], "requests": b.n,
                         "ratio": b.ratio, "half_width": b.half_width} for b in fit.bins]}
    if not fit.found:
        return {"after_idle": None, "_factor": factor, "summary": summary}
    from sim.scenario.architectures import AfterIdle
    idle = idle_per_request(start_s, free_s, worker)
    factor[ok] = AfterIdle.model_validate(fit.spec()).factor(idle[ok])  # as predsim reads it
    summary["after_idle"] = fit.spec()
    return {"after_idle": fit.spec(), "_factor": factor, "summary": summary}


def fit_in_minute(j: dict, csv: Path) -> dict:
    """The in-minute prediction's inputs from the log recorded under load around a case
    (``bracket_join``), fitted as ``predsim calibrate latency`` fits a production log:
    ``after_idle`` on each service time over what its candidates predict (``fit_idle``), then
    slow periods on the work (each over what its candidates predict, so that a big request is
    not taken for a slow stretch); the service times at normal speed, divided by both, go to
    ``csv``. Returns ``slow_periods``, ``after_idle`` and a JSON summary."""
    service = j["free_s"] - j["accepted_s"]
    idle = fit_idle(j["accepted_s"], j["free_s"], j["worker"], size_line(j["k"], service))
    work = service / idle["_factor"]
    slow = fit_slow(j["accepted_s"], work, size_line(j["k"], work))
    write_samples(csv, "service_time_s", work / slow.pop("_slowdown"))
    return {"slow_periods": slow["slow_periods"], "after_idle": idle["after_idle"],
            "summary": {"requests": int(service.size), "segments": j["segments"],
                        "service_ms_mean": float(service.mean() * 1e3),
                        "after_idle": idle["summary"], "slow_periods": slow["summary"]}}


def level_vs_log(log_ratio: np.ndarray, log_segment: np.ndarray, log_idle_s: np.ndarray,
                 case_ratio: np.ndarray, case_idle_s: np.ndarray,
                 after_idle: dict | None) -> dict:
    """How the machine's speed moved between the in-minute log and the case. ``*_ratio``: each
    service (or batch) time over what the log's line says its size takes; the mean ratio of
    the segment before, the one after and the case, each against the log's, less one; what
    the log's ``after_idle`` says the case's should be (its mean multiplier over the case's
    idle times against over the log's); ``unexplained``, the case's level over the idle
    model's, less one: what a prediction fitted on the log cannot know."""
    base = float(np.mean(log_ratio))
    out = {when: float(np.mean(log_ratio[log_segment == i]) / base - 1)
           for i, when in enumerate(("before", "after"))}
    out["case"] = float(np.mean(case_ratio) / base - 1)
    model = 0.0
    if after_idle is not None:
        from sim.scenario.architectures import AfterIdle
        m = AfterIdle.model_validate(after_idle)
        model = float(np.mean(m.factor(case_idle_s)) / np.mean(m.factor(log_idle_s)) - 1)
    out["idle_model"] = model
    out["unexplained"] = (1 + out["case"]) / (1 + model) - 1
    return out


def speed_wander(times_s: np.ndarray, ratio: np.ndarray) -> dict:
    """How much the machine's speed wandered within a case, as ``predsim calibrate latency``
    measures it (``sim.inputs.series.speed_wander``) on each service or batch time over what
    the log's line says its size takes: ``wander`` (the standard deviation of the mean over
    2-second windows, as a share, less what sampling gives; 0 when sampling explains it all)
    with ``windows_sd``, ``sampling_sd``, the chi-square ``p`` and ``window_s`` beside it."""
    from sim.inputs.series import WANDER_WINDOW_S, speed_wander as measure
    w = measure(times_s, ratio)
    if w is None:
        return {"wander": 0.0, "windows": 0, "windows_sd": float("nan"),
                "sampling_sd": float("nan"), "p": float("nan"), "window_s": WANDER_WINDOW_S}
    return {"wander": w.wander, "windows": w.windows, "windows_sd": w.windows_sd,
            "sampling_sd": w.sampling_sd, "p": w.p, "window_s": w.window_s}


def speed_band(predicted: dict, faster: dict, slower: dict) -> dict:
    """Each statistic's largest shift, as a share, between the prediction and the same with the
    machine faster and slower by its wander; ``inf`` when either has no steady state (the
    slower one's utilisation at 1 or more): the wander then takes the queue past saturation."""
    if not (faster["stable"] and slower["stable"]) or slower["utilisation"] >= 1:
        return {s: math.inf for s in STATS}
    return {s: max(abs(faster[s] / predicted[s] - 1), abs(slower[s] / predicted[s] - 1))
            for s in STATS}


def scaled_samples(csv: Path, out: Path, factor: float) -> Path:
    """``csv`` (a header and one value a line) with every value multiplied by ``factor``."""
    lines = csv.read_text().split()
    write_samples(out, lines[0], np.array(lines[1:], dtype=float) * factor)
    return out


def in_minute(predict_at, summary: dict, level: dict, times_s: np.ndarray,
              case_ratio: np.ndarray, log_rho: float) -> tuple[dict, dict]:
    """The in-minute prediction, ``predict_at(1.0, "")``, and its row entry: the fit's
    ``summary``, the ``level`` against the log, the speed band (``predict_at`` with the work
    scaled by 1 -/+ the case's wander, ``speed_wander`` of ``case_ratio`` over ``times_s``) and
    the log's rho. ``predict_at(scale, suffix)`` is the case's prediction with every service
    (or batch) time multiplied by ``scale``, named with ``suffix``."""
    predicted = predict_at(1.0, "")
    wander = speed_wander(times_s, case_ratio)
    shifted = [predict_at(1 + sign * wander["wander"], f"-{word}")
               for word, sign in (("faster", -1), ("slower", 1))]
    return predicted, {**summary, "level": level,
                       "speed_band": {**wander, "band": speed_band(predicted, *shifted)},
                       "rho": log_rho}


# What makes a run disturbed (the machine, not the server: tests/test_fidelity.py skips on the
# first three): other processes' CPU, a send this late (the machine paused the load
# generator), answers read this late at p99, the workers waiting for a core this share of
# their busy time (the virtual CPU taken away: cpu/wall falls below 1; one request at a time
# only: with batching the batcher shares the cores with the worker by design, 4-8% on 2 vCPUs)
DISTURBED = {"others_cores": 0.25, "send_late_ms": 5.0, "read_p99_ms": 1.0,
             "runqueue_share": 0.01}


def disturbances(row: dict) -> list[str]:
    """Why a measured case is disturbed (empty: it is not), by the rules of DISTURBED."""
    out = []
    others = max(row["cpu_cores"]["others_cores"], row["others_cores_before"]
                 if row["others_cores_before"] == row["others_cores_before"] else 0.0)
    if others > DISTURBED["others_cores"]:
        out.append(f"other processes used {others:.2f} cores")
    if row["send_lag_us"]["max"] / 1e3 > DISTURBED["send_late_ms"]:
        out.append(f"a request sent {row['send_lag_us']['max'] / 1e3:.1f} ms late")
    if row["answer_read_us"]["p99"] / 1e3 > DISTURBED["read_p99_ms"]:
        out.append(f"answers read {row['answer_read_us']['p99'] / 1e3:.1f} ms late (p99)")
    share = row.get("workers_runqueue_wait_share", 0.0) or 0.0
    if share > DISTURBED["runqueue_share"] and not row.get("batching"):
        out.append(f"workers waited for a core {share * 100:.1f}% of their busy time")
    return out


def verdict(row: dict, errors: dict, target: float, free_cores: float) -> dict:
    """Judge a case on ``errors`` (the prediction the verdict is on: see ``_judged``):
    ``within_target`` when p50, p95 and p99 are within the target; the measurement's own
    resolution (each statistic's 95% half-width by sectioning, as a share of it), and
    ``verdict``: "yes"; "no" when some error is beyond the target by more than that
    statistic's half-width (the measurement's uncertainty cannot explain it); "unresolved"
    when it is beyond the target but within the half-width (the measurement cannot tell);
    "not judgeable" (with the reason) when the machine did not have the cores: more workers
    than free cores, or CPU work offered at least the cores. The machine's speed wander within
    the case (``speed_band``) is reported beside it, not counted: it is the machine being
    other than a stationary server, which is what a prediction is judged on."""
    ci = {s: (row["measured_ci95"].get(s, float("nan")) / row["measured"][s])
          for s in ("p50", "p95", "p99")}
    within = all(abs(errors[s]) <= target for s in ("p50", "p95", "p99"))
    workers = row["replicas"] + (1 if row.get("batching") else 0)  # the batcher is a process
    reason = None
    if row["replicas"] > free_cores:
        reason = (f"{row['replicas']} CPU-bound worker{'s' * (row['replicas'] > 1)} on "
                  f"{free_cores:.1f} cores free of other processes' work: not "
                  f"{row['replicas']} replica{'s' * (row['replicas'] > 1)}")
    elif row["cpu_saturated"] or row["cpu_demand_cores"] >= free_cores:
        reason = (f"CPU work offered {row['cpu_demand_cores']:.2f} cores >= {free_cores:.1f} "
                  f"free cores: no steady state")
    beyond = [s for s in ("p50", "p95", "p99") if abs(errors[s]) > target]
    if reason:
        word = "not judgeable"
    elif not beyond:
        word = "yes"
    elif any(not abs(errors[s]) <= target + ci[s] for s in beyond):  # NaN CI counts as beyond
        word = "no"
    else:
        word = "unresolved"
    p99_ci = ci["p99"]
    return {"within_target": within, "verdict": word, "not_judgeable_reason": reason,
            "measured_ci95_share": ci, "workers": workers, "free_cores": free_cores,
            "p99_resolvable": bool(p99_ci == p99_ci and p99_ci <= target),
            "beyond_target": beyond}


# ---------------------------------------------------------------------------------------------
# Dynamic batching: calibration (a linear fit of batch time), prediction, measured causes
# ---------------------------------------------------------------------------------------------

def batch_table(r: dict) -> dict:
    """One entry per batch seen in a joined record (``join`` of a batching server's log)."""
    ids, first, inv = np.unique(r["batch_id"], return_index=True, return_inverse=True)
    head = np.full(ids.size, np.inf)
    np.minimum.at(head, inv, r["read_s"])
    return {"size": r["batch_size"][first].astype(np.int64),
            "seen": np.bincount(inv, minlength=ids.size),
            "sum_k": np.bincount(inv, r["k"].astype(float), minlength=ids.size),
            "service_s": r["service_s"][first], "dispatched_s": r["accepted_s"][first],
            "free_s": r["free_s"][first], "worker": r["worker"][first].astype(np.int64),
            "cpu_s": r["cpu_s"][first], "got_s": r["worker_got_s"][first],
            "answered_s": r["worker_done_s"][first], "head_enqueued_s": head}


def batch_line(size: np.ndarray, sum_k: np.ndarray, time_s: np.ndarray) \
        -> tuple[np.ndarray, np.ndarray]:
    """Batch time = f + a x size + c x candidates by least squares, refitted three times
    without the slowest tenth; the coefficients (f, a, c) and which batches the last fit
    kept."""
    x = np.vstack([np.ones(size.size), size.astype(float), sum_k]).T
    fit = np.ones(size.size, bool)
    for _ in range(3):
        coef = np.linalg.lstsq(x[fit], time_s[fit], rcond=None)[0]
        ratio = time_s / np.maximum(x @ coef, 1e-9)
        fit = ratio <= np.quantile(ratio, 0.9)
    return coef, fit


def fit_batching_in_minute(j: dict, csv: Path) -> dict:
    """The in-minute prediction's inputs for a batching case, from the log recorded under
    load around it (``bracket_join``): the batch-time line (``batch_line``) on the log's
    complete batches, ``fixed`` its intercept; ``after_idle`` on each batch's time over the
    line's (``fit_idle``), then slow periods on those over their idle multiplier; ``per_item``
    (to ``csv``): each batch's time over both, less ``fixed``, shared among its requests in
    proportion to the line's cost of each. As
    ``batching_slow_fit``/``batching_idle_fit`` do on the calibration, with the batches a
    loaded server formed instead of groups sent at once."""
    t = batch_table(j)
    complete = t["seen"] == t["size"]
    size, sum_k = t["size"][complete], t["sum_k"][complete]
    time_s = t["service_s"][complete]
    coef, _ = batch_line(size, sum_k, time_s)
    fixed_s = max(float(coef[0]), 0.0)
    expected = np.maximum(coef[0] + coef[1] * size + coef[2] * sum_k, 1e-9)
    idle = fit_idle(t["dispatched_s"][complete], t["free_s"][complete], t["worker"][complete],
                    expected)
    times = time_s / idle["_factor"]
    slow = fit_slow(t["dispatched_s"][complete], times, expected)
    slowdown = slow.pop("_slowdown")
    alone = size == 1
    # every batch's time beyond fixed, at normal speed, shared among its requests in proportion
    # to what the line says each costs (a + c x its candidates): per_item from the batches of
    # every size the loaded server formed, not from batches of one alone (which come after
    # the worker idled, and leave out how big batches run)
    ids, first, inv = np.unique(j["batch_id"], return_index=True, return_inverse=True)
    member = complete[inv]
    cost = np.maximum(coef[1] + coef[2] * j["k"][member], 1e-12)
    share = cost / np.bincount(inv[member], cost, minlength=ids.size)[inv[member]]
    rank = np.cumsum(complete) - 1  # each complete batch's index among the complete ones
    variable = np.maximum(times / slowdown - fixed_s, 0.0)
    per_item = variable[rank[inv[member]]] * share
    write_samples(csv, "per_item_s", per_item)
    sizes = np.bincount(size, minlength=2)
    batch_segment = j["segment"][np.unique(j["batch_id"], return_index=True)[1]][complete]
    return {"slow_periods": slow["slow_periods"], "after_idle": idle["after_idle"],
            "fixed_s": fixed_s, "_coef": coef, "_ratio": time_s / expected,
            "_segment": batch_segment,
            "_idle_s": idle_per_request(t["dispatched_s"], t["free_s"], t["worker"])[complete],
            "summary": {"requests": int(j["latency_s"].size), "segments": j["segments"],
                        "batches": int(complete.sum()), "batches_of_one": int(alone.sum()),
                        "batch_size_mean": float(size.mean()),
                        "largest_batch": int(size.max()),
                        "batches_by_size": sizes[1:].tolist(),
                        "coefficients": {"fixed_ms": float(coef[0] * 1e3),
                                         "per_request_ms": float(coef[1] * 1e3),
                                         "per_candidate_us": float(coef[2] * 1e6)},
                        "fixed_ms": fixed_s * 1e3, "per_item_ms_mean": float(per_item.mean()
                                                                             * 1e3),
                        "after_idle": idle["summary"], "slow_periods": slow["summary"]}}


def fit_batching(r: dict, max_batch: int) -> dict:
    """``fixed`` and ``per_item`` from the calibration of a batching server.

    The calibration sends every request of the pool alone (batches of one) and then groups of
    b = 2 .. max_batch distinct random requests at once (batches of known size and composition).
    Fit, over every complete batch, batch time = f + a * b + c * (candidates in the batch) by
    least squares, refitted three times without the slowest tenth (the CPU stalls, README: they
    are over 3x the expected time, and would otherwise pull the line up). ``fixed`` is the
    intercept f (constant: one per batch); ``per_item`` is empirical: each request's own time
    alone, its batch-of-one time minus f (so it keeps the real spread, from the number of
    candidates and from the machine). The residuals are reported per batch size: if the model
    call got cheaper (or dearer) per row in bigger batches, it would show there. The utilisation
    of a batching case is predsim's (``Serving.mean_occupancy_s``): arrival rate x (f / max_batch
    + E[per_item]) / C, i.e. the arrival rate over the most the server can serve (full batches).

    How well it fits (2026-11-26, 2-vCPU VM, 3,773 batches per calibration): batch time = 0.785
    ms + 0.159 ms per request + 13.8 us per candidate at C = 1 (0.983 ms - 0.095 ms + 14.9 us at
    C = 4); without the slowest tenth R^2 0.94 (0.93) and residual rms 17% of the batch time; the
    median residual is -1..+6% for every batch size (the line is fitted without the slowest
    tenth), with no trend in the size. What predsim is then given, fixed + b draws of per_item,
    is on average within -5..+4% of the measured batch time for every b at C = 4 and 8-12% above
    it for b >= 2 at C = 1 (that calibration's requests alone ran slower than in groups).
    """
    t = batch_table(r)
    ids, inv = np.unique(r["batch_id"], return_inverse=True)
    complete = t["seen"] == t["size"]
    size, sum_k, time_s = t["size"][complete], t["sum_k"][complete], t["service_s"][complete]
    coef, fit = batch_line(size, sum_k, time_s)
    x = np.vstack([np.ones(size.size), size.astype(float), sum_k]).T
    expected = x @ coef
    rel = time_s / expected - 1
    fixed_s = max(float(coef[0]), 0.0)
    alone = size == 1
    per_item = np.maximum(time_s[alone] - fixed_s, 0.0)
    # each pool request's own per_item sample (NaN if it was never calibrated alone)
    by_pool = np.full(int(r["pool_index"].max()) + 1, np.nan)
    alone_req = (t["size"] == 1)[inv] & complete[inv]
    by_pool[r["pool_index"][alone_req]] = np.maximum(r["service_s"][alone_req] - fixed_s, 0.0)
    inl = rel[fit]
    by_size = {}
    for b in range(1, max_batch + 1):
        m = size == b
        if m.any():
            by_size[str(b)] = {"batches": int(m.sum()),
                               "measured_ms_mean": float(time_s[m].mean() * 1e3),
                               "fit_ms_mean": float(expected[m].mean() * 1e3),
                               # what predsim is given: fixed + b draws of per_item, on average
                               "model_ms_mean": (fixed_s + b * float(per_item.mean())) * 1e3,
                               "residual_median": float(np.median(rel[m])),
                               "residual_mean": float(time_s[m].mean() / expected[m].mean() - 1)}
    ss_res = float(((time_s - expected)[fit] ** 2).sum())
    ss_tot = float(((time_s[fit] - time_s[fit].mean()) ** 2).sum())
    overhead = r["latency_s"] - (r["free_s"] - r["read_s"])  # outside the queue and the worker
    return {
        "batches": int(complete.sum()), "requests": int(r["latency_s"].size),
        "coefficients": {"fixed_ms": float(coef[0] * 1e3), "per_request_ms": float(coef[1] * 1e3),
                         "per_candidate_us": float(coef[2] * 1e6)},
        "fixed_ms": fixed_s * 1e3,
        "per_item_ms_mean": float(per_item.mean() * 1e3),
        "per_item_ms_p99": quantile(per_item, 0.99) * 1e3,
        "occupancy_ms_per_request": (fixed_s / max_batch + float(per_item.mean())) * 1e3,
        "residual_rms_share": float(np.sqrt(np.mean(inl ** 2))),
        "r_squared_inliers": 1 - ss_res / ss_tot if ss_tot > 0 else float("nan"),
        "over_3x_share": float((rel > 2.0).mean()),
        "residual_by_size": by_size,
        "overhead_ms": {"mean": overhead.mean() * 1e3, "p50": quantile(overhead, 0.5) * 1e3,
                        "p99": quantile(overhead, 0.99) * 1e3},
        # all answers written -> the client has read its whole answer (us): mostly the client's
        # own delay; large when the machine held the load generator up during calibration
        "answer_read_us": {"p50": quantile(r["answered_s"] - r["worker_done_s"], 0.5) * 1e6,
                           "p99": quantile(r["answered_s"] - r["worker_done_s"], 0.99) * 1e6},
        "dispatch_to_worker_us_p50": quantile(t["got_s"] - t["dispatched_s"], 0.5) * 1e6,
        "answered_to_free_us_p50": quantile(t["free_s"] - t["answered_s"], 0.5) * 1e6,
        "cpu_ms_per_request": float(t["cpu_s"].sum() / t["size"].sum() * 1e3),
        "worker_cpu_per_wall": float(t["cpu_s"].sum() / t["service_s"].sum()),
        "_per_item_s": per_item, "_coef": coef, "_per_item_by_pool_s": by_pool,
    }


def predict_batching(name: str, replicas: int, rate_per_s: float, per_item_csv: Path,
                     fixed_s: float, batching: dict, overhead_ms: float, run_dir: Path,
                     seed: int = 1, slow_periods: dict | None = None,
                     after_idle: dict | None = None) -> dict:
    """predsim's latency statistics (ms) for a batching case, plus the fixed overhead."""
    serving = {"replicas": replicas, "batching": {
        "max_batch": batching["max_batch"], "max_wait": f"{batching['max_wait_ms']}ms",
        "fixed": {"constant": f"{fixed_s * 1e3:.6f}ms"},
        "per_item": {"empirical": per_item_csv.name}}}
    if slow_periods is not None:
        serving["slow_periods"] = slow_periods
    if after_idle is not None:
        serving["after_idle"] = after_idle
    return _simulate(name, serving, rate_per_s, overhead_ms, run_dir, seed)


def batching_slow_fit(calib_join: dict, coef: np.ndarray, fixed_s: float,
                      normal_csv: Path, idle_factor: np.ndarray | None = None) \
        -> tuple[dict, Path]:
    """The slow-period fit of a batching calibration (``fit_slow`` on each complete batch's
    time over the robust line's time for its size and candidates, in dispatch order) and the
    normal-speed ``per_item`` written to ``normal_csv``: each batch of one's time divided by
    its expected slowdown, minus ``fixed`` (as ``fit_batching``'s per_item, at normal speed).
    With ``idle_factor`` (each complete batch's ``after_idle`` multiplier, ``batching_idle_fit``)
    the batch times are first divided by it."""
    t = batch_table(calib_join)
    complete = t["seen"] == t["size"]
    expected = coef[0] + coef[1] * t["size"] + coef[2] * t["sum_k"]
    times = t["service_s"][complete] / (1.0 if idle_factor is None else idle_factor)
    slow = fit_slow(t["dispatched_s"][complete], times, expected[complete])
    slowdown = slow.pop("_slowdown")
    alone = t["size"][complete] == 1
    per_item = np.maximum(times[alone] / slowdown[alone] - fixed_s, 0.0)
    write_samples(normal_csv, "per_item_s", per_item)
    slow["summary"]["per_item_normal_ms_mean"] = float(per_item.mean() * 1e3)
    return slow, normal_csv


def batching_idle_fit(calib_join: dict, coef: np.ndarray) -> dict:
    """``fit_idle`` on a batching calibration's complete batches in dispatch order, each
    batch's time over the robust line's time for its size and candidates; ``_factor`` per
    complete batch."""
    t = batch_table(calib_join)
    complete = t["seen"] == t["size"]
    expected = coef[0] + coef[1] * t["size"] + coef[2] * t["sum_k"]
    return fit_idle(t["dispatched_s"][complete], t["free_s"][complete],
                    t["worker"][complete], expected[complete])


def _free_cores_base(record: dict) -> float:
    """The measuring machine's cores (from its record; this machine's for old records)."""
    return float((record.get("machine") or {}).get("cores") or os.cpu_count() or 1)


def _judged(row: dict, predicted: dict, predicted_slow: dict, cores: float,
            predicted_idle: dict | None = None, predicted_minute: dict | None = None,
            minute: dict | None = None) -> dict:
    """A case's row with the predictions, their errors and the verdict (on the in-minute
    prediction, fitted on the log recorded under load around the case; in records from before
    it, on the idle-aware prediction, or without one on the slow-period prediction; see
    ``verdict``).
    ``predicted``/``relative_error`` stay the independent-draw prediction's, as in results
    from before slow periods."""
    errors = relative_errors(row["measured"], predicted)
    errors_slow = relative_errors(row["measured"], predicted_slow)
    target = TARGET.get(row["rho"], 0.05)
    others = max(row["cpu_cores"]["others_cores"], row["others_cores_before"]
                 if row["others_cores_before"] == row["others_cores_before"] else 0.0)
    row.update({"predicted": predicted, "relative_error": errors,
                "predicted_slow_periods": predicted_slow,
                "relative_error_slow_periods": errors_slow, "target": target,
                "within_target_independent": all(abs(errors[s]) <= target
                                                 for s in ("p50", "p95", "p99")),
                "within_target_slow_periods": all(abs(errors_slow[s]) <= target
                                                  for s in ("p50", "p95", "p99"))})
    judged = errors_slow
    if predicted_idle is not None:
        judged = relative_errors(row["measured"], predicted_idle)
        row.update({"predicted_after_idle": predicted_idle,
                    "relative_error_after_idle": judged})
    row["verdict_on"] = "idle-aware" if predicted_idle is not None else "slow periods"
    if predicted_minute is not None:
        judged = relative_errors(row["measured"], predicted_minute)
        row.update({"predicted_in_minute": predicted_minute,
                    "relative_error_in_minute": judged, "in_minute": minute,
                    "verdict_on": "in-minute"})
    row.update(verdict(row, judged, target, max(cores - others, 0.0)))
    row["disturbed"] = disturbances(row)
    return row


def batch_replay(replicas: int, batching: dict, enqueued_s: np.ndarray,
                 batch_service_s: np.ndarray) -> tuple[np.ndarray, float]:
    """The requests' measured arrivals at the queue, through predsim's batching kernel
    (``sim.engine.serving.BatchingPool``), each batch occupying its replica for the measured service
    time of the batch its first request really was in. Returns queue wait + occupancy of each
    request (in the order given) and the mean batch size the kernel formed."""
    from sim.scenario import Serving
    from sim.engine.serving import BatchingPool
    spec = Serving.model_validate({"replicas": replicas, "batching": {
        "max_batch": batching["max_batch"], "max_wait": f"{batching['max_wait_ms']}ms",
        "fixed": 0, "per_item": 0}})
    order = np.argsort(enqueued_s, kind="stable")
    t = enqueued_s[order]
    zero = np.zeros(t.size)
    pool = BatchingPool(spec, eval_until_s=np.inf, start_s=float(t[0]))
    out = pool.serve({"t_s": t, "lookup_s": zero, "item_s": zero,
                      "fixed_s": batch_service_s[order]}, until_s=np.inf, final=True)
    latency = np.empty(t.size)
    latency[order] = out["wait_s"] + out["occupancy_s"]
    return latency, t.size / np.unique(out["start_s"]).size


def analyse_batching_case(case: Case, log: np.ndarray, fit: dict, batching: dict) -> dict:
    r = join(case.record, log)
    meta = r["meta"]
    keep = r["sent_s"] >= meta["started_s"] + WARMUP_S
    if keep.sum() < 100:
        keep = np.ones_like(keep)
    lat, sent = r["latency_s"][keep], r["sent_s"][keep]
    lag = case.record["sent_s"] - case.record["scheduled_s"]
    lag = lag[np.isfinite(lag)]
    measured = statistics_ms(lat) if lat.size else {s: float("nan") for s in STATS}
    window = sent.max() - sent.min() if sent.size > 1 else float("nan")
    kept = {k: v[keep] for k, v in r.items() if isinstance(v, np.ndarray)}
    t = batch_table(kept)
    # what the calibration says these very batches take: fixed + each request's calibrated
    # per_item (its own batch-of-one time minus fixed)
    by_pool = fit["_per_item_by_pool_s"]
    pool_index = np.minimum(kept["pool_index"], by_pool.size - 1)
    own = np.where(kept["pool_index"] < by_pool.size, by_pool[pool_index], np.nan)
    _, inv = np.unique(kept["batch_id"], return_inverse=True)
    calibrated = fit["fixed_ms"] / 1e3 + np.bincount(inv, np.nan_to_num(own, nan=0.0))
    known = np.bincount(inv, np.isnan(own).astype(float)) == 0
    known &= t["seen"] == t["size"]
    # how late a batch left after its oldest request's max_wait was up, when its worker was
    # already free then (a timer's lateness: predsim dispatches exactly on time)
    max_wait = batching["max_wait_ms"] / 1e3
    prev_free = np.full(t["size"].size, -np.inf)
    for w in np.unique(t["worker"]):
        idx = np.flatnonzero(t["worker"] == w)
        idx = idx[np.argsort(t["dispatched_s"][idx])]
        prev_free[idx[1:]] = t["free_s"][idx[:-1]]
    due = t["head_enqueued_s"] + max_wait
    timed = (t["size"] < batching["max_batch"]) & (prev_free <= due) & (t["dispatched_s"] >= due)
    late = (t["dispatched_s"] - due)[timed]
    used = case.cpu["server_cores"] + case.cpu["loadgen_cores"]
    # the CPU work offered: the workers' CPU per request at calibration x the rate, plus the
    # load generator (the batcher's own CPU not counted: a lower bound)
    demand = case.rate_per_s * fit["cpu_ms_per_request"] / 1e3 + case.cpu["loadgen_cores"]
    replay, replay_size = batch_replay(case.replicas, batching, r["read_s"], r["service_s"])
    replay = replay[keep] + fit["overhead_ms"]["mean"] / 1e3
    replay_stats = statistics_ms(replay) if replay.size else {s: float("nan") for s in STATS}
    return {
        "measured": measured,
        "measured_ci95": sectioned_ci(sent, lat) if lat.size > 200 else {},
        "diagnostic_replay": {"predicted": replay_stats,
                              "relative_error": relative_errors(measured, replay_stats),
                              "batch_size_mean": replay_size},
        "requests": int(lat.size),
        "unanswered": r["unanswered"],
        "overloaded": bool(meta["overloaded"]) or r["unanswered"] > 0,
        "cpu_saturated": bool(demand >= (os.cpu_count() or 1)),
        "cpu_demand_cores": demand,
        "cpu_used_cores": used,
        "realised_rate_per_s": lat.size / window if window > 0 else float("nan"),
        # worker slots' busy time over the span the batches were served in
        "busy_share": float(t["service_s"].sum() / (case.replicas * (
            t["free_s"].max() - t["dispatched_s"].min()))),
        "batch_size_mean": float(t["size"].mean()),
        "service_drift": float(t["service_s"][known].mean() / calibrated[known].mean() - 1)
        if known.any() else float("nan"),
        "_known_batch_idle_s": idle_per_request(t["dispatched_s"], t["free_s"],
                                                t["worker"])[known],
        "_batches": {k: v[t["seen"] == t["size"]] for k, v in (
            ("size", t["size"]), ("sum_k", t["sum_k"]), ("service_s", t["service_s"]),
            ("dispatched_s", t["dispatched_s"]),
            ("idle_s", idle_per_request(t["dispatched_s"], t["free_s"], t["worker"])))},
        "worker_cpu_per_wall": float(t["cpu_s"].sum() / t["service_s"].sum()),
        "linger_late_us": ({"p50": quantile(late, 0.5) * 1e6, "p99": quantile(late, 0.99) * 1e6,
                            "batches": int(late.size)} if late.size else {}),
        "dispatch_to_worker_us_p50": quantile(t["got_s"] - t["dispatched_s"], 0.5) * 1e6,
        "answered_to_free_us_p50": quantile(t["free_s"] - t["answered_s"], 0.5) * 1e6,
        "queue_wait_ms_mean": float((kept["accepted_s"] - kept["read_s"]).mean() * 1e3),
        "workers_runqueue_wait_share": (case.cpu.get("workers_runqueue_wait_s", 0.0)
                                        / max(float(batch_table(r)["service_s"].sum()), 1e-9)),
        "send_lag_us": {"p50": quantile(lag, 0.5) * 1e6, "p99": quantile(lag, 0.99) * 1e6,
                        "max": float(lag.max() * 1e6)},
        "answer_read_us": {"p50": quantile(kept["answered_s"] - kept["worker_done_s"], 0.5) * 1e6,
                           "p99": quantile(kept["answered_s"] - kept["worker_done_s"],
                                           0.99) * 1e6},
        "cpu_cores": {k: case.cpu[k] for k in ("server_cores", "loadgen_cores", "others_cores",
                                                "irq_cores", "steal_cores", "idle_cores")},
        "others_cores_before": case.others_before,
    }


def analyse_batching_replicas(run_dir: Path, record: dict) -> dict:
    replicas, batching = record["replicas"], record["batching"]
    log = Server.read_logs(run_dir / "logs")
    calib_join = join(load_record(run_dir / "calibration.npz"), log)
    fit = fit_batching(calib_join, batching["max_batch"])
    per_item_csv = run_dir / f"per_item_c{replicas}.csv"
    write_samples(per_item_csv, "per_item_s", fit.pop("_per_item_s"))
    hidden = {k: fit.pop(k) for k in ("_coef", "_per_item_by_pool_s")}
    fit["others_cores_before"] = record["calibration_others_cores"]
    overhead_ms = fit["overhead_ms"]["mean"]
    # slow periods: fitted on the calibration's batches in time order, each batch's time over
    # what the robust line says a batch of its size and candidates takes; per_item at normal
    # speed: each batch of one's time divided by its expected slowdown, minus fixed
    slow, normal_csv = batching_slow_fit(calib_join, hidden["_coef"], fit["fixed_ms"] / 1e3,
                                         run_dir / f"per_item_normal_c{replicas}.csv")
    fit["slow_periods"] = slow["summary"]
    # idle-aware: after_idle on the calibration's batches (each over its expected time), then
    # slow periods on the batch times divided by their idle multiplier
    idle = batching_idle_fit(calib_join, hidden["_coef"])
    fit["after_idle"] = idle["summary"]
    idle_slow, idle_csv = slow, normal_csv
    if idle["after_idle"] is not None:
        idle_slow, idle_csv = batching_slow_fit(
            calib_join, hidden["_coef"], fit["fixed_ms"] / 1e3,
            run_dir / f"per_item_after_idle_c{replicas}.csv", idle_factor=idle["_factor"])
        fit["after_idle"]["slow_periods"] = idle_slow["summary"]
    cores = _free_cores_base(record)
    rows = []
    for c in record["cases"]:
        case = Case(replicas, c["rho"], c["rate_per_s"], c["duration_s"],
                    load_record(run_dir / f"load_c{replicas}_rho{c['rho']}.npz"), c["cpu"],
                    c["others_before"])
        a = analyse_batching_case(case, log, {**fit, **hidden}, batching)
        batch_idle = a.pop("_known_batch_idle_s")
        if idle["after_idle"] is not None:  # the idle model's S drift: its mean multiplier
            from sim.scenario.architectures import AfterIdle
            model = AfterIdle.model_validate(idle["after_idle"])
            a["service_drift_after_idle"] = float(np.mean(model.factor(batch_idle)) - 1)
        a["back_to_back_share"] = float(np.mean(batch_idle < 1e-4))
        name = f"fidelity-c{replicas}-batch-rho{case.rho}"
        predicted = predict_batching(name, replicas, case.rate_per_s, per_item_csv,
                                     fit["fixed_ms"] / 1e3, batching, overhead_ms, run_dir)
        predicted_slow = (predicted if slow["slow_periods"] is None else predict_batching(
            name + "-slow-periods", replicas, case.rate_per_s, normal_csv,
            fit["fixed_ms"] / 1e3, batching, overhead_ms, run_dir,
            slow_periods=slow["slow_periods"]))
        predicted_idle = (predicted_slow if idle["after_idle"] is None else predict_batching(
            name + "-after-idle", replicas, case.rate_per_s, idle_csv, fit["fixed_ms"] / 1e3,
            batching, overhead_ms, run_dir, slow_periods=idle_slow["slow_periods"],
            after_idle=idle["after_idle"]))
        predicted_minute, minute = None, None
        j = bracket_join(run_dir, log, replicas, case.rho)
        if j is not None:
            csv = run_dir / f"per_item_in_minute_c{replicas}_rho{case.rho}.csv"
            fitted = fit_batching_in_minute(j, csv)
            coef = fitted["_coef"]
            b = a["_batches"]
            case_ratio = b["service_s"] / np.maximum(coef[0] + coef[1] * b["size"]
                                                     + coef[2] * b["sum_k"], 1e-9)

            def predict_at(scale, suffix, csv=csv, fitted=fitted):
                return predict_batching(
                    f"{name}-in-minute{suffix}", replicas, case.rate_per_s,
                    csv if not suffix else scaled_samples(
                        csv, run_dir / f"{csv.stem}{suffix.replace('-', '_')}.csv", scale),
                    fitted["fixed_s"] * scale, batching, overhead_ms, run_dir,
                    slow_periods=fitted["slow_periods"], after_idle=fitted["after_idle"])
            predicted_minute, minute = in_minute(
                predict_at, fitted["summary"], level_vs_log(
                    fitted["_ratio"], fitted["_segment"], fitted["_idle_s"], case_ratio,
                    b["idle_s"], fitted["after_idle"]),
                b["dispatched_s"], case_ratio, c.get("bracket", {}).get("rho", RHO_LOG))
        a.pop("_batches")
        row = {"replicas": replicas, "batching": batching, "rho": case.rho,
               "rate_per_s": case.rate_per_s, "duration_s": case.duration_s, **a}
        rows.append(_judged(row, predicted, predicted_slow, cores, predicted_idle,
                            predicted_minute, minute))
    return {"replicas": replicas, "batching": batching,
            "measured_at": record.get("measured_at"), "machine": record.get("machine"),
            "measurement_wall_s": record.get("wall_s"), "server": record["server"],
            "priority": record["priority"], "requests_in_pool": record["pool"],
            "calibration": fit, "cases": rows}


# ---------------------------------------------------------------------------------------------
# The experiment
# ---------------------------------------------------------------------------------------------

def measure_replicas(replicas: int, rhos, durations: dict, run_dir: Path, quiet_budget: list,
                     seed: int, pool: int, log=print, batching: dict | None = None) -> None:
    """Calibrate one server configuration, then drive it at every utilisation. Writes the raw
    record to ``run_dir`` (worker logs, load generator records, ``measurement.json``). With
    ``batching`` ({max_batch, max_wait_ms, groups}) the server batches and the calibration
    also sends groups of every size up to max_batch (see ``fit_batching``)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for old in run_dir.glob("load_*.npz"):
        old.unlink()
    lifetime = 120 + sum(durations[r] + 30 + 2 * (BRACKET_S + 15) for r in rhos)
    started = time.monotonic()
    if batching:
        lifetime += 120
    server = Server(replicas, run_dir / "logs", lifetime, batching)
    record = {"replicas": replicas, "server": server.info, "pool": pool, "cases": [],
              "batching": batching,
              "measured_at": dt.datetime.now().isoformat(timespec="seconds"),
              "machine": machine_description()}
    try:
        log(f"C={replicas}: server up on 127.0.0.1:{server.port} (model trained at start-up: "
            f"test AUC {server.info['model']['test_auc']}, {server.info['startup_s']} s)")
        others = wait_for_quiet(quiet_budget, server.pids, log=log)
        groups = {} if not batching else {"groups": batching["groups"],
                                          "group_max": batching["max_batch"]}
        calib_record = loadgen(server.port, run_dir / "calibration.npz", mode="closed",
                               think=THINK_S, pool=pool, seed=seed, id_offset=1, **groups)
        calib_join = join(calib_record, server.snapshot())
        record["calibration_others_cores"] = others
        record["priority"] = priority_in_force(server.proc.pid, calib_record["meta"]["policy"])
        if batching:
            fit = fit_batching(calib_join, batching["max_batch"])
            mean_service_s = fit["occupancy_ms_per_request"] / 1e3  # rho: see fit_batching
            log(f"C={replicas} batching {batching['max_batch']}/{batching['max_wait_ms']} ms: "
                f"calibrated on {fit['batches']} batches of known size: batch time = "
                f"{fit['fixed_ms']:.3f} ms + per request {fit['per_item_ms_mean']:.3f} ms on "
                f"average (residual rms {fit['residual_rms_share'] * 100:.1f}% of the batch "
                f"time); other processes: {others:.2f} cores")
        else:
            calib = calibration_summary(calib_join)
            mean_service_s = calib["service_ms"]["mean"] / 1e3
        if not batching:
            log(f"C={replicas}: calibrated on {calib['requests']} requests one at a time: "
                f"service time mean {calib['service_ms']['mean']:.3f} ms (cv "
                f"{calib['service_ms']['cv']:.2f}, model call {calib['model_call_ms_mean']:.3f} "
                f"ms), fixed overhead mean {calib['overhead_ms']['mean'] * 1e3:.0f} us (other "
                f"processes: {others:.2f} cores)")
        for index, rho in enumerate(rhos):
            case = Case(replicas, rho, rho * replicas / mean_service_s, durations[rho])
            case.others_before = wait_for_quiet(quiet_budget, server.pids, log=log)
            log(f"C={replicas}{' batching' if batching else ''} rho={rho}: "
                f"{case.rate_per_s:.1f} requests/s for "
                f"{case.duration_s:g} s", end="", flush=True)
            bracket_s = BRACKET_S
            bracket_rate = RHO_LOG * replicas / mean_service_s
            measure_bracket(server, run_dir / bracket_name(replicas, rho, "before"),
                            bracket_rate, bracket_s, seed + 1000 + index,
                            (index + 1) * 2_000_000 + 1_000_000, pool)
            measure_case(server, case, index, run_dir, seed, pool)
            measure_bracket(server, run_dir / bracket_name(replicas, rho, "after"),
                            bracket_rate, bracket_s, seed + 2000 + index,
                            (index + 1) * 2_000_000 + 1_500_000, pool)
            meta = case.record["meta"]
            log(f" -> {meta['sent']} sent" + (" (overloaded: stopped sending)"
                                              if meta["overloaded"] else "")
                + f"; {bracket_s:g} s at rho={RHO_LOG} before and after")
            record["cases"].append({"rho": rho, "rate_per_s": case.rate_per_s,
                                    "duration_s": case.duration_s, "cpu": case.cpu,
                                    "others_before": case.others_before,
                                    "bracket": {"rho": RHO_LOG, "rate_per_s": bracket_rate,
                                                "duration_s": bracket_s}})
            time.sleep(0.5)
    finally:
        server.stop()
        record["wall_s"] = time.monotonic() - started
        (run_dir / "measurement.json").write_text(json.dumps(_jsonable(record), indent=1))


def analyse_replicas(run_dir: Path) -> dict:
    """From the raw record of one configuration: calibrate the scenario, predict, compare."""
    record = json.loads((run_dir / "measurement.json").read_text())
    if record.get("batching"):
        return analyse_batching_replicas(run_dir, record)
    replicas = record["replicas"]
    log = Server.read_logs(run_dir / "logs")
    calib_join = join(load_record(run_dir / "calibration.npz"), log)
    calib = calibration_summary(calib_join)
    calib["others_cores_before"] = record["calibration_others_cores"]
    service_csv = run_dir / f"service_time_c{replicas}.csv"
    write_samples(service_csv, "service_time_s", calib_join["service_s"])
    write_samples(run_dir / f"overhead_c{replicas}.csv", "overhead_s",
                  calib_join["latency_s"] - calib_join["service_s"])
    overhead_ms = calib["overhead_ms"]["mean"]
    # slow periods: fitted on the calibration's service times in the order the worker took
    # the requests (as `predsim calibrate latency` would be given them); predsim then gets each
    # service time divided by its expected slowdown (the work at normal speed) and slow_periods
    slow = fit_slow(calib_join["accepted_s"], calib_join["service_s"])
    normal_csv = run_dir / f"service_time_normal_c{replicas}.csv"
    write_samples(normal_csv, "service_time_s", calib_join["service_s"] / slow.pop("_slowdown"))
    calib["slow_periods"] = slow["summary"]
    # idle-aware: after_idle fitted on the calibration (each service time over what its number
    # of candidates predicts), then slow periods on the service times divided by their idle
    # multiplier, as `predsim calibrate latency` does; predsim gets those, at normal speed
    idle = fit_idle(calib_join["accepted_s"], calib_join["free_s"], calib_join["worker"],
                    size_line(calib_join["k"], calib_join["service_s"]))
    calib["after_idle"] = idle["summary"]
    idle_slow, idle_csv = slow, normal_csv
    if idle["after_idle"] is not None:
        work = calib_join["service_s"] / idle["_factor"]
        idle_slow = fit_slow(calib_join["accepted_s"], work)
        idle_csv = run_dir / f"service_time_after_idle_c{replicas}.csv"
        write_samples(idle_csv, "service_time_s", work / idle_slow.pop("_slowdown"))
        calib["after_idle"]["slow_periods"] = idle_slow["summary"]
    cores = int(_free_cores_base(record))
    rows = []
    for c in record["cases"]:
        case = Case(replicas, c["rho"], c["rate_per_s"], c["duration_s"],
                    load_record(run_dir / f"load_c{replicas}_rho{c['rho']}.npz"), c["cpu"],
                    c["others_before"])
        a = analyse_case(case, log, calib)
        in_run_idle = a.pop("_idle_s")
        kept_k, kept_service = a.pop("_k"), a["_service_samples"]
        if idle["after_idle"] is not None:
            # what the idle model says the run's mean service time is, against the
            # calibration's: the mean of its multiplier over the run's idle times
            from sim.scenario.architectures import AfterIdle
            model = AfterIdle.model_validate(idle["after_idle"])
            a["service_drift_after_idle"] = float(np.mean(model.factor(in_run_idle)) - 1)
        a["back_to_back_share"] = float(np.mean(in_run_idle < 1e-4))
        name = f"fidelity-c{replicas}-rho{case.rho}"
        predicted = predict(name, replicas, case.rate_per_s, service_csv, overhead_ms, run_dir)
        in_run_csv = run_dir / f"service_time_in_run_c{replicas}_rho{case.rho}.csv"
        write_samples(in_run_csv, "service_time_s", a.pop("_service_samples"))
        diagnostic = predict(name + "-in-run-service", replicas, case.rate_per_s, in_run_csv,
                             overhead_ms, run_dir)
        predicted_slow = (predicted if slow["slow_periods"] is None else predict(
            name + "-slow-periods", replicas, case.rate_per_s, normal_csv, overhead_ms, run_dir,
            slow_periods=slow["slow_periods"]))
        predicted_idle = (predicted_slow if idle["after_idle"] is None else predict(
            name + "-after-idle", replicas, case.rate_per_s, idle_csv, overhead_ms, run_dir,
            slow_periods=idle_slow["slow_periods"], after_idle=idle["after_idle"]))
        predicted_minute, minute = None, None
        j = bracket_join(run_dir, log, replicas, case.rho)
        if j is not None:
            csv = run_dir / f"service_time_in_minute_c{replicas}_rho{case.rho}.csv"
            fitted = fit_in_minute(j, csv)
            log_service = j["free_s"] - j["accepted_s"]
            x = np.vstack([np.ones(j["k"].size), j["k"].astype(float)]).T
            coef = np.linalg.lstsq(x, log_service, rcond=None)[0]
            case_ratio = kept_service / (coef[0] + coef[1] * kept_k)

            def predict_at(scale, suffix, csv=csv, fitted=fitted):
                return predict(
                    f"{name}-in-minute{suffix}", replicas, case.rate_per_s,
                    csv if not suffix else scaled_samples(
                        csv, run_dir / f"{csv.stem}{suffix.replace('-', '_')}.csv", scale),
                    overhead_ms, run_dir, slow_periods=fitted["slow_periods"],
                    after_idle=fitted["after_idle"])
            predicted_minute, minute = in_minute(
                predict_at, fitted["summary"], level_vs_log(
                    log_service / (x @ coef), j["segment"],
                    idle_per_request(j["accepted_s"], j["free_s"], j["worker"]),
                    case_ratio, in_run_idle, fitted["after_idle"]),
                a.pop("_accepted_s"), case_ratio, c.get("bracket", {}).get("rho", RHO_LOG))
        a.pop("_accepted_s", None)
        row = _judged({
            "replicas": replicas, "rho": case.rho, "rate_per_s": case.rate_per_s,
            "duration_s": case.duration_s, **a,
            "diagnostic_in_run_service": {
                "predicted": diagnostic,
                "relative_error": relative_errors(a["measured"], diagnostic)},
        }, predicted, predicted_slow, cores, predicted_idle, predicted_minute, minute)
        if replicas > cores:
            # more CPU-bound workers than cores: what predsim says if given the cores instead
            as_cores = predict(name + f"-{cores}-replicas", cores, case.rate_per_s, service_csv,
                               overhead_ms, run_dir)
            row["diagnostic_replicas_as_cores"] = {
                "replicas": cores, "predicted": as_cores,
                "relative_error": relative_errors(a["measured"], as_cores)}
        rows.append(row)
    return {"replicas": replicas, "measured_at": record.get("measured_at"),
            "machine": record.get("machine"), "measurement_wall_s": record.get("wall_s"),
            "server": record["server"], "priority": record["priority"],
            "requests_in_pool": record["pool"], "calibration": calib, "cases": rows}


def run(replicas=REPLICAS, rhos=RHOS, durations=None, pool=POOL, quiet_wait_s=60.0,
        seed=1, run_root: Path = RUNS, log=print, measure: bool = True, batching: str = "off",
        batch_durations=None, batch_groups: int = BATCH_GROUPS) -> dict:
    """Measure (unless ``measure`` is False: analyse the raw record already in ``run_root``),
    then predict and compare, for every number of workers in ``replicas``; ``batching`` is
    "off" (one request at a time), "on" (dynamic batching, BATCHING) or "both"."""
    durations = durations or DURATION_S
    batch_durations = batch_durations or {r: d * BATCH_DURATION_SCALE
                                          for r, d in durations.items()}
    modes = {"off": (False,), "on": (True,), "both": (False, True)}[batching]
    batch = {**BATCHING, "groups": batch_groups}
    dirs = [(run_root / (f"c{c}-batch" if b else f"c{c}"), c, b) for b in modes for c in replicas]
    started = time.monotonic()
    budget = [quiet_wait_s]
    if measure:
        for run_dir, c, b in dirs:
            measure_replicas(c, rhos, batch_durations if b else durations, run_dir, budget,
                             seed, pool, log, batching=batch if b else None)
    configs = [analyse_replicas(run_dir) for run_dir, _, _ in dirs]
    first = configs[0]
    return {
        "date": (first["measured_at"] or dt.date.today().isoformat())[:10],
        "machine": first["machine"] or machine_description(),
        "method": {
            "requests_in_pool": configs[0]["requests_in_pool"], "warmup_s": WARMUP_S,
            "sim_requests": SIM_REQUESTS, "sections_for_ci": SECTIONS, "targets": TARGET,
            "calibration_think_s": THINK_S, "max_inflight": MAX_INFLIGHT,
            "prediction": "predsim latency (queue wait + empirical service time) + mean fixed "
                          "overhead measured at low load",
            "batching": {**BATCHING, "groups_per_size": batch_groups,
                         "duration_scale": BATCH_DURATION_SCALE,
                         "prediction": "predsim batching (fixed: constant intercept of the "
                                       "batch-time fit; per_item: empirical, batch-of-one time "
                                       "minus fixed) + mean overhead outside queue and worker"},
        },
        "wall_s": round(time.monotonic() - started, 1),
        "measurement_wall_s": (None if any(c["measurement_wall_s"] is None for c in configs)
                               else round(sum(c["measurement_wall_s"] for c in configs), 1)),
        "configurations": configs,
    }


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------

def _pct(x: float) -> str:
    return "n/a" if x != x else f"{x * 100:+.1f}%"


def _rows(results: dict, batching: bool | None = None):
    """Every row, or only those without (``batching=False``) or with batching (True)."""
    for config in results["configurations"]:
        if batching is None or bool(config.get("batching")) == batching:
            yield from config["cases"]


def _batch_label(row: dict) -> str:
    b = row.get("batching")
    return f"{b['max_batch']}/{b['max_wait_ms']:g}ms" if b else "-"


def _minute(row: dict) -> tuple[dict, dict] | None:
    """The in-minute prediction and its errors (None in results from before it)."""
    if "predicted_in_minute" not in row:
        return None
    return row["predicted_in_minute"], row["relative_error_in_minute"]


def _level_cell(r: dict) -> str:
    """The case's speed against the in-minute log's (the idle model's share of it)."""
    lv = (r.get("in_minute") or {}).get("level")
    if not lv:
        return "-"
    return f"{_pct(lv['case'])} ({_pct(lv['idle_model'])})"


def _wander_cell(r: dict) -> str:
    """The machine's speed wander within the case, and what it moves predsim's p50 and p99."""
    sb = (r.get("in_minute") or {}).get("speed_band")
    if not sb:
        return "-"
    moved = "/".join("unstable" if not math.isfinite(sb["band"][s]) else
                     f"{sb['band'][s] * 100:.0f}%" for s in ("p50", "p99"))
    return f"±{sb['wander'] * 100:.1f}% ({moved})"


def _log_cell(r: dict) -> str:
    """The log's segment before and after the case, each against the two together."""
    lv = (r.get("in_minute") or {}).get("level")
    return f"{_pct(lv['before'])}/{_pct(lv['after'])}" if lv else "-"


LOAD_CAUSES = (  # what the load and the machine did to the service time, in both tables
    ("back to back", lambda r: _share(r.get("back_to_back_share"))),
    ("S drift, idle model", lambda r: _pct(r["service_drift_after_idle"])
     if "service_drift_after_idle" in r else "-"),
    ("log before/after", _log_cell),
    ("speed vs log (idle model)", _level_cell),
    ("speed wander (p50/p99 moved)", _wander_cell),
)

BATCH_CAUSES = (  # (heading, format for one batching row)
    ("busy share", lambda r: f"{r['busy_share']:.3f}"),
    ("pred util", lambda r: f"{r['predicted']['utilisation']:.3f}"),
    ("batch size, replay", lambda r: f"{r['batch_size_mean']:.2f}, "
                                     f"{r['diagnostic_replay']['batch_size_mean']:.2f}"),
    ("S drift", lambda r: _pct(r["service_drift"])),
    *LOAD_CAUSES,
    ("pred util, in-minute", lambda r: f"{r['predicted_in_minute']['utilisation']:.3f}"
     if "predicted_in_minute" in r else "-"),
    ("cpu/wall", lambda r: f"{r['worker_cpu_per_wall']:.2f}"),
    ("CPU demand", lambda r: f"{r['cpu_demand_cores']:.2f}"),
    ("CPU used", lambda r: f"{r['cpu_used_cores']:.2f}"),
    ("linger late p50/p99 us", lambda r: (f"{r['linger_late_us']['p50']:.0f}/"
                                          f"{r['linger_late_us']['p99']:.0f}")
     if r.get("linger_late_us") else "-"),
    ("lag p50/p99 us", lambda r: f"{r['send_lag_us']['p50']:.0f}/{r['send_lag_us']['p99']:.0f}"),
    ("others", lambda r: f"{r['cpu_cores']['others_cores']:.2f}"),
    ("p99 ci95", lambda r: "±" + _pct(r["measured_ci95"].get("p99", float("nan"))
                                      / r["measured"]["p99"])[1:]),
    ("p50 err, replay", lambda r: _pct(r["diagnostic_replay"]["relative_error"]["p50"])),
    ("p99 err, replay", lambda r: _pct(r["diagnostic_replay"]["relative_error"]["p99"])),
)


def _batch_calibration_line(config: dict) -> str:
    c = config["calibration"]
    co = c["coefficients"]
    res = ", ".join(f"{b}: {v['measured_ms_mean']:.2f}/{v['model_ms_mean']:.2f}"
                    for b, v in c["residual_by_size"].items())
    return (f"C={config['replicas']} batching calibration: {c['batches']} batches of known size "
            f"({c['requests']} requests); batch time = {co['fixed_ms']:.3f} ms + "
            f"{co['per_request_ms']:.3f} ms per request + {co['per_candidate_us']:.2f} us per "
            f"candidate (robust fit; residual rms {c['residual_rms_share'] * 100:.1f}% without "
            f"the slowest tenth, R2 {c['r_squared_inliers']:.3f}, {c['over_3x_share'] * 100:.1f}%"
            f" of batches over 3x); mean batch time measured/given to predsim (fixed + b x "
            f"E[per_item]) in ms by size b {res}; fixed "
            f"{c['fixed_ms']:.3f} ms, per_item mean {c['per_item_ms_mean']:.3f} ms (p99 "
            f"{c['per_item_ms_p99']:.3f}); overhead mean {c['overhead_ms']['mean'] * 1e3:.0f} us;"
            f" batcher->worker {c['dispatch_to_worker_us_p50']:.0f} us, worker "
            f"done->batcher knows {c['answered_to_free_us_p50']:.0f} us (p50); other processes "
            f"{c['others_cores_before']:.2f} cores; priority {config['priority']}"
            + (f"\n  {_slow_fit_line(c)}" if c.get("slow_periods") else ""))


def _met(row: dict) -> str:
    """The verdict on the slow-period prediction (results from before slow periods: on the
    only prediction there was)."""
    if "verdict" not in row:
        met = "yes" if row["within_target"] else "NO"
        if row["cpu_saturated"]:
            return met + " (CPU demand >= cores)"
        return met + (" (overloaded)" if row["overloaded"] else "")
    word = {"yes": "yes", "no": "NO", "unresolved": "unresolved",
            "not judgeable": "not judgeable"}[row["verdict"]]
    notes = []
    if row["verdict"] == "not judgeable":
        notes.append(row["not_judgeable_reason"])
    elif row["verdict"] == "unresolved":
        notes.append(_unresolved_text(row))
    if row["verdict"] != "not judgeable" and not row["p99_resolvable"]:
        notes.append(f"measured p99 known to ±{row['measured_ci95_share']['p99'] * 100:.0f}% "
                     f"> {row['target'] * 100:.0f}%")
    if row["overloaded"]:
        notes.append("overloaded")
    if row.get("disturbed"):
        notes.append("disturbed: " + ", ".join(row["disturbed"]))
    return word + (f" ({'; '.join(notes)})" if notes else "")


def _unresolved_text(row: dict) -> str:
    """Which statistics were beyond the target only within the measurement's own 95% CI."""
    return ", ".join(row["beyond_target"]) + " within CI"


def _slow(row: dict) -> tuple[dict, dict]:
    """The slow-period prediction and its errors (the only prediction in old results)."""
    return (row.get("predicted_slow_periods", row["predicted"]),
            row.get("relative_error_slow_periods", row["relative_error"]))


def _idle(row: dict) -> tuple[dict, dict] | None:
    """The idle-aware prediction and its errors (None in results from before it)."""
    if "predicted_after_idle" not in row:
        return None
    return row["predicted_after_idle"], row["relative_error_after_idle"]


def _share(x) -> str:
    return "n/a" if x is None or x != x else f"{x * 100:.1f}%"


def _idle_fit_line(c: dict) -> str:
    """The calibration's after_idle fit in one line."""
    a = c.get("after_idle")
    if not a:
        return ""
    if not a["tested"]:
        return (f"idle before each request: not tested ({a['series']} in the series: "
                f"overlapping, or idle times that barely vary)")
    p = "< 0.001" if a["p"] < 0.001 else f"= {a['p']:.3f}"
    head = (f"idle before each {'batch' if c.get('batches') else 'request'}: Spearman "
            f"{a['spearman']:+.3f}, {a['partial_given_previous']:+.3f} given the one before, "
            f"p {p} over {a['series']}"
            + (" (each over its expected time)" if a["normalised_by_expected"] else ""))
    if not a["found"]:
        return head + "; no dependence found: the idle-aware prediction is the slow-period one"
    points = ", ".join(f"x{f:.3f} ±{h:.3f} at {x:g} ms" for x, f, h in
                       zip(a["idle_ms"], a["factors"], a["half_widths"]))
    out = head + f"; after_idle fitted: {points}"
    if a.get("slow_periods"):
        out += "; on the work: " + _slow_fit_line({"slow_periods": a["slow_periods"]})
    return out


def _slow_fit_line(c: dict) -> str:
    """The calibration's slow-period fit in one line."""
    sp = c.get("slow_periods")
    if not sp:
        return ""
    head = (f"service-time series: {sp['series']} in time order over {sp['span_s']:.1f} s"
            + (" (each over its expected time)" if sp["normalised_by_expected"] else "")
            + f", lag-1 {sp['lag1_autocorrelation']:.2f}, slow (>1.5x median) "
              f"{sp['slow_share'] * 100:.1f}%, next too {_share(sp['next_slow_share'])} "
              f"(independent {_share(sp['next_slow_share_if_independent'])})")
    if "slowdowns" not in sp:
        return head + "; independent: no slow periods fitted"
    st = ", ".join(f"x{s:.2f} for {m:.3g} ms ({sh * 100:.1f}%)" for s, m, sh in
                   zip(sp["slowdowns"], sp["mean_stays_ms"], sp["time_shares"]))
    chk = sp.get("check") or {}
    return (head + f"; slow periods fitted: {st}; likelihood gain "
            f"{sp['log_likelihood_gain_over_iid']:+.0f} over iid, "
            f"{sp['log_likelihood_gain_over_mixture']:+.1f} over iid speeds; check "
            + ("reproduces" if chk.get("reproduces") else "does not reproduce")
            + f" lag-1 ({chk.get('lag1_simulated', float('nan')):.2f} simulated, "
              f"{chk.get('lag1_data', float('nan')):.2f} data) and slow-after-slow "
              f"({_share(chk.get('next_slow_simulated'))} simulated, "
              f"{_share(chk.get('next_slow_data'))} data)")


CAUSES = (  # (heading, format for one row)
    ("real rho", lambda r: f"{r['realised_utilisation']:.3f}"),
    ("S drift", lambda r: _pct(r["service_drift"])),
    ("S 1s-cv meas/iid", lambda r: f"{r['service_per_second_cv']['measured'] * 100:.1f}%/"
                                   f"{r['service_per_second_cv']['if_independent'] * 100:.1f}%"),
    ("stalls, next too", lambda r: _stall_cell(r.get("stalls") or {})),
    ("cpu/wall", lambda r: f"{r['worker_cpu_per_wall']:.2f}"),
    ("CPU demand", lambda r: f"{r['cpu_demand_cores']:.2f}"),
    ("lag p50/p99 us", lambda r: f"{r['send_lag_us']['p50']:.0f}/{r['send_lag_us']['p99']:.0f}"),
    ("others", lambda r: f"{r['cpu_cores']['others_cores']:.2f}"),
    ("p99 ci95", lambda r: "±" + _pct(r["measured_ci95"].get("p99", float("nan"))
                                      / r["measured"]["p99"])[1:]),
    *LOAD_CAUSES,
    ("p99 err, in-run S", lambda r: _pct(
        r["diagnostic_in_run_service"]["relative_error"]["p99"])),
    ("p99 err, shuffled", lambda r: _pct(
        r["diagnostic_replay_shuffled"]["relative_error"]["p99"])),
    ("p99 err, replay", lambda r: _pct(r["diagnostic_replay"]["relative_error"]["p99"])),
    ("p99 err, C=cores", lambda r: _pct(r["diagnostic_replicas_as_cores"]["relative_error"]["p99"])
     if "diagnostic_replicas_as_cores" in r else "-"),
)


IN_MINUTE_CAUSES = ("log before/after", "speed vs log (idle model)",
                    "speed wander (p50/p99 moved)", "pred util, in-minute")


def _causes(causes: tuple, results: dict) -> list:
    """``causes`` without the in-minute columns when no case has an in-minute log."""
    minute = any(_minute(row) for row in _rows(results))
    return [(h, fmt) for h, fmt in causes if minute or h not in IN_MINUTE_CAUSES]


def _stall_cell(st: dict) -> str:
    if not st:
        return "-"
    after = st["next_also_slow"]
    return f"{st['share'] * 100:.1f}%, " + ("-" if after != after else f"{after * 100:.0f}%")


def _stalls(c: dict) -> str:
    st = c.get("stalls") or {}
    if not st:
        return "n/a"
    return (f"{st['share'] * 100:.1f}% of requests over 3x their CPU time (median "
            f"+{st['extra_ms_p50']:.1f} ms), next request too in {st['next_also_slow'] * 100:.0f}%")


def _cells(row: dict, idle: bool, width: int = 0, minute: bool = False) -> list[str]:
    """Per statistic: measured / iid / slow [/ idle] (their errors); with ``minute``:
    measured / the calibration's idle-aware prediction / the in-minute one (their errors)."""
    slow, slow_err = _slow(row)
    out = []
    if minute:
        early = _idle(row) or (slow, slow_err)
        late = _minute(row) or ({s: float("nan") for s in STATS},
                                {s: float("nan") for s in STATS})
        return [" / ".join(f"{v:{width}.2f}" for v in (row["measured"][s], early[0][s],
                                                         late[0][s]))
                + f" ({_pct(early[1][s])}, {_pct(late[1][s])})" for s in STATS]
    for s in STATS:
        values = [row["measured"][s], row["predicted"][s], slow[s]]
        errors = [row["relative_error"][s], slow_err[s]]
        if idle:
            both = _idle(row) or (slow, slow_err)
            values.append(both[0][s])
            errors.append(both[1][s])
        out.append(" / ".join(f"{v:{width}.2f}" for v in values)
                   + f" ({', '.join(_pct(e) for e in errors)})")
    return out


def table_text(results: dict) -> str:
    idle = any(_idle(row) for row in _rows(results))
    minute = any(_minute(row) for row in _rows(results))
    heading = "meas / idle / in-minute ms (err idle, in-minute)" if minute else \
        "meas / iid / slow / idle ms (err iid, slow, idle)" if idle else \
        "meas / iid / slow ms (err iid, slow)"
    width = 56 if minute else 62 if idle else 45
    log_rho = next((row["in_minute"].get("rho", RHO_LOG) for row in _rows(results)
                    if row.get("in_minute")), RHO_LOG)
    lines = [("Measured vs predicted from the low-load calibration (idle: after_idle and slow "
              f"periods) and from a log at rho={log_rho} recorded just before and just after "
              "the case (in-minute); the verdict is on the in-minute prediction:") if minute
             else "Measured vs predicted with independent draws (iid), with slow periods (slow)"
             + (" and idle-aware (idle: after_idle and slow periods); the verdict is on the "
                "idle-aware prediction:" if idle else "; the verdict is on the slow-period "
                                                      "prediction:"),
             f"{'C':>2} {'batch':>7} {'rho':>4} {'requests':>8}  "
             + "  ".join(f"{s + ' ' + heading:>{width}}" for s in STATS)
             + f"  {'p99 ci95':>8}  target  met"]
    for row in _rows(results):
        cells = _cells(row, idle, 7, minute)
        ci = row["measured_ci95"].get("p99", float("nan")) / row["measured"]["p99"]
        lines.append(f"{row['replicas']:>2} {_batch_label(row):>7} {row['rho']:>4} "
                     f"{row['requests']:>8}  "
                     + "  ".join(f"{c:>{width}}" for c in cells)
                     + f"  {'±' + _pct(ci)[1:]:>8}  {row['target'] * 100:5.0f}%  {_met(row)}")
    for batching, title, causes, width in (
            (False, "What can make them differ, measured per case (see README.md):", CAUSES, 17),
            (True, "With batching, measured per case (see README.md):", BATCH_CAUSES, 22)):
        causes = _causes(causes, results)
        rows = list(_rows(results, batching))
        if rows:
            lines += ["", title, f"{'C':>2} {'rho':>4} " + " ".join(f"{h:>{width}}"
                                                                    for h, _ in causes)]
            lines += [f"{row['replicas']:>2} {row['rho']:>4} "
                      + " ".join(f"{fmt(row):>{width}}" for _, fmt in causes) for row in rows]
    lines.append("")
    for config in results["configurations"]:
        if config.get("batching"):
            lines.append(_batch_calibration_line(config))
            if config["calibration"].get("after_idle"):
                lines.append(f"  {_idle_fit_line(config['calibration'])}")
            lines += _minute_lines(config)
            continue
        c = config["calibration"]
        lines.append(f"C={config['replicas']} calibration: {c['requests']} requests one at a "
                     f"time; service time mean {c['service_ms']['mean']:.3f} ms, p99 "
                     f"{c['service_ms']['p99']:.3f} ms, cv {c['service_ms']['cv']:.2f}; fixed "
                     f"overhead mean {c['overhead_ms']['mean'] * 1e3:.0f} us (p50 "
                     f"{c['overhead_ms']['p50'] * 1e3:.0f}, p99 "
                     f"{c['overhead_ms']['p99'] * 1e3:.0f}); stalls {_stalls(c)}; other processes "
                     f"{c['others_cores_before']:.2f} cores; priority {config['priority']}")
        if c.get("slow_periods"):
            lines.append(f"  {_slow_fit_line(c)}")
        if c.get("after_idle"):
            lines.append(f"  {_idle_fit_line(c)}")
        lines += _minute_lines(config)
    return "\n".join(lines)


def _minute_lines(config: dict) -> list[str]:
    """Each case's in-minute log and what was fitted on it."""
    out = []
    for row in config["cases"]:
        m = row.get("in_minute")
        if not m:
            continue
        seg = m["segments"]
        head = (f"  rho={row['rho']} in-minute log: {m['requests']} requests at "
                f"rho={m.get('rho', RHO_LOG)}, "
                f"{seg[0]['end_s'] - seg[0]['start_s']:.1f} s before the case and "
                f"{seg[1]['end_s'] - seg[1]['start_s']:.1f} s after")
        if "batches" in m:
            co = m["coefficients"]
            head += (f"; {m['batches']} batches (mean size {m['batch_size_mean']:.2f}, largest "
                     f"{m['largest_batch']}): batch time = {co['fixed_ms']:.3f} ms + "
                     f"{co['per_request_ms']:.3f} ms per request + "
                     f"{co['per_candidate_us']:.2f} us per candidate, per_item mean "
                     f"{m['per_item_ms_mean']:.3f} ms")
        else:
            head += f"; service time mean {m['service_ms_mean']:.3f} ms"
        out.append(head)
        for key, line in (("after_idle", _idle_fit_line), ("slow_periods", _slow_fit_line)):
            text = line({key: m[key], "batches": m.get("batches")})
            if text:
                out.append("    " + text.replace(
                    "; no dependence found: the idle-aware prediction is the slow-period one",
                    "; no dependence found"))
    return out


DECOMPOSITION = (  # (heading, key of the row holding a prediction)
    ("in-minute prediction", "minute"),
    ("idle-aware prediction", "idle"),
    ("slow-period prediction", "slow"),
    ("prediction", None),
    ("i.i.d. in-run S", "diagnostic_in_run_service"),
    ("shuffled replay", "diagnostic_replay_shuffled"),
    ("replay", "diagnostic_replay"),
)


def _errors(row: dict, key: str | None) -> dict:
    if key == "minute":
        return (_minute(row) or (None, {s: float("nan") for s in STATS}))[1]
    if key == "idle":
        return (_idle(row) or _slow(row))[1]
    if key == "slow":
        return _slow(row)[1]
    return row["relative_error"] if key is None else row[key]["relative_error"]


def _verdict_cell(row: dict) -> str:
    if "verdict" not in row:  # results from before slow periods
        note = _met(row).partition(" ")[2]
        return (("yes" if row["within_target"] else "**no**")
                + f" (±{row['target'] * 100:.0f}%)" + (f" {note}" if note else ""))
    out = {"yes": "yes", "no": "**no**", "unresolved": "unresolved",
           "not judgeable": "not judgeable"}[row["verdict"]] + f" (±{row['target'] * 100:.0f}%)"
    if row["verdict"] == "not judgeable":
        return out + ": " + row["not_judgeable_reason"]
    if row["verdict"] == "unresolved":  # beyond the target, within the measurement's CI
        out += ": " + _unresolved_text(row)
    if not row["p99_resolvable"]:
        out += " †"  # the measured p99's CI is wider than the target
    if row["overloaded"]:
        out += "; overloaded"
    if row.get("disturbed"):
        out += "; disturbed: " + ", ".join(row["disturbed"])
    return out


def table_markdown(results: dict) -> str:
    new = any("verdict" in row for row in _rows(results))
    idle = any(_idle(row) for row in _rows(results))
    minute = any(_minute(row) for row in _rows(results))
    if minute:
        lines = ["| C | batching | ρ | requests | p50 ms meas / calibration / in-minute (err "
                 "calibration, in-minute) | p95 ms (same) | p99 ms (same) | mean ms (same) | "
                 "p99 95% CI | within target (in-minute) |",
                 "|---|---|---|---|---|---|---|---|---|---|"]
    elif idle:
        lines = ["| C | batching | ρ | requests | p50 ms meas / iid / slow / idle (err iid, "
                 "slow, idle) | p95 ms (same) | p99 ms (same) | mean ms (same) | p99 95% CI | "
                 "within target (idle-aware) |",
                 "|---|---|---|---|---|---|---|---|---|---|"]
    elif new:
        lines = ["| C | batching | ρ | requests | p50 ms meas / iid / slow (err iid, slow) | "
                 "p95 ms (same) | p99 ms (same) | mean ms (same) | p99 95% CI | "
                 "within target (slow periods) |",
                 "|---|---|---|---|---|---|---|---|---|---|"]
    else:
        lines = ["| C | batching | ρ | requests | p50 ms meas / pred (err) | "
                 "p95 ms meas / pred (err) | p99 ms meas / pred (err) | mean ms meas / pred (err) "
                 "| within target |",
                 "|---|---|---|---|---|---|---|---|---|"]
    for row in _rows(results):
        if new:
            cells = _cells(row, idle, minute=minute)
            ci = row["measured_ci95"].get("p99", float("nan")) / row["measured"]["p99"]
            cells.append("±" + _pct(ci)[1:])
        else:
            cells = [f"{row['measured'][s]:.2f} / {row['predicted'][s]:.2f} "
                     f"({_pct(row['relative_error'][s])})" for s in STATS]
        lines.append(f"| {row['replicas']} | {_batch_label(row)} | {row['rho']} | "
                     f"{row['requests']:,} | " + " | ".join(cells)
                     + f" | {_verdict_cell(row).replace('>=', '≥')} |")
    decomposition = [(h, key) for h, key in DECOMPOSITION if (idle or key != "idle")
                     and (minute or key != "minute")]
    for batching in (False, True):
        rows = list(_rows(results, batching))
        if not rows:
            continue
        parts = [(h, key) for h, key in decomposition if not batching or key in (
            "minute", "idle", "slow", None, "diagnostic_replay")]
        lines += ["", "| C | batching | ρ | " + " | ".join(
            f"{s} err: " + ", ".join(h for h, _ in parts) for s in ("p50", "p99")) + " |",
            "|---|---|---|---|---|"]
        for row in rows:
            cells = [" / ".join(_pct(_errors(row, key)[s]) for _, key in parts)
                     for s in ("p50", "p99")]
            lines.append(f"| {row['replicas']} | {_batch_label(row)} | {row['rho']} | "
                         + " | ".join(cells) + " |")
    if not any(True for _ in _rows(results, False)):
        return "\n".join(lines + _batch_markdown(results))
    causes = [(h, fmt) for h, fmt in _causes(CAUSES, results)  # replays: in the table above
              if h not in ("p99 err, in-run S", "p99 err, shuffled", "p99 err, replay")]
    lines += ["", "| C | ρ | " + " | ".join(h for h, _ in causes) + " |",
              "|---|---|" + "---|" * len(causes)]
    for row in _rows(results, False):
        lines.append(f"| {row['replicas']} | {row['rho']} | "
                     + " | ".join(fmt(row) for _, fmt in causes) + " |")
    return "\n".join(lines + _batch_markdown(results))


def _batch_markdown(results: dict) -> list[str]:
    if not any(True for _ in _rows(results, True)):
        return []
    causes = _causes(BATCH_CAUSES, results)
    lines = ["", "| C | ρ | " + " | ".join(h for h, _ in causes) + " |",
             "|---|---|" + "---|" * len(causes)]
    for row in _rows(results, True):
        lines.append(f"| {row['replicas']} | {row['rho']} | "
                     + " | ".join(fmt(row) for _, fmt in causes) + " |")
    return lines


def _jsonable(x):
    if isinstance(x, np.ndarray):
        x = x.tolist()
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if not math.isfinite(float(x)) else round(float(x), 6)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.add_argument("--replicas", default=",".join(map(str, REPLICAS)))
    p.add_argument("--rhos", default=",".join(map(str, RHOS)))
    p.add_argument("--duration-scale", type=float, default=1.0)
    p.add_argument("--quiet-wait", type=float, default=60.0,
                   help="seconds, in all, to wait for other processes to go quiet")
    p.add_argument("--pool", type=int, default=POOL, help="distinct requests in the mix")
    p.add_argument("--runs-dir", type=Path, default=RUNS,
                   help="where raw logs, CSVs and scenarios go")
    p.add_argument("--priority", choices=("high", "normal"), default="high",
                   help="high: shield server and load generator from other work on the machine "
                        "(autogroup nice for the server, SCHED_FIFO for the load generator)")
    p.add_argument("--reanalyse", action="store_true",
                   help="do not measure: analyse the raw record left in --runs-dir")
    p.add_argument("--markdown", action="store_true", help="also print the README table")
    p.add_argument("--batching", choices=("off", "on", "both"), default="both",
                   help="the server one request at a time (off), with dynamic batching (on: "
                        f"max_batch {BATCHING['max_batch']}, max_wait "
                        f"{BATCHING['max_wait_ms']:g} ms), or both")
    p.add_argument("--batch-groups", type=int, default=BATCH_GROUPS,
                   help="batching calibration: groups of each size 2..max_batch")
    args = p.parse_args(argv)
    PRIORITY["mode"] = args.priority
    replicas = tuple(int(x) for x in args.replicas.split(","))
    rhos = tuple(float(x) for x in args.rhos.split(","))
    durations = {r: DURATION_S.get(r, 30.0) * args.duration_scale for r in rhos}
    batch_durations = {r: d * BATCH_DURATION_SCALE for r, d in durations.items()}
    results = run(replicas, rhos, durations, pool=args.pool, quiet_wait_s=args.quiet_wait,
                  run_root=args.runs_dir, measure=not args.reanalyse, batching=args.batching,
                  batch_durations=batch_durations, batch_groups=args.batch_groups)
    print()
    print(table_text(results))
    if args.markdown:
        print()
        print(table_markdown(results))
    if args.json:
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps(_jsonable(results), indent=1) + "\n")
        tmp.replace(args.json)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
