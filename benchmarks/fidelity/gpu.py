"""predsim against a PyTorch model on a GPU behind the same dynamic batcher (issue 18, item 5).

Two steps, on two machines:

``record`` (on the GPU machine; needs python3, numpy and torch only, no predsim) starts
server.py with ``--batching 8 --max-wait-ms 2`` (the CPU case's batcher and policy: a batch
leaves as soon as the worker is free and either 8 requests wait or the oldest has waited 2 ms;
it takes up to 8 from the head) and one worker that serves gpu_model.py's transformer on the GPU
(``--model gpu_model:build``: torch is imported, and CUDA initialised, only in the worker, after
the fork). Then:

1. the worker, before it reports ready, trains the model for a few seconds, warms it up on
   every batch size and runs one full batch back to back for ``SERIES_S`` seconds (the time
   series of service times without server or network);
2. calibration (loadgen.py ``--mode closed --groups``): every request of a pool of ``POOL``
   alone and ``GROUPS`` groups of each size 2..8 sent at once, in random order, each after the
   previous answer plus an exponential pause, so batches of known size form;
3. the batch time is fitted as fidelity.py does (``fit_batching``: fixed + per request + per
   candidate, robust least squares; ``fixed`` is the intercept, ``per_item`` each request's
   time alone minus ``fixed``), and each utilisation's rate is, as for fidelity.py's batching
   rows, ``rate = rho * C / (fixed / max_batch + E[per_item])``;
4. open-loop Poisson load (loadgen.py ``--mode open``: send times drawn up front, sent on
   schedule whatever is in flight) at rho 0.3, 0.5, 0.7, 0.8, 0.9, from one or more load
   generator processes (their superposition is Poisson at the total rate).

It writes the raw record into ``--out`` as five compressed files and two small ones:
``meta.json`` (plan, machine, GPU, model, calibration fit, each case's rate, duration and load
generators), ``calibration.npz`` (the calibration's client record and the back-to-back series),
``runs.npz`` (every request of every case: scheduled send, actual send, send done, answer read,
status, case, load generator), ``server_log.npz`` (the batcher's log, one row per request:
enqueued, dispatched, worker got, model done, worker done, free, batch id and size, CPU time),
``gpu_smi.csv.gz`` (nvidia-smi every 0.5 s: SM and memory clocks, power, temperature,
utilisation), ``progress.log``. They are rewritten after each step, so a run cut short still
leaves what it measured. Everything stops by itself: a global deadline (``--budget``, 270 s of
measuring; later cases are shortened to fit it and skipped if they cannot), a lifetime on the
server, bounded load generators, timeouts on every child; on SIGTERM the children are stopped and
what exists is saved. Everything runs on 127.0.0.1.

``analyse`` (here, with predsim) joins the records, fits fixed + per_item from the calibration
batches (``fidelity.fit_batching``), simulates each case with predsim (one ``online``
architecture, Poisson arrivals at the case's rate) three ways, from the calibration alone:
``fixed + per_item`` (``batching: {max_batch, max_wait, fixed, per_item}``); the batch curve as
measured (``batching.batch_time: {size: {empirical: FILE}}``, each size's calibration batch
times); and the batch curve at normal speed with ``slow_periods`` (``fidelity.fit_slow`` on the
calibration's batches in dispatch order, each over its expected time: the calibration, not the
back-to-back series, because it is served as the runs are, every batch size, the batcher and
the pauses between batches included, where the series repeats one full batch without a pause;
the series' own fit is reported beside it); adds the mean overhead measured outside the queue
and the worker, and prints measured against predicted p50/p95/p99/mean, the p99's 95% interval by
sectioning, the send lag, the mean batch size measured, in the replay (measured arrivals at the
batcher and measured batch times through predsim's batching kernel, ``fidelity.batch_replay``)
and in predsim's kernel under Poisson arrivals, and the service-time series' statistics (lag-1
autocorrelation, batches over 1.5x the median and how often the next one is too).

    python3 benchmarks/fidelity/gpu.py record --out DIR [--device cuda|cpu] [--seconds-scale X]
        [--budget 270] [--loadgens auto|N] [--priority high|normal]
    .venv/bin/python benchmarks/fidelity/gpu.py analyse DIR [--json FILE] [--markdown]

On the GPU machine: ``bash benchmarks/fidelity/gpu_device.sh`` (record into $OUT, under a
300 s ``timeout``).

Choices. The batcher is the CPU case's (max_batch 8, max_wait 2 ms), so the two cases differ
only in the model and the hardware. One worker: the GPU runs one batch at a time (two processes
on one GPU would time-share it, not be two servers). The model (gpu_model.py: an FT-Transformer,
d 768, 8 layers, fp16) is sized so that one request alone already fills much of the H200, which
makes batch time grow nearly linearly with the batch, as ``fixed + per_item`` assumes, and a
full batch take about 10 ms: the rates then stay near or below 600 requests/s at rho 0.9, far
below what one load generator process sends on time (loadgen.py measured 38-119 us of send lag
at a few hundred per second on a 2-vCPU machine) and below the 1,500/s cap (``MAX_RATE``) even
if the GPU is twice as fast as estimated; above 300/s the load is split over several load
generator processes anyway, and every request's send lag is recorded. The plan (printed at the
start, ``--plan-only``) expects about 240 s: 45 s start-up (torch import, CUDA, 5 s of
training, warm-up, the 6 s series), 12 s of calibration, 160 s of runs plus 3 s a case, 8 s to
stop and write.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import math
import os
import platform
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

RHOS = (0.3, 0.5, 0.7, 0.8, 0.9)
DURATION_S = {0.3: 25.0, 0.5: 25.0, 0.7: 30.0, 0.8: 35.0, 0.9: 45.0}  # x --seconds-scale
TARGET = {0.3: 0.05, 0.5: 0.05, 0.7: 0.05, 0.8: 0.05, 0.9: 0.10}  # as fidelity.py
BATCHING = {"max_batch": 8, "max_wait_ms": 2.0}  # the CPU case's batcher
REPLICAS = 1             # one worker: one batch at a time on the one GPU
POOL = 800               # distinct requests, each calibrated alone (x scale, at least 120)
GROUPS = 60              # calibration groups of each size 2..8 (x scale, at least 12)
THINK_S = 0.003          # calibration: mean pause after each answer
SERIES_S = 6.0           # back-to-back series in the worker (x scale, at least 1 s)
TRAIN_S = 5.0            # training at start-up (x scale, at least 1 s)
BUDGET_S = 270.0         # the whole measurement, start to files written
STOP_RESERVE_S = 15.0    # kept back from the budget for stopping and writing
CASE_OVERHEAD_S = 3.0    # per case: load generators start, drain, log snapshot, files
MIN_CASE_S = 2.0         # a case shortened below this (x scale) is skipped
MAX_RATE = 1500.0        # requests/s: above this the load generator is the question
MAX_REQUESTS_PER_CASE = 30_000  # keeps each file well under 16 MiB
LOADGEN_RATE = 300.0     # --loadgens auto: one load generator process per this many per s
MAX_INFLIGHT = 1000      # per load generator: more unanswered = overloaded, stops sending
DRAIN_S = 5.0
STARTUP_EST_S = {"cuda": 45.0, "cpu": 15.0}  # torch import, CUDA, training, warm-up, series
# nominal batch times (s) for the plan's calibration estimate: one request, a full batch
NOMINAL_BATCH_S = {"cuda": (0.002, 0.011), "cpu": (0.006, 0.040)}
SMI_FIELDS = "timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu,utilization.gpu,pstate"
SMI_EXTRA = ("clocks_event_reasons.active", "clocks_throttle_reasons.active")
STATS = ("p50", "p95", "p99", "mean")
SECTIONS = 10
SIM_REQUESTS = 2_000_000
LOADGEN_RT_PRIORITY = 10
SERVER_NICE = -10
# server.py BATCH_LOG_COLUMNS, and how they are stored
LOG_DTYPES = {"request_id": np.uint32, "k": np.uint16, "accepted_s": np.float64,
              "read_s": np.float64, "model_done_s": np.float64, "free_s": np.float64,
              "cpu_s": np.float32, "worker": np.uint8, "batch_id": np.uint32,
              "batch_size": np.uint16, "worker_got_s": np.float64, "worker_done_s": np.float64}
RECORD_DTYPES = {"request_id": np.uint32, "pool_index": np.uint16, "k": np.uint16,
                 "scheduled_s": np.float64, "sent_s": np.float64, "send_done_s": np.float64,
                 "answered_s": np.float64, "status": np.int8}


class Stopped(BaseException):
    """SIGTERM/SIGINT: stop the children, save what exists."""


# ---------------------------------------------------------------------------------------------
# record: on the GPU machine (python3 + numpy + torch; no predsim)
# ---------------------------------------------------------------------------------------------

class Log:
    """Progress lines with the time since the start, to stdout and progress.log."""

    def __init__(self, path: Path):
        self.path, self.t0 = path, time.monotonic()

    def __call__(self, msg: str) -> None:
        line = (f"[{dt.datetime.now().strftime('%H:%M:%S')} +{time.monotonic() - self.t0:6.1f}s]"
                f" {msg}")
        print(line, flush=True)
        with self.path.open("a") as f:
            f.write(line + "\n")


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name("tmp-" + path.name)
    tmp.write_text(json.dumps(_jsonable(data), indent=1) + "\n")
    tmp.replace(path)


def _savez(path: Path, **arrays) -> None:
    tmp = path.with_name("tmp-" + path.name)
    with tmp.open("wb") as f:
        np.savez_compressed(f, **arrays)
    tmp.replace(path)


def _jsonable(x):
    if isinstance(x, np.ndarray):
        x = x.tolist()
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if not math.isfinite(float(x)) else round(float(x), 9)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, Path):
        return str(x)
    return x


def _run_quiet(args: list[str], timeout: float = 10.0) -> str | None:
    try:
        p = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
        return p.stdout.strip() if p.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_description() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        clocksource = Path("/sys/devices/system/clocksource/clocksource0/"
                           "current_clocksource").read_text().strip()
    except OSError:
        clocksource = "unknown"
    out = {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
           "python": platform.python_version(), "numpy": np.__version__,
           "clocksource": clocksource,
           "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
                               / 2 ** 30, 1)}
    if shutil.which("nvidia-smi"):
        out["nvidia_smi"] = _run_quiet(
            ["nvidia-smi", "--query-gpu=name,driver_version,pstate,clocks.sm,clocks.mem,"
             "clocks.max.sm,clocks.max.mem,power.limit,temperature.gpu,persistence_mode,"
             "compute_mode", "--format=csv"])
    return out


def _smi_start(work: Path, seconds: float, log) -> subprocess.Popen | None:
    """nvidia-smi sampling every 0.5 s into work/smi.csv, for at most ``seconds``."""
    if not shutil.which("nvidia-smi"):
        log("no nvidia-smi: no clock/power series")
        return None
    fields = SMI_FIELDS
    for extra in SMI_EXTRA:  # the name changed between drivers; an unknown one fails the query
        if _run_quiet(["nvidia-smi", f"--query-gpu={SMI_FIELDS},{extra}",
                       "--format=csv,noheader"], 5.0) is not None:
            fields = f"{SMI_FIELDS},{extra}"
            break
    cmd = ["nvidia-smi", f"--query-gpu={fields}", "--format=csv", "-lms", "500",
           "-f", str(work / "smi.csv")]
    if shutil.which("timeout"):
        cmd = ["timeout", "-k", "2", str(int(seconds)), *cmd]
    try:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError as e:
        log(f"nvidia-smi sampling did not start: {e}")
        return None


def _stop(proc: subprocess.Popen | None, wait_s: float = 5.0) -> None:
    """SIGTERM one child of ours (by its pid), then SIGKILL if it does not go."""
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    except OSError:
        pass


def _server_priority(mode: str):
    def apply():
        if mode == "high":
            try:
                os.setpriority(os.PRIO_PROCESS, 0, SERVER_NICE)
            except OSError:
                pass
    return apply


def _loadgen_priority(mode: str):
    def apply():
        if mode == "high":
            try:
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(LOADGEN_RT_PRIORITY))
            except (OSError, AttributeError):
                pass
    return apply


class Server:
    """server.py with the batcher and one GPU worker, as our child process."""

    def __init__(self, work: Path, lifetime_s: float, ready_timeout_s: float,
                 model_options: dict, priority: str):
        self.log_dir = work / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.err_path = work / "server.err"
        self.err = self.err_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "server.py"), "--workers", str(REPLICAS),
             "--log-dir", str(self.log_dir), "--lifetime", f"{lifetime_s:.0f}",
             "--batching", str(BATCHING["max_batch"]),
             "--max-wait-ms", str(BATCHING["max_wait_ms"]),
             "--model", "gpu_model:build", "--model-options", json.dumps(model_options),
             "--ready-timeout", f"{ready_timeout_s:.0f}"],
            stdout=subprocess.PIPE, stderr=self.err, text=True,
            preexec_fn=_server_priority(priority))
        self.ready_timeout_s = ready_timeout_s
        self.info: dict = {}
        self.port = 0

    def wait_ready(self) -> None:
        """Until the server prints its ready line (its workers have built the model)."""
        give_up = time.monotonic() + self.ready_timeout_s + 10
        while True:
            ready, _, _ = select.select([self.proc.stdout], [], [],
                                        max(give_up - time.monotonic(), 0.0))
            line = self.proc.stdout.readline() if ready else ""
            if not line:
                raise RuntimeError("the server did not start:\n" + self.stderr_tail())
            try:
                info = json.loads(line)
            except ValueError:
                continue  # not the ready line
            if isinstance(info, dict) and "port" in info:
                break
        self.info = info
        self.port = self.info["port"]

    def stderr_tail(self, n: int = 4000) -> str:
        try:
            return self.err_path.read_text()[-n:]
        except OSError:
            return ""

    def snapshot(self) -> np.ndarray:
        """The batcher's log so far (it writes it on SIGUSR1)."""
        path = self.log_dir / "dispatcher.npy"
        path.unlink(missing_ok=True)
        self.proc.send_signal(signal.SIGUSR1)
        give_up = time.monotonic() + 15
        while not path.exists():
            if time.monotonic() > give_up or self.proc.poll() is not None:
                raise RuntimeError("the server did not write its log:\n" + self.stderr_tail())
            time.sleep(0.02)
        return np.load(path)

    def stop(self) -> np.ndarray | None:
        _stop(self.proc, 15.0)
        if self.proc.stdout:
            self.proc.stdout.close()
        self.err.close()
        path = self.log_dir / "dispatcher.npy"
        return np.load(path) if path.exists() else None


