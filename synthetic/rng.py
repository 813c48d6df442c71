"""Seeded random streams, one per generation stage.

Every stage (institutions, population, orders, ...) gets its own numpy Generator derived from the
sector seed and the stage's name. Stages are therefore independent: drawing one more number in
one stage does not shift every draw of the stages after it, which keeps sectors comparable when
the generator evolves. There is no global random state anywhere in `synthetic/`.
"""

from __future__ import annotations

import zlib

import numpy as np


def stage_rng(seed: int, stage: str) -> np.random.Generator:
    """The random stream of one named stage of the sector generated from `seed`."""
    # crc32 is stable across processes and Python versions, unlike hash().
    key = zlib.crc32(stage.encode("utf-8"))
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(key,))))
