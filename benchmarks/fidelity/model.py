"""The model the fidelity server serves: a click-through-rate MLP, trained at start-up.

Numpy only. The data set is generated: each example is a (user, item) pair described by 32
features (16 user, 16 item), and the click probability is a nonlinear function of them (user-item
affinity plus a few interactions), so the model has something real to learn. A request is a
ranking request: one user and ``k`` candidate items, i.e. ``k`` feature vectors of 32 floats,
scored in one forward pass of a three-hidden-layer MLP (32 -> 512 -> 512 -> 512 -> 1, ReLU).
``k`` varies from request to request (lognormal, median 128 candidates), which is what makes
service times vary.

Training is deterministic for a given seed (float32, single-threaded BLAS), so every server
process serves the same weights.
"""

from __future__ import annotations

import numpy as np

N_FEATURES = 32
N_USER = 16
HIDDEN = (512, 512, 512)
K_MEDIAN = 128     # candidates per request: lognormal, median 128, sigma 0.5, clipped to [1, 512]
K_SIGMA = 0.5
K_MAX = 512


def _true_logit(x: np.ndarray) -> np.ndarray:
    u, v = x[:, :N_USER], x[:, N_USER:]
    affinity = (u * v).sum(axis=1) / np.sqrt(N_USER)
    return (-1.5 + 1.2 * affinity + 0.8 * np.sin(2.0 * x[:, 0]) + 0.6 * x[:, 1] * x[:, 17]
            - 0.5 * np.abs(x[:, 20]))


def generate(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` labelled examples: features (n, 32) float32 and clicks (n,) float32."""
    x = rng.standard_normal((n, N_FEATURES)).astype(np.float32)
    p = 1.0 / (1.0 + np.exp(-_true_logit(x)))
    y = (rng.random(n) < p).astype(np.float32)
    return x, y


def candidates(rng: np.random.Generator, n: int) -> np.ndarray:
    """Number of candidate items in each of ``n`` ranking requests."""
    k = np.rint(rng.lognormal(np.log(K_MEDIAN), K_SIGMA, n))
    return np.clip(k, 1, K_MAX).astype(np.int64)


def request_features(rng: np.random.Generator, k: int) -> np.ndarray:
    """The feature vectors of one ranking request: one user, ``k`` candidate items."""
    x = rng.standard_normal((k, N_FEATURES)).astype(np.float32)
    x[:, :N_USER] = x[0, :N_USER]  # the same user for every candidate
    return x


class MLP:
    """32 -> 512 -> 512 -> 512 -> 1 with ReLU, sigmoid output; float32 weights."""

    def __init__(self, rng: np.random.Generator):
        sizes = (N_FEATURES, *HIDDEN, 1)
        self.weights = [(rng.standard_normal((a, b)) * np.sqrt(2.0 / a)).astype(np.float32)
                        for a, b in zip(sizes[:-1], sizes[1:])]
        self.biases = [np.zeros(b, np.float32) for b in sizes[1:]]

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Click probability of each row of ``x``."""
        h = x
        for w, b in zip(self.weights[:-1], self.biases[:-1]):
            h = np.maximum(h @ w + b, 0.0)
        logit = (h @ self.weights[-1] + self.biases[-1]).ravel()
        return 1.0 / (1.0 + np.exp(-logit))

    def _train_step(self, x, y, state, lr, beta1=0.9, beta2=0.999, eps=1e-7):
        activations = [x]
        h = x
        for w, b in zip(self.weights[:-1], self.biases[:-1]):
            h = np.maximum(h @ w + b, 0.0)
            activations.append(h)
        logit = (h @ self.weights[-1] + self.biases[-1]).ravel()
        p = 1.0 / (1.0 + np.exp(-logit))
        grad = ((p - y) / len(y)).astype(np.float32)[:, None]  # d(log loss)/d(logit)
        grads = []
        for i in range(len(self.weights) - 1, -1, -1):
            grads.append((activations[i].T @ grad, grad.sum(axis=0)))
            if i:
                grad = (grad @ self.weights[i].T) * (activations[i] > 0)
        grads.reverse()
        state["t"] += 1
        t = state["t"]
        params = [p for pair in zip(self.weights, self.biases) for p in pair]
        flat = [g for pair in grads for g in pair]
        for j, (param, g) in enumerate(zip(params, flat)):
            m = state["m"][j] = beta1 * state["m"][j] + (1 - beta1) * g
            v = state["v"][j] = beta2 * state["v"][j] + (1 - beta2) * g * g
            param -= (lr * np.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
                      * m / (np.sqrt(v) + eps)).astype(np.float32)


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (rank statistic)."""
    order = np.argsort(scores)
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    pos = labels > 0.5
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def train(seed: int = 0, n_train: int = 8192, epochs: int = 3, batch: int = 256,
          lr: float = 2e-3) -> tuple[MLP, dict]:
    """Train the MLP on a generated data set; returns it and its held-out quality."""
    rng = np.random.default_rng(seed)
    x, y = generate(rng, n_train)
    x_test, y_test = generate(rng, 4096)
    model = MLP(rng)
    params = [p for pair in zip(model.weights, model.biases) for p in pair]
    state = {"t": 0, "m": [np.zeros_like(p) for p in params],
             "v": [np.zeros_like(p) for p in params]}
    for _ in range(epochs):
        order = rng.permutation(n_train)
        for start in range(0, n_train, batch):
            idx = order[start:start + batch]
            model._train_step(x[idx], y[idx], state, lr)
    p_test = model.predict(x_test)
    oracle = 1.0 / (1.0 + np.exp(-_true_logit(x_test)))
    info = {"train_examples": n_train, "epochs": epochs,
            "test_auc": round(auc(p_test, y_test), 4),
            "oracle_auc": round(auc(oracle, y_test), 4),
            "test_click_rate": round(float(y_test.mean()), 4)}
    return model, info
