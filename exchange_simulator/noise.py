"""Counter-based pseudo-random numbers: a value is a pure function of (seed, name, stream, index).

Nothing is drawn in sequence, so any minute of any day can be computed on its own, in any order,
in any process: ``hashlib.blake2b`` turns the names into a 64-bit key and the SplitMix64 finaliser
mixes key and index (vectorised with NumPy; uint64 arithmetic wraps, as SplitMix64 intends).
"""

from __future__ import annotations

import hashlib

import numpy as np
from numpy.typing import NDArray

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_TWO_POW_53 = float(2**53)

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


def stream_key(seed: int, *names: str) -> int:
    """A 64-bit key for one random stream (``hash()`` is salted per process, so it is not used)."""
    text = "\x1f".join([str(seed), *names]).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")


def _mix(key: int, index: NDArray[np.uint64]) -> NDArray[np.uint64]:
    z = np.uint64(key) + index * _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    result: NDArray[np.uint64] = z ^ (z >> np.uint64(31))
    return result


def uniforms(key: int, index: IntArray) -> FloatArray:
    """Uniform numbers in the open interval (0, 1), one per index."""
    bits = _mix(key, index.astype(np.uint64)) >> np.uint64(11)
    result: FloatArray = (bits.astype(np.float64) + 0.5) / _TWO_POW_53
    return result


def normals(key: int, index: IntArray) -> FloatArray:
    """Standard normal numbers, one per index (Box-Muller on two uniforms per index)."""
    doubled = index.astype(np.int64) * 2
    u1 = uniforms(key, doubled)
    u2 = uniforms(key, doubled + 1)
    result: FloatArray = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
    return result


def uniform(key: int, index: int) -> float:
    """One uniform number in (0, 1)."""
    return float(uniforms(key, np.array([index], dtype=np.int64))[0])
