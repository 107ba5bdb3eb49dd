"""Faults while writing outputs (issue 17, part 4).

A full disk, a read-only output folder and SIGKILL at a random moment during ``run --out``,
``report --out`` and ``sweep --out`` must leave no half-written file (an output is either the
old complete file or the new complete one), lose no finished sweep point, and, for the first
two, end with one clear line and exit code 2.

How the faults are made (tests run as root here and in CI):

* full disk: a file-size limit (``RLIMIT_FSIZE`` set in the child; Python ignores SIGXFSZ, so
  the write fails with EFBIG), and, where mounting is permitted, a small tmpfs (ENOSPC);
* read-only folder: the command run as an unprivileged user (uid 65534) on a root-owned folder
  (EACCES), and, where mounting is permitted, a tmpfs remounted read-only (EROFS);
* SIGKILL: the CLI started in its own session and its process group killed at seeded random
  moments; and, in-process, a forked writer killed at chosen write steps (in the middle of a
  ``write``, before an ``fsync``, before a rename) so the exact dangerous moments are hit.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
QUICK = ["scenarios/quickstart.yaml", "--set", "horizon=10m", "--set", "warmup=0s",
         "-r", "1", "-j", "1"]
GRID = ["--grid", "architectures.online.serving.replicas=1,2,3"]
COMMANDS = {
    "run": ["run", *QUICK],
    "report": ["report", *QUICK, "--no-analysis"],
    "sweep": ["sweep", *QUICK, *GRID],
}
# The only names a write may leave behind when killed: hidden, clearly temporary, removed by
# the next write into the folder (sim.report.output.remove_stale_temps).
TEMP = re.compile(r"^\..+\.predsim-\d+-[A-Za-z0-9_]+\.tmp$")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"IEND\xaeB`\x82"
NOBODY = 65534


def _env(**extra) -> dict:
    return {**os.environ, "PREDSIM_NO_PROGRESS": "1", **extra}


def predsim(*args: str) -> list[str]:
    """The predsim command line for a subprocess (the console script of this interpreter)."""
    return [sys.executable, "-c", "import sys; sys.argv[0] = 'predsim'; "
            "from sim.cli.main import entry; entry()", *args]


def command(name: str, out: Path, *extra: str) -> list[str]:
    return predsim(*COMMANDS[name], "--out", str(out), *extra)


def run_cli(args: list[str], timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, env=kwargs.pop("env", _env()), capture_output=True,
                          text=True, timeout=timeout, **kwargs)


# --------------------------------------------------------------------------------------------
# Checking a folder
# --------------------------------------------------------------------------------------------

def _parse(path: Path) -> None:
    """Fail unless ``path`` is a complete file of its kind."""
    data = path.read_bytes()
    suffix = path.suffix
    if suffix == ".csv" and path.name == "incidents.csv":  # complete with no rows: a header
        assert data.startswith(b"architecture,") and data.endswith(b"\n"), path
    elif suffix == ".csv":
        assert not pd.read_csv(path).empty, path
    elif suffix == ".json":
        json.loads(data)
    elif suffix == ".png":
        assert data.startswith(PNG_SIGNATURE) and data.endswith(PNG_END), f"{path}: truncated"
    elif suffix == ".html":
        assert data.rstrip().endswith(b"</html>"), f"{path}: truncated"
    elif suffix == ".parquet":
        import pyarrow.parquet as pq
        pq.read_table(path)
    elif suffix == ".yaml":
        assert yaml.safe_load(data), path
    elif suffix == ".md":
        assert data.endswith(b"\n") and len(data) > 100, f"{path}: truncated"
    else:
        raise AssertionError(f"unexpected file {path}")


def check_folder(folder: Path, *versions: Path) -> list[Path]:
    """Every file in ``folder`` parses and is byte for byte one of ``versions``' (the old or the
    new complete file); the temporary files left behind are returned (they must be hidden and
    clearly named as temporary)."""
    temps = []
    for path in sorted(folder.rglob("*")):
        if path.is_dir():
            continue
        relative = path.relative_to(folder)
        if TEMP.match(path.name):
            temps.append(path)
            continue
        assert not path.name.startswith("."), f"unexpected hidden file {relative}"
        _parse(path)
        data = path.read_bytes()
        known = [v / relative for v in versions if (v / relative).exists()]
        assert known, f"{relative}: not an output of a complete run"
        assert any(data == k.read_bytes() for k in known), \
            f"{relative}: neither the old nor the new complete file ({len(data)} bytes)"
    return temps


def snapshot(folder: Path) -> dict[str, tuple[int, int, bytes]]:
    """(inode, mtime, bytes) of every file: a rename or a rewrite changes it."""
    return {str(p.relative_to(folder)): (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_clear_message(result: subprocess.CompletedProcess, *words: str) -> str:
    message = result.stderr.strip()
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "unexpected error" not in result.stderr, message
    assert message.startswith("predsim: could not write"), message
    assert len(message.splitlines()) == 1, message
    for word in words:
        assert word in message, (word, message)
    return message


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, Path]:
    """Complete, uninterrupted outputs of the three commands (run side by side)."""
    base = tmp_path_factory.mktemp("reference")
    started = {}
    for name in COMMANDS:
        started[name] = subprocess.Popen(
            command(name, base / name), cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
    for name, proc in started.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, (name, out, err)
    for name in COMMANDS:
        assert not check_folder(base / name, base / name)
    return {name: base / name for name in COMMANDS}


# --------------------------------------------------------------------------------------------
# SIGKILL at random moments, through the CLI
# --------------------------------------------------------------------------------------------

def _entries(folder: Path) -> set[tuple[str, int]]:
    """(name, inode) of everything in ``folder`` and its subfolders, cheaply."""
    found, stack = set(), [folder]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            found.add((entry.path, entry.inode()))
            if entry.is_dir(follow_symlinks=False):
                stack.append(Path(entry.path))
    return found


def run_and_kill(jobs: list[tuple[list[str], Path, float]]) -> list[bool]:
    """Start every command in its own session; once it starts writing into its folder (a
    temporary file or a new file appears there), wait its delay and SIGKILL its whole process
    group. True for each command that was killed; one that finished first must have succeeded.
    Writing starts late (after simulating), so the kill lands among the writes, not before."""
    state = []
    for args, out, delay in jobs:
        before = _entries(out)
        proc = subprocess.Popen(args, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, start_new_session=True)
        state.append({"proc": proc, "out": out, "before": before, "delay": delay,
                      "writing": None, "killed": None})
    deadline = time.monotonic() + 240
    while any(job["killed"] is None for job in state):
        assert time.monotonic() < deadline, "a command neither finished nor wrote"
        now = time.monotonic()
        for job in state:
            proc = job["proc"]
            if job["killed"] is not None:
                continue
            if job["writing"] is None and _entries(job["out"]) != job["before"]:
                job["writing"] = now
            if job["writing"] is not None and now - job["writing"] >= job["delay"]:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:  # the whole group is gone already
                    pass
                proc.wait()
                job["killed"] = proc.returncode == -signal.SIGKILL
            elif proc.poll() is not None:
                assert proc.returncode == 0, proc.stderr.read().decode()
                job["killed"] = False
        time.sleep(0.002)
    for job in state:
        job["proc"].stderr.close()
    return [job["killed"] for job in state]


# Seconds between the first write into the folder and the kill, drawn in [0, this): about how
# long writing takes (run, report: staging six or seven plots; sweep: every point, the table).
WRITING_S = {"run": 1.7, "report": 1.2, "sweep": 2.2}


def test_sigkill_at_random_moments_leaves_only_complete_files(reference, tmp_path):
    """Each command started twice and killed at a seeded random moment once it writes (the
    three side by side): the first time into an empty folder, the second over a previous
    complete run (sweep: continuing with --resume). Every file left is complete; the sweep then
    finishes with --resume and gives the uninterrupted table."""
    rng = random.Random(17)
    outs = {name: tmp_path / name for name in COMMANDS}
    killed = []
    for attempt in range(2):
        jobs = []
        for name, out in outs.items():
            if attempt == 1 and name != "sweep":
                # The folder holds a previous complete run: each file must stay complete.
                shutil.copytree(reference[name], out, dirs_exist_ok=True)
            extra = ("--resume",) if name == "sweep" and attempt == 1 else ()
            jobs.append((command(name, out, *extra), out, rng.uniform(0, WRITING_S[name])))
        killed += run_and_kill(jobs)
        for name, out in outs.items():
            if out.exists():
                check_folder(out, reference[name])
    assert any(killed), "every command finished before its kill: nothing was tested"
    # No sweep point is lost: --resume finishes and gives the uninterrupted table.
    out, ref = outs["sweep"], reference["sweep"]
    done = run_cli(command("sweep", out, "--resume"))
    assert done.returncode == 0, done.stderr
    assert not check_folder(out, ref), "temporary files left after --resume"
    assert (out / "sweep.csv").read_bytes() == (ref / "sweep.csv").read_bytes()
    pd.testing.assert_frame_equal(pd.read_parquet(out / "sweep.parquet"),
                                  pd.read_parquet(ref / "sweep.parquet"))
    assert sorted(p.name for p in (out / "points").iterdir()) == \
        sorted(p.name for p in (ref / "points").iterdir())


# --------------------------------------------------------------------------------------------
# SIGKILL at exact write steps (a forked writer)
# --------------------------------------------------------------------------------------------

@contextmanager
def _hooked_io(kill_at: int | None = None):
    """Count os.write / os.fsync / os.replace calls; at call ``kill_at`` SIGKILL this process
    (a write first writes half of its bytes, so a torn temporary file is left)."""
    real = {"write": os.write, "fsync": os.fsync, "replace": os.replace}
    calls: list[str] = []

    def hook(kind):
        def call(*args):
            calls.append(kind)
            if len(calls) == kill_at:
                if kind == "write":
                    real["write"](args[0], bytes(args[1])[:max(1, len(args[1]) // 2)])
                os.kill(os.getpid(), signal.SIGKILL)
            return real[kind](*args)
        return call

    for kind in real:
        setattr(os, kind, hook(kind))
    try:
        yield calls
    finally:
        for kind, function in real.items():
            setattr(os, kind, function)


def test_sigkill_at_each_kind_of_write_step(reference, tmp_path):
    """Old outputs, then the new ones written by a child killed in the middle of a write, before
    an fsync and before a rename: every file is the old or the new version, never a torn one;
    the next complete write removes the temporaries and leaves exactly the new files."""
    import sim
    from sim.report.output import write_outputs
    from sim.scenario import load_scenario

    overrides = ["horizon=10m", "warmup=0s"]
    spec = load_scenario(ROOT / "scenarios/quickstart.yaml", overrides)
    old = sim.run(load_scenario(ROOT / "scenarios/quickstart.yaml", overrides,
                                seed=spec.seed + 1), 1)
    new = sim.run(spec, 1)  # what `predsim run -r 1` wrote into the reference folder
    old_dir, new_dir, out = tmp_path / "old", reference["run"], tmp_path / "out"
    with _hooked_io() as calls:
        write_outputs(old, old_dir)
    kinds = list(calls)
    shutil.copytree(old_dir, out)
    assert kinds.count("replace") == len(list(old_dir.iterdir()))
    rng = random.Random(17)
    first_rename = kinds.index("replace")  # the folder's fsync comes after the renames
    steps = {kind: rng.choice([i + 1 for i, k in enumerate(kinds)
                               if k == kind and (kind == "replace" or i < first_rename)])
             for kind in ("write", "fsync", "replace")}
    for kind, step in steps.items():
        pid = os.fork()
        if pid == 0:  # the child: write the new outputs, killed at `step`
            code = 3
            try:
                with _hooked_io(step):
                    write_outputs(new, out)
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (kind, status)
        temps = check_folder(out, old_dir, new_dir)
        assert temps, f"killed at a {kind}: the staged temporary file should be left behind"
    write_outputs(new, out)
    assert not check_folder(out, new_dir), "the next write should remove stale temporaries"
    assert snapshot_bytes(out) == snapshot_bytes(new_dir)


def snapshot_bytes(folder: Path) -> dict[str, bytes]:
    return {k: v[2] for k, v in snapshot(folder).items()}


# --------------------------------------------------------------------------------------------
# Full disk
# --------------------------------------------------------------------------------------------

def _file_size_limit(limit: int):
    def preexec():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


def test_full_disk_file_size_limit_run(reference, tmp_path):
    """`run --out` over a previous run, with a 16 KiB file-size limit: EFBIG on
    timeseries.csv, one clear line, exit 2, not one file replaced, no temporary left."""
    out = tmp_path / "out"
    shutil.copytree(reference["run"], out)
    before = snapshot(out)
    result = run_cli(command("run", out), preexec_fn=_file_size_limit(16 * 1024))
    assert_clear_message(result, str(out / "timeseries.csv"), "file too large",
                         "nothing was overwritten", "free space or choose another --out")
    assert snapshot(out) == before
    assert not check_folder(out, reference["run"])


def test_full_disk_file_size_limit_sweep_loses_no_point(reference, tmp_path):
    """`sweep --out` with a 32 KiB file-size limit: the manifest and every point (21 KB each)
    are saved, the table (90 KB) is refused with a clear line; --resume (room again) simulates
    nothing and writes the uninterrupted table."""
    out = tmp_path / "out"
    result = run_cli(command("sweep", out), preexec_fn=_file_size_limit(32 * 1024))
    assert_clear_message(result, str(out / "sweep.parquet"), "file too large", "--resume")
    assert not check_folder(out, reference["sweep"])
    assert len(list((out / "points").glob("*.json"))) == 3
    done = run_cli(command("sweep", out, "--resume"))
    assert done.returncode == 0, done.stderr
    assert "nothing left to run" in done.stdout
    assert (out / "sweep.csv").read_bytes() == (reference["sweep"] / "sweep.csv").read_bytes()
    assert not check_folder(out, reference["sweep"])


@contextmanager
def tmpfs(folder: Path, size: int):
    """A tmpfs of ``size`` bytes mounted on ``folder``; skips where mounting is not permitted."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8); the file-size-limit tests "
                    "cover a full disk here")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                              str(folder)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here ({mounted.stderr.strip()}); the "
                    f"other tests cover full disks and read-only folders")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_full_disk_small_tmpfs_report(reference, tmp_path):
    """`report --out` on a tmpfs that holds the previous report with 32 KiB to spare: ENOSPC,
    one clear line, exit 2, not one file replaced, no temporary left."""
    ref = reference["report"]
    used = sum(-(-p.stat().st_size // 4096) * 4096 for p in ref.iterdir())
    with tmpfs(tmp_path / "disk", used + 32 * 1024) as out:
        for path in ref.iterdir():
            shutil.copy(path, out / path.name)
        before = snapshot(out)
        result = run_cli(command("report", out))
        assert_clear_message(result, str(out), "no space left on device",
                             "nothing was overwritten", "free space or choose another --out")
        assert snapshot(out) == before
        assert not check_folder(out, ref)


# --------------------------------------------------------------------------------------------
# Read-only output folder
# --------------------------------------------------------------------------------------------

def _nobody_ways() -> list[tuple[str, list[str], object]]:
    """Ways to run a command as uid/gid 65534: (name, command prefix, preexec_fn)."""
    def drop():
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    ways = []
    if shutil.which("setpriv"):
        ways.append(("setpriv", [shutil.which("setpriv"), f"--reuid={NOBODY}",
                                 f"--regid={NOBODY}", "--clear-groups"], None))
    ways.append(("os.setuid", [], drop))
    return ways


def test_read_only_folder_unprivileged_user(reference, tmp_path):
    """`sweep --resume` as uid 65534 on a root-owned folder holding a finished sweep: nothing to
    simulate, the table cannot be written: EACCES, one clear line, exit 2, nothing replaced.
    (As root, chmod alone would not make the folder read-only.)"""
    if os.geteuid() != 0:
        pytest.skip("not root: no unprivileged user to switch to (chmod would do here)")
    scratch = Path(tempfile.mkdtemp(prefix="predsim-nobody-", dir="/tmp"))
    out = Path(tempfile.mkdtemp(prefix="predsim-readonly-", dir="/tmp"))
    try:
        os.chmod(scratch, 0o777)  # HOME, matplotlib's and numba's caches for that user
        env = _env(HOME=str(scratch), MPLCONFIGDIR=str(scratch), NUMBA_CACHE_DIR=str(scratch),
                   PYTHONDONTWRITEBYTECODE="1")
        os.chmod(out, 0o755)
        shutil.copytree(reference["sweep"], out, dirs_exist_ok=True)
        before = snapshot(out)
        failures = []
        for way, prefix, preexec in _nobody_ways():
            try:
                result = run_cli(prefix + command("sweep", out, "--resume"), env=env,
                                 preexec_fn=preexec)
            except OSError as exc:  # the interpreter cannot even be started as that user
                failures.append(f"{way}: {exc}")
                continue
            if result.returncode == 2 and "could not write" in result.stderr:
                break
            # Not the expected failure: a bug, unless predsim cannot run as that user at all.
            probe = run_cli(prefix + [sys.executable, "-c", "import sim.cli.main, sim.studies.sweep"],
                            env=env, preexec_fn=preexec)
            assert probe.returncode != 0, (result.returncode, result.stderr)
            failures.append(f"{way}: {probe.stderr.strip().splitlines()[-1:]}")
        else:
            pytest.skip("predsim cannot run as uid 65534 here: the interpreter, the venv or "
                        "the repository is not readable by that user (" +
                        "; ".join(failures) + "); test_read_only_mount_run covers a "
                        "read-only folder where mounting is permitted")
        assert_clear_message(result, str(out / "sweep.parquet"),
                             f"permission denied: {out} is read-only", "--resume")
        assert snapshot(out) == before
    finally:
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)


def test_read_only_mount_run(reference, tmp_path):
    """`run --out` on a tmpfs remounted read-only, holding a previous run: EROFS, one clear
    line, exit 2, nothing replaced."""
    ref = reference["run"]
    with tmpfs(tmp_path / "ro", 4 * 1024 * 1024) as out:
        for path in ref.iterdir():
            shutil.copy(path, out / path.name)
        remount = subprocess.run(["mount", "-o", "remount,ro", str(out)], capture_output=True,
                                 text=True)
        if remount.returncode != 0:
            pytest.skip(f"remounting read-only is not permitted ({remount.stderr.strip()})")
        before = snapshot(out)
        result = run_cli(command("run", out))
        assert_clear_message(result, f"read-only file system: {out} is read-only",
                             "nothing was overwritten", "choose another --out")
        assert snapshot(out) == before


def test_message_for_folder_that_cannot_be_created(tmp_path):
    """A read-only parent: the folder cannot be made; the same clear line, exit 2."""
    from sim.report.output import WriteError, ensure_folder

    parent = tmp_path / "parent"
    parent.mkdir()
    error = OSError(errno.EACCES, "Permission denied")
    message = str(WriteError(parent / "out", error, creating=True))
    assert message == (f"predsim: could not create {parent / 'out'}: permission denied: "
                       f"{parent} is read-only for this user (nothing was overwritten; choose "
                       f"another --out)")
    (parent / "file").write_text("x")
    with pytest.raises(WriteError, match="exists and is not a folder"):
        ensure_folder(parent / "file")
