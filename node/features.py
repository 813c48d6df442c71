"""Derived customer features: one row per privacy unit, every value publicly bounded.

These are the inputs of local statistics, of the institution's own report and of the sector's
federated k-means segmentation (``node.segments``). Each feature is clipped to bounds fixed in
the contract (``protocols.features``: public, data-independent), so that a customer's
contribution to any sum of features is bounded before noise is added, and each can be scaled to
[0, 1] by its bounds alone (on a log scale for visits, euros, kilometres and days ahead).

Only tickets that count (order status "paid", which includes complimentary tickets) make
visits; a visit is a distinct (customer, performance) and a booking the tickets of one order for
one performance (a subscription order of five performances is five bookings). Time-dependent
features are measured at an "as of" date: by default the last performance in the data, or
today if that is earlier (future bookings are not visits yet).

| feature | meaning | bounds |
|---|---|---|
| frequency | visits in the 12 months up to the as-of date | 0 .. 24 |
| recency_days | days from the last visit to the as-of date | 0 .. 1095 |
| spend_eur | euros paid for tickets to performances in those 12 months | 0 .. 2000 |
| mix_<discipline> | share of the customer's visits in each of the 15 disciplines | 0 .. 1 |
| distance_km | mean distance from home to the venues visited | 0 .. 250 |
| age | age in years at the as-of date | 0 .. 100 |
| lead_time_days | mean days between booking and performance | 0 .. 180 |
| group_size | mean tickets per booking | 1 .. 10 |
| online_share | share of bookings made in the own web shop | 0 .. 1 |
| discount_share | share of tickets at a price other than full | 0 .. 1 |

Distance and age are unknown (null) where the home or the birth year is; their bands say
"unknown". The bands (``distance_band``, ``age_band``) are the public key sets of statistics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Final

import numpy as np
import numpy.typing as npt
import polars as pl

from node.geo import DistanceSource, Geography, haversine_km
from protocols import bands
from protocols.bands import Band
from protocols.features import (
    ALL_FEATURES,
    IMPUTED,
    MIX_FEATURES,
    NUMERIC_FEATURES,
    FeatureSpec,
    customer_space,
)
from protocols.vocabulary import COUNTED_STATUSES, DISCIPLINES

__all__ = ["ALL_FEATURES", "MIX_FEATURES", "NUMERIC_FEATURES", "FeatureSpec"]
_BOUNDS: Final[dict[str, tuple[float, float]]] = {f.name: (f.low, f.high) for f in ALL_FEATURES}

# The bands of the two banded features are the public key sets of sector statistics, defined
# once in the contract (``protocols.bands``) so that what the node reports and what the sector
# publishes can never drift apart.
DISTANCE_BANDS: Final[tuple[Band, ...]] = bands.DISTANCE_BANDS
AGE_BANDS: Final[tuple[Band, ...]] = bands.AGE_BANDS
UNKNOWN_BAND: Final[str] = bands.UNKNOWN
DISTANCE_BAND_KEYS: Final[tuple[str, ...]] = bands.keys(DISTANCE_BANDS, unknown=True)
AGE_BAND_KEYS: Final[tuple[str, ...]] = bands.keys(AGE_BANDS, unknown=True)
_WINDOW: Final[timedelta] = timedelta(days=365)
_ONLINE: Final[str] = "online_own"
_FULL_PRICE: Final[str] = "full"


@dataclass(frozen=True, slots=True)
class CustomerFeatures:
    """``frame``: unit, has_account, home_region, visits, tickets, every feature, both bands."""

    frame: pl.DataFrame
    as_of: date
    distance_source: DistanceSource | None
    units_without_visits: int

    @property
    def customers(self) -> int:
        return self.frame.height

    def normalised(self) -> pl.DataFrame:
        """Every feature scaled to [0, 1] by its public bounds and scaling (null where unknown):
        linear, or log(1 + v - low) / log(1 + high - low) for the long-tailed ones."""
        return self.frame.select("unit", *(_scaled(f) for f in ALL_FEATURES))

    def segmentation_matrix(self) -> npt.NDArray[np.float64]:
        """Rows of scaled features for k-means (``protocols.features.customer_space``), in
        ``unit`` order; unknown values at the public midpoint, which depends on no one's data,
        so imputing it costs no privacy."""
        matrix = self.normalised().drop("unit").fill_null(IMPUTED).to_numpy()
        return np.asarray(matrix, dtype=np.float64)


def _scaled(f: FeatureSpec) -> pl.Expr:
    v = pl.col(f.name).clip(f.low, f.high) - f.low
    if f.transform == "log":
        return (v.log1p() / math.log1p(f.high - f.low)).alias(f.name)
    return (v / (f.high - f.low)).alias(f.name)


# The space the segmentation works in: what ``segmentation_matrix`` rows mean.
SEGMENTATION_SPACE: Final = customer_space()


def _clip(expr: pl.Expr, name: str) -> pl.Expr:
    low, high = _BOUNDS[name]
    return expr.clip(low, high).alias(name)


def band_expr(value: pl.Expr, band_set: tuple[Band, ...], unknown: str | None = None) -> pl.Expr:
    """The label of the band each value falls in (``protocols.bands``: lower edges inclusive).

    A value below the first edge is in no band (null: it falls outside any table over the
    bands); a missing value is ``unknown`` when given, else null. Computed as integer
    comparisons and one gather from the labels, which is several times faster on a million
    rows than a chain of ``when`` over strings.
    """
    labels = pl.Series([label for label, _ in band_set] + ([unknown] if unknown else []))
    reached = pl.sum_horizontal([(value >= low).cast(pl.Int8) for _, low in band_set])
    index = (
        pl.when(value.is_null())
        .then(pl.lit(len(band_set) if unknown else None, dtype=pl.Int64))
        .when(reached > 0)
        .then(reached.cast(pl.Int64) - 1)
    )
    return pl.lit(labels, dtype=pl.String).gather(index)


def default_as_of(lines: pl.DataFrame, today: date) -> date:
    """The last counted performance, or today when that lies in the future."""
    last = lines.select(
        pl.col("performance_start").filter(pl.col("order_status").is_in(COUNTED_STATUSES)).max()
    ).item()
    if not isinstance(last, datetime):
        return today
    return min(last.date(), today)


def derive_features(
    lines: pl.DataFrame,
    homes: pl.DataFrame,
    geography: Geography,
    as_of: date,
) -> CustomerFeatures:
    """Per-unit features from the minimised ticket lines and the units' reduced homes."""
    end = datetime.combine(as_of, time.max)
    start_12m = end - _WINDOW
    # Two lazy queries (tickets -> visits, then visits -> customers), each collected once.
    # Every aggregation below is a plain column aggregate (sum, first, max, mean of a column):
    # the values they reduce are computed as columns beforehand. polars runs plain aggregates
    # with its fast grouped kernels; an expression inside ``agg`` (a comparison, a filter) is
    # evaluated group by group, which cost more than half of the features' time.
    counted = (
        lines.lazy()
        .with_row_index("_i")
        .filter(
            pl.col("order_status").is_in(COUNTED_STATUSES) & (pl.col("performance_start") <= end)
        )
        .with_columns(
            ((pl.col("performance_start") - pl.col("order_datetime")).dt.total_seconds() / 86400.0)
            .clip(0, None)
            .alias("_lead"),
            (pl.col("price_type") != _FULL_PRICE).alias("_discounted"),
            (pl.col("channel") == _ONLINE).alias("_online"),
        )
    )

    # Three aggregations, each on a smaller table: tickets -> bookings (the tickets of one order
    # for one performance) -> visits (a customer at a performance) -> customers.
    bookings = counted.group_by("order", "performance").agg(
        pl.col("unit").first(),  # an order belongs to one unit
        pl.len().alias("n"),
        pl.col("price_paid_eur").sum().alias("paid"),
        pl.col("_discounted").sum().alias("discounted"),
        pl.col("_lead").first(),
        pl.col("_online").first().cast(pl.UInt32).alias("online"),  # the booking's channel
        pl.col("_i").first(),  # its first ticket line
    )
    visits_i = (
        bookings.group_by("unit", "performance")
        .agg(
            pl.len().alias("bookings"),
            pl.col("n", "paid", "discounted", "_lead", "online").sum(),
            pl.col("_i").min(),  # the visit's first ticket line
        )
        .collect()
    )
    # The performance's start, discipline and venue as on the visit's first ticket line, picked
    # by row number: carrying three columns (two of them text) through both aggregations cost
    # more than this one gather.
    at_first = lines.select(
        pl.col("performance_start", "discipline", "venue_id").gather(visits_i["_i"])
    )
    visits = visits_i.drop("_i").hstack(at_first.get_columns()).lazy()
    visits = _with_distance(visits, homes, geography).with_columns(
        (pl.col("performance_start") > start_12m).alias("_recent"),
        # A visit's spend counts when it is recent; null (not 0) otherwise, so that the sum
        # adds exactly the recent visits' amounts, as a filter would.
        pl.when(pl.col("performance_start") > start_12m).then(pl.col("paid")).alias("_paid_12m"),
        *((pl.col("discipline") == d).alias(f"_is_{d}") for d in DISCIPLINES),
    )
    # Sums per unit; the shares (and the mix, a mean of booleans) are divided afterwards.
    per_unit = (
        visits.group_by("unit")
        .agg(
            pl.len().alias("visits"),
            pl.col("n").sum().alias("tickets"),
            pl.col("_recent").sum().alias("_frequency"),
            pl.col("performance_start").max().alias("_last"),
            pl.col("_paid_12m").sum().alias("_spend"),
            pl.col("discounted", "_lead", "bookings", "online").sum(),
            pl.col("km").mean().alias("_distance"),
            *(pl.col(f"_is_{d}").sum() for d in DISCIPLINES),
        )
        .with_columns(
            (pl.col("discounted") / pl.col("tickets")).alias("_discount"),
            (pl.col("_lead") / pl.col("bookings")).alias("_lead_mean"),
            (pl.col("tickets") / pl.col("bookings")).alias("_group"),
            (pl.col("online") / pl.col("bookings")).alias("_online"),
            *((pl.col(f"_is_{d}") / pl.col("visits")).alias(f"mix_{d}") for d in DISCIPLINES),
        )
    )

    frame = (
        per_unit.join(
            homes.lazy().select("unit", "has_account", "home_region", "birth_year"),
            on="unit",
            how="left",
        )
        .select(
            "unit",
            "has_account",
            "home_region",
            "visits",
            "tickets",
            _clip(pl.col("_frequency").cast(pl.Float64), "frequency"),
            _clip(
                ((pl.lit(end) - pl.col("_last")).dt.total_seconds() / 86400.0).floor(),
                "recency_days",
            ),
            _clip(pl.col("_spend"), "spend_eur"),
            _clip(pl.col("_distance"), "distance_km"),
            _clip((as_of.year - pl.col("birth_year")).cast(pl.Float64), "age"),
            _clip(pl.col("_lead_mean"), "lead_time_days"),
            _clip(pl.col("_group"), "group_size"),
            _clip(pl.col("_online"), "online_share"),
            _clip(pl.col("_discount"), "discount_share"),
            *(pl.col(f.name) for f in MIX_FEATURES),
        )
        .with_columns(
            band_expr(pl.col("distance_km"), DISTANCE_BANDS, UNKNOWN_BAND).alias("distance_band"),
            band_expr(pl.col("age"), AGE_BANDS, UNKNOWN_BAND).alias("age_band"),
        )
        .sort("unit")
        .collect()
    )
    all_units = homes.height
    return CustomerFeatures(
        frame=frame,
        as_of=as_of,
        distance_source=geography.distance_source,
        units_without_visits=all_units - frame.height,
    )


def _with_distance(visits: pl.LazyFrame, homes: pl.DataFrame, geography: Geography) -> pl.LazyFrame:
    """Each visit's distance from home to its venue (null when either location is unknown)."""
    if geography.distance_source is None:
        return visits.with_columns(pl.lit(None, dtype=pl.Float64).alias("km"))
    located = geography.home_locations(
        homes.select("unit", "home_country", "home_area", "home_region")
    ).select("unit", "home_lat", "home_lon")
    main = geography.location
    venue_lat = pl.col("venue_lat").fill_null(main.lat if main else None)
    venue_lon = pl.col("venue_lon").fill_null(main.lon if main else None)
    km = haversine_km(pl.col("home_lat"), pl.col("home_lon"), venue_lat, venue_lon)
    return (
        visits.join(located.lazy(), on="unit", how="left")
        .join(geography.venue_table().lazy(), on="venue_id", how="left")
        .with_columns(km.alias("km"))
        .drop("home_lat", "home_lon", "venue_lat", "venue_lon")
    )
