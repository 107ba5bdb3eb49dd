"""The standard normal quantile (``scipy.special.ndtri``) from a table, without a logarithm.

Lognormal and percentile durations are drawn by inverse transform, ``exp(mu + sigma z(u))``,
once per request and architecture; scipy's ``ndtri`` (a rational approximation with a square
root of a logarithm in the tails) costs about 10 ns a value, most of a draw. Here ``z(u)`` is
interpolated in a table laid out like a floating-point number: for ``v = min(u, 1 - u)`` (exact
in binary for ``u`` in [0.5, 1)), the exponent of ``v`` picks an octave ``[2^e, 2^(e+1))`` and
the leading mantissa bits one of its ``PER_OCTAVE`` intervals, whose two ends hold ``z`` and its
slope ``1 / phi(z)``; a cubic Hermite polynomial joins them. Every octave from ``2^-2`` down to
``2^-(OCTAVES + 1)`` has its own intervals, so the deep tails are as fine as the middle, and no
value needs a transcendental function. Values below the table (``u < 2^-(OCTAVES + 1)``, which
``Generator.random`` cannot draw) go to scipy.

Accuracy: within ``MAX_ERROR`` of scipy's ``ndtri`` everywhere (absolute, in standard
deviations; ``tests/test_distributions.py`` checks it on ten million draws and at every table
node), so a lognormal draw is within ``sigma x MAX_ERROR`` of scipy's, relatively.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from scipy import special

OCTAVES = 60        # v from 2^-61 to 0.5: every u that Generator.random() draws
PER_OCTAVE = 256    # intervals per octave
MAX_ERROR = 2e-12   # the stated accuracy, checked by the tests (1.5e-12 at worst, measured)


def _table() -> np.ndarray:
    """Per octave ``o`` (``v`` in ``[2^-(o+2), 2^-(o+1))``) and node ``j``: ``z`` at ``v =
    2^-(o+2) (1 + j / PER_OCTAVE)`` and its slope per interval, ``dz/dv x dv/dt``."""
    o = np.arange(OCTAVES)[:, None]
    j = np.arange(PER_OCTAVE + 1)[None, :]
    low = np.ldexp(1.0, -(o + 2))
    v = low * (1.0 + j / PER_OCTAVE)
    z = special.ndtri(v)
    slope = (low / PER_OCTAVE) * np.sqrt(2.0 * np.pi) * np.exp(0.5 * z * z)
    return np.ascontiguousarray(np.stack([z, slope], axis=-1))


TABLE = _table()
MANTISSA = (1 << 52) - 1


@njit(cache=True, nogil=True)
def _fill(u, table, out, scratch, bits):
    """``z(u)`` into ``out``; returns how many values fell outside the table (0 < u < 2^-61,
    NaN or outside [0, 1]), marked NaN for the caller to hand to scipy."""
    outside = 0
    for i in range(u.shape[0]):
        x = u[i]
        upper = x > 0.5
        v = 1.0 - x if upper else x
        if not v > 0.0:  # 0, 1, below 0 or above 1, NaN
            if x == 0.0:
                out[i] = -np.inf
            elif x == 1.0:
                out[i] = np.inf
            else:
                out[i] = np.nan
                outside += 1
            continue
        if v == 0.5:
            out[i] = 0.0
            continue
        scratch[0] = v
        b = bits[0]
        o = 1021 - (b >> 52)  # v in [2^-(o+2), 2^-(o+1))
        if o >= table.shape[0]:
            out[i] = np.nan
            outside += 1
            continue
        pos = (b & MANTISSA) * (PER_OCTAVE / 4503599627370496.0)  # in [0, PER_OCTAVE)
        j = int(pos)
        t = pos - j
        z0 = table[o, j, 0]
        s0 = table[o, j, 1]
        z1 = table[o, j + 1, 0]
        s1 = table[o, j + 1, 1]
        t2 = t * t
        t3 = t2 * t
        z = (2.0 * t3 - 3.0 * t2 + 1.0) * z0 + (t3 - 2.0 * t2 + t) * s0 + \
            (3.0 * t2 - 2.0 * t3) * z1 + (t3 - t2) * s1
        out[i] = -z if upper else z
    return outside


def ndtri(u) -> np.ndarray:
    """The standard normal quantile of each ``u`` (any shape), as ``scipy.special.ndtri`` to
    within ``MAX_ERROR``."""
    u = np.asarray(u, dtype=np.float64)
    flat = np.ascontiguousarray(u).reshape(-1)
    out = np.empty(flat.size)
    scratch = np.empty(1)
    if _fill(flat, TABLE, out, scratch, scratch.view(np.int64)):
        rest = np.isnan(out)
        out[rest] = special.ndtri(flat[rest])
    return out.reshape(u.shape)