def _log_columns(log: np.ndarray) -> dict:
    from server import BATCH_LOG_COLUMNS
    return {c: log[:, j].astype(LOG_DTYPES[c]) for j, c in enumerate(BATCH_LOG_COLUMNS)}


def _load_npz(path: Path) -> dict:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def _loadgen_args(port: int, out: Path, **options) -> list[str]:
    args = [sys.executable, str(HERE / "loadgen.py"), "--port", str(port), "--out", str(out)]
    for key, value in options.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args


def _robust_fit(size: np.ndarray, sum_k: np.ndarray, time_s: np.ndarray) -> np.ndarray:
    """fidelity.fit_batching's line: batch time = f + a size + c candidates, least squares,
    refitted three times without the slowest tenth."""
    x = np.vstack([np.ones(size.size), size.astype(float), sum_k.astype(float)]).T
    fit = np.ones(size.size, bool)
    for _ in range(3):
        coef = np.linalg.lstsq(x[fit], time_s[fit], rcond=None)[0]
        ratio = time_s / np.maximum(x @ coef, 1e-9)
        fit = ratio <= np.quantile(ratio, 0.9)
    return coef


def calibration_fit(log: np.ndarray, ids: np.ndarray) -> dict:
    """fixed and E[per_item] from the calibration's batches (the requests ``ids``), as
    fidelity.fit_batching computes them (numpy only: this runs on the GPU machine)."""
    cols = _log_columns(log)
    mine = np.isin(cols["request_id"].astype(np.int64), ids)
    bid = cols["batch_id"][mine].astype(np.int64)
    uniq, first, inv = np.unique(bid, return_index=True, return_inverse=True)
    seen = np.bincount(inv)
    size = cols["batch_size"][mine][first].astype(np.int64)
    sum_k = np.bincount(inv, cols["k"][mine].astype(float))
    service = (cols["free_s"] - cols["accepted_s"])[mine][first]
    complete = seen == size
    size, sum_k, service = size[complete], sum_k[complete], service[complete]
    if (size == 1).sum() < 10 or size.size < 30:
        raise RuntimeError(f"calibration: too few complete batches ({size.size}, "
                           f"{(size == 1).sum()} of one request)")
    coef = _robust_fit(size, sum_k, service)
    fixed = max(float(coef[0]), 0.0)
    per_item = np.maximum(service[size == 1] - fixed, 0.0)
    by_size = {int(b): round(float(np.median(service[size == b])) * 1e3, 4)
               for b in np.unique(size)}
    return {"batches": int(size.size), "fixed_s": fixed, "per_item_mean_s": float(per_item.mean()),
            "occupancy_s": fixed / BATCHING["max_batch"] + float(per_item.mean()),
            "coefficients": {"fixed_ms": coef[0] * 1e3, "per_request_ms": coef[1] * 1e3,
                             "per_candidate_us": coef[2] * 1e6},
            "median_batch_ms_by_size": by_size}


