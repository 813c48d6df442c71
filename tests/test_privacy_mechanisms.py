"""Mechanisms describe themselves truthfully, bound before noise, and refuse to overflow."""

from __future__ import annotations

import math

import numpy as np
import pytest

from privacy.bounding import ContributionBound
from privacy.budget import Rho
from privacy.fixedpoint import FixedPoint, FixedPointOverflow
from privacy.intervals import (
    discrete_gaussian_half_width,
    discrete_laplace_half_width,
    sum_half_width,
)
from privacy.mechanisms import BoundedSum, ClippedVectorSum, DpCount, GaussianHistogram
from privacy.noise import DiscreteGaussian, DiscreteLaplace


def test_histogram_description_is_consistent() -> None:
    mech = GaussianHistogram(60, ContributionBound(8, 32), Rho.parse("0.1"))
    d = mech.describe()
    assert d.l2_sensitivity == pytest.approx(32 * math.sqrt(8))
    assert d.noise_scale == pytest.approx(d.l2_sensitivity / math.sqrt(0.2))
    assert DiscreteGaussian(d.noise_scale).cost(d.l2_sensitivity) <= 0.1
    assert d.half_width_95 == discrete_gaussian_half_width(d.noise_scale)


def test_bounded_sum_clips_per_unit_total_before_noise() -> None:
    mech = BoundedSum(upper=100.0, rho=Rho.parse("0.5"))
    unit = np.array([1, 1, 1, 2, 3])
    spend = np.array([80.0, 80.0, 80.0, 30.0, -5.0])  # unit 1 spent 240, clipped to 100
    assert mech.true_sum(unit, spend) == (100 + 30 + 0) * 100  # in cents
    assert mech.l2_sensitivity == 10_000  # one unit moves the sum by at most 100 euros
    d = mech.describe()
    assert d.half_width_95 == pytest.approx(discrete_gaussian_half_width(d.noise_scale) / 100)


def test_clipped_vector_sum_keeps_direction_and_bounds_norm() -> None:
    mech = ClippedVectorSum(dim=3, clip_norm=1.0, rho=Rho.parse("1"))
    clipped = mech.clip([[3.0, 4.0, 0.0], [0.1, 0.2, 0.3]])
    assert clipped[0].tolist() == pytest.approx([0.6, 0.8, 0.0])
    assert clipped[1].tolist() == pytest.approx([0.1, 0.2, 0.3])  # inside the ball: unchanged
    encoded = mech.fixed.encode(clipped)
    # The sensitivity covers the worst rounding of a row on the ball.
    assert np.linalg.norm(encoded, axis=1).max() <= mech.l2_sensitivity
    with pytest.raises(ValueError, match="NaN"):
        mech.clip([[np.nan, 0.0, 0.0]])


def test_dp_count_counts_units_not_rows() -> None:
    mech = DpCount(Rho.parse("10"))  # little noise, so the count is visible
    releases = [mech.release(np.array([1, 1, 1, 2, 3, 3])) for _ in range(30)]
    assert abs(np.mean(releases) - 3) < 1.0  # sigma 0.22: the mean of 30 is within 0.2 of 3


def test_fixed_point_refuses_values_outside_the_bound_and_non_finite() -> None:
    fp = FixedPoint(scale=1000, bound=5.0)
    assert fp.encode([1.2345, -5.0]).tolist() == [1234, -5000]  # round half to even
    assert fp.decode([1234]).tolist() == [1.234]
    with pytest.raises(FixedPointOverflow, match="outside the public bound"):
        fp.encode([5.001])
    with pytest.raises(FixedPointOverflow, match="NaN"):
        fp.encode([np.inf])


def test_fixed_point_headroom_catches_sums_that_would_wrap() -> None:
    fp = FixedPoint(scale=2**30, bound=1e6)
    fp.check_headroom(summands=100)
    with pytest.raises(FixedPointOverflow, match="could overflow"):
        fp.check_headroom(summands=10_000_000)


def test_vectors_that_could_overflow_are_refused_before_noise() -> None:
    with pytest.raises(OverflowError):
        DiscreteGaussian(1.0).sample(np.array([2**62], dtype=np.int64))
    with pytest.raises(TypeError, match="encode reals"):
        DiscreteGaussian(1.0).sample(np.array([0.5]))


def test_laplace_budget_and_interval() -> None:
    noise = DiscreteLaplace.for_budget(4, Rho.parse("0.5"))
    assert noise.cost(4) <= 0.5
    # Exact tail: P(|X| > h) = 2 a^(h+1) / (1 + a), a = exp(-1/b).
    h = noise.half_width()
    a = math.exp(-1 / noise.scale)
    assert 2 * a ** (h + 1) / (1 + a) <= 0.05 < 2 * a**h / (1 + a)


def test_intervals() -> None:
    # Exact pmf sum for small sigma agrees with the Gaussian quantile at large sigma.
    assert discrete_gaussian_half_width(1.0) == 2
    assert discrete_gaussian_half_width(100.0) == math.ceil(1.959963984540054 * 100)
    assert discrete_laplace_half_width(1.0) >= 2
    assert sum_half_width([100.0**2] * 4) == pytest.approx(1.959963984540054 * 200)
    with pytest.raises(ValueError, match="confidence"):
        discrete_gaussian_half_width(1.0, 1.5)
