"""Turning the generated arrays into the canonical tables (polars) and the truth tables.

Identifiers look like a ticketing system's: per institution, orders and tickets are numbered in
the order they were sold from an institution-specific starting number ("O" + 8 digits, "T" + 9
digits); customers have random institution-specific numbers ("C" + 7 digits); performances are
numbered by start time ("P" + 6 digits). The same person therefore has unrelated identifiers at
different institutions, as in reality.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import polars as pl

from protocols.geography import REGION_CODES
from protocols.vocabulary import CHANNELS, DISCIPLINES, ORDER_STATUSES, PRICE_TYPES
from synthetic.geography import to_latlon
from synthetic.identity import Accounts, PersonIdentity
from synthetic.institutions import InstitutionPlan
from synthetic.orders import Orders, Tickets
from synthetic.params import SimulationParams
from synthetic.performances import Programme
from synthetic.population import Population
from synthetic.pricing import PRICE_ZONES
from synthetic.schema import TRUTH_TICKET_SCHEMA
from synthetic.segments import SEGMENTS, TIERS

IntArray = npt.NDArray[np.int64]

_ORDER_NUMBER_BASE: Final[tuple[int, int]] = (10_000_000, 40_000_000)
_TICKET_NUMBER_BASE: Final[tuple[int, int]] = (100_000_000, 400_000_000)
# Labels of the optional pass_type and membership_type columns.
PASS_TYPES: Final[tuple[str, ...]] = ("museumkaart", "cineville", "cjp", "uitpas", "stadspas")
MEMBERSHIP_TYPES: Final[tuple[str, ...]] = ("vriend", "abonnee")
# Dutch youth tickets bought with a CJP pass carry the pass label.
CJP_SHARE_OF_NL_YOUTH: Final[float] = 0.4


@dataclass(frozen=True, slots=True)
class Tables:
    tickets: pl.DataFrame  # TRUTH_TICKET_SCHEMA, sorted by institution, order time, ticket id
    people: pl.DataFrame
    accounts: pl.DataFrame
    performances: pl.DataFrame


def _labels(vocabulary: tuple[str, ...], codes: npt.ArrayLike) -> pl.Series:
    return pl.Series(list(vocabulary), dtype=pl.String).gather(np.asarray(codes))


def _labels_or_null(vocabulary: tuple[str, ...], codes: IntArray) -> pl.Series:
    """Like `_labels`, with null where the code is negative."""
    index = pl.Series(codes, dtype=pl.Int64)
    index = pl.select(pl.when(index >= 0).then(index)).to_series()
    return pl.Series(list(vocabulary), dtype=pl.String).gather(index)


def _rank_within(group: IntArray, order: IntArray) -> IntArray:
    """Position of each item within its group, following the permutation `order`."""
    ranked = np.empty(len(order), dtype=np.int64)
    g = group[order]
    first = np.searchsorted(g, g, side="left")
    ranked[order] = np.arange(len(order)) - first
    return ranked


def _seconds_to_datetime(seconds: IntArray) -> pl.Series:
    return pl.from_epoch(pl.Series(seconds, dtype=pl.Int64), time_unit="s")


def _prefixed(prefix: str, numbers: IntArray, width: int) -> pl.Series:
    """Identifiers such as "T123456789": a prefix and a zero-padded number."""
    text = pl.Series(numbers, dtype=pl.Int64).cast(pl.String)
    if len(numbers) and int(np.min(numbers)) < 10 ** (width - 1):
        text = text.str.zfill(width)
    return pl.select(pl.lit(prefix) + pl.lit(text)).to_series()


def build_tables(
    plans: tuple[InstitutionPlan, ...],
    population: Population,
    programme: Programme,
    orders: Orders,
    tickets: Tickets,
    identities: PersonIdentity,
    accounts: Accounts,
    params: SimulationParams,
    rng: np.random.Generator,
) -> Tables:
    n_inst = len(plans)
    inst_ids = [p.institution.institution_id for p in plans]
    inst_types = np.asarray([p.institution.type for p in plans])
    inst_country = np.asarray([p.institution.country for p in plans])

    # Orders are numbered per institution in the order they were placed.
    order_sort = np.lexsort((np.arange(len(orders)), orders.ordered_at, orders.institution))
    order_rank = _rank_within(orders.institution, order_sort)
    order_base = rng.integers(*_ORDER_NUMBER_BASE, size=n_inst)
    order_number = order_base[orders.institution] + order_rank
    global_position = np.empty(len(orders), dtype=np.int64)
    global_position[order_sort] = np.arange(len(orders))

    ticket_sort = np.argsort(global_position[tickets.order], kind="stable")
    t_order = tickets.order[ticket_sort]
    t_inst = orders.institution[t_order]
    ticket_rank = _rank_within(t_inst, np.arange(len(t_order)))
    ticket_base = rng.integers(*_TICKET_NUMBER_BASE, size=n_inst)
    ticket_number = ticket_base[t_inst] + ticket_rank

    price_type = tickets.price_type[ticket_sort]
    perf = orders.performance[t_order]
    account = accounts.of_order[t_order]
    has_account = account >= 0
    acc = np.maximum(account, 0)
    venue_offsets = np.cumsum([0] + [len(p.institution.venue_ids) for p in plans])
    venue_ids = [v for p in plans for v in p.institution.venue_ids]
    venue = venue_offsets[programme.institution[perf]] + programme.venue[perf]

    pass_type = np.full(len(t_order), -1, dtype=np.int64)
    is_pass = price_type == PRICE_TYPES.index("pass_flat")
    t_type = inst_types[t_inst]
    t_be = inst_country[t_inst] == "BE"
    museum, cineville, cjp, uitpas, stadspas = (PASS_TYPES.index(p) for p in PASS_TYPES)
    pass_type[is_pass] = np.where(
        t_type[is_pass] == "museum",
        museum,
        np.where(t_type[is_pass] == "filmhuis", cineville, np.where(t_be[is_pass], uitpas, cjp)),
    )
    social = price_type == PRICE_TYPES.index("social")
    pass_type[social] = np.where(t_be[social], uitpas, stadspas)
    youth_cjp = (
        (price_type == PRICE_TYPES.index("youth"))
        & ~t_be
        & (rng.random(len(t_order)) < CJP_SHARE_OF_NL_YOUTH)
    )
    pass_type[youth_cjp] = cjp
    membership = np.full(len(t_order), -1, dtype=np.int64)
    membership[price_type == PRICE_TYPES.index("member_friend")] = MEMBERSHIP_TYPES.index("vriend")
    membership[price_type == PRICE_TYPES.index("subscription")] = MEMBERSHIP_TYPES.index("abonnee")
    zone = orders.zone[t_order]

    anonymous_null = pl.Series(has_account)
    customer_ids = _prefixed("C", accounts.customer_number, 7)
    performance_ids = _prefixed("P", programme.number, 6)
    frame = pl.DataFrame(
        {
            "institution_id": _labels(tuple(inst_ids), t_inst),
            "ticket_id": _prefixed("T", ticket_number, 9),
            "order_id": _prefixed("O", order_number, 8).gather(t_order),
            "customer_id": customer_ids.gather(acc),
            "order_datetime": _seconds_to_datetime(orders.ordered_at[t_order]),
            "order_status": _labels(ORDER_STATUSES, orders.status[t_order]),
            "channel": _labels(CHANNELS, orders.channel[t_order]),
            "performance_id": performance_ids.gather(perf),
            "performance_start": _seconds_to_datetime(programme.start[perf]),
            "venue_id": _labels(tuple(venue_ids), venue),
            "discipline": _labels(DISCIPLINES, programme.discipline[perf]),
            "price_type": _labels(PRICE_TYPES, price_type),
            "price_paid_eur": tickets.price[ticket_sort],
            "attended": tickets.attended[ticket_sort],
            "is_subscription": price_type == PRICE_TYPES.index("subscription"),
            "postcode": accounts.postcode.gather(acc),
            "country": accounts.country.gather(acc),
            "birth_year": accounts.birth_year.gather(acc),
            "email": accounts.email.gather(acc),
            "pass_type": _labels_or_null(PASS_TYPES, pass_type),
            "membership_type": _labels_or_null(MEMBERSHIP_TYPES, membership),
            "price_zone": _labels_or_null(PRICE_ZONES, zone),
            "person_id": orders.person[t_order] + 1,
        }
    )
    # Walk-ins have no account: nothing identifies them, not even in the truth.
    identity_columns = ("customer_id", "postcode", "country", "birth_year", "email", "person_id")
    frame = frame.with_columns(
        [pl.when(anonymous_null).then(pl.col(c)).alias(c) for c in identity_columns]
    ).select(list(TRUTH_TICKET_SCHEMA))
    frame = frame.cast(TRUTH_TICKET_SCHEMA)
    paid = orders.status[t_order] == ORDER_STATUSES.index("paid")
    sold = np.bincount(venue[paid], minlength=len(venue_ids))

    return Tables(
        tickets=frame,
        people=_people(plans, population, identities),
        accounts=_accounts(inst_ids, accounts, customer_ids),
        performances=_performances(
            plans, programme, performance_ids, sold, venue_ids, venue_offsets, params
        ),
    )


def _people(
    plans: tuple[InstitutionPlan, ...], population: Population, identities: PersonIdentity
) -> pl.DataFrame:
    lat, lon = to_latlon(population.x, population.y)
    return pl.DataFrame(
        {
            "person_id": np.arange(1, population.n_people + 1, dtype=np.int64),
            "latent_segment": population.segment.astype(np.int64),
            "segment_name": _labels(tuple(s.name for s in SEGMENTS), population.segment),
            "engagement_tier": _labels(TIERS, population.tier),
            "birth_year": population.birth_year.astype(np.int64),
            "home_region": _labels(REGION_CODES, population.region),
            "home_postcode_area": identities.area.astype(np.int64),
            "home_postcode": identities.postcode,
            "country": pl.Series(population.country(), dtype=pl.String),
            "email": identities.email,
            "lat": np.round(lat, 5),
            "lon": np.round(lon, 5),
            "home_institution_id": _labels(
                tuple(p.institution.institution_id for p in plans), population.home_institution
            ),
        }
    )


def _accounts(inst_ids: list[str], accounts: Accounts, customer_ids: pl.Series) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "institution_id": _labels(tuple(inst_ids), accounts.institution),
            "customer_id": customer_ids,
            "person_id": accounts.person + 1,
            "is_duplicate": accounts.duplicate,
        }
    ).sort("institution_id", "customer_id")


def _performances(
    plans: tuple[InstitutionPlan, ...],
    programme: Programme,
    performance_ids: pl.Series,
    sold: IntArray,
    venue_ids: list[str],
    venue_offsets: IntArray,
    params: SimulationParams,
) -> pl.DataFrame:
    """The programme with a capacity per stage venue.

    A stage venue's capacity is set so that its sold (paid) tickets over the configured years
    fill it at the YAML's mean occupancy; film houses, museums and festivals get no capacity (a
    screening room or a museum timeslot is not what occupancy statistics are about).
    """
    inst_ids = [p.institution.institution_id for p in plans]
    venue = venue_offsets[programme.institution] + programme.venue
    stage = programme.is_stage
    shows = np.bincount(venue[stage], minlength=len(venue_ids))
    capacity = np.maximum(
        1, np.round(sold / np.maximum(params.institutions.occupancy_mean * shows, 1e-12))
    ).astype(np.int64)
    capacity_index = pl.Series(np.where(stage, venue, -1), dtype=pl.Int64)
    capacity_index = pl.select(pl.when(capacity_index >= 0).then(capacity_index)).to_series()
    return pl.DataFrame(
        {
            "institution_id": _labels(tuple(inst_ids), programme.institution),
            "performance_id": performance_ids,
            "venue_id": _labels(tuple(venue_ids), venue),
            "performance_start": _seconds_to_datetime(programme.start),
            "discipline": _labels(DISCIPLINES, programme.discipline),
            "base_price_eur": programme.base_price,
            "capacity": pl.Series(capacity, dtype=pl.Int64).gather(capacity_index),
        }
    ).sort("institution_id", "performance_id")
