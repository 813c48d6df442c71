"""Post-processing: tables of one family add up exactly, nothing is negative, the fit is the
weighted least-squares solution, and its intervals are honest (checked by simulation)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from coordinator.postprocess import NoisyTable, families, post_process, suppressed
from protocols.messages import Dimension
from protocols.vocabulary import DISCIPLINES, quarters

D = Dimension("discipline", DISCIPLINES[:5])
Q = Dimension("quarter", quarters(2024, 2024))
T = Dimension("institution_type", ("theatre", "museum", "filmhuis"))


def noisy(analysis: str, dims: tuple[Dimension, ...], truth: np.ndarray, sd: float,
          rng: np.random.Generator, measure: str = "tickets") -> NoisyTable:  # fmt: skip
    return NoisyTable(analysis, measure, dims, truth + rng.normal(0, sd, truth.shape), sd**2)


def marginals(cube: np.ndarray) -> dict[str, np.ndarray]:
    # cube axes: type, discipline, quarter
    return {
        "tdq": cube.reshape(-1),
        "dq": cube.sum(axis=0).reshape(-1),
        "qd": cube.sum(axis=0).T.reshape(-1),  # the same table with its dimensions swapped
        "d": cube.sum(axis=(0, 2)),
        "t": cube.sum(axis=(1, 2)),
    }


def tables(cube: np.ndarray, sds: dict[str, float], rng: np.random.Generator) -> list[NoisyTable]:
    m = marginals(cube)
    dims = {"tdq": (T, D, Q), "dq": (D, Q), "qd": (Q, D), "d": (D,), "t": (T,)}
    return [noisy(k, dims[k], m[k], sds[k], rng) for k in sds]


def test_family_adds_up_exactly_and_is_never_negative() -> None:
    rng = np.random.default_rng(0)
    cube = rng.integers(0, 300, size=(3, 5, 4)).astype(float)
    cube[0, 0, :] = 0  # true zeros: the noise will push some fits below zero
    est = post_process(tables(cube, {"tdq": 40, "dq": 30, "qd": 30, "d": 20, "t": 20}, rng))
    tdq = est["tdq"].values.reshape(3, 5, 4)
    assert np.all(tdq >= 0)
    assert np.allclose(est["dq"].values, tdq.sum(axis=0).reshape(-1))
    assert np.allclose(est["qd"].values, tdq.sum(axis=0).T.reshape(-1))
    assert np.allclose(est["d"].values, tdq.sum(axis=(0, 2)))
    assert np.allclose(est["t"].values, tdq.sum(axis=(1, 2)))
    assert set(est["d"].family) == {"tdq", "dq", "qd", "d", "t"}


def test_fit_equals_weighted_least_squares_when_unconstrained() -> None:
    rng = np.random.default_rng(1)
    cube = rng.integers(5000, 9000, size=(3, 5, 4)).astype(float)  # far from zero
    sds = {"tdq": 50.0, "dq": 20.0, "d": 10.0}
    tabs = tables(cube, sds, rng)
    est = post_process(tabs)
    # Dense WLS on the stacked system, the textbook way.
    [fam] = families(tabs)
    n = fam.size
    basis = np.eye(n)
    rows, rhs = [], []
    for t in tabs:
        a = np.stack([fam.apply(t, basis[i]) for i in range(n)], axis=1)
        rows.append(a / np.sqrt(t.variance))
        rhs.append(t.values / np.sqrt(t.variance))
    x, *_ = np.linalg.lstsq(np.vstack(rows), np.concatenate(rhs), rcond=None)
    assert np.allclose(est["tdq"].values, x, atol=1e-3)


def test_other_measures_and_key_sets_are_not_mixed() -> None:
    rng = np.random.default_rng(2)
    cube = rng.integers(100, 200, size=(3, 5, 4)).astype(float)
    m = marginals(cube)
    other_keys = Dimension("discipline", DISCIPLINES[5:10])
    tabs = [
        noisy("tdq", (T, D, Q), m["tdq"], 10, rng),
        noisy("visits_d", (D,), m["d"], 10, rng, measure="visits"),
        noisy("d_other", (other_keys,), m["d"], 10, rng),
    ]
    est = post_process(tabs)
    assert est["visits_d"].family == ("visits_d",)
    assert est["d_other"].family == ("d_other",)


def test_consistency_lowers_error_and_intervals_are_honest() -> None:
    """Simulation, 400 repetitions: the fitted margin is more accurate than the raw one, and
    the stated 95% intervals cover the truth 95% of the time. Coverage is checked on 400 x 5
    cells against a binomial band: |coverage - 0.95| < 0.02 fails with probability about 1e-7
    when the intervals are right (the cells of one repetition are correlated, which widens the
    spread a little; the band has margin for it), and a 25% too narrow interval (coverage 0.86)
    cannot pass."""
    rng = np.random.default_rng(3)
    cube = rng.integers(2000, 4000, size=(3, 5, 4)).astype(float)
    truth_d = cube.sum(axis=(0, 2))
    sds = {"tdq": 30.0, "dq": 30.0, "d": 30.0}
    raw_err, fit_err, covered, cells = [], [], 0, 0
    for _ in range(400):
        tabs = tables(cube, sds, rng)
        est = post_process(tabs)["d"]
        raw = next(t for t in tabs if t.analysis_id == "d").values
        raw_err.append(raw - truth_d)
        fit_err.append(est.values - truth_d)
        covered += int(np.sum(np.abs(est.values - truth_d) <= est.half_width))
        cells += truth_d.size
    gain = np.sqrt(np.mean(np.square(raw_err))) / np.sqrt(np.mean(np.square(fit_err)))
    # Theory: a discipline cell is also seen as 4 cells of dq and 12 of tdq, each of the same
    # noise: information 1 + 1/4 + 1/12 of the raw cell's, so the error shrinks by sqrt(4/3).
    # 2,000 squared errors estimate the ratio to within a few percent.
    assert gain == pytest.approx(np.sqrt(1 + 1 / 4 + 1 / 12), rel=0.06)
    assert abs(covered / cells - 0.95) < 0.02


def test_distinct_counts_are_not_forced_to_add_up() -> None:
    # Bookers by age x discipline do not sum to bookers by age (one person, two disciplines).
    rng = np.random.default_rng(4)
    age = Dimension("age_band", ("18-34", "35-49"))
    tabs = [
        noisy("age_d", (age, D), rng.uniform(100, 200, 10), 5, rng, measure="bookers"),
        noisy("age", (age,), rng.uniform(100, 200, 2), 5, rng, measure="bookers"),
        noisy("age_t", (age, T), rng.uniform(100, 200, 6), 5, rng, measure="bookers"),
    ]
    est = post_process(tabs)
    assert est["age"].family == ("age_t", "age")  # bookers add up over institution types
    assert est["age_d"].family == ("age_d",)


def test_tables_of_other_periods_are_not_marginals() -> None:
    # Disciplines in 2024 are not the 2023-2024 table summed over quarters.
    rng = np.random.default_rng(5)
    q2 = Dimension("quarter", quarters(2023, 2024))
    dq = noisy("dq", (D, q2), rng.uniform(100, 200, 40), 5, rng)
    d_one = noisy("d", (D,), rng.uniform(100, 200, 5), 5, rng)
    two_years = post_process([replace(dq, years=(2023, 2024)), replace(d_one, years=(2024, 2024))])
    assert two_years["d"].family == ("d",)
    same = post_process([replace(dq, years=(2023, 2024)), replace(d_one, years=(2023, 2024))])
    assert same["d"].family == ("dq", "d")


def test_bookers_add_up_over_age_only_within_one_year() -> None:
    # Over 2023-2024 a booker who turns 35 is in two age bands but once in the total.
    rng = np.random.default_rng(6)
    age = Dimension("age_band", ("18-34", "35-49"))
    year = Dimension("year", ("2023", "2024"))

    def family_of(tabs: list[NoisyTable], years: tuple[int, int], table: str) -> tuple[str, ...]:
        return post_process([replace(t, years=years) for t in tabs])[table].family

    by_age = noisy("age_t", (age, T), rng.uniform(100, 200, 6), 5, rng, measure="bookers")
    total_t = noisy("t", (T,), rng.uniform(100, 200, 3), 5, rng, measure="bookers")
    assert family_of([by_age, total_t], (2024, 2024), "t") == ("age_t", "t")
    assert family_of([by_age, total_t], (2023, 2024), "t") == ("t",)
    # Kept apart by year, the age bands of one year do add up again.
    by_age_year = noisy("ay", (age, year), rng.uniform(100, 200, 4), 5, rng, measure="bookers")
    per_year = noisy("y", (year,), rng.uniform(100, 200, 2), 5, rng, measure="bookers")
    assert family_of([by_age_year, per_year], (2023, 2024), "y") == ("ay", "y")


def test_suppression_flags_cells_within_their_error_of_zero() -> None:
    values = np.array([5.0, 50.0, 0.0, 200.0])
    half = np.array([40.0, 40.0, 40.0, 40.0])
    assert suppressed(values, half, 1.0).tolist() == [True, False, True, False]
    assert suppressed(values, half, 0.0).tolist() == [False, False, False, False]
