"""The GPU fidelity case's model: a transformer scoring each candidate of a ranking request.

A request is the same ranking request the CPU server scores (model.py: one user, ``k``
candidate items, 32 float features each, ``k`` lognormal with median 128), so the protocol, the
request pool and the load generator are unchanged. The model is an FT-Transformer (Gorishniy et
al., "Revisiting Deep Learning Models for Tabular Data", NeurIPS 2021): each of a candidate's 32
features becomes a token (``x_j * W_j + b_j``), a [CLS] token is prepended, ``layers``
pre-norm ``torch.nn.TransformerEncoderLayer`` blocks (``heads`` heads, feed-forward 4 x d) run
over the 33 tokens, and a linear head on [CLS] gives the click probability. A batch of requests
is one dense tensor (total candidates, 33, d): no padding, so the work is proportional to the
number of candidates and grows smoothly with the batch.

Why this size on the H200 (d 768, 8 layers, fp16): the GPU's batch time is flat until the
device is full (``shared/DATA.md``: a d-512 encoder takes 1.3 ms for one sequence of 128 tokens
and 1.8 ms for 64) and ``fixed + per_item x n`` only describes it once one request alone fills
it. One request here is about 145 x 33 = 4,800 tokens at d 768 (about 0.5 TFLOP), a batch of
eight about 38,000 tokens (about 4.3 TFLOP, some 10-12 ms at the ~380 TFLOP/s the DATA.md
encoder reached): batch time then grows nearly linearly from one request on, the rate at rho
0.9 stays near 600 requests/s (the load generator and the Python batcher are far from their
limits; the brief caps it at 1,500/s, which a GPU twice as fast as estimated would still meet),
and the runs still see tens of thousands of requests in a few minutes.

``build(options, worker_index)`` is the factory server.py calls in each batch worker after the
fork (``--model gpu_model:build``): it imports torch there (never in a process that forks
later), builds the model on ``options["device"]`` ("cuda" or "cpu"), trains it for a few seconds
on model.py's generated click data (so it serves a real model; its test AUC is reported), warms
it up on every batch size, and, in worker 0 with ``series_path`` set, runs it back to back for
``series_seconds`` on one fixed full batch and saves each call's time there (the time series of
service times without server or network).
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np

import model as mlp

# d_model, layers, heads by device: the H200 size (see the module docstring), and a tiny one so
# the whole pipeline can be tried on a CPU
SIZES = {"cuda": {"d_model": 768, "layers": 8, "heads": 12},
         "cpu": {"d_model": 32, "layers": 1, "heads": 2}}
TOKENS = mlp.N_FEATURES + 1


def _net(torch, d_model: int, layers: int, heads: int):
    nn = torch.nn

    class FTTransformer(nn.Module):
        def __init__(self):
            super().__init__()
            bound = 1.0 / np.sqrt(d_model)
            self.weight = nn.Parameter(torch.empty(mlp.N_FEATURES, d_model).uniform_(-bound,
                                                                                   bound))
            self.bias = nn.Parameter(torch.empty(mlp.N_FEATURES, d_model).uniform_(-bound, bound))
            self.cls = nn.Parameter(torch.empty(1, 1, d_model).uniform_(-bound, bound))
            layer = nn.TransformerEncoderLayer(d_model, heads, 4 * d_model, dropout=0.0,
                                               activation="gelu", batch_first=True,
                                               norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(d_model)
            self.head = nn.Linear(d_model, 1)

        def forward(self, x):  # x: (candidates, 32) -> logits (candidates,)
            tokens = x.unsqueeze(-1) * self.weight + self.bias
            tokens = torch.cat([self.cls.expand(x.shape[0], -1, -1), tokens], dim=1)
            return self.head(self.norm(self.encoder(tokens)[:, 0])).squeeze(-1)

    return FTTransformer()


class Served:
    """The trained network behind server.py's interface: ``predict(rows) -> scores``."""

    def __init__(self, torch, net, device: str, dtype, max_rows: int):
        self.torch, self.net, self.device, self.dtype = torch, net, device, dtype
        self.cuda = device == "cuda"
        if self.cuda:  # a pinned staging buffer: the copy to the device is one DMA
            self.staging = torch.empty((max_rows, mlp.N_FEATURES), dtype=torch.float32,
                                       pin_memory=True)
            self.staging_np = self.staging.numpy()
        self.info: dict = {}

    def predict(self, rows: np.ndarray, events=None) -> np.ndarray:
        """Click probabilities of ``rows`` (n, 32); ``events`` (two CUDA events), if given, are
        recorded before the copy to the device and after the last kernel."""
        torch = self.torch
        n = rows.shape[0]
        with torch.inference_mode():
            if events:
                events[0].record()
            if self.cuda:
                self.staging_np[:n] = rows
                x = self.staging[:n].to(self.device, non_blocking=True)
            else:
                x = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))
            p = torch.sigmoid(self.net(x.to(self.dtype)).float())
            if events:
                events[1].record()
            return p.cpu().numpy()  # waits for the device: the answer is there


