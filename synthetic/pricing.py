"""Prices: base prices per performance and what each price type and price zone pays.

From simulation.yaml: the mean and standard deviation of the price by discipline family
(`price_eur_mean_sd`) and the price type mix (`price_type_mix`). Assumptions of this module: which
family each discipline belongs to, the discounts of the price types, and the price zones.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from protocols.vocabulary import DISCIPLINES, INSTITUTION_TYPES, PRICE_TYPES
from synthetic.params import SimulationParams

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# Discipline -> key of price_eur_mean_sd. A Flemish cultural centre prices all its stage
# disciplines with the "be_cc" family instead.
PRICE_FAMILY: Final[dict[str, str]] = {
    "toneel": "toneel_cabaret",
    "cabaret_kleinkunst": "toneel_cabaret",
    "musical_operette": "musical",
    "opera_muziektheater": "opera_classical",
    "dans": "toneel_cabaret",
    "klassieke_muziek": "opera_classical",
    "populaire_muziek": "pop",
    "jeugd_familie": "toneel_cabaret",
    "amateur": "toneel_cabaret",
    "film": "film",
    "museum_tentoonstelling": "museum",
    "erfgoed": "museum",
    "literatuur_lezing": "toneel_cabaret",
    "festival_multidisciplinair": "pop",
    "overig": "toneel_cabaret",
}
BE_CC_FAMILY: Final[str] = "be_cc"
_NOT_BE_CC: Final[frozenset[str]] = frozenset({"film", "museum_tentoonstelling", "erfgoed"})

# Cheaper disciplines inside a family (amateur companies, children's shows, talks).
DISCIPLINE_PRICE_FACTOR: Final[dict[str, float]] = {
    "amateur": 0.55,
    "jeugd_familie": 0.6,
    "literatuur_lezing": 0.6,
}

# What a ticket of each price type pays, relative to the full price of its seat. A pass ticket
# ("pass_flat": Museumkaart, Cineville, CJP) is the flat amount the pass reimburses.
PRICE_TYPE_FACTOR: Final[dict[str, float]] = {
    "full": 1.0,
    "youth": 0.6,
    "senior": 0.9,
    "social": 0.25,
    "group": 0.85,
    "subscription": 0.85,
    "member_friend": 0.85,
    "pass_flat": 0.55,
    "complimentary": 0.0,
    "other_discount": 0.8,
}

# Price zones of stage venues ("1" is the best seats) with their share of seats and price factor.
PRICE_ZONES: Final[tuple[str, ...]] = ("1", "2", "3")
PRICE_ZONE_SHARE: Final[tuple[float, ...]] = (0.30, 0.45, 0.25)
PRICE_ZONE_FACTOR: Final[tuple[float, ...]] = (1.15, 1.0, 0.8)

# Box-office prices end in whole or half euros.
PRICE_STEP_EUR: Final[float] = 0.5
MIN_BASE_PRICE_EUR: Final[float] = 2.5


def family_of(discipline: str, institution_type: str) -> str:
    if institution_type == "be_cultural_centre" and discipline not in _NOT_BE_CC:
        return BE_CC_FAMILY
    return PRICE_FAMILY[discipline]


def draw_base_prices(
    disciplines: IntArray,
    institution_types: IntArray,
    params: SimulationParams,
    rng: np.random.Generator,
) -> FloatArray:
    """Full price of the standard seat for each performance.

    `disciplines` index DISCIPLINES and `institution_types` index INSTITUTION_TYPES. Prices are
    log-normal with the YAML's mean and standard deviation of the family (moment-matched, so
    they are positive), rounded to half euros.
    """
    shape = (len(INSTITUTION_TYPES), len(DISCIPLINES))
    mean_table, sd_table = np.empty(shape), np.empty(shape)
    for t, institution_type in enumerate(INSTITUTION_TYPES):
        for d, discipline in enumerate(DISCIPLINES):
            m, s = params.price_mean_sd[family_of(discipline, institution_type)]
            mean_table[t, d], sd_table[t, d] = m, s
    factor_table = np.asarray([DISCIPLINE_PRICE_FACTOR.get(d, 1.0) for d in DISCIPLINES])
    mean = mean_table[institution_types, disciplines]
    sd = sd_table[institution_types, disciplines]
    sigma2 = np.log1p((sd / mean) ** 2)
    z = rng.standard_normal(len(disciplines))
    price = np.exp(np.log(mean) - sigma2 / 2.0 + np.sqrt(sigma2) * z) * factor_table[disciplines]
    price = np.round(price / PRICE_STEP_EUR) * PRICE_STEP_EUR
    return np.asarray(np.maximum(price, MIN_BASE_PRICE_EUR), dtype=np.float64)


def price_type_factors() -> FloatArray:
    return np.asarray([PRICE_TYPE_FACTOR[t] for t in PRICE_TYPES], dtype=np.float64)