def make_plan(args) -> dict:
    s = args.seconds_scale
    durations = {r: max(MIN_CASE_S, DURATION_S[r] * s) for r in RHOS}
    pool = max(120, round(POOL * s))
    groups = max(12, round(GROUPS * s))
    one, full = NOMINAL_BATCH_S[args.device]
    wait = BATCHING["max_wait_ms"] / 1e3
    # every non-full batch waits max_wait; ~1 ms of client and batcher around each
    per_b = {b: one + (full - one) * (b - 1) / 7 for b in range(1, 9)}
    calib_s = (pool * (wait + per_b[1] + 0.001 + THINK_S)
               + groups * sum((wait if b < 8 else 0) + per_b[b] + 0.001 + THINK_S
                              for b in range(2, 9)))
    startup = STARTUP_EST_S[args.device] - (1 - min(s, 1)) * (SERIES_S + TRAIN_S)
    runs = sum(durations.values()) + CASE_OVERHEAD_S * len(RHOS)
    return {"device": args.device, "seconds_scale": s, "budget_s": args.budget,
            "rhos": list(RHOS), "durations_s": durations, "warmup_s": {
                r: min(2.0, 0.1 * d) for r, d in durations.items()},
            "replicas": REPLICAS, "batching": BATCHING, "pool": pool, "groups": groups,
            "think_s": THINK_S, "series_s": max(1.0, SERIES_S * s),
            "train_s": max(1.0, TRAIN_S * s), "max_rate": MAX_RATE,
            "max_requests_per_case": MAX_REQUESTS_PER_CASE, "loadgens": args.loadgens,
            "priority": args.priority,
            "estimate_s": {"startup": startup, "calibration": calib_s, "runs": runs,
                           "stop_and_write": 8.0,
                           "total": startup + calib_s + runs + 8.0}}


def _plan_text(plan: dict) -> str:
    e = plan["estimate_s"]
    cases = ", ".join(f"rho {r} {plan['durations_s'][r]:g} s" for r in plan["rhos"])
    return (f"plan: device {plan['device']}, 1 worker, batching {BATCHING['max_batch']}/"
            f"{BATCHING['max_wait_ms']:g} ms; calibration: {plan['pool']} requests alone + "
            f"{plan['groups']} groups of each size 2..{BATCHING['max_batch']} (think "
            f"{THINK_S * 1e3:g} ms); back-to-back series {plan['series_s']:g} s; cases: {cases};"
            f" expected: start-up {e['startup']:.0f} s + calibration {e['calibration']:.0f} s + "
            f"runs {e['runs']:.0f} s + stop {e['stop_and_write']:.0f} s = {e['total']:.0f} s "
            f"(budget {plan['budget_s']:g} s: later cases shrink to fit)")


