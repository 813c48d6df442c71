"""Turning the YAML's binned count distributions into distributions over single values.

simulation.yaml gives tickets per order as bins (1, 2, 3, 4, "5-10", ">10"). Inside a wide bin we
assume smaller values are more common (a geometric decay per step, `WITHIN_BIN_DECAY`), and an
open bin ">10" reaches at most `OPEN_BIN_MAX` (a school class or a coach party). Both are
assumptions; with them the mean order is about 2.6 tickets, close to the domain notes' ~2.5.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from synthetic.params import PmfBin

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

WITHIN_BIN_DECAY: Final[float] = 0.75
OPEN_BIN_MAX: Final[int] = 40


def bin_values(b: PmfBin) -> tuple[IntArray, FloatArray]:
    """Values of one bin and their probabilities within the bin (summing to 1)."""
    high = OPEN_BIN_MAX if b.high is None else b.high
    values = np.arange(b.low, high + 1, dtype=np.int64)
    weights = WITHIN_BIN_DECAY ** (values - b.low).astype(np.float64)
    return values, weights / weights.sum()


def expand(bins: tuple[PmfBin, ...], bin_weights: FloatArray | None = None) -> FloatArray:
    """Probability of every count 0..OPEN_BIN_MAX (index = count) from binned probabilities.

    `bin_weights` optionally replaces the bins' own probabilities (they are renormalised), which
    is how segments tilt the group-size distribution.
    """
    probs = np.asarray([b.probability for b in bins]) if bin_weights is None else bin_weights
    probs = probs / probs.sum()
    out = np.zeros(OPEN_BIN_MAX + 1)
    for b, p in zip(bins, probs, strict=True):
        values, within = bin_values(b)
        out[values] += p * within
    return out


def mean(bins: tuple[PmfBin, ...]) -> float:
    p = expand(bins)
    return float(np.dot(np.arange(len(p)), p))


def bin_index(bins: tuple[PmfBin, ...], values: IntArray) -> IntArray:
    """Index of the bin holding each value (-1 for values in no bin)."""
    out = np.full(len(values), -1, dtype=np.int64)
    for k, b in enumerate(bins):
        inside = values >= b.low
        if b.high is not None:
            inside &= values <= b.high
        out[inside] = k
    return out
