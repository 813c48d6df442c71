"""Statistical tests of every sampler path the project uses, which can fail.

Each path is sampled at its claimed scale and compared with the exact distribution by a
chi-square goodness-of-fit test over bins of at least 20 expected draws. The test passes at the
claimed scale and must reject samples drawn at 0.7x and 1.3x that scale from the same code path.

False-positive rate: each test at the claimed scale fails with probability ALPHA = 1e-6 when the
sampler is right (the p-value is uniform under the null), so the whole file has a false alarm
probability below 1e-5. The wrong-scale checks at N = 20,000 have chi-square statistics in the
thousands, so their p-values are far below ALPHA (power indistinguishable from 1).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from privacy.budget import Rho
from privacy.distributed import DistributedGaussian
from privacy.noise import PARALLEL_FROM, DiscreteGaussian, DiscreteLaplace

ALPHA = 1e-6
N = 20_000


def gaussian_pmf(sigma: float) -> tuple[np.ndarray, np.ndarray]:
    support = np.arange(-math.ceil(14 * sigma) - 14, math.ceil(14 * sigma) + 15)
    w = np.exp(-(support.astype(float) ** 2) / (2 * sigma**2))
    return support, w / w.sum()


def laplace_pmf(scale: float) -> tuple[np.ndarray, np.ndarray]:
    support = np.arange(-math.ceil(40 * scale) - 40, math.ceil(40 * scale) + 41)
    w = np.exp(-np.abs(support.astype(float)) / scale)
    return support, w / w.sum()


def sum_pmf(pmf: tuple[np.ndarray, np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact pmf of the sum of k independent draws, by repeated convolution."""
    support, p = pmf
    out = p
    for _ in range(k - 1):
        out = np.convolve(out, p)
    lo = k * int(support[0])
    return np.arange(lo, lo + out.size), out


def chi_square_p(sample: np.ndarray, pmf: tuple[np.ndarray, np.ndarray]) -> float:
    support, p = pmf
    expected = p * sample.size
    # Merge neighbouring integers into bins with at least 20 expected draws each; the outermost
    # bins absorb the tails, so every draw lands in some bin.
    edges = [0]
    acc = 0.0
    for i, e in enumerate(expected):
        acc += e
        if acc >= 20 and expected[i + 1 :].sum() >= 20:
            edges.append(i + 1)
            acc = 0.0
    edges.append(len(expected))
    exp_bins = np.array([expected[a:b].sum() for a, b in itertools.pairwise(edges)])
    cuts = support[edges[1:-1]]  # bin j holds values < cuts[j] (and >= cuts[j-1])
    obs_bins = np.bincount(np.searchsorted(cuts, sample, side="right"), minlength=len(exp_bins))
    exp_bins *= obs_bins.sum() / exp_bins.sum()
    return float(stats.chisquare(obs_bins, exp_bins).pvalue)


Draw = Callable[[float, int], np.ndarray]  # (scale, n) -> n noise draws from the real code path


def gaussian_serial(scale: float, n: int) -> np.ndarray:
    return DiscreteGaussian(scale).sample(np.zeros(n, dtype=np.int64), parallel=False)


def gaussian_threaded(scale: float, n: int) -> np.ndarray:
    size = max(n, PARALLEL_FROM)  # long enough to take the threaded path
    return DiscreteGaussian(scale).sample(np.zeros(size, dtype=np.int64))[:n]


def laplace(scale: float, n: int) -> np.ndarray:
    return DiscreteLaplace(scale).sample(np.zeros(n, dtype=np.int64))


def distributed_sum(share: float, n: int, k: int = 4) -> np.ndarray:
    # What the coordinator receives in secure mode: the sum of k nodes' noise shares.
    shares = [DiscreteGaussian(share).sample(np.zeros(n, dtype=np.int64)) for _ in range(k)]
    return np.asarray(np.sum(shares, axis=0))