def record(args) -> int:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*"):
        if old.is_file() and old.name in ("meta.json", "calibration.npz", "runs.npz",
                                          "server_log.npz", "gpu_smi.csv.gz", "progress.log"):
            old.unlink()
    log = Log(out / "progress.log")
    started = time.monotonic()
    deadline = started + args.budget
    work = Path(tempfile.mkdtemp(prefix="gpu-fidelity-"))
    plan = make_plan(args)
    log(_plan_text(plan))
    meta = {"kind": "predsim gpu fidelity record", "version": 1, "plan": plan,
            "started_at": dt.datetime.now().isoformat(timespec="seconds"),
            "clock_anchor": {"perf_counter": time.perf_counter(), "time": time.time(),
                             "utc_offset_s": dt.datetime.now().astimezone().utcoffset()
                             .total_seconds()},
            "machine": machine_description(), "timings_s": {}, "cases": [], "errors": []}
    log(f"machine: {meta['machine']['cpu']}, {meta['machine']['cores']} cores; "
        + (meta["machine"].get("nvidia_smi") or "no nvidia-smi").replace("\n", " | "))
    _write_json(out / "meta.json", meta)

    def on_signal(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise Stopped(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    smi = _smi_start(work, args.budget + 5, log) if args.device == "cuda" else None
    server = None
    loadgens: list[subprocess.Popen] = []
    runs: dict[str, list] = {}
    try:
        left = deadline - time.monotonic()
        options = {"device": args.device, "max_batch": BATCHING["max_batch"],
                   "train_seconds": plan["train_s"], "series_seconds": plan["series_s"],
                   "series_path": str(work / "series.npz"), "seed": 0}
        for key in ("d_model", "layers", "heads"):
            if getattr(args, key) is not None:
                options[key] = getattr(args, key)
        log("starting the server (the worker imports torch, trains, warms up, runs the "
            "back-to-back series)")
        server = Server(work, left + 5, min(180.0, left - STOP_RESERVE_S), options, args.priority)
        server.wait_ready()
        meta["server"] = server.info
        meta["timings_s"]["server_ready"] = time.monotonic() - started
        w = server.info["model"]["workers"][0]
        log(f"server up on 127.0.0.1:{server.port}: {w.get('gpu', w['device'])}, torch "
            f"{w['torch']}, model d {w['d_model']} x {w['layers']} layers {w['dtype']}, "
            f"{w['parameters']:,} parameters, test AUC {w['test_auc']} after {w['train_steps']} "
            f"steps; warm-up {w['warmup_s']} s; series {w.get('series')}; probe "
            f"{w.get('probe')}")
        series = _load_npz(work / "series.npz") if (work / "series.npz").exists() else {}
        _write_json(out / "meta.json", meta)

        # calibration: alone and groups of every size, closed loop
        t0 = time.monotonic()
        est = plan["estimate_s"]["calibration"]
        limit = min(3 * est + 30, deadline - time.monotonic() - STOP_RESERVE_S - 10)
        log(f"calibration: {plan['pool']} requests alone + {plan['groups']} groups of each "
            f"size 2..{BATCHING['max_batch']} (about {est:.0f} s, at most {limit:.0f} s)")
        calib_path = work / "calibration.npz"
        subprocess.run(_loadgen_args(server.port, calib_path, mode="closed", think=THINK_S,
                                     pool=plan["pool"], seed=1, id_offset=1,
                                     groups=plan["groups"],
                                     group_max=BATCHING["max_batch"]),
                       check=True, timeout=max(limit, 5.0),
                       preexec_fn=_loadgen_priority(args.priority))
        calib = _load_npz(calib_path)
        calib_meta = json.loads(str(calib.pop("meta")))
        fit = calibration_fit(server.snapshot(), calib["request_id"].astype(np.int64))
        meta["timings_s"]["calibration"] = time.monotonic() - t0
        meta["calibration"] = {"loadgen": calib_meta, "fit": fit}
        _savez(out / "calibration.npz",
               **{k: calib[k].astype(RECORD_DTYPES[k]) for k in RECORD_DTYPES},
               **{f"series_{k}": v for k, v in series.items()})
        log(f"calibrated on {fit['batches']} complete batches: fixed {fit['fixed_s'] * 1e3:.3f} ms,"
            f" per_item mean {fit['per_item_mean_s'] * 1e3:.3f} ms -> "
            f"{fit['occupancy_s'] * 1e3:.3f}"
            f" ms per request at full batches (capacity {1 / fit['occupancy_s']:.0f}/s); median "
            f"batch ms by size {fit['median_batch_ms_by_size']}")
        _write_json(out / "meta.json", meta)

        # the cases, open loop
        planned = plan["durations_s"]
        for index, rho in enumerate(RHOS):
            rate = rho * REPLICAS / fit["occupancy_s"]
            case = {"rho": rho, "rate_per_s": rate, "planned_duration_s": planned[rho]}
            if rate > MAX_RATE:
                case["rate_capped_from"] = rate
                rate = case["rate_per_s"] = MAX_RATE
                log(f"rho {rho}: {case['rate_capped_from']:.0f}/s is over {MAX_RATE:.0f}/s: "
                    f"capped (its real rho is {rate * fit['occupancy_s']:.2f})")
            # what is left of the budget, shared among the cases still to run in proportion
            # to their planned durations
            remaining = deadline - time.monotonic() - STOP_RESERVE_S
            avail = remaining - CASE_OVERHEAD_S * (len(RHOS) - index)
            need = sum(planned[r] for r in RHOS[index:])
            duration = planned[rho] * min(1.0, max(avail, 0.0) / need)
            duration = min(duration, MAX_REQUESTS_PER_CASE / rate)
            if duration < MIN_CASE_S:
                case["skipped"] = f"no time left ({remaining:.0f} s)"
                meta["cases"].append(case)
                log(f"rho {rho}: skipped, {remaining:.0f} s left for {len(RHOS) - index} cases")
                continue
            n_gen = (max(1, min(4, math.ceil(rate / LOADGEN_RATE))) if args.loadgens == "auto"
                     else int(args.loadgens))
            case.update(duration_s=duration, warmup_s=min(2.0, 0.1 * duration), loadgens=[])
            log(f"rho {rho}: {rate:.1f} requests/s for {duration:.1f} s from {n_gen} load "
                f"generator{'s' if n_gen > 1 else ''}" + (
                    f" (shortened from {planned[rho]:g} s)" if duration < planned[rho] - 0.05
                    else ""))
            t0 = time.monotonic()
            loadgens = []
            paths = []
            for j in range(n_gen):
                seed = 1000 + 10 * index + j
                id_offset = (1 + 8 * index + j) * 1_000_000 + 1
                path = work / f"load_{index}_{j}.npz"
                paths.append(path)
                case["loadgens"].append({"seed": seed, "id_offset": id_offset,
                                         "rate_per_s": rate / n_gen})
                loadgens.append(subprocess.Popen(
                    _loadgen_args(server.port, path, mode="open", rate=f"{rate / n_gen:.6f}",
                                  duration=f"{duration:.3f}", seed=seed, id_offset=id_offset,
                                  max_inflight=MAX_INFLIGHT, pool=plan["pool"], drain=DRAIN_S),
                    preexec_fn=_loadgen_priority(args.priority)))
            give_up = min(time.monotonic() + duration + DRAIN_S + 30,
                          deadline - STOP_RESERVE_S + 10)
            for p in loadgens:
                try:
                    p.wait(timeout=max(give_up - time.monotonic(), 0.1))
                except subprocess.TimeoutExpired:
                    meta["errors"].append(f"rho {rho}: a load generator ran past its time")
                    _stop(p, 2.0)
            loadgens = []
            sent = 0
            recs = []
            for j, path in enumerate(paths):
                if not path.exists():
                    meta["errors"].append(f"rho {rho}: load generator {j} wrote no record")
                    continue
                rec = _load_npz(path)
                lg_meta = json.loads(str(rec.pop("meta")))
                case["loadgens"][j]["meta"] = lg_meta
                sent += lg_meta["sent"]
                rec["case"] = np.full(rec["request_id"].size, index, np.int8)
                rec["loadgen"] = np.full(rec["request_id"].size, j, np.int8)
                recs.append(rec)
                for k, v in rec.items():
                    runs.setdefault(k, []).append(v.astype(RECORD_DTYPES.get(k, v.dtype)))
            case["wall_s"] = time.monotonic() - t0
            meta["cases"].append(case)
            answered = sum(int((rec["status"] == 0).sum()) for rec in recs)
            lag = np.concatenate([rec["sent_s"] - rec["scheduled_s"] for rec in recs] or
                                 [np.zeros(0)])
            lag = lag[np.isfinite(lag)]
            overloaded = any(lg.get("meta", {}).get("overloaded") for lg in case["loadgens"])
            log(f"  -> {sent} sent, {answered} answered"
                + (f", send lag p50 {np.median(lag) * 1e6:.0f} us, p99 "
                   f"{np.quantile(lag, 0.99) * 1e6:.0f} us" if lag.size else "")
                + (" (OVERLOADED: stopped sending)" if overloaded else ""))
            if runs:
                _savez(out / "runs.npz", **{k: np.concatenate(v) for k, v in runs.items()})
            _savez(out / "server_log.npz", **_log_columns(server.snapshot()))
            meta["timings_s"][f"case_{rho}"] = time.monotonic() - t0
            _write_json(out / "meta.json", meta)
            time.sleep(0.3)
    except Stopped as e:
        meta["stopped"] = str(e)
        log(f"stopped by {e}: saving what was measured")
    except Exception:  # noqa: BLE001 - keep the record of whatever failed
        meta["errors"].append(traceback.format_exc()[-4000:])
        log("FAILED:\n" + traceback.format_exc()[-4000:])
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for p in loadgens:
            _stop(p, 2.0)
        if server is not None:
            final = server.stop()
            if final is not None and final.size:
                _savez(out / "server_log.npz", **_log_columns(final))
            tail = server.stderr_tail()
            if tail.strip():
                meta["server_stderr_tail"] = tail
        _stop(smi, 3.0)
        smi_csv = work / "smi.csv"
        if smi_csv.exists():
            tmp = out / "tmp-gpu_smi.csv.gz"
            with gzip.open(tmp, "wb") as f:
                f.write(smi_csv.read_bytes())
            tmp.replace(out / "gpu_smi.csv.gz")
        meta["wall_s"] = time.monotonic() - started
        meta["finished_at"] = dt.datetime.now().isoformat(timespec="seconds")
        _write_json(out / "meta.json", meta)
        shutil.rmtree(work, ignore_errors=True)
        sizes = ", ".join(f"{p.name} {p.stat().st_size / 2 ** 20:.2f} MiB"
                          for p in sorted(out.iterdir()) if p.is_file())
        log(f"done in {meta['wall_s']:.0f} s; wrote {sizes}")
    return 0 if not meta["errors"] and "stopped" not in meta else 1


# ---------------------------------------------------------------------------------------------
# analyse: here, with predsim
# ---------------------------------------------------------------------------------------------

def _fidelity():
    import fidelity
    return fidelity


def load_record_dir(d: Path) -> dict:
    """The raw record of ``record``: meta, the batcher's log as server.py's 2-D array, the
    calibration's client record, each case's client records (merged over load generators)."""
    from server import BATCH_LOG_COLUMNS
    meta = json.loads((d / "meta.json").read_text())
    if "calibration" not in meta or not (d / "server_log.npz").exists():
        raise SystemExit(f"{d}: the record has no calibration (stopped: {meta.get('stopped')}; "
                         f"errors: {meta.get('errors')}; server: "
                         f"{meta.get('server_stderr_tail', '')[-1500:]})")
    cols = _load_npz(d / "server_log.npz")
    log = np.column_stack([cols[c].astype(np.float64) for c in BATCH_LOG_COLUMNS])
    calib = _load_npz(d / "calibration.npz")
    series = {k[len("series_"):]: calib.pop(k) for k in list(calib) if k.startswith("series_")}
    calib = {k: (v.astype(np.int64) if k in ("request_id", "pool_index", "k") else v)
             for k, v in calib.items()}
    calib["meta"] = meta["calibration"]["loadgen"]
    runs = _load_npz(d / "runs.npz") if (d / "runs.npz").exists() else {}
    cases = []
    for index, case in enumerate(meta["cases"]):
        if case.get("skipped") or not runs:
            continue
        m = runs["case"] == index
        if not m.any():
            continue
        rec = {k: (v[m].astype(np.int64) if k in ("request_id", "pool_index", "k") else v[m])
               for k, v in runs.items()}
        metas = [lg["meta"] for lg in case["loadgens"] if "meta" in lg]
        rec["meta"] = {"started_s": max(x["started_s"] for x in metas),
                       "overloaded": any(x["overloaded"] for x in metas),
                       "sent": sum(x["sent"] for x in metas),
                       "loadgen_cpu_s": sum(x["cpu_s"] for x in metas),
                       "policy": metas[0].get("policy")}
        cases.append((case, rec))
    smi = None
    if (d / "gpu_smi.csv.gz").exists():
        smi = gzip.open(d / "gpu_smi.csv.gz", "rt").read()
    return {"meta": meta, "log": log, "calibration": calib, "series": series, "cases": cases,
            "smi": smi}


def series_statistics(x: np.ndarray) -> dict:
    """Lag-1 autocorrelation, the share over 1.5x the median and how often the next one is
    too (independent draws: the share itself)."""
    x = x[np.isfinite(x)]
    if x.size < 20:
        return {}
    slow = x > 1.5 * np.median(x)
    after = slow[1:][slow[:-1]]
    return {"n": int(x.size), "median": float(np.median(x)), "p99": _q(x, 0.99),
            "mean": float(x.mean()), "cv": float(x.std() / x.mean()),
            "lag1_autocorrelation": float(np.corrcoef(x[:-1], x[1:])[0, 1]),
            "over_1_5x_median": float(slow.mean()),
            "next_also_over": float(after.mean()) if after.size else float("nan")}


def _q(x: np.ndarray, q: float) -> float:
    return float(np.quantile(x, q, method="inverted_cdf"))


def simulate_serving(name: str, serving: dict, rate_per_s: float, overhead_ms: float,
                     work: Path, seed: int = 1) -> dict:
    """predsim's latency statistics (ms) for one ``online`` architecture with this ``serving``
    section at Poisson ``rate_per_s``, plus ``overhead_ms``; utilisation and stability."""
    import sim
    import yaml
    scenario = {
        "name": name,
        "description": "generated by benchmarks/fidelity/gpu.py",
        "horizon": round(float(SIM_REQUESTS / rate_per_s), 3),
        "warmup": 60,
        "seed": seed,
        "workload": {"entities": 1000, "popularity": "uniform",
                     "arrivals": {"rate": round(float(rate_per_s), 6), "pattern": "constant"}},
        "quality": {"metric": "ctr", "fresh": 0.2},
        "architectures": {"server": {"kind": "online", "features": {"batch": {"every": "1d"}},
                                     "serving": serving}},
    }
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(scenario, sort_keys=False))
    row = sim.simulate(sim.load_scenario(path)).summary.iloc[0]
    out = {s: float(row[f"latency_ms_{s}"]) + overhead_ms for s in STATS}
    out["utilisation"] = float(row["utilization"])
    out["stable"] = bool(row["queue_stable"])
    return out


FIXED_PER_ITEM = "fixed + per_item"
CURVE = "batch curve"
CURVE_SLOW = "batch curve + slow periods"


def batch_curve_serving(batching: dict, csvs: dict[int, str]) -> dict:
    """``serving`` with the batch curve as measured: ``batching.batch_time`` with each batch
    size's calibration batch times as an empirical distribution (``csvs``: size -> CSV name);
    predsim interpolates between the sizes quantile by quantile (``sim.engine.batch_curve``)."""
    return {"replicas": REPLICAS, "batching": {
        "max_batch": batching["max_batch"], "max_wait": f"{batching['max_wait_ms']}ms",
        "batch_time": {int(b): {"empirical": name} for b, name in sorted(csvs.items())}}}


def slow_periods_serving(serving: dict, context: dict) -> dict | None:
    """The "with slow periods" column: the batch curve at normal speed (``context``'s
    ``normal_csvs``: each calibration batch's time divided by its expected slowdown, per size)
    with the ``slow_periods`` fitted on the calibration's batches in time order (``context``'s
    ``slow``, from ``fidelity.fit_slow``); None when that series is independent (no slow
    periods to model). Fitted on the calibration, not on the runs being predicted."""
    slow = context["slow"]
    if slow["slow_periods"] is None:
        return None
    out = batch_curve_serving(context["batching"], context["normal_csvs"])
    out["slow_periods"] = slow["slow_periods"]
    return out


def prediction_servings(serving: dict, context: dict) -> dict[str, dict]:
    """The prediction columns: name -> the ``serving`` section predsim simulates for it:
    ``fixed + per_item`` (``serving``: the linear fit, as fidelity.py's batching rows), the
    batch curve as measured, and the batch curve at normal speed with slow periods."""
    out = {FIXED_PER_ITEM: serving,
           CURVE: batch_curve_serving(context["batching"], context["curve_csvs"])}
    slow = slow_periods_serving(serving, context)
    if slow is not None:
        out[CURVE_SLOW] = slow
    return out


def calibration_batches(calib_join: dict, coef: np.ndarray | None,
                        medians: dict[int, float]) -> dict:
    """The calibration's complete batches (every request of the batch answered), in dispatch
    order: size, time, dispatch time, what a batch of its size (and candidates) takes
    (``_expected_batch_s``), and whether its total number of candidates, the first dimension
    of the model's input tensor, is seen for the first time (a new shape for the GPU)."""
    F = _fidelity()
    t = F.batch_table(calib_join)
    order = np.argsort(t["dispatched_s"], kind="stable")
    order = order[(t["seen"] == t["size"])[order]]
    rows = t["sum_k"][order].astype(np.int64)
    seen: set[int] = set()
    first = np.zeros(rows.size, bool)
    for i, v in enumerate(rows):
        first[i] = v not in seen
        seen.add(int(v))
    return {"size": t["size"][order], "service_s": t["service_s"][order],
            "dispatched_s": t["dispatched_s"][order],
            "expected_s": _expected_batch_s(t["size"][order], t["sum_k"][order], coef, medians),
            "new_shape": first}


def new_shape_statistics(batches: dict) -> dict:
    """Slow batches (over 1.5x their expected time) among those whose input shape is new and
    those whose shape was seen before, in the calibration."""
    ratio = batches["service_s"] / batches["expected_s"]
    out = {}
    for name, m in (("new_shape", batches["new_shape"]), ("seen_shape", ~batches["new_shape"])):
        r = ratio[m & np.isfinite(ratio)]
        out[name] = {"batches": int(r.size),
                     "slow_share": float((r > 1.5).mean()) if r.size else float("nan"),
                     "median_ratio": float(np.median(r)) if r.size else float("nan")}
    return out


def kernel_batch_size(batching: dict, fixed_s: float, per_item_s: np.ndarray, rate: float,
                      n: int = 200_000, seed: int = 2) -> float:
    """Mean batch size predsim's batching kernel forms under Poisson arrivals at ``rate`` with
    the calibrated fixed and per_item (one replica)."""
    from sim.scenario import Serving
    from sim.engine.serving import BatchingPool
    spec = Serving.model_validate({"replicas": REPLICAS, "batching": {
        "max_batch": batching["max_batch"], "max_wait": f"{batching['max_wait_ms']}ms",
        "fixed": 0, "per_item": 0}})
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(1.0 / rate, n))
    pool = BatchingPool(spec, eval_until_s=np.inf, start_s=0.0)
    out = pool.serve({"t_s": t, "lookup_s": np.zeros(n), "item_s": rng.choice(per_item_s, n),
                      "fixed_s": np.full(n, fixed_s)}, until_s=np.inf, final=True)
    return float(n / np.unique(out["start_s"]).size)


