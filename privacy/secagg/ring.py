"""Vectors over Z_(2^64): masked arithmetic wraps around, so sums of masks cancel exactly.

A signed integer vector is mapped into the ring by two's complement; the sum of many such
vectors (plus masks that cancel) is read back as signed, which is exact as long as the true
sum lies in [-2^63, 2^63). ``privacy.fixedpoint`` checks that headroom before anything is
encoded.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

RingVector = npt.NDArray[np.uint64]


def to_ring(values: npt.ArrayLike) -> RingVector:
    arr = np.asarray(values)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise TypeError("expected a 1-d integer vector")
    return arr.astype(np.int64).view(np.uint64)


def from_ring(values: RingVector) -> npt.NDArray[np.int64]:
    return np.asarray(values, dtype=np.uint64).view(np.int64)


def to_bytes(values: RingVector) -> bytes:
    return np.asarray(values, dtype="<u8").tobytes()


def from_bytes(data: bytes, length: int) -> RingVector:
    if len(data) != 8 * length:
        raise ValueError(f"expected {8 * length} bytes for {length} ring elements, got {len(data)}")
    return np.frombuffer(data, dtype="<u8").astype(np.uint64)
