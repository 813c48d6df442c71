"""Privacy budgets as exact, validated values.

publiek accounts in zero-concentrated DP (zCDP, Bun & Steinke 2016): a loss is one number rho,
and rhos of successive releases add up exactly. We keep rho as a ``Fraction`` so that a node's
ledger never drifts by float rounding (a thousand releases of "0.001" sum to exactly 1), and we
parse it from decimal strings so a plan's declared cost is what gets charged, to the last digit.
(epsilon, delta) exists only for display, converted by OpenDP.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from functools import total_ordering
from typing import Any

from privacy._opendp import dp

# A plan that asks for more digits than this is not a human choice; refusing keeps the exact
# arithmetic cheap and the ledger readable.
_MAX_DIGITS = 30
# Nobody sane releases at rho above this; it also bounds the Fraction arithmetic.
MAX_RHO = Fraction(1000)
# Nor below this (other than 0): the noise would drown any count, and its scale (above 10^13 for
# the largest contribution bounds) would saturate 64-bit integers. Applies to what is parsed
# from a plan, a configuration or the wire, not to remainders computed here.
MIN_RHO = Fraction(1, 10**12)


class InvalidBudget(ValueError):
    """A privacy parameter that is not a finite, non-negative, well-formed number."""


@total_ordering
@dataclass(frozen=True, slots=True)
class Rho:
    """A zCDP privacy loss. Immutable; construct with ``Rho.parse("0.05")`` or ``Rho(Fraction)``."""

    value: Fraction

    def __post_init__(self) -> None:
        if not isinstance(self.value, Fraction):
            raise InvalidBudget(f"rho must be a Fraction, not {type(self.value).__name__}")
        if self.value < 0:
            raise InvalidBudget(f"rho must be non-negative, got {self.value}")
        if self.value > MAX_RHO:
            raise InvalidBudget(f"rho {self} exceeds the sanity limit {MAX_RHO}")

    @classmethod
    def parse(cls, text: str) -> Rho:
        """Parse an exact decimal ("0.05", "1e-3") or a fraction ("1/20")."""
        if not isinstance(text, str) or not text.strip():
            raise InvalidBudget("rho must be a non-empty decimal string such as '0.05'")
        raw = text.strip()
        if len(raw) > _MAX_DIGITS + 10:
            raise InvalidBudget(f"rho {raw[:20]}... has too many characters")
        try:
            if "/" in raw:
                num, _, den = raw.partition("/")
                value = Fraction(int(num), int(den))
            else:
                dec = Decimal(raw)
                if not dec.is_finite():
                    raise InvalidBudget(f"rho must be finite, got {raw!r}")
                if len(dec.as_tuple().digits) > _MAX_DIGITS:
                    raise InvalidBudget(f"rho {raw!r} has more than {_MAX_DIGITS} digits")
                value = Fraction(dec)
        except (ValueError, ZeroDivisionError, InvalidOperation) as err:
            raise InvalidBudget(f"rho {raw!r} is not a number like '0.05'") from err
        if 0 < value < MIN_RHO:
            raise InvalidBudget(
                f"rho {raw} is below the sanity floor 1e-12: its noise would drown any count"
            )
        return cls(value)

    @classmethod
    def zero(cls) -> Rho:
        return cls(Fraction(0))

    def __add__(self, other: Rho) -> Rho:
        if not isinstance(other, Rho):
            return NotImplemented
        return Rho(self.value + other.value)

    def __sub__(self, other: Rho) -> Rho:
        """Remaining budget; never negative (an overdraft is a bug worth failing on)."""
        if not isinstance(other, Rho):
            return NotImplemented
        return Rho(self.value - other.value)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Rho):
            return NotImplemented
        return self.value < other.value

    def __str__(self) -> str:
        """Exact decimal when it terminates (it does for every decimal input), else p/q."""
        den = self.value.denominator
        twos = fives = 0
        while den % 2 == 0:
            den //= 2
            twos += 1
        while den % 5 == 0:
            den //= 5
            fives += 1
        if den != 1:
            return f"{self.value.numerator}/{self.value.denominator}"
        places = max(twos, fives)
        scaled = self.value * 10**places
        return format(Decimal(int(scaled)).scaleb(-places), "f")

    @property
    def shown(self) -> str:
        """For people: the exact decimal when it terminates, else about 7 significant digits
        (a budget split three ways is 201871/60000000 exactly; ledgers keep ``str``)."""
        exact = str(self)
        return exact if "/" not in exact else f"≈{float(self.value):.7g}"

    def __float__(self) -> float:
        return float(self.value)

    def is_zero(self) -> bool:
        return self.value == 0

    def to_approx_dp(self, delta: float) -> ApproxDP:
        return ApproxDP(epsilon=epsilon_of(self, delta), delta=delta)


@dataclass(frozen=True, slots=True)
class ApproxDP:
    """(epsilon, delta), for display only. Never accounted in."""

    epsilon: float
    delta: float

    def __str__(self) -> str:
        return f"ε = {self.epsilon:.3g} at δ = {self.delta:.0e}"


def compose(losses: list[Rho]) -> Rho:
    """zCDP composes additively and exactly (Bun & Steinke 2016, Lemma 2.3)."""
    total = Rho.zero()
    for loss in losses:
        total = total + loss
    return total


def epsilon_of(rho: Rho, delta: float) -> float:
    """The smallest epsilon such that rho-zCDP implies (epsilon, delta)-DP, by OpenDP.

    OpenDP's conversion needs a measurement, so we build the Gaussian mechanism whose privacy
    map at sensitivity 1 is rho (its scale rounded down, so the map lands at or above rho: the
    displayed epsilon never understates the loss).
    """
    if not (0 < delta < 1):
        raise InvalidBudget(f"delta must be in (0, 1), got {delta}")
    if rho.is_zero():
        return 0.0
    scale = 1.0 / math.sqrt(2.0 * float(rho))
    while True:
        meas: Any = dp.m.make_gaussian(
            dp.atom_domain(T="i64"), dp.absolute_distance(T="f64"), scale
        )
        if meas.map(1.0) >= float(rho):
            break
        scale = math.nextafter(scale, 0.0)
    conversion: Any = dp.c.make_zCDP_to_approxDP(meas)
    profile = conversion.map(1.0)
    return float(profile.epsilon(delta))


def rho_for_epsilon(epsilon: float, delta: float, digits: int = 6) -> Rho:
    """The largest rho, rounded down to ``digits`` significant digits, whose conversion by
    ``epsilon_of`` (OpenDP) is at most ``epsilon`` at ``delta``: a budget stated as
    (epsilon, delta) per node, in the exact zCDP the ledgers account in."""
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise InvalidBudget(f"epsilon must be positive and finite, got {epsilon}")

    def fits(value: float) -> bool:
        return epsilon_of(Rho(Fraction(value)), delta) <= epsilon

    lo, hi = 0.0, max(1.0, epsilon)
    while fits(hi):
        hi *= 2.0
    for _ in range(60):
        mid = (lo + hi) / 2.0
        if fits(mid):
            lo = mid
        else:
            hi = mid
    if lo <= 0.0:
        raise InvalidBudget(f"epsilon {epsilon} at delta {delta} allows no positive rho")
    places = digits - math.floor(math.log10(lo)) - 1
    rounded = Rho(Fraction(math.floor(lo * 10**places), 10**places))
    assert epsilon_of(rounded, delta) <= epsilon
    return rounded