def smi_summary(text: str | None, anchor: dict, windows: dict) -> dict:
    """nvidia-smi's samples: SM clock, power, temperature over the run and in each case."""
    if not text:
        return {}
    lines = [ln for ln in text.splitlines() if ln.strip()]
    header = [h.strip() for h in lines[0].split(",")]
    rows = [[c.strip() for c in ln.split(",")] for ln in lines[1:] if not ln.startswith("#")]

    def num(col):
        j = next((i for i, h in enumerate(header) if h.startswith(col)), None)
        if j is None:
            return np.full(len(rows), np.nan)
        vals = []
        for r in rows:
            try:
                vals.append(float(r[j].split()[0]))
            except (ValueError, IndexError):
                vals.append(np.nan)
        return np.array(vals)

    sm = num("clocks.current.sm")
    if np.isnan(sm).all():
        sm = num("clocks.sm")
    power, temp = num("power.draw"), num("temperature.gpu")
    # timestamps (the GPU machine's local time) -> the perf_counter clock of the records
    at = np.full(len(rows), np.nan)
    for i, r in enumerate(rows):
        try:
            wall = (dt.datetime.strptime(r[0], "%Y/%m/%d %H:%M:%S.%f")
                    .replace(tzinfo=dt.timezone.utc).timestamp() - anchor["utc_offset_s"])
            at[i] = wall - anchor["time"] + anchor["perf_counter"]
        except (ValueError, IndexError):
            pass
    out = {"samples": len(rows), "sm_clock_mhz": {"min": np.nanmin(sm), "median":
                                                   np.nanmedian(sm), "max": np.nanmax(sm)},
           "power_w": {"median": np.nanmedian(power), "max": np.nanmax(power)},
           "temperature_c_max": np.nanmax(temp), "by_case": {}}
    reason = next((i for i, h in enumerate(header) if "reasons" in h), None)
    if reason is not None:
        vals = [r[reason] for r in rows if len(r) > reason]
        out["event_reasons"] = {v: vals.count(v) for v in sorted(set(vals))}
    for name, (a, b) in windows.items():
        m = (at >= a) & (at <= b)
        if m.any():
            out["by_case"][name] = {"sm_clock_mhz_median": float(np.nanmedian(sm[m])),
                                    "sm_clock_mhz_min": float(np.nanmin(sm[m])),
                                    "power_w_median": float(np.nanmedian(power[m]))}
    return out


