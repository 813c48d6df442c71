"""Contribution bounding: the vectorised code agrees with a plain reading of the rule."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privacy.bounding import ContributionBound, InvalidBound, bounded_histogram


def naive(rows: list[tuple[int, int, int]], n_cells: int, bound: ContributionBound) -> list[int]:
    per_unit: dict[int, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for u, c, w in rows:
        per_unit[u][c] += w
    out = [0] * n_cells
    for cells in per_unit.values():
        clipped = sorted(
            ((min(v, bound.max_per_cell), c) for c, v in cells.items()), key=lambda t: (-t[0], t[1])
        )
        for v, c in clipped[: bound.max_cells]:
            out[c] += v
    return out


rows_strategy = st.lists(
    st.tuples(st.integers(0, 20), st.integers(0, 9), st.integers(0, 6)), max_size=200
)


@settings(max_examples=200, deadline=None)
@given(rows_strategy, st.integers(1, 4), st.integers(1, 5))
def test_matches_the_plain_rule(
    rows: list[tuple[int, int, int]], max_cells: int, max_per_cell: int
) -> None:
    bound = ContributionBound(max_cells, max_per_cell)
    arr = np.array(rows, dtype=np.int64).reshape(-1, 3)
    got = bounded_histogram(arr[:, 0], arr[:, 1], arr[:, 2], 10, bound)
    assert got.tolist() == naive(rows, 10, bound)


@settings(max_examples=100, deadline=None)
@given(rows_strategy, st.integers(0, 20), st.integers(1, 4), st.integers(1, 5))
def test_removing_one_unit_moves_the_vector_by_at_most_the_sensitivity(
    rows: list[tuple[int, int, int]], victim: int, max_cells: int, max_per_cell: int
) -> None:
    bound = ContributionBound(max_cells, max_per_cell)
    arr = np.array(rows, dtype=np.int64).reshape(-1, 3)
    rest = arr[arr[:, 0] != victim]
    with_v = bounded_histogram(arr[:, 0], arr[:, 1], arr[:, 2], 10, bound)
    without = bounded_histogram(rest[:, 0], rest[:, 1], rest[:, 2], 10, bound)
    diff = (with_v - without).astype(float)
    assert math.sqrt(float(diff @ diff)) <= bound.l2_sensitivity + 1e-9
    assert float(np.abs(diff).sum()) <= bound.l1_sensitivity


@pytest.mark.parametrize(("cells", "per_cell"), [(0, 1), (1, 0), (10_001, 1), (1, 10**7), (-1, 5)])
def test_absurd_bounds_are_refused(cells: int, per_cell: int) -> None:
    with pytest.raises(InvalidBound):
        ContributionBound(cells, per_cell)


def test_rows_outside_the_table_are_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="out of range"):
        bounded_histogram(np.array([1]), np.array([5]), np.array([1]), 3, ContributionBound(1, 1))
