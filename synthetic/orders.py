"""Orders and tickets: what each booking buys, when, through which channel and at what price.

From simulation.yaml: tickets per order (`tickets_per_order_pmf`), the channel mix, the booking
lead time (log-normal, median 21 days; `share_sold_at_season_launch` of a season institution's
orders are bought at the season launch with a median of 120 days), the price type mix and the
age bands. Assumptions of this module (named constants below): the spread of lead times, how
much shorter film and museum bookings are, the order status mix, attendance, the share of
anonymous walk-ins among box-office orders, and the pass and membership labels.

A booking first picks a discipline, from the institution's programme mix reweighted by the
person's segment (iterative proportional fitting keeps the institution's ticket shares at the
mix while segments keep their taste), then a performance of that discipline in that year,
weighted by its popularity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from protocols.vocabulary import CHANNELS, DISCIPLINES, ORDER_STATUSES, PRICE_TYPES
from synthetic import pmf
from synthetic.institutions import EDITION, SCREENINGS, TIMESLOTS, InstitutionPlan
from synthetic.params import SimulationParams
from synthetic.performances import Programme
from synthetic.population import Population
from synthetic.pricing import (
    PRICE_STEP_EUR,
    PRICE_ZONE_FACTOR,
    PRICE_ZONE_SHARE,
    price_type_factors,
)
from synthetic.segments import N_SEGMENTS, SEGMENTS, affinity_matrix, booking_weights, normalised

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

DAY: Final[int] = 86400

# Spread (sigma of the log) of lead times; the YAML gives only medians.
LEAD_SIGMA_LOG_SINGLE: Final[float] = 1.0
LEAD_SIGMA_LOG_SEASON: Final[float] = 0.35
MAX_LEAD_DAYS: Final[float] = 330.0
# Film and museum tickets are bought days, not weeks, ahead; festivals further ahead.
LEAD_FACTOR_BY_FORMAT: Final[dict[str, float]] = {SCREENINGS: 0.12, TIMESLOTS: 0.08, EDITION: 1.6}
# Anonymous walk-ins: this share of box-office orders has no customer account.
WALK_IN_SHARE_OF_BOX_OFFICE: Final[float] = 0.5
WALK_IN_MINUTES: Final[tuple[int, int]] = (5, 75)
# Order status of a booking (a walk-in is always paid).
STATUS_MIX: Final[dict[str, float]] = {
    "paid": 0.93,
    "refunded": 0.02,
    "cancelled": 0.02,
    "exchanged": 0.015,
    "reserved_unpaid": 0.015,
}
ATTENDANCE_OF_PAID: Final[float] = 0.9
# A second ticket in an order keeps the order's price type with this probability, else it is
# drawn afresh from the mix (a child with a youth ticket next to a parent's full one).
SAME_PRICE_TYPE_IN_ORDER: Final[float] = 0.8
# Age gates of age-bound discounts; the weights of a price type outside its age group are
# damped to this factor and raised inside it so the sector-wide share stays the YAML's.
YOUTH_MAX_AGE: Final[int] = 30
SENIOR_MIN_AGE: Final[int] = 65
OUT_OF_GROUP_DAMPING: Final[float] = 0.25
# Rounds of refitting price-type probabilities to the YAML mix (converges in a few).
PRICE_TYPE_FIT_ROUNDS: Final[int] = 8
# Age classes of the price-type cells, and how many cells there are.
_AGE_CLASSES: Final[tuple[str, ...]] = ("youth", "senior", "other")
_N_CELLS: Final[int] = N_SEGMENTS * len(_AGE_CLASSES) * 2 * 2
# Orders above this many tickets are group or school bookings.
GROUP_ORDER_MIN_TICKETS: Final[int] = 11
# Hour-of-day weights (0..23) of online orders; box office and phone follow opening hours.
_ONLINE_HOURS: Final[tuple[float, ...]] = (
    0.4, 0.2, 0.1, 0.05, 0.05, 0.1, 0.4, 1.0, 1.8, 2.6, 3.2, 3.6,
    3.8, 3.8, 3.6, 3.4, 3.4, 3.6, 4.2, 5.0, 5.4, 5.0, 3.6, 1.6,
)  # fmt: skip
_OFFICE_HOURS: Final[tuple[int, int]] = (10, 17)
_ONLINE_CHANNELS: Final[frozenset[str]] = frozenset(
    {"online_own", "reseller", "group_sales", "partner_pass"}
)


@dataclass(frozen=True, slots=True)
class Orders:
    link: IntArray  # index into the population's links
    person: IntArray
    institution: IntArray
    year: IntArray  # index into the config's years
    performance: IntArray  # index into the programme
    n_tickets: IntArray
    channel: IntArray  # index into CHANNELS
    price_type: IntArray  # index into PRICE_TYPES: the order's main price type
    status: IntArray  # index into ORDER_STATUSES
    anonymous: BoolArray
    ordered_at: IntArray  # seconds since the epoch
    zone: IntArray  # index into PRICE_ZONES, -1 where the venue has no zones

    def __len__(self) -> int:
        return len(self.link)


@dataclass(frozen=True, slots=True)
class Tickets:
    order: IntArray  # index into Orders
    seq: IntArray  # 0-based position of the ticket within its order
    price_type: IntArray
    price: FloatArray
    attended: BoolArray

    def __len__(self) -> int:
        return len(self.order)


def _categorical(cum: FloatArray, u: FloatArray) -> IntArray:
    """Inverse-CDF draws, one per row: `cum` holds each draw's cumulative probabilities."""
    k = (u[:, None] > cum).sum(axis=1)
    return np.asarray(np.minimum(k, cum.shape[1] - 1), dtype=np.int64)