CASES: list[tuple[str, Draw, float, Callable[[float], tuple[np.ndarray, np.ndarray]]]] = [
    ("gaussian-serial-small", gaussian_serial, 3.0, gaussian_pmf),
    ("gaussian-serial", gaussian_serial, 35.78, gaussian_pmf),
    ("gaussian-threaded", gaussian_threaded, 35.78, gaussian_pmf),
    ("laplace", laplace, 5.0, laplace_pmf),
    ("distributed-sum-of-4", distributed_sum, 2.5, lambda s: sum_pmf(gaussian_pmf(s), 4)),
]


@pytest.mark.parametrize(("name", "draw", "scale", "pmf"), CASES, ids=[c[0] for c in CASES])
def test_sampler_fits_claimed_scale_and_rejects_wrong_ones(
    name: str, draw: Draw, scale: float, pmf: Callable[[float], tuple[np.ndarray, np.ndarray]]
) -> None:
    claimed = pmf(scale)
    assert chi_square_p(draw(scale, N), claimed) > ALPHA
    for factor in (0.7, 1.3):
        assert chi_square_p(draw(scale * factor, N), claimed) < ALPHA, factor


def test_budget_to_scale_uses_opendp_map() -> None:
    for rho in ("0.01", "0.1", "1"):
        noise = DiscreteGaussian.for_budget(90.5, Rho.parse(rho))
        cost = noise.cost(90.5)
        assert cost <= float(rho)
        assert cost == pytest.approx(float(rho), rel=1e-9)  # and not a hair more noise than needed
        assert noise.scale == pytest.approx(90.5 / math.sqrt(2 * float(rho)), rel=1e-9)


def test_distributed_shares_meet_the_central_target() -> None:
    rho = Rho.parse("0.1")
    central = DiscreteGaussian.for_budget(90.5, rho).scale
    for n_min, n_max in ((3, 3), (10, 12), (50, 100), (700, 1000)):
        d = DistributedGaussian.for_budget(90.5, 181.0, 60, rho, n_min, n_max)
        assert d.total_scale(n_min) >= central * (1 - 1e-12)
        assert d.total_scale(n_min) <= central * 1.001  # within 0.1% of the ideal central noise
        assert max(d.rho_bound(k) for k in range(n_min, n_max + 1)) <= float(rho) * (1 + 1e-12)
        if n_min > 1:
            assert d.rho_bound(n_min - 1) > float(rho)  # fewer survivors: over budget, say so


@pytest.mark.slow
def test_released_answers_carry_exactly_the_claimed_noise(tmp_path: Path) -> None:
    """End to end through the node's handler: (answer - bounded truth) over many releases is
    discrete Gaussian at the scale the answer states, and the same test rejects 0.7x and 1.3x."""
    from node.data import load_ticket_lines
    from node.handler import NodeIdentity, TaskHandler
    from node.ledger import BudgetCap, Ledger, Period
    from node.queries import bounded_counts
    from protocols.messages import HistogramAnswer, Task
    from tests.conftest import OPEN_POLICY, ticket_row, write_tickets
    from tests.test_protocol_contract import s1_query

    rows = [ticket_row(ticket_id=f"T{i}", customer_id=f"C{i % 50}") for i in range(500)]
    table = load_ticket_lines(write_tickets(tmp_path / "t.csv", rows))
    ledger = Ledger(tmp_path / "l.sqlite", BudgetCap(Rho.parse("1000"), Period.TOTAL))
    handler = TaskHandler(NodeIdentity("inst-01", "theatre"), table, ledger, OPEN_POLICY)
    query = s1_query()
    truth = bounded_counts(table, query, "theatre")
    noise = []
    scale = 0.0
    for i in range(200):
        result = handler.handle(Task(f"run/{i}", "run", "s1", 60_000, query), "coord")
        assert isinstance(result.outcome, HistogramAnswer)
        scale = result.outcome.noise_scale
        noise.append(np.array(result.outcome.values) - truth)
    sample = np.concatenate(noise)
    assert sample.size == 12_000
    claimed = gaussian_pmf(scale)
    assert chi_square_p(sample, claimed) > ALPHA
    for factor in (0.7, 1.3):
        wrong = DiscreteGaussian(scale * factor).sample(np.zeros(sample.size, dtype=np.int64))
        assert chi_square_p(wrong, claimed) < ALPHA
    assert ledger.spent() == Rho.parse("20")  # 200 releases at rho 0.1, each charged once
