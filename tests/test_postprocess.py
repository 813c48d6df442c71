"""Post-processing: tables of one family add up exactly, nothing is negative, the fit is the
weighted least-squares solution, and its intervals are honest (checked by simulation)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from coordinator.postprocess import (
    NoisyTable,
    chi2_upper_point,
    families,
    post_process,
    suppressed,
)
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


def grouped(tabs: list[NoisyTable]) -> dict[str, tuple[str, ...]]:
    """Which tables are marginals of which (the structure alone; their values do not matter)."""
    out = {}
    for family in families(tabs):
        names = tuple(t.analysis_id for t in family.members)
        out.update({n: names for n in names})
    return out


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
    est = grouped(tabs)
    assert est["age"] == ("age_t", "age")  # bookers add up over institution types
    assert est["age_d"] == ("age_d",)


def test_tables_of_other_periods_are_not_marginals() -> None:
    # Disciplines in 2024 are not the 2023-2024 table summed over quarters.
    rng = np.random.default_rng(5)
    q2 = Dimension("quarter", quarters(2023, 2024))
    dq = noisy("dq", (D, q2), rng.uniform(100, 200, 40), 5, rng)
    d_one = noisy("d", (D,), rng.uniform(100, 200, 5), 5, rng)
    two_years = grouped([replace(dq, years=(2023, 2024)), replace(d_one, years=(2024, 2024))])
    assert two_years["d"] == ("d",)
    same = grouped([replace(dq, years=(2023, 2024)), replace(d_one, years=(2023, 2024))])
    assert same["d"] == ("dq", "d")


def test_bookers_add_up_over_age_only_within_one_year() -> None:
    # Over 2023-2024 a booker who turns 35 is in two age bands but once in the total.
    rng = np.random.default_rng(6)
    age = Dimension("age_band", ("18-34", "35-49"))
    year = Dimension("year", ("2023", "2024"))

    def family_of(tabs: list[NoisyTable], years: tuple[int, int], table: str) -> tuple[str, ...]:
        return grouped([replace(t, years=years) for t in tabs])[table]

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


def test_the_agreement_point_is_the_chi_squared_quantile() -> None:
    from scipy.stats import chi2

    # Wilson-Hilferty is a little conservative at few degrees of freedom (a tail of 5.7e-5
    # instead of 1e-4 at df = 1) and exact enough from df = 10.
    for df in (1, 2, 5, 20, 100, 1000, 10_000):
        assert 4e-5 < chi2.sf(chi2_upper_point(df), df) <= 1e-4, df


def test_tables_that_count_different_things_are_not_fitted_together() -> None:
    # Two caps: the quarters table keeps 10% more of the heaviest buyers than the totals table.
    # Its sum over quarters then differs from the totals by far more than the noise: fitting
    # them would give intervals that are "exact for the fit" around neither quantity.
    rng = np.random.default_rng(7)
    cube = rng.integers(2000, 3000, size=(5, 4)).astype(float)  # discipline x quarter
    dq = noisy("dq", (D, Q), cube.reshape(-1) * 1.1, 30.0, rng)
    d = noisy("d", (D,), cube.sum(axis=1), 30.0, rng)
    est = post_process([dq, d])
    for name, other in (("dq", "d"), ("d", "dq")):
        assert est[name].family == (name,)
        assert est[name].not_fitted_with == (other,)
        assert "differ by more than their noise allows" in est[name].disagreement
        assert "caps per customer differ" in est[name].disagreement
        assert est[name].disagreement_test.startswith("dq, d together: chi-squared ")
    # Each table is then its own estimate: its noisy values, held at zero.
    assert np.allclose(est["d"].values, np.maximum(d.values, 0.0))
    # A single cell five noise sd apart is enough: the statistic is 25 on 5 degrees of
    # freedom plus chi-squared noise, against the 99.99% point used, 26.3 (so caught about half the
    # time); at eight sd (64) it is caught nearly always.
    shifted = cube.sum(axis=1).copy()
    shifted[0] += 8 * np.sqrt(30.0**2 + 4 * 30.0**2)
    caught = sum(
        post_process(
            [
                noisy("dq", (D, Q), cube.reshape(-1), 30.0, rng),
                noisy("d", (D,), shifted, 30.0, rng),
            ]
        )["d"].family
        == ("d",)
        for _ in range(200)
    )
    assert caught >= 190


def test_the_disagreement_of_tables_of_the_same_cells_is_chi_squared() -> None:
    # The statistic of a family of one truth is chi-squared with 88 - 60 = 28 degrees of
    # freedom (measured over 20,000 families: mean 28.0, variance 56.6, Kolmogorov-Smirnov
    # p = 0.95). Over 2,000 families its mean has sd 0.17: a bound of 1.0 is 6 sd (false alarm
    # 2e-9). Splits have rate 1e-4 per family, 0.2 expected here; four or more have chance
    # 5e-5 (the seed fixes the outcome anyway). Wrong noise is caught: a variance stated too
    # small by half doubles the mean (56), and one stated at a quarter (the noise's sd twice
    # what the table says) gives statistics near 112 against a 99.99% point of 64.5, which
    # splits nearly every family.
    from coordinator.postprocess import disagreement

    rng = np.random.default_rng(8)
    cube = rng.integers(500, 900, size=(3, 5, 4)).astype(float)
    sds = {"tdq": 20.0, "dq": 15.0, "d": 10.0, "t": 10.0}
    stats, split, wrong_scale = [], 0, 0
    for i in range(2_000):
        tabs = tables(cube, sds, rng)
        (family,) = families(tabs)
        stat, df = disagreement(family)
        assert df == 28
        stats.append(stat)
        split += int(len(post_process(tabs)["d"].family) < 4)
        if i < 100:
            quartered = [replace(t, variance=t.variance / 4) for t in tabs]
            wrong_scale += int(len(post_process(quartered)["d"].family) < 4)
    assert abs(np.mean(stats) - 28) < 1.0
    assert split <= 3
    assert wrong_scale >= 95


def test_tables_of_different_institutions_are_never_fitted_together() -> None:
    # One institution refused the yearly table (or dropped out of its secure round): the two
    # tables sum different institutions, so they are not marginals of one another, however
    # close their numbers (a small institution's gap can hide in the noise and bias the fit).
    rng = np.random.default_rng(9)
    cube = rng.integers(2000, 3000, size=(5, 4)).astype(float)
    dq = replace(noisy("dq", (D, Q), cube.reshape(-1), 30.0, rng), contributors=("a", "b", "c"))
    d = replace(noisy("d", (D,), cube.sum(axis=1), 30.0, rng), contributors=("a", "b"))
    assert grouped([dq, d]) == {"dq": ("dq",), "d": ("d",)}
    same = replace(d, contributors=("c", "b", "a"))  # the same institutions, in another order
    assert grouped([dq, same]) == {"dq": ("dq", "d"), "d": ("dq", "d")}