def _ipf(seed: FloatArray, rows: FloatArray, cols: FloatArray, rounds: int = 60) -> FloatArray:
    """Iterative proportional fitting of `seed` to row and column sums."""
    table = seed.copy()
    for _ in range(rounds):
        table *= (rows / np.maximum(table.sum(axis=1), 1e-300))[:, None]
        table *= (cols / np.maximum(table.sum(axis=0), 1e-300))[None, :]
    return table


def _discipline_table(
    plans: tuple[InstitutionPlan, ...], institution: IntArray, segment: IntArray
) -> FloatArray:
    """Cumulative P(discipline | institution, segment), shape (institutions * segments, 15)."""
    aff = affinity_matrix()
    out = np.zeros((len(plans) * N_SEGMENTS, len(DISCIPLINES)))
    orders_by = np.bincount(
        institution * N_SEGMENTS + segment, minlength=len(plans) * N_SEGMENTS
    ).reshape(len(plans), N_SEGMENTS)
    for plan in plans:
        mix = plan.discipline_mix
        rows = orders_by[plan.index].astype(np.float64)
        seed = aff * (mix > 0)[None, :]
        fitted = _ipf(seed, rows / rows.sum(), mix) if rows.sum() > 0 else seed
        cond = fitted / np.maximum(fitted.sum(axis=1, keepdims=True), 1e-300)
        # Segments without orders here still need a valid row (never used).
        cond[rows == 0] = mix
        out[plan.index * N_SEGMENTS : (plan.index + 1) * N_SEGMENTS] = np.cumsum(cond, axis=1)
    return out


def _choose_performances(
    programme: Programme,
    n_years: int,
    institution: IntArray,
    year: IntArray,
    discipline: IntArray,
    rng: np.random.Generator,
) -> IntArray:
    """A performance of the given institution, year and discipline, weighted by popularity."""
    n_d = len(DISCIPLINES)
    perf_key = (programme.institution * n_years + programme.year) * n_d + programme.discipline
    order = np.argsort(perf_key, kind="stable")
    sorted_key = perf_key[order]
    cum = np.cumsum(programme.popularity[order])
    key = (institution * n_years + year) * n_d + discipline
    lo = np.searchsorted(sorted_key, key, side="left")
    hi = np.searchsorted(sorted_key, key, side="right")
    if np.any(hi <= lo):
        raise RuntimeError("a booking found no performance of its discipline (programme bug)")
    before = np.where(lo > 0, cum[np.maximum(lo - 1, 0)], 0.0)
    total = cum[hi - 1] - before
    pos = np.searchsorted(cum, before + rng.random(len(key)) * total, side="right")
    return order[np.clip(pos, lo, hi - 1)]


def _group_table(params: SimulationParams) -> FloatArray:
    """Cumulative tickets-per-order distribution per segment (segments x 0..OPEN_BIN_MAX)."""
    bins = params.orders.tickets_per_order
    base = np.asarray([b.probability for b in bins])
    tilt = normalised(np.asarray([s.group for s in SEGMENTS]), booking_weights(params))
    return np.vstack([np.cumsum(pmf.expand(bins, base * tilt[k])) for k in range(N_SEGMENTS)])


