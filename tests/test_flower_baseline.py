"""The Flower SecAgg+ baseline harness: a real (small) Flower round, in process.

Needs the ``flower`` extra; without flwr the whole module is skipped with the reason.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip(
    "flwr", reason="flwr is not installed: the Flower baseline needs pip install -e '.[flower]'"
)

from benchmarks.flower_baseline import (  # only importable with flwr
    CLIPPING_RANGE,
    client_vectors,
    flower_secagg_round,
    main,
)


def test_client_vectors_are_seeded_integers_within_the_clipping_range():
    a = client_vectors(7, 30, seed=3)
    assert a.shape == (7, 30)
    assert a.dtype == np.int64
    assert np.abs(a).max() <= CLIPPING_RANGE
    assert np.array_equal(a, client_vectors(7, 30, seed=3))
    assert not np.array_equal(a, client_vectors(7, 30, seed=4))


def test_even_num_shares_below_n_is_refused_before_flower_crashes():
    with pytest.raises(ValueError, match="odd"):
        flower_secagg_round(10, 5, 4, 3)
    with pytest.raises(ValueError, match="threshold"):
        flower_secagg_round(10, 5, 5, 5)


@pytest.mark.slow
def test_a_real_flower_secaggplus_round_sums_exactly():
    r = flower_secagg_round(n=6, length=40, num_shares=3, reconstruction_threshold=2, seed=1)
    assert r.exact
    assert r.max_abs_error < 1e-6
    assert (r.n, r.length, r.num_shares, r.reconstruction_threshold) == (6, 40, 3, 2)
    assert 0.0 < r.client_seconds < r.seconds
    assert 0.0 < r.parallel_estimate_seconds <= r.seconds


@pytest.mark.slow
def test_all_to_all_and_the_cli(capsys):
    # num_shares == n is Flower's all-to-all SecAgg (even is fine there).
    assert flower_secagg_round(n=4, length=8, num_shares=4, reconstruction_threshold=3).exact
    assert main(["--n", "5", "--length", "10", "--num-shares", "3", "--repeats", "2"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["exact"] is True
    assert last["reconstruction_threshold"] == 2
    assert len(last["seconds"]) == 2
    assert last["median_seconds"] > 0
