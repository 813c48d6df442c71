"""One shared population of people, who they book with, and how often, year by year.

The model, and where its numbers come from:

* A person belongs to one of the eleven latent segments (`segments.py`), hence to an engagement
  tier with a yearly booking rate `bookings_lambda` (simulation.yaml). That rate is a person's
  bookings in the whole cultural market; an institution in the person's repertoire receives a
  share of it (`Calibration.institution_share`), the rest goes to places outside the sector.
* People are heterogeneous within a tier (a persistent log-normal factor) and from year to year
  (a gamma shock per person and year, shared by every institution they use). These spreads,
  with the share above, were fitted so that the frequency per institution-year follows
  `frequency_per_institution_year` (66% once, ...) and about `yoy_retention` of a year's
  bookers return the next year. Because
  most people in a catchment book rarely, the population is several times larger than the
  number of bookers in a year: that is the "population size" these parameters set.
* Each institution recruits its own clientele around it: home locations at a log-normal
  distance (median of the type from `distance_km_lognormal_median`, `distance_sigma_log`),
  times a segment's travel habit. People then also use other institutions with a probability
  that falls with distance and rises with their engagement and their affinity for what the other
  institution programmes (a gravity model); that gives the cross-visiting of the domain notes.
  What an institution receives from other clienteles is capped at a share of its volume, so a
  small institution next to a big one still has an audience of its own.
* Pool sizes are then thinned so each institution's expected orders match its ticket volume
  (`institutions.py`), the small remainder being absorbed by a per-institution rate factor.

Only people with at least one order in the configured years are kept (an order that was later
cancelled, or bought anonymously at the desk, counts): the others exist in the model (they are
why most bookers book once) but appear in no data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from protocols.geography import REGION_CODES
from synthetic import pmf
from synthetic.geography import COUNTRY_OF_REGION, distance_km, layout
from synthetic.institutions import InstitutionPlan
from synthetic.params import AGE_BAND_LOWER, SimulationParams
from synthetic.segments import (
    N_SEGMENTS,
    SEGMENTS,
    TIERS,
    affinity_matrix,
    age_profiles,
    population_segment_shares,
    segment_tier,
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Calibration:
    """Free parameters of the behaviour model, fitted to simulation.yaml's targets.

    They are not data: they were chosen by simulating the model and comparing the frequency
    pmf, year-on-year retention, single-venue share and omnivore share with the YAML (the slow
    realism test re-checks this on a full-size sector).
    """

    institution_share: float = 0.13  # share of a person's market bookings at a linked institution
    person_sigma_log: float = 1.7  # persistent heterogeneity within a tier (log-normal, mean 1)
    year_gamma_shape: float = 0.9  # a person's ups and downs from year to year (gamma, mean 1)
    cross_visit_by_tier: tuple[float, float, float] = (1.5, 0.9, 0.45)  # intensive, medium, light
    secondary_share: float = 0.5  # a second institution's share relative to the home one
    cross_visit_decay: float = 1.0  # distance decay length, in medians of the other's type
    cross_visit_activity_power: float = 0.5  # how much more active people explore
    max_link_probability: float = 0.9
    max_secondary_share: float = 0.4  # of an institution's orders, from other clienteles
    # Nobody books more than about once a week at one institution: caps the log-normal's tail.
    max_orders_per_year: float = 52.0


CALIBRATION: Final[Calibration] = Calibration()

# Beyond this many decay lengths a second institution is not considered at all (its chance is
# below e^-8 of a neighbour's): keeps the person x institution work near-linear.
_LINK_CUTOFF_DECAYS: Final[float] = 8.0
# Tries to redraw a home location that fell in the sea or outside the map.
_LAND_TRIES: Final[int] = 12
# Upper end of the 65+ age band and the mean of its (exponential) age excess.
_OLDEST_AGE: Final[int] = 95
_OLD_AGE_MEAN_EXCESS: Final[float] = 8.0


@dataclass(frozen=True, slots=True)
class Population:
    """People who book at least once, and their links to institutions.

    Person arrays are indexed by person index (person_id - 1). Link arrays are indexed by link;
    `counts[link, year_index]` is the number of orders of that person at that institution in
    that year.
    """

    segment: IntArray
    tier: IntArray
    x: FloatArray
    y: FloatArray
    region: IntArray  # index into protocols.geography.REGION_CODES
    area: IntArray  # index into the layout's area arrays
    home_institution: IntArray  # index of the institution that recruited the person
    birth_year: IntArray
    link_person: IntArray
    link_institution: IntArray
    link_primary: BoolArray
    counts: IntArray

    @property
    def n_people(self) -> int:
        return len(self.segment)

    def country(self) -> npt.NDArray[np.str_]:
        countries = np.asarray([COUNTRY_OF_REGION[c] for c in REGION_CODES])
        return countries[self.region]


def _segment_probabilities(
    plans: tuple[InstitutionPlan, ...], params: SimulationParams
) -> tuple[FloatArray, FloatArray]:
    """P(segment | tier, institution) (institutions x segments) and the normalised affinity
    of each segment for each institution's programme (segments x institutions, population mean 1).
    """
    aff = affinity_matrix()
    mixes = np.vstack([p.discipline_mix for p in plans])  # institutions x disciplines
    programme_affinity = aff @ mixes.T  # segments x institutions
    within = np.asarray([s.within_tier_share for s in SEGMENTS])
    tiers = segment_tier()
    cond = np.zeros((len(plans), N_SEGMENTS))
    for t in range(len(TIERS)):
        members = tiers == t
        w = within[members][:, None] * programme_affinity[members]
        cond[:, members] = (w / w.sum(axis=0)).T
    pop_share = population_segment_shares(params)
    normalised = programme_affinity / (pop_share @ programme_affinity)[None, :]
    return cond, normalised


def _draw_homes(
    plans: tuple[InstitutionPlan, ...],
    pool: IntArray,
    segment: IntArray,
    seg_given_inst: FloatArray,
    params: SimulationParams,
    rng: np.random.Generator,
) -> tuple[FloatArray, FloatArray]:
    lay = layout()
    dist_mult = np.asarray([s.distance for s in SEGMENTS])
    # Normalise per institution so the median distance of its whole clientele stays the YAML's.
    norm = np.exp(seg_given_inst @ np.log(dist_mult))
    median = np.asarray([p.distance_median_km for p in plans])[pool] * dist_mult[segment]
    median /= norm[pool]
    ix = np.asarray([p.x for p in plans])[pool]
    iy = np.asarray([p.y for p in plans])[pool]
    x = np.empty(len(pool))
    y = np.empty(len(pool))
    todo = np.arange(len(pool))
    for _ in range(_LAND_TRIES):
        d = median[todo] * np.exp(params.distance_sigma_log * rng.standard_normal(len(todo)))
        angle = rng.uniform(0.0, 2.0 * np.pi, len(todo))
        x[todo] = ix[todo] + d * np.cos(angle)
        y[todo] = iy[todo] + d * np.sin(angle)
        todo = todo[~lay.is_land(x[todo], y[todo])]
        if len(todo) == 0:
            break
    # The rare point still off the map lives next to the institution (which is on land).
    x[todo] = ix[todo] + rng.uniform(-0.5, 0.5, len(todo))
    y[todo] = iy[todo] + rng.uniform(-0.5, 0.5, len(todo))
    return x, y


def _cross_links(
    plans: tuple[InstitutionPlan, ...],
    pool: IntArray,
    tier: IntArray,
    segment: IntArray,
    activity: FloatArray,
    x: FloatArray,
    y: FloatArray,
    programme_affinity: FloatArray,
    sigma_log: float,
    cal: Calibration,
    rng: np.random.Generator,
) -> tuple[IntArray, IntArray, FloatArray]:
    """Secondary (person, institution) links by the gravity model.

    Returns (person, institution, slack): a link was drawn because a uniform u fell below its
    probability p, and slack = u / p. Keeping only links with slack < s later is the same as
    having drawn them with probability s * p, which is how inflows are capped.
    """
    # Engaged people explore: the chance grows with the tier, the segment's habit and the
    # person's own activity (cultural omnivores are the heavy users).
    cross = (
        np.asarray(cal.cross_visit_by_tier)[tier]
        * np.asarray([s.cross_visit for s in SEGMENTS])[segment]
        * activity**cal.cross_visit_activity_power
    )
    ix = np.asarray([p.x for p in plans])
    iy = np.asarray([p.y for p in plans])
    decay = cal.cross_visit_decay * np.asarray([p.distance_median_km for p in plans])
    # Nearly all of an institution's own clientele lives within three sigma of its median.
    reach = np.asarray([p.distance_median_km for p in plans]) * np.exp(3.0 * sigma_log)
    people: list[IntArray] = []
    targets: list[IntArray] = []
    slack: list[FloatArray] = []
    order = np.argsort(pool, kind="stable")
    bounds = np.searchsorted(pool[order], np.arange(len(plans) + 1))
    for i in range(len(plans)):
        members = order[bounds[i] : bounds[i + 1]]
        if len(members) == 0:
            continue
        gap = distance_km(ix[i], iy[i], ix, iy)
        near = np.flatnonzero(gap <= _LINK_CUTOFF_DECAYS * decay + reach[i])
        near = near[near != i]
        for j in near:
            d = distance_km(x[members], y[members], ix[j], iy[j])
            p = cross[members] * programme_affinity[segment[members], j] * np.exp(-d / decay[j])
            p = np.minimum(p, cal.max_link_probability)
            u = rng.random(len(members))
            hit = u < p
            people.append(members[hit])
            targets.append(np.full(int(hit.sum()), j, dtype=np.int64))
            slack.append(u[hit] / p[hit])
    if not people:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.float64)
    return np.concatenate(people), np.concatenate(targets), np.concatenate(slack)


def _birth_years(
    segment: IntArray, first_year: int, params: SimulationParams, rng: np.random.Generator
) -> IntArray:
    profiles = age_profiles(params)
    cum = np.cumsum(profiles, axis=1)
    band = (rng.random(len(segment))[:, None] > cum[segment]).sum(axis=1)
    band = np.minimum(band, len(AGE_BAND_LOWER) - 1)
    lower = np.asarray(AGE_BAND_LOWER)
    upper = np.append(lower[1:] - 1, _OLDEST_AGE)
    uniform_age = lower[band] + np.floor(rng.random(len(segment)) * (upper[band] - lower[band] + 1))
    old_age = lower[-1] + np.minimum(
        np.floor(rng.exponential(_OLD_AGE_MEAN_EXCESS, len(segment))), _OLDEST_AGE - lower[-1]
    )
    age = np.where(band == len(lower) - 1, old_age, uniform_age).astype(np.int64)
    return np.asarray(first_year - age, dtype=np.int64)


def build_population(
    plans: tuple[InstitutionPlan, ...],
    years: tuple[int, ...],
    params: SimulationParams,
    rng: np.random.Generator,
    cal: Calibration = CALIBRATION,
) -> Population:
    n_inst = len(plans)
    tier_share = np.asarray([params.population.tier(t).share for t in TIERS])
    tier_lambda = np.asarray([params.population.tier(t).bookings_lambda for t in TIERS])

    # Orders each institution must sell per year, from its ticket volume.
    tickets_per_order = pmf.mean(params.orders.tickets_per_order)
    orders = np.asarray(
        [[p.tickets_by_year[y] / tickets_per_order for y in years] for p in plans]
    )  # institutions x years
    mean_orders = orders.mean(axis=1)
    year_factor = orders / np.maximum(mean_orders[:, None], 1e-12)

    # 1. Candidate pools: as many people as the home institution needs at the calibrated rate.
    rate_per_person = cal.institution_share * float(tier_share @ tier_lambda)
    pool_size = np.ceil(mean_orders / rate_per_person).astype(np.int64)
    pool = np.repeat(np.arange(n_inst, dtype=np.int64), pool_size)
    n = len(pool)
    tier = rng.choice(len(TIERS), size=n, p=tier_share).astype(np.int64)
    seg_given_inst, programme_affinity = _segment_probabilities(plans, params)
    tiers_of_segment = segment_tier()
    segment = np.empty(n, dtype=np.int64)
    u = rng.random(n)
    for t in range(len(TIERS)):
        members = np.flatnonzero(tiers_of_segment == t)
        cond = seg_given_inst[:, members]
        cum = np.cumsum(cond / cond.sum(axis=1, keepdims=True), axis=1)
        who = np.flatnonzero(tier == t)
        pick = (u[who][:, None] > cum[pool[who]]).sum(axis=1)
        segment[who] = members[np.minimum(pick, len(members) - 1)]
    # Log-normal with mean 1: a long right tail of devoted regulars (the top 10% of bookers make
    # about half of the visits) and many who hardly ever come.
    s_log = cal.person_sigma_log
    person_factor = np.exp(rng.normal(-0.5 * s_log * s_log, s_log, n))
    x, y = _draw_homes(plans, pool, segment, seg_given_inst, params, rng)

    # 2. Links: the home institution plus the gravity-model second ones.
    sec_person, sec_inst, slack = _cross_links(
        plans,
        pool,
        tier,
        segment,
        person_factor,
        x,
        y,
        programme_affinity,
        params.distance_sigma_log,
        cal,
        rng,
    )
    # A big clientele next to a small institution would otherwise swamp it: cap the orders an
    # institution gets from other institutions' people at a share of its volume.
    inflow = np.bincount(
        sec_inst,
        weights=tier_lambda[tier[sec_person]] * person_factor[sec_person],
        minlength=n_inst,
    ) * (cal.institution_share * cal.secondary_share)
    cap = cal.max_secondary_share * mean_orders / np.maximum(inflow, 1e-12)
    keep = slack < np.minimum(1.0, cap)[sec_inst]
    sec_person, sec_inst = sec_person[keep], sec_inst[keep]
    link_person = np.concatenate([np.arange(n, dtype=np.int64), sec_person])
    link_inst = np.concatenate([pool, sec_inst])
    link_primary = np.zeros(len(link_person), dtype=np.bool_)
    link_primary[:n] = True
    share = np.where(
        link_primary, cal.institution_share, cal.institution_share * cal.secondary_share
    )
    base_rate = tier_lambda[tier[link_person]] * person_factor[link_person] * share

    # 3. Thin the pools so that each institution's expected orders meet its volume.
    flows = np.bincount(
        pool[link_person] * n_inst + link_inst, weights=base_rate, minlength=n_inst * n_inst
    ).reshape(n_inst, n_inst)
    keep_prob = np.ones(n_inst)
    for _ in range(200):
        expected = keep_prob @ flows
        keep_prob = np.clip(keep_prob * mean_orders / np.maximum(expected, 1e-12), 0.0, 1.0)
    kept_person = rng.random(n) < keep_prob[pool]
    kept_link = kept_person[link_person]
    kept_orders = np.bincount(link_inst[kept_link], weights=base_rate[kept_link], minlength=n_inst)
    inst_factor = mean_orders / np.maximum(kept_orders.astype(np.float64), 1e-12)

    # 4. Orders per link and year.
    li = np.flatnonzero(kept_link)
    rate = base_rate[li] * inst_factor[link_inst[li]]
    expected_rate = np.minimum(rate[:, None] * year_factor[link_inst[li]], cal.max_orders_per_year)
    # The year's shock belongs to the person, not to one institution: in a good year someone
    # goes out more everywhere, which is what makes people use several venues in one year.
    shocks = rng.gamma(cal.year_gamma_shape, 1.0 / cal.year_gamma_shape, (n, len(years)))
    counts = rng.poisson(expected_rate * shocks[link_person[li]]).astype(np.int64)

    # 5. Keep the people and links that produce at least one order.
    active = counts.sum(axis=1) > 0
    li, counts = li[active], counts[active]
    persons = np.unique(link_person[li])
    new_index = np.full(n, -1, dtype=np.int64)
    new_index[persons] = np.arange(len(persons), dtype=np.int64)
    region, area = layout().locate(x[persons], y[persons], rng)
    return Population(
        segment=segment[persons],
        tier=tier[persons],
        x=x[persons],
        y=y[persons],
        region=region,
        area=area,
        home_institution=pool[persons],
        birth_year=_birth_years(segment[persons], years[0], params, rng),
        link_person=new_index[link_person[li]],
        link_institution=link_inst[li],
        link_primary=link_primary[li],
        counts=counts,
    )