def _expected_batch_s(size: np.ndarray, sum_k: np.ndarray, coef: np.ndarray | None,
                     medians: dict[int, float]) -> np.ndarray:
    """Each batch's expected time: the fitted line (``coef``), or without it the calibration's
    median time for the batch's size."""
    if coef is not None:
        line = coef[0] + coef[1] * size + coef[2] * sum_k
        return np.where(line > 0, line, np.nan)
    return np.array([medians.get(int(b), np.nan) for b in size])


def analyse(d: Path, work: Path) -> dict:
    F = _fidelity()
    data = load_record_dir(d)
    meta, log = data["meta"], data["log"]
    batching = meta["plan"]["batching"]
    calib_join = F.join(data["calibration"], log)
    fit = F.fit_batching(calib_join, batching["max_batch"])
    per_item = fit.pop("_per_item_s")
    coef = fit.pop("_coef")
    fit.pop("_per_item_by_pool_s")
    per_item_csv = work / "per_item_gpu.csv"
    F.write_samples(per_item_csv, "per_item_s", per_item)
    fixed_s = fit["fixed_ms"] / 1e3
    overhead_ms = fit["overhead_ms"]["mean"]
    serving = {"replicas": REPLICAS, "batching": {
        "max_batch": batching["max_batch"], "max_wait": f"{batching['max_wait_ms']}ms",
        "fixed": {"constant": f"{fixed_s * 1e3:.6f}ms"},
        "per_item": {"empirical": per_item_csv.name}}}
    # what each batch should take: the calibration's line (size and candidates), or, where the
    # line is not positive for some batch (a poor fit), the calibration's median for its size
    t_cal = F.batch_table(calib_join)
    ok = t_cal["seen"] == t_cal["size"]
    calib_medians = {int(b): float(np.median(t_cal["service_s"][ok & (t_cal["size"] == b)]))
                     for b in np.unique(t_cal["size"][ok])}
    line_ok = bool((coef[0] + coef[1] * t_cal["size"] + coef[2] * t_cal["sum_k"] > 0).all())
    fit["batch_time_expected_from"] = ("the fitted line" if line_ok
                                       else "the calibration's median for the batch size")
    series = {}
    if data["series"]:
        series["wall"] = series_statistics(data["series"]["wall_s"])
        series["device"] = series_statistics(data["series"]["gpu_s"])
        series["meta"] = json.loads(str(data["series"].get("meta", "{}")))
    # The batch curve as measured: each size's calibration batch times, as an empirical
    # distribution per size (batching.batch_time); and the slow-period model, fitted on the
    # calibration's batches in dispatch order, each over its expected time (the fitted line,
    # so that size and candidates are not taken for speed). The calibration, not the
    # back-to-back series: it is served as the runs are (batcher, hand-over, every batch size,
    # the GPU idle between batches), where the back-to-back series is one full batch repeated
    # without a pause (its statistics are fitted too, and reported).
    batches = calibration_batches(calib_join, coef if line_ok else None, calib_medians)
    slow = F.fit_slow(batches["dispatched_s"], batches["service_s"], batches["expected_s"])
    slowdown = slow.pop("_slowdown")
    back_to_back = {}
    if data["series"] and data["series"]["wall_s"].size >= 20:
        b2b = F.fit_slow(data["series"]["start_s"], data["series"]["wall_s"])
        b2b.pop("_slowdown")
        back_to_back = b2b["summary"]
    curve_csvs, normal_csvs = {}, {}
    for b in np.unique(batches["size"]):
        m = batches["size"] == b
        curve_csvs[int(b)] = f"batch_time_b{int(b)}.csv"
        normal_csvs[int(b)] = f"batch_time_normal_b{int(b)}.csv"
        F.write_samples(work / curve_csvs[int(b)], "batch_time_s", batches["service_s"][m])
        F.write_samples(work / normal_csvs[int(b)], "batch_time_s",
                        batches["service_s"][m] / slowdown[m])
    fit["batch_curve_ms"] = {
        str(int(b)): {"batches": int((batches["size"] == b).sum()),
                      "mean": float(batches["service_s"][batches["size"] == b].mean() * 1e3),
                      "p50": _q(batches["service_s"][batches["size"] == b], 0.5) * 1e3,
                      "p99": _q(batches["service_s"][batches["size"] == b], 0.99) * 1e3,
                      "normal_speed_mean": float((batches["service_s"] / slowdown)[
                          batches["size"] == b].mean() * 1e3)}
        for b in np.unique(batches["size"])}
    fit["slow_periods"] = {"fitted_on": "the calibration's batches in dispatch order, each "
                                        "over its expected time",
                           "calibration": slow["summary"], "back_to_back": back_to_back,
                           "new_shapes": new_shape_statistics(batches)}
    context = {"batching": batching, "curve_csvs": curve_csvs, "normal_csvs": normal_csvs,
               "slow": slow, "series": series, "raw_series": data["series"], "fit": fit}
    servings = prediction_servings(serving, context)
    rows, under_load, windows = [], {}, {}
    for case, rec in data["cases"]:
        rho = case["rho"]
        r = F.join(rec, log)
        keep = r["sent_s"] >= rec["meta"]["started_s"] + case["warmup_s"]
        if keep.sum() < 100:
            keep = np.ones_like(keep)
        lat, sent = r["latency_s"][keep], r["sent_s"][keep]
        measured = F.statistics_ms(lat) if lat.size else {s: float("nan") for s in STATS}
        lag = rec["sent_s"] - rec["scheduled_s"]
        lag = lag[np.isfinite(lag)]
        t_all = F.batch_table(r)
        order = np.argsort(t_all["dispatched_s"])
        complete = (t_all["seen"] == t_all["size"])[order]
        expected = _expected_batch_s(t_all["size"], t_all["sum_k"], coef if line_ok else None,
                                    calib_medians)[order]
        ratio = np.where(complete, t_all["service_s"][order] / expected, np.nan)
        under_load[str(rho)] = series_statistics(ratio)
        windows[str(rho)] = (float(t_all["dispatched_s"].min()), float(t_all["free_s"].max()))
        kept = {k: v[keep] for k, v in r.items() if isinstance(v, np.ndarray)}
        t = F.batch_table(kept)
        replay, replay_size = F.batch_replay(REPLICAS, batching, r["read_s"], r["service_s"])
        replay = replay[keep] + overhead_ms / 1e3
        replay_stats = F.statistics_ms(replay)
        predictions = {}
        target = TARGET.get(rho, 0.05)
        for label, sv in servings.items():
            slug = "".join(c if c.isalnum() else "-" for c in label).replace("--", "-")
            p = simulate_serving(f"gpu-fidelity-rho{rho}-{slug}", sv, case["rate_per_s"],
                                 overhead_ms, work)
            errors = F.relative_errors(measured, p)
            predictions[label] = {"predicted": p, "relative_error": errors,
                                  "within_target": all(abs(errors[s]) <= target
                                                       for s in ("p50", "p95", "p99"))}
        window = sent.max() - sent.min() if sent.size > 1 else float("nan")
        main = predictions.get(CURVE_SLOW, predictions[CURVE])
        rows.append({
            "rho": rho, "rate_per_s": case["rate_per_s"], "duration_s": case["duration_s"],
            "rate_capped_from": case.get("rate_capped_from"),
            "requests": int(lat.size), "unanswered": r["unanswered"],
            "overloaded": bool(rec["meta"]["overloaded"]) or r["unanswered"] > 0,
            "measured": measured,
            "measured_ci95": F.sectioned_ci(sent, lat) if lat.size > 200 else {},
            "predicted": main["predicted"], "relative_error": main["relative_error"],
            "predictions": predictions,
            "target": target,
            "within_target": main["within_target"],
            "main_prediction": CURVE_SLOW if CURVE_SLOW in predictions else CURVE,
            "diagnostic_replay": {"predicted": replay_stats,
                                  "relative_error": F.relative_errors(measured, replay_stats),
                                  "batch_size_mean": replay_size},
            "batch_size_mean": float(t["size"].mean()),
            "batch_size_kernel_poisson": kernel_batch_size(batching, fixed_s, per_item,
                                                           case["rate_per_s"]),
            "realised_rate_per_s": lat.size / window if window > 0 else float("nan"),
            "busy_share": float(t["service_s"].sum() / (t["free_s"].max()
                                                         - t["dispatched_s"].min())),
            "batch_time_vs_fit": float(np.nanmean(ratio)),
            "send_lag_us": {"p50": _q(lag, 0.5) * 1e6, "p99": _q(lag, 0.99) * 1e6,
                            "max": float(lag.max() * 1e6)} if lag.size else {},
            "queue_wait_ms_mean": float((kept["accepted_s"] - kept["read_s"]).mean() * 1e3),
            "loadgens": len(case["loadgens"]),
            "loadgen_cores": rec["meta"]["loadgen_cpu_s"] / max(case.get("wall_s", 1), 1e-9),
        })
    w = meta.get("server", {}).get("model", {}).get("workers", [{}])[0]
    return {
        "date": meta.get("started_at", "")[:10], "machine": meta.get("machine"), "model": w,
        "plan": meta["plan"], "record_wall_s": meta.get("wall_s"),
        "record_errors": meta.get("errors"), "stopped": meta.get("stopped"),
        "calibration": fit, "calibration_at_record": meta["calibration"]["fit"],
        "series_back_to_back": series, "series_under_load": under_load,
        "gpu_clocks": smi_summary(data["smi"], meta["clock_anchor"], windows),
        "prediction": {
            FIXED_PER_ITEM: "predsim batching (fixed: constant intercept of the batch-time fit; "
                            "per_item: empirical, batch-of-one time minus fixed) + mean "
                            "overhead outside queue and worker",
            CURVE: "predsim batching with batch_time: each batch size's calibration batch "
                   "times as an empirical distribution (interpolated quantile by quantile) + "
                   "mean overhead",
            CURVE_SLOW: "the batch curve at normal speed (each calibration batch's time over "
                        "its expected slowdown) + slow_periods fitted on the calibration's "
                        "batches in time order (each over its expected time) + mean overhead"},
        "cases": rows,
    }