def _train(torch, net, device: str, seconds: float, seed: int) -> dict:
    """Adam on model.py's generated click data for at most ``seconds``; test AUC."""
    rng = np.random.default_rng(seed)
    x, y = mlp.generate(rng, 65536)
    x_test, y_test = mlp.generate(rng, 4096)
    xt = torch.from_numpy(x).to(device)
    yt = torch.from_numpy(y).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=3e-4)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    net.train()
    steps, started = 0, time.perf_counter()
    batch = 512
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda"
                else torch.autocast("cpu", enabled=False))
    while time.perf_counter() - started < seconds:
        idx = torch.from_numpy(rng.integers(0, len(x), batch)).to(device)
        with autocast:
            loss = loss_fn(net(xt[idx]).float(), yt[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
        if device == "cuda" and steps % 20 == 0:
            torch.cuda.synchronize()
    if device == "cuda":
        torch.cuda.synchronize()
    train_s = time.perf_counter() - started
    net.eval()
    with torch.inference_mode():
        logits = torch.cat([net(torch.from_numpy(x_test[i:i + 1024]).to(device)).float().cpu()
                            for i in range(0, len(x_test), 1024)]).numpy()
    oracle = 1.0 / (1.0 + np.exp(-mlp._true_logit(x_test)))
    return {"train_steps": steps, "train_s": round(train_s, 2), "train_examples_seen":
            steps * batch, "test_auc": round(mlp.auc(logits, y_test), 4),
            "oracle_auc": round(mlp.auc(oracle, y_test), 4)}


def _requests(rng: np.random.Generator, n: int) -> np.ndarray:
    """The rows of ``n`` ranking requests drawn as model.py draws them."""
    return np.concatenate([mlp.request_features(rng, int(k)) for k in mlp.candidates(rng, n)])


def build(options: dict, index: int) -> Served:
    """server.py's ``--model gpu_model:build`` factory (see the module docstring)."""
    started = time.perf_counter()
    device = options.get("device", "cuda")
    # the worker's stdout is the server's, whose first line the harness reads as the ready
    # line and then never reads again: whatever torch or CUDA print goes to stderr instead
    os.dup2(2, 1)
    import torch  # here, in the worker, after the fork
    t_import = time.perf_counter() - started
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda but torch sees no CUDA device")
    torch.manual_seed(int(options.get("seed", 0)))
    torch.set_num_threads(int(options.get("threads", 1)))
    probe = {}
    if device == "cuda" and not options.get("cudnn_sdp", False):
        # The first H200 run (2026-12-04) had batches of 3-8 requests take 72-85 ms of CPU time
        # with the GPU 1-9% busy, against 5 ms for 1-2 requests and 10 ms for a full batch
        # repeated: a new plan built for every new number of rows, the signature of cuDNN's
        # attention backend on Hopper. Served batches have a new number of rows nearly every
        # time, so the other attention kernels (flash, memory-efficient) are used.
        torch.backends.cuda.enable_cudnn_sdp(False)
        probe["cudnn_sdp"] = False
    size = {**SIZES[device], **{k: options[k] for k in ("d_model", "layers", "heads")
                                if k in options}}
    net = _net(torch, **size).to(device)
    quality = _train(torch, net, device, float(options.get("train_seconds", 5.0)),
                     int(options.get("seed", 0)))
    dtype = torch.float16 if device == "cuda" else torch.float32
    net = net.to(dtype).eval()
    max_batch = int(options.get("max_batch", 8))
    served = Served(torch, net, device, dtype, max_batch * mlp.K_MAX)
    # warm-up: the largest batch first (the allocator keeps its blocks), then every size
    t0 = time.perf_counter()
    rng = np.random.default_rng(int(options.get("seed", 0)) + 17)
    served.predict(rng.standard_normal((max_batch * mlp.K_MAX, mlp.N_FEATURES)).astype(
        np.float32))
    for _ in range(int(options.get("warmup_rounds", 3))):
        for b in range(1, max_batch + 1):
            served.predict(_requests(rng, b))
    warmup_s = time.perf_counter() - t0
    if device == "cuda":  # fresh row counts, as served batches have: ms per call, by rows
        for rows in (100, 300, 500, 800, 1100):
            times = []
            for j in range(5):
                x = rng.standard_normal((rows + 7 * j + 1, mlp.N_FEATURES)).astype(np.float32)
                t1 = time.perf_counter()
                served.predict(x)
                times.append(round((time.perf_counter() - t1) * 1e3, 3))
            probe[f"fresh_rows_{rows}_ms"] = times
    info = {"device": device, "torch": torch.__version__, "python": platform.python_version(),
            "dtype": str(dtype).replace("torch.", ""), **size, "tokens_per_candidate": TOKENS,
            "parameters": int(sum(p.numel() for p in net.parameters())),
            **quality, "import_s": round(t_import, 2), "warmup_s": round(warmup_s, 2),
            "threads": torch.get_num_threads(), "pid": os.getpid(), "probe": probe}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda,
                    capability=f"{props.major}.{props.minor}",
                    gpu_memory_gib=round(props.total_memory / 2 ** 30, 1),
                    multiprocessors=props.multi_processor_count,
                    cudnn=torch.backends.cudnn.version())
    series_path = options.get("series_path")
    if series_path and index == 0:
        info["series"] = _series(torch, served, Path(series_path),
                                 float(options.get("series_seconds", 5.0)), max_batch,
                                 np.random.default_rng(int(options.get("seed", 0)) + 29))
    info["build_s"] = round(time.perf_counter() - started, 2)
    served.info = info
    return served


def _series(torch, served: Served, path: Path, seconds: float, max_batch: int,
            rng: np.random.Generator) -> dict:
    """One fixed full batch, back to back for ``seconds``: each call's wall time (host to host,
    as the worker sees it) and, on a GPU, its time on the device's stream from the copy in to
    the last kernel (CUDA events; the copy back and the host's wait left out)."""
    rows = _requests(rng, max_batch)
    cuda = served.cuda
    start, wall, gpu = [], [], []
    clock = time.perf_counter
    until = clock() + seconds
    while clock() < until and len(wall) < 200_000:
        events = ((torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                  if cuda else None)
        t0 = clock()
        served.predict(rows, events)
        t1 = clock()
        if cuda:
            gpu.append(events[0].elapsed_time(events[1]) / 1e3)
        start.append(t0)
        wall.append(t1 - t0)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, start_s=np.array(start), wall_s=np.array(wall),
             gpu_s=np.array(gpu if cuda else [np.nan] * len(wall)),
             meta=json.dumps({"rows": int(rows.shape[0]), "requests": max_batch,
                              "seconds": seconds}))
    tmp.replace(path)
    w = np.array(wall)
    return {"calls": int(w.size), "rows": int(rows.shape[0]),
            "median_ms": round(float(np.median(w)) * 1e3, 4) if w.size else None}