def _channel_table(params: SimulationParams) -> FloatArray:
    base = np.asarray([params.orders.channel_mix.get(c, 0.0) for c in CHANNELS])
    offline = np.asarray([c in ("box_office", "phone") for c in CHANNELS])
    mult = np.ones((N_SEGMENTS, len(CHANNELS)))
    mult[:, offline] = np.asarray([s.box_office for s in SEGMENTS])[:, None]
    mult = normalised(mult, booking_weights(params))
    table = base[None, :] * mult
    return np.cumsum(table / table.sum(axis=1, keepdims=True), axis=1)


def _age_boost(in_group: BoolArray, share: float) -> FloatArray:
    """Weights that favour rows inside an age group (`share` of all orders) with mean 1."""
    if share <= 0.0:
        return np.ones(len(in_group))
    inside = (1.0 - OUT_OF_GROUP_DAMPING * (1.0 - share)) / share
    return np.where(in_group, inside, OUT_OF_GROUP_DAMPING)


def _price_type_table(
    params: SimulationParams,
    orders_per_cell: FloatArray,
    tickets_per_cell: FloatArray,
) -> FloatArray:
    """P(price type) for every cell (segment, age class, season, walk-in); see `_cell`.

    Segments tilt discounts and loyalty prices, age favours youth and senior tickets, and some
    types are impossible in places (no subscriptions without a season, no subscription or friend
    price without an account). The columns are then refitted so that the ticket-weighted shares
    are the YAML's `price_type_mix` again: the tilts move price types between people, not away
    from the sector's mix.
    """
    target = np.asarray([params.price_type_mix.get(t, 0.0) for t in PRICE_TYPES])
    discount = [PRICE_TYPES.index(t) for t in ("youth", "senior", "social", "other_discount")]
    loyal = [PRICE_TYPES.index(t) for t in ("subscription", "member_friend")]
    mult = np.ones((N_SEGMENTS, len(PRICE_TYPES)))
    mult[:, discount] = np.asarray([s.discount for s in SEGMENTS])[:, None]
    mult[:, loyal] = np.asarray([s.subscription for s in SEGMENTS])[:, None]
    segment, age_class, season, walk_in = np.unravel_index(
        np.arange(_N_CELLS), (N_SEGMENTS, len(_AGE_CLASSES), 2, 2)
    )
    w = target[None, :] * mult[segment]
    orders_by_age = np.bincount(age_class, weights=orders_per_cell, minlength=len(_AGE_CLASSES))
    share_by_age = orders_by_age / max(float(orders_by_age.sum()), 1e-12)
    for k, t in enumerate(("youth", "senior")):
        w[:, PRICE_TYPES.index(t)] *= _age_boost(age_class == k, float(share_by_age[k]))
    _gate_subscriptions(w, season == 0)
    _gate_accounts(w, walk_in == 1)
    total = max(float(tickets_per_cell.sum()), 1e-12)
    for _ in range(PRICE_TYPE_FIT_ROUNDS):
        p = w / w.sum(axis=1, keepdims=True)
        realised = (tickets_per_cell @ p) / total
        w = w * np.where(realised > 0, target / np.maximum(realised, 1e-12), 1.0)[None, :]
    return np.asarray(w / w.sum(axis=1, keepdims=True), dtype=np.float64)


def _cell(segment: IntArray, age: IntArray, season: BoolArray, walk_in: BoolArray) -> IntArray:
    """Index of the (segment, age class, season, walk-in) cell that sets price-type odds."""
    age_class = np.where(
        age < YOUTH_MAX_AGE, _AGE_CLASSES.index("youth"),
        np.where(age >= SENIOR_MIN_AGE, _AGE_CLASSES.index("senior"), _AGE_CLASSES.index("other")),
    )  # fmt: skip
    return np.asarray(
        np.ravel_multi_index(
            (segment, age_class, season.astype(np.int64), walk_in.astype(np.int64)),
            (N_SEGMENTS, len(_AGE_CLASSES), 2, 2),
        ),
        dtype=np.int64,
    )


def _gate_accounts(w: FloatArray, anonymous: BoolArray) -> None:
    """Subscriptions and friend prices need an account: walk-ins pay full instead."""
    full = PRICE_TYPES.index("full")
    for t in ("subscription", "member_friend"):
        k = PRICE_TYPES.index(t)
        w[anonymous, full] += w[anonymous, k]
        w[anonymous, k] = 0.0


