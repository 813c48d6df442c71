"""Budgets are exact values: parsing, arithmetic, composition and display conversion."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privacy.budget import InvalidBudget, Rho, compose, epsilon_of
from privacy.noise import DiscreteGaussian


def test_decimal_strings_are_exact() -> None:
    assert Rho.parse("0.1") + Rho.parse("0.2") == Rho.parse("0.3")  # false in floats
    assert compose([Rho.parse("0.001")] * 1000) == Rho.parse("1")
    assert str(Rho.parse("1e-3")) == "0.001"
    assert str(Rho.parse("1/3")) == "1/3"
    assert str(Rho.parse("2")) == "2"


def test_budgets_are_shown_to_people_as_decimals() -> None:
    assert Rho.parse("0.05").shown == "0.05"  # exact when it terminates
    third = Rho(Rho.parse("0.0201871").value / 6)
    assert str(third) == "201871/60000000"  # what ledgers keep: exact
    assert third.shown == "≈0.003364517"


@pytest.mark.parametrize(
    "bad",
    ["", " ", "-0.1", "inf", "nan", "abc", "1/0", "1e5000", "0x10", "1e-300", "1/10000000000000"],
)
def test_invalid_budgets_are_refused(bad: str) -> None:
    with pytest.raises(InvalidBudget):
        Rho.parse(bad)


def test_the_sanity_floor_keeps_noise_within_64_bit_integers() -> None:
    # A rho of 1e-300 gave a noise scale of 6e150, and OpenDP's samples saturated at +-2^63.
    floor = Rho.parse("1e-12")
    assert Rho.parse("0") == Rho.zero()  # zero stays expressible (nothing spent)
    scale = DiscreteGaussian.for_budget(1e6 * 100, floor).scale  # the largest bound allowed
    assert scale < 2**63 / 1e4  # ten thousand standard deviations still fit


def test_overdraft_is_an_error_not_a_negative_budget() -> None:
    with pytest.raises(InvalidBudget):
        Rho.parse("0.1") - Rho.parse("0.2")


def cks20_delta(rho: float, eps: float) -> float:
    """Canonne, Kamath & Steinke (2020), Sec. 2.3: the tight delta for rho-zCDP at eps.

    An independent implementation (after the authors' reference code) to check OpenDP against.
    """
    amin, amax = 1.01, (eps + 1) / (2 * rho) + 2
    alpha = amin
    for _ in range(200):
        alpha = (amin + amax) / 2
        derivative = (2 * alpha - 1) * rho - eps + math.log1p(-1.0 / alpha)
        if derivative < 0:
            amin = alpha
        else:
            amax = alpha
    delta = math.exp((alpha - 1) * (alpha * rho - eps) + alpha * math.log1p(-1 / alpha)) / (
        alpha - 1
    )
    return min(delta, 1.0)


def cks20_epsilon(rho: float, delta: float) -> float:
    lo, hi = 0.0, rho + 2 * math.sqrt(rho * math.log(1 / delta))
    for _ in range(200):
        mid = (lo + hi) / 2
        if cks20_delta(rho, mid) <= delta:
            hi = mid
        else:
            lo = mid
    return hi


@pytest.mark.parametrize("rho", ["0.01", "0.1", "0.5", "1", "4"])
@pytest.mark.parametrize("delta", [1e-5, 1e-7, 1e-9])
def test_epsilon_matches_the_exact_conversion(rho: str, delta: float) -> None:
    eps = epsilon_of(Rho.parse(rho), delta)
    exact = cks20_epsilon(float(rho), delta)
    textbook = float(rho) + 2 * math.sqrt(float(rho) * math.log(1 / delta))
    assert eps == pytest.approx(exact, rel=1e-4)
    assert eps >= exact - 1e-9  # never understated
    assert eps < textbook  # and tighter than the textbook bound


def test_zero_rho_is_zero_epsilon() -> None:
    assert epsilon_of(Rho.zero(), 1e-6) == 0.0


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.fractions(min_value=Fraction(1, 10**6), max_value=Fraction(2)), min_size=1, max_size=8
    ),
    st.sampled_from([1e-5, 1e-7, 1e-9]),
)
def test_composition_and_conversion_never_understate(parts: list[Fraction], delta: float) -> None:
    rhos = [Rho(p) for p in parts]
    total = compose(rhos)
    assert total.value == sum(parts)  # exact
    eps_total = epsilon_of(total, delta)
    # The total's epsilon is at least each part's (monotone), and at least the loss of the
    # worst single part: composing can never make the displayed loss smaller.
    for r in rhos:
        assert eps_total >= epsilon_of(r, delta) - 1e-12
    # And it is at least the well-known lower envelope rho + 2 sqrt(rho ln(1/delta)) minus the
    # optimal conversion's improvement, which never drops below rho itself.
    assert eps_total >= float(total.value)


def test_our_composition_agrees_with_opendps() -> None:
    # Three releases of a plan, composed by OpenDP's own combinator and by our exact sum.
    from privacy._opendp import dp
    from privacy.noise import DiscreteGaussian

    rhos = [Rho.parse("0.1"), Rho.parse("0.05"), Rho.parse("0.3")]
    sens = 90.5
    measurements = [DiscreteGaussian.for_budget(sens, r)._measurement() for r in rhos]
    composition: Any = dp.c.make_composition(measurements)
    opendp_total = composition.map(sens)
    assert compose(rhos) == Rho.parse("0.45")
    assert opendp_total == pytest.approx(0.45, rel=1e-9)
    assert opendp_total <= 0.45 + 1e-12  # each part was calibrated not to exceed its share
