"""Per-patient random streams: every draw of patient i is a hash of (cohort seed, i, decoder position).

The row key is a hash of (cohort seed, patient index), and the uniform a row draws with at a decoder
position is a hash of (row key, position). So patient i gets the same numbers whatever the batch size,
shard or batch neighbours, and a forced token (whose draw is thrown away) shifts nothing. splitmix64
throughout: the same integers on every platform; seeds are promises to users, so these never change.
"""
from __future__ import annotations

import numpy as np

_M64 = (1 << 64) - 1
TOKENS, TIME = 0, 1  # the streams of a patient: its tokens; the days drawn inside its time tokens' bins


def _mix64(x: int) -> int:
    """splitmix64 finaliser on a Python int: a well-spread 64-bit hash, the same on every platform."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def row_key(seed: int, index: int, stream: int = 0) -> int:
    """The random stream of patient `index` in the cohort of `seed` (TOKENS, or TIME)."""
    return _mix64(_mix64(_mix64(int(seed) & _M64) ^ int(index)) ^ int(stream))


def uniforms(keys: np.ndarray, position: np.ndarray | int) -> np.ndarray:
    """(B,) float64 in [0, 1): the draw of each row at a decoder position (vectorised splitmix64)."""
    with np.errstate(over="ignore"):
        x = keys.astype(np.uint64) ^ (np.asarray(position, dtype=np.uint64) * np.uint64(0xD1B54A32D192ED03))
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