def _gate_subscriptions(w: FloatArray, no_season: BoolArray) -> None:
    """Institutions without a season sell no subscriptions: that weight goes to full price."""
    sub, full = PRICE_TYPES.index("subscription"), PRICE_TYPES.index("full")
    w[no_season, full] += w[no_season, sub]
    w[no_season, sub] = 0.0


def _lead_days(
    params: SimulationParams,
    plans: tuple[InstitutionPlan, ...],
    institution: IntArray,
    segment: IntArray,
    price_type: IntArray,
    rng: np.random.Generator,
) -> FloatArray:
    n = len(institution)
    season = np.asarray([p.sells_season for p in plans])[institution]
    fmt_factor = np.asarray([LEAD_FACTOR_BY_FORMAT.get(p.format, 1.0) for p in plans])
    seg_factor = np.asarray([s.lead_time for s in SEGMENTS])
    # Season launch: subscriptions always, other orders at the rate that makes the YAML's share.
    sub = price_type == PRICE_TYPES.index("subscription")
    launch = np.zeros(n, dtype=np.bool_)
    share = params.orders.share_sold_at_season_launch
    for plan in plans:
        if not plan.sells_season:
            continue
        mine = institution == plan.index
        sub_share = float(sub[mine].mean()) if mine.any() else 0.0
        p_other = max(0.0, (share - sub_share) / max(1e-9, 1.0 - sub_share))
        launch[mine] = sub[mine] | (rng.random(int(mine.sum())) < p_other)
    launch &= season
    median = np.where(
        launch,
        params.orders.lead_time_median_season_launch_days,
        params.orders.lead_time_median_single_days * fmt_factor[institution] * seg_factor[segment],
    )
    sigma = np.where(launch, LEAD_SIGMA_LOG_SEASON, LEAD_SIGMA_LOG_SINGLE)
    return np.asarray(np.minimum(median * np.exp(sigma * rng.standard_normal(n)), MAX_LEAD_DAYS))


def _order_times(
    start: IntArray, lead_days: FloatArray, channel: IntArray, rng: np.random.Generator
) -> IntArray:
    """Order timestamps: the day `lead_days` before the performance, at a plausible hour."""
    n = len(start)
    day = (start - (lead_days * DAY).astype(np.int64)) // DAY
    online = np.isin(channel, [CHANNELS.index(c) for c in _ONLINE_CHANNELS])
    hours = np.asarray(_ONLINE_HOURS) / sum(_ONLINE_HOURS)
    hour = np.where(
        online,
        rng.choice(24, size=n, p=hours),
        rng.integers(_OFFICE_HOURS[0], _OFFICE_HOURS[1], size=n),
    )
    t = day * DAY + hour * 3600 + rng.integers(0, 3600, size=n)
    # A booking made on the day itself happens before the doors open.
    too_late = t > start - 600
    return np.where(too_late, start - rng.integers(600, 4 * 3600, size=n), t).astype(np.int64)


