"""The eleven latent audience segments and what each one changes in behaviour.

Modelled on the revised Culturele Doelgroepenmodel (Rotterdam, 2021): eleven segments grouped in
three engagement tiers (intensive, medium, light). The tier of a segment fixes how often its
members book (`population.engagement_tiers` of simulation.yaml); the segment itself drives which
disciplines people choose, their age, how far they travel and a few habits (channel, group size,
discounts, how early they book). Those habits are what a k-means over customer features can find
back, which is why every segment differs from the others in more than one feature.

The segment names follow the published model where the domain notes name a segment; the others
are descriptive labels of our own. All numbers in this module are modelling assumptions (they
are not in simulation.yaml): affinities are relative weights, multipliers are relative to the
sector average (1.0) and are normalised so that the sector-wide mixes of simulation.yaml hold.
Age profiles are taken from `age_band_shares_of_bookers` of the YAML, sharpened per segment
(`Segment.age_power`) because a discipline's audience is a blend of several segments.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from protocols.vocabulary import DISCIPLINES
from synthetic.params import SimulationParams

FloatArray = npt.NDArray[np.float64]

TIERS: Final[tuple[str, ...]] = ("intensive", "medium", "light")

# Affinity of a discipline a segment does not mention, relative to the ones it does.
_BASE_AFFINITY: Final[float] = 0.4


@dataclass(frozen=True, slots=True)
class Segment:
    code: int
    name: str
    tier: str
    within_tier_share: float
    affinity: Mapping[str, float]  # relative weight per discipline; missing = _BASE_AFFINITY
    age_family: str | None  # key of age_band_shares_of_bookers, or None with age_override
    distance: float  # multiplier on the institution's median travel distance
    cross_visit: float  # multiplier on the chance to use a second institution
    box_office: float  # multiplier on box-office and phone orders
    discount: float  # multiplier on discounted price types
    subscription: float  # multiplier on subscriptions and friend/member prices
    lead_time: float  # multiplier on the booking lead time
    group: tuple[float, ...]  # multipliers on the tickets-per-order bins (1, 2, 3, 4, 5-10, >10)
    # A segment's age profile is the YAML profile of `age_family` raised to `age_power` and
    # renormalised: a discipline's audience is a blend of segments, so the segments that define
    # it must be more extreme than the blend. Powers were tuned until bookers' age shares by
    # discipline landed near the YAML (the realism report shows both).
    age_power: float = 1.0
    age_override: tuple[float, float, float, float] | None = field(default=None)


SEGMENTS: Final[tuple[Segment, ...]] = (
    Segment(
        0,
        "culturele_alleseters",
        "intensive",
        0.40,
        {
            "toneel": 1.6,
            "dans": 1.6,
            "literatuur_lezing": 1.6,
            "klassieke_muziek": 1.3,
            "opera_muziektheater": 1.3,
            "film": 1.3,
            "museum_tentoonstelling": 1.3,
            "erfgoed": 1.2,
            "populaire_muziek": 0.6,
            "festival_multidisciplinair": 0.8,
            "cabaret_kleinkunst": 1.0,
        },
        "museum",
        distance=1.5,
        cross_visit=2.2,
        box_office=0.8,
        discount=0.8,
        subscription=1.3,
        lead_time=1.2,
        group=(1.3, 1.1, 0.8, 0.6, 0.5, 0.3),
        age_power=1.0,
    ),
    Segment(
        1,
        "klassieke_cultuurliefhebbers",
        "intensive",
        0.35,
        {
            "klassieke_muziek": 6.0,
            "opera_muziektheater": 5.0,
            "dans": 1.2,
            "museum_tentoonstelling": 0.8,
            "erfgoed": 0.8,
            "toneel": 1.0,
            "populaire_muziek": 0.1,
            "festival_multidisciplinair": 0.1,
        },
        "classical_opera",
        distance=1.3,
        cross_visit=1.2,
        box_office=1.8,
        discount=1.1,
        subscription=2.5,
        lead_time=1.6,
        group=(1.0, 1.4, 0.5, 0.5, 0.3, 0.3),
        age_power=3.0,
    ),
    Segment(
        2,
        "weelderige_cultuurminnaars",
        "intensive",
        0.25,
        {
            "toneel": 3.0,
            "musical_operette": 3.0,
            "opera_muziektheater": 2.5,
            "cabaret_kleinkunst": 2.0,
            "klassieke_muziek": 2.0,
            "museum_tentoonstelling": 1.5,
            "dans": 1.5,
            "populaire_muziek": 0.2,
            "festival_multidisciplinair": 0.2,
        },
        "toneel_cabaret_musical",
        distance=1.2,
        cross_visit=1.2,
        box_office=1.0,
        discount=0.4,
        subscription=2.0,
        lead_time=1.4,
        group=(0.4, 1.3, 0.8, 1.4, 0.8, 0.4),
        age_power=1.5,
    ),
    Segment(
        3,
        "stedelijke_podiumbezoekers",
        "medium",
        0.30,
        {
            "toneel": 3.0,
            "cabaret_kleinkunst": 2.5,
            "dans": 2.0,
            "literatuur_lezing": 2.0,
            "populaire_muziek": 0.8,
            "film": 1.2,
            "overig": 1.2,
        },
        "toneel_cabaret_musical",
        distance=0.8,
        cross_visit=1.0,
        box_office=0.7,
        discount=1.0,
        subscription=1.3,
        lead_time=0.9,
        group=(1.8, 1.0, 0.8, 0.6, 0.5, 0.5),
        age_power=1.0,
    ),
    Segment(
        4,
        "nieuwsgierige_toekomstgrijpers",
        "medium",
        0.25,
        {
            "populaire_muziek": 3.0,
            "festival_multidisciplinair": 3.0,
            "dans": 2.0,
            "film": 2.0,
            "overig": 1.5,
            "museum_tentoonstelling": 1.2,
            "klassieke_muziek": 0.2,
            "opera_muziektheater": 0.2,
        },
        "popular_music",
        distance=0.9,
        cross_visit=1.0,
        box_office=0.4,
        discount=1.8,
        subscription=0.3,
        lead_time=0.6,
        group=(1.0, 1.0, 1.2, 1.2, 1.2, 0.8),
        age_power=3.0,
    ),
    Segment(
        5,
        "film_en_museumliefhebbers",
        "medium",
        0.25,
        {
            "film": 5.0,
            "museum_tentoonstelling": 3.5,
            "erfgoed": 2.5,
            "literatuur_lezing": 1.5,
            "populaire_muziek": 0.3,
            "festival_multidisciplinair": 0.3,
        },
        "museum",
        distance=0.8,
        cross_visit=1.0,
        box_office=1.0,
        discount=1.0,
        subscription=1.0,
        lead_time=0.7,
        group=(1.6, 1.0, 0.7, 0.6, 0.5, 0.5),
        age_power=1.0,
    ),
    Segment(
        6,
        "proevende_buitenwijkers",
        "medium",
        0.20,
        {
            "musical_operette": 4.0,
            "cabaret_kleinkunst": 3.0,
            "populaire_muziek": 1.0,
            "jeugd_familie": 1.5,
            "toneel": 1.2,
        },
        "toneel_cabaret_musical",
        distance=1.6,
        cross_visit=0.8,
        box_office=0.9,
        discount=0.9,
        subscription=0.7,
        lead_time=1.2,
        group=(0.4, 0.9, 1.5, 2.0, 1.8, 1.5),
        age_power=1.0,
    ),
    Segment(
        7,
        "actieve_vermaakvangers",
        "light",
        0.30,
        {
            "populaire_muziek": 4.0,
            "festival_multidisciplinair": 4.0,
            "musical_operette": 1.5,
            "cabaret_kleinkunst": 1.5,
            "film": 1.0,
            "klassieke_muziek": 0.1,
            "opera_muziektheater": 0.1,
        },
        "popular_music",
        distance=1.2,
        cross_visit=0.8,
        box_office=0.5,
        discount=1.3,
        subscription=0.2,
        lead_time=0.6,
        group=(0.7, 1.0, 1.3, 1.4, 1.5, 1.2),
        age_power=2.5,
    ),
    Segment(
        8,
        "lokale_vrijetijdsgenieters",
        "light",
        0.30,
        {
            "amateur": 4.0,
            "jeugd_familie": 2.0,
            "cabaret_kleinkunst": 2.0,
            "film": 2.0,
            "overig": 2.0,
            "erfgoed": 1.5,
        },
        "film",
        distance=0.5,
        cross_visit=0.6,
        box_office=1.8,
        discount=1.2,
        subscription=0.6,
        lead_time=0.7,
        group=(1.0, 1.1, 1.0, 1.0, 1.0, 1.0),
        age_power=1.0,
    ),
    Segment(
        9,
        "kinderrijke_gezinnen",
        "light",
        0.20,
        {
            "jeugd_familie": 6.0,
            "museum_tentoonstelling": 2.5,
            "musical_operette": 2.0,
            "erfgoed": 1.5,
            "film": 1.5,
            "klassieke_muziek": 0.2,
        },
        None,
        distance=1.0,
        cross_visit=0.6,
        box_office=0.8,
        discount=1.5,
        subscription=0.4,
        lead_time=1.0,
        group=(0.2, 0.6, 2.0, 3.0, 2.5, 1.5),
        age_override=(0.12, 0.58, 0.22, 0.08),
    ),
    Segment(
        10,
        "klassieke_gelegenheidsbezoekers",
        "light",
        0.20,
        {
            "klassieke_muziek": 4.0,
            "opera_muziektheater": 3.0,
            "musical_operette": 2.0,
            "museum_tentoonstelling": 1.0,
            "erfgoed": 1.0,
            "populaire_muziek": 0.2,
        },
        "classical_opera",
        distance=1.0,
        cross_visit=0.6,
        box_office=1.5,
        discount=1.0,
        subscription=0.6,
        lead_time=1.3,
        group=(0.7, 1.3, 0.8, 0.9, 0.8, 0.6),
        age_power=2.0,
    ),
)

N_SEGMENTS: Final[int] = len(SEGMENTS)


def tier_index(name: str) -> int:
    return TIERS.index(name)


def segment_tier() -> npt.NDArray[np.int64]:
    """Tier index (into TIERS) of every segment."""
    return np.asarray([tier_index(s.tier) for s in SEGMENTS], dtype=np.int64)


def affinity_matrix() -> FloatArray:
    """segments x DISCIPLINES relative affinities."""
    m = np.full((N_SEGMENTS, len(DISCIPLINES)), _BASE_AFFINITY)
    for s in SEGMENTS:
        for discipline, weight in s.affinity.items():
            m[s.code, DISCIPLINES.index(discipline)] = weight
    return m


def age_profiles(params: SimulationParams) -> FloatArray:
    """segments x 4 age-band probabilities (18-34, 35-49, 50-64, 65+)."""
    rows = []
    for s in SEGMENTS:
        if s.age_override is not None:
            p = np.asarray(s.age_override, dtype=np.float64)
        else:
            assert s.age_family is not None
            p = np.asarray(params.age_band_shares[s.age_family], dtype=np.float64) ** s.age_power
        rows.append(p / p.sum())
    return np.vstack(rows)


def population_segment_shares(params: SimulationParams) -> FloatArray:
    """Share of each segment in the population: tier share times within-tier share."""
    shares = np.asarray(
        [params.population.tier(s.tier).share * s.within_tier_share for s in SEGMENTS]
    )
    return np.asarray(shares / shares.sum(), dtype=np.float64)


def booking_weights(params: SimulationParams) -> FloatArray:
    """Share of all bookings made by each segment (population share times tier lambda).

    Used to normalise the behaviour multipliers so that their booking-weighted mean is 1 and the
    sector-wide mixes of simulation.yaml (channels, price types, group sizes) survive them.
    """
    w = population_segment_shares(params) * np.asarray(
        [params.population.tier(s.tier).bookings_lambda for s in SEGMENTS]
    )
    return np.asarray(w / w.sum(), dtype=np.float64)


def normalised(values: FloatArray, weights: FloatArray) -> FloatArray:
    """`values` (segments first) scaled so that their `weights`-average is 1 per column."""
    mean = np.tensordot(weights, values, axes=(0, 0))
    return np.asarray(values / mean, dtype=np.float64)


def check_segments(params: SimulationParams) -> None:
    """Fail loudly when the YAML and the segment table disagree."""
    if params.population.latent_segments != N_SEGMENTS:
        raise ValueError(
            f"simulation.yaml asks for {params.population.latent_segments} latent segments; "
            f"synthetic/segments.py defines {N_SEGMENTS}"
        )
    yaml_tiers = tuple(t.name for t in params.population.tiers)
    if sorted(yaml_tiers) != sorted(TIERS):
        raise ValueError(f"simulation.yaml tiers {yaml_tiers} are not {TIERS}")
    for tier in TIERS:
        total = sum(s.within_tier_share for s in SEGMENTS if s.tier == tier)
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"within-tier shares of {tier} sum to {total}")
    for s in SEGMENTS:
        if s.age_family is not None and s.age_family not in params.age_band_shares:
            raise ValueError(f"segment {s.name}: unknown age family {s.age_family}")
        unknown = set(s.affinity) - set(DISCIPLINES)
        if unknown:
            raise ValueError(f"segment {s.name}: unknown disciplines {sorted(unknown)}")