def _pct(x: float) -> str:
    return "n/a" if x is None or x != x else f"{x * 100:+.1f}%"


def _share(x: float) -> str:
    return "n/a" if x is None or x != x else f"{x * 100:.1f}%"


def _ci_cell(row: dict) -> str:
    ci = row["measured_ci95"].get("p99", float("nan")) / row["measured"]["p99"]
    return "n/a" if ci != ci else f"±{ci * 100:.1f}%"


def table_text(res: dict) -> str:
    m, c = res["model"], res["calibration"]
    co = c["coefficients"]
    lines = [
        f"GPU fidelity, recorded {res['date']} in {res['record_wall_s'] or 0:.0f} s: "
        f"{m.get('gpu', m.get('device'))}, torch {m.get('torch')}, CUDA {m.get('cuda', '-')}; "
        f"model FT-Transformer d {m.get('d_model')} x {m.get('layers')} layers "
        f"{m.get('dtype')} (test AUC {m.get('test_auc')}); 1 worker, batching "
        f"{res['plan']['batching']['max_batch']}/{res['plan']['batching']['max_wait_ms']:g} ms",
        f"calibration: {c['batches']} batches of known size ({c['requests']} requests); batch "
        f"time = {co['fixed_ms']:.3f} ms + {co['per_request_ms']:.3f} ms per request + "
        f"{co['per_candidate_us']:.3f} us per candidate (R2 {c['r_squared_inliers']:.3f}, "
        f"residual rms {c['residual_rms_share'] * 100:.1f}%); predsim gets fixed "
        f"{c['fixed_ms']:.3f} ms, per_item mean {c['per_item_ms_mean']:.3f} ms (p99 "
        f"{c['per_item_ms_p99']:.3f}); overhead mean {c['overhead_ms']['mean'] * 1e3:.0f} us",
        "mean batch ms by size, measured / given to predsim: " + ", ".join(
            f"{b}: {v['measured_ms_mean']:.2f}/{v['model_ms_mean']:.2f}"
            for b, v in c["residual_by_size"].items()),
    ]
    if res.get("stopped") or res.get("record_errors"):
        lines.append(f"record: stopped={res.get('stopped')}, errors={len(res['record_errors'])}")
    sp = c.get("slow_periods") or {}
    if sp:
        lines.append("batch curve as measured, ms (mean/p50/p99 by size; mean at normal speed): "
                     + ", ".join(f"{b}: {v['mean']:.2f}/{v['p50']:.2f}/{v['p99']:.2f}; "
                                 f"{v['normal_speed_mean']:.2f}"
                                 for b, v in c["batch_curve_ms"].items()))
        lines.append(f"slow periods, fitted on {sp['fitted_on']}: "
                     + F_slow_line(sp["calibration"]))
        if sp.get("back_to_back"):
            lines.append("  the back-to-back series (one full batch repeated), for comparison: "
                         + F_slow_line(sp["back_to_back"]))
        ns = sp["new_shapes"]
        lines.append(f"  calibration batches over 1.5x their expected time: "
                     f"{_share(ns['new_shape']['slow_share'])} of the "
                     f"{ns['new_shape']['batches']} whose input shape (total candidates) was "
                     f"new, {_share(ns['seen_shape']['slow_share'])} of the "
                     f"{ns['seen_shape']['batches']} whose shape was seen before")
    labels = list(res["cases"][0]["predictions"]) if res["cases"] else [FIXED_PER_ITEM]
    for label in labels:
        lines += ["", f"measured vs {label}:",
                  f"{'rho':>4} {'rate/s':>7} {'requests':>8}  "
                  + "  ".join(f"{s + ' meas / pred ms (err)':>30}" for s in STATS)
                  + f"  {'p99 ci95':>8}  met"]
        for row in res["cases"]:
            p = row["predictions"][label]
            cells = [f"{row['measured'][s]:8.3f} / {p['predicted'][s]:8.3f} "
                     f"({_pct(p['relative_error'][s]):>7})" for s in STATS]
            ci = _ci_cell(row)
            errs = p["relative_error"]
            met = all(abs(errs[s]) <= row["target"] for s in ("p50", "p95", "p99"))
            lines.append(f"{row['rho']:>4} {row['rate_per_s']:7.1f} {row['requests']:>8}  "
                         + "  ".join(f"{x:>30}" for x in cells)
                         + f"  {ci:>8}  {'yes' if met else 'NO'}"
                         + (" (overloaded)" if row["overloaded"] else "")
                         + (" (rate capped)" if row.get("rate_capped_from") else ""))
    lines += ["", "per case: send lag, batch sizes, the replay (measured arrivals at the batcher "
              "+ measured batch times through predsim's batching kernel):",
              f"{'rho':>4} {'lag p50/p99 us':>15} {'batch meas/replay/kernel':>25} "
              f"{'busy':>5} {'S/fit':>6} {'replay err p50/p95/p99/mean':>30} {'gens':>4}"]
    for row in res["cases"]:
        lag = row["send_lag_us"]
        re = row["diagnostic_replay"]["relative_error"]
        lag_cell = f"{lag.get('p50', float('nan')):.0f}/{lag.get('p99', float('nan')):.0f}"
        size_cell = (f"{row['batch_size_mean']:.2f}/"
                     f"{row['diagnostic_replay']['batch_size_mean']:.2f}/"
                     f"{row['batch_size_kernel_poisson']:.2f}")
        lines.append(f"{row['rho']:>4} {lag_cell:>15} {size_cell:>25} {row['busy_share']:5.2f} "
                     f"{row['batch_time_vs_fit']:6.3f} "
                     f"{'/'.join(_pct(re[s]) for s in STATS):>30} {row['loadgens']:>4}")
    lines += ["", "service-time series (lag-1 autocorrelation; share over 1.5x the median; how "
              "often the next is too, against the share itself if independent); under load, "
              f"each batch's time over {c['batch_time_expected_from']}:"]
    for name, st in list(res["series_back_to_back"].items()):
        if name == "meta":
            continue
        if not st:
            lines.append(f"  back to back, {name} time: too few calls for statistics")
            continue
        lines.append(f"  back to back, one full batch, {name} time: {st['n']} calls, median "
                     f"{st['median'] * 1e3:.3f} ms, p99 {st['p99'] * 1e3:.3f} ms, lag-1 "
                     f"{st['lag1_autocorrelation']:.2f}, over 1.5x "
                     f"{st['over_1_5x_median'] * 100:.1f}%, next too "
                     f"{_share(st['next_also_over'])}")
    for rho, st in res["series_under_load"].items():
        if st:
            lines.append(f"  under load rho {rho}, batch time / expected, {st['n']} batches: "
                         f"lag-1 {st['lag1_autocorrelation']:.2f}, cv {st['cv']:.2f}, over 1.5x "
                         f"{st['over_1_5x_median'] * 100:.1f}%, next too "
                         f"{_share(st['next_also_over'])}")
    g = res.get("gpu_clocks") or {}
    if g:
        lines.append(f"GPU (nvidia-smi, {g['samples']} samples): SM clock "
                     f"{g['sm_clock_mhz']['min']:.0f}/{g['sm_clock_mhz']['median']:.0f}/"
                     f"{g['sm_clock_mhz']['max']:.0f} MHz min/median/max, power median "
                     f"{g['power_w']['median']:.0f} W (max {g['power_w']['max']:.0f}), "
                     f"temperature max {g['temperature_c_max']:.0f} C; by case "
                     + ", ".join(f"{k}: {v['sm_clock_mhz_median']:.0f} MHz"
                                 for k, v in g["by_case"].items()))
    return "\n".join(lines)