def build_orders(
    population: Population,
    programme: Programme,
    plans: tuple[InstitutionPlan, ...],
    years: tuple[int, ...],
    params: SimulationParams,
    rng: np.random.Generator,
) -> tuple[Orders, Tickets]:
    n_years = len(years)
    counts = population.counts
    flat = np.repeat(np.arange(counts.size, dtype=np.int64), counts.ravel())
    link, year = np.divmod(flat, n_years)
    person = population.link_person[link]
    institution = population.link_institution[link]
    segment = population.segment[person]
    n = len(link)

    cum_disc = _discipline_table(plans, institution, segment)
    discipline = _categorical(cum_disc[institution * N_SEGMENTS + segment], rng.random(n))
    performance = _choose_performances(programme, n_years, institution, year, discipline, rng)
    start = programme.start[performance]

    n_tickets = _categorical(_group_table(params)[segment], rng.random(n))
    channel = _categorical(_channel_table(params)[segment], rng.random(n))
    group = n_tickets >= GROUP_ORDER_MIN_TICKETS
    school = group & (discipline == DISCIPLINES.index("jeugd_familie"))
    channel = np.where(group, CHANNELS.index("group_sales"), channel)
    channel = np.where(school, CHANNELS.index("school"), channel)
    box_office = channel == CHANNELS.index("box_office")
    anonymous = box_office & (rng.random(n) < WALK_IN_SHARE_OF_BOX_OFFICE)

    age = np.asarray(years)[year] - population.birth_year[person]
    season = np.asarray([p.sells_season for p in plans])[institution]
    cell = _cell(segment, age, season, anonymous)
    counted = np.where(group, 0.0, n_tickets)  # group orders are all "group" tickets
    table = _price_type_table(
        params,
        np.bincount(cell, minlength=_N_CELLS).astype(np.float64),
        np.bincount(cell, weights=counted, minlength=_N_CELLS).astype(np.float64),
    )
    price_type = _categorical(np.cumsum(table, axis=1)[cell], rng.random(n))
    price_type = np.where(group, PRICE_TYPES.index("group"), price_type)
    # Extra tickets of an order that do not share its price type are drawn from the mean
    # distribution of orders like it (season or not, account or walk-in).
    variant = 2 * season.astype(np.int64) + anonymous.astype(np.int64)
    _, _, cell_season, cell_walk_in = np.unravel_index(
        np.arange(_N_CELLS), (N_SEGMENTS, len(_AGE_CLASSES), 2, 2)
    )
    tickets_per_cell = np.bincount(cell, weights=n_tickets, minlength=_N_CELLS)
    fresh = np.zeros((4, len(PRICE_TYPES)))
    np.add.at(fresh, 2 * cell_season + cell_walk_in, table * tickets_per_cell[:, None])
    fresh[fresh.sum(axis=1) == 0, PRICE_TYPES.index("full")] = 1.0
    fresh_cum = np.cumsum(fresh / fresh.sum(axis=1, keepdims=True), axis=1)

    lead = _lead_days(params, plans, institution, segment, price_type, rng)
    ordered_at = _order_times(start, lead, channel, rng)
    walk_in_lead = rng.integers(WALK_IN_MINUTES[0] * 60, WALK_IN_MINUTES[1] * 60, size=n)
    ordered_at = np.where(anonymous, start - walk_in_lead, ordered_at)

    status_p = np.asarray([STATUS_MIX[s] for s in ORDER_STATUSES])
    status = rng.choice(len(ORDER_STATUSES), size=n, p=status_p / status_p.sum())
    status = np.where(anonymous, ORDER_STATUSES.index("paid"), status)

    zone_cum = np.cumsum(PRICE_ZONE_SHARE)
    zone = np.where(
        programme.has_zones[performance],
        np.minimum(np.searchsorted(zone_cum, rng.random(n) * zone_cum[-1], side="right"), 2),
        -1,
    ).astype(np.int64)

    orders = Orders(
        link=link,
        person=person,
        institution=institution,
        year=year,
        performance=performance,
        n_tickets=n_tickets,
        channel=channel.astype(np.int64),
        price_type=price_type.astype(np.int64),
        status=status.astype(np.int64),
        anonymous=anonymous,
        ordered_at=ordered_at,
        zone=zone,
    )
    return orders, _build_tickets(orders, programme, variant, fresh_cum, rng)


def _build_tickets(
    orders: Orders,
    programme: Programme,
    variant: IntArray,
    fresh_cum: FloatArray,
    rng: np.random.Generator,
) -> Tickets:
    order = np.repeat(np.arange(len(orders), dtype=np.int64), orders.n_tickets)
    first = np.repeat(np.cumsum(orders.n_tickets) - orders.n_tickets, orders.n_tickets)
    seq = np.arange(len(order), dtype=np.int64) - first
    n = len(order)
    fresh = _categorical(fresh_cum[variant[order]], rng.random(n))
    order_type = orders.price_type[order]
    whole_order = np.isin(
        order_type, [PRICE_TYPES.index("group"), PRICE_TYPES.index("complimentary")]
    )
    keep = (seq == 0) | whole_order | (rng.random(n) < SAME_PRICE_TYPE_IN_ORDER)
    price_type = np.where(keep, order_type, fresh)

    zone = orders.zone[order]
    zone_factor = np.where(zone >= 0, np.asarray(PRICE_ZONE_FACTOR)[np.maximum(zone, 0)], 1.0)
    # The seat's full price is a round amount; discounts may make it any amount in cents.
    full = np.round(programme.base_price[orders.performance[order]] * zone_factor / PRICE_STEP_EUR)
    cents = np.round(full * PRICE_STEP_EUR * price_type_factors()[price_type] * 100.0)
    # Whole cents divided by 100 is the double a CSV reader parses from "14.45": round trips
    # through the CSV files are exact.
    price = cents / 100.0
    paid = orders.status[order] == ORDER_STATUSES.index("paid")
    attended = paid & (rng.random(n) < ATTENDANCE_OF_PAID)
    return Tickets(
        order=order,
        seq=seq,
        price_type=price_type.astype(np.int64),
        price=np.maximum(price, 0.0),
        attended=attended,
    )
