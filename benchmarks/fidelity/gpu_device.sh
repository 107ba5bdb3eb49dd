#!/usr/bin/env bash
# The GPU fidelity case's device step: record the raw measurement into $OUT (see gpu.py).
# Needs python3 with numpy and torch (CUDA); nothing else, no network. Ends within ~300 s
# whatever happens: gpu.py keeps to a 270 s budget by itself (later cases shrink to fit);
# `timeout` sends SIGTERM at 300 s from this script's start (gpu.py then stops its children and
# saves what it has; the server and load generators get it too) and SIGKILL 15 s later.
# Everything runs on 127.0.0.1. Extra arguments go to `gpu.py record`.
#
#   OUT=/some/folder bash benchmarks/fidelity/gpu_device.sh      # from anywhere
set -u
cd "$(dirname "$0")/../.."
: "${OUT:?set OUT to the folder the record goes to}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
stamp() { date '+%H:%M:%S'; }
echo "[$(stamp)] gpu_device.sh: $(python3 --version 2>&1), $(nproc) cores, OUT=$OUT"
timeout 10 nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit,temperature.gpu \
    --format=csv,noheader 2>&1 | sed "s/^/[$(stamp)] /"
timeout -k 15 $((300 - SECONDS)) python3 benchmarks/fidelity/gpu.py record --out "$OUT" --device cuda "$@"
rc=$?
echo "[$(stamp)] gpu_device.sh: gpu.py exited with $rc after ${SECONDS} s"
ls -l "$OUT"
exit $rc