def F_slow_line(summary: dict) -> str:
    """fidelity.py's one-line account of a slow-period fit."""
    return _fidelity()._slow_fit_line({"slow_periods": summary})


def _errs(e: dict) -> str:
    return " / ".join(f"{e[s] * 100:+.1f}" for s in ("p50", "p95", "p99")) + "%"


def table_markdown_summary(res: dict) -> str:
    """One table for the docs: measured, the p99's interval, and the p50/p95/p99 errors of the
    replay and of each prediction column."""
    labels = list(res["cases"][0]["predictions"]) if res["cases"] else []
    lines = ["| ρ | rate/s | requests | measured p50 / p95 / p99 ms | p99 95% CI | replay | "
             + " | ".join(labels) + " |",
             "|---|---|---|---|---|---|" + "---|" * len(labels)]
    for row in res["cases"]:
        m = row["measured"]
        cells = [_errs(row["predictions"][label]["relative_error"])
                 + (" ✓" if row["predictions"][label]["within_target"] else "")
                 for label in labels]
        lines.append(f"| {row['rho']} | {row['rate_per_s']:.0f} | {row['requests']:,} | "
                     f"{m['p50']:.2f} / {m['p95']:.2f} / {m['p99']:.2f} | {_ci_cell(row)} | "
                     f"{_errs(row['diagnostic_replay']['relative_error'])} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def table_markdown(res: dict) -> str:
    lines = [table_markdown_summary(res), ""]
    for label in (list(res["cases"][0]["predictions"]) if res["cases"] else []):
        lines += [f"| ρ | requests | p50 ms meas / {label} (err) | p95 | p99 | mean | p99 ci95 |"
                  " lag p50/p99 µs | batch meas / replay | replay p99 err |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for row in res["cases"]:
            p = row["predictions"][label]
            cells = [f"{row['measured'][s]:.2f} / {p['predicted'][s]:.2f} "
                     f"({_pct(p['relative_error'][s])})" for s in STATS]
            ci = _ci_cell(row)
            lag = row["send_lag_us"]
            lines.append(f"| {row['rho']} | {row['requests']:,} | " + " | ".join(cells)
                         + f" | {ci} | {lag.get('p50', 0):.0f}/{lag.get('p99', 0):.0f}"
                         f" | {row['batch_size_mean']:.2f} / "
                         f"{row['diagnostic_replay']['batch_size_mean']:.2f} | "
                         f"{_pct(row['diagnostic_replay']['relative_error']['p99'])} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("record", help="measure (on the GPU machine)")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    r.add_argument("--seconds-scale", type=float, default=1.0,
                   help="scale run durations and calibration counts (0.1 for a dry run)")
    r.add_argument("--budget", type=float, default=BUDGET_S,
                   help="seconds for the whole measurement; later cases shrink to fit")
    r.add_argument("--loadgens", default="auto",
                   help=f"load generator processes per case (auto: one per {LOADGEN_RATE:g}/s, "
                        "at most 4)")
    r.add_argument("--priority", choices=("high", "normal"), default="high",
                   help="high: the server at nice -10, the load generators SCHED_FIFO (when "
                        "permitted)")
    r.add_argument("--plan-only", action="store_true",
                   help="print the plan and its expected duration, measure nothing")
    r.add_argument("--d-model", type=int, default=None, help="override the model's width")
    r.add_argument("--layers", type=int, default=None)
    r.add_argument("--heads", type=int, default=None)
    a = sub.add_parser("analyse", help="predict and compare (here, with predsim)")
    a.add_argument("dir", type=Path)
    a.add_argument("--json", type=Path, default=None)
    a.add_argument("--markdown", action="store_true")
    a.add_argument("--work", type=Path, default=None,
                   help="where the scenarios and CSVs go (default: a temporary folder)")
    args = p.parse_args(argv)
    if args.command == "record":
        if args.loadgens != "auto" and not args.loadgens.isdigit():
            p.error("--loadgens is auto or a number")
        if args.plan_only:
            print(_plan_text(make_plan(args)))
            return 0
        return record(args)
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu-fidelity-analysis-"))
    work.mkdir(parents=True, exist_ok=True)
    res = analyse(args.dir, work)
    print(table_text(res))
    if args.markdown:
        print()
        print(table_markdown(res))
    if args.json:
        _write_json(args.json, res)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
