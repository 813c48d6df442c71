"""The ground truth of a synthetic sector: who everyone really is, and exact statistics.

Tests and benchmarks compare what the federation releases (noisy, per-institution, matched by
keyed e-mail hashes) against these exact, person-level answers. Counts follow the domain
definitions: a counted ticket is a ticket of a paid order (`protocols.vocabulary.COUNTED_STATUSES`;
complimentary tickets are a price type of paid orders, so they count). Anonymous walk-ins have
no person: no analysis can attribute them, so the truth does not either.
"""

from __future__ import annotations

from typing import Final

import polars as pl

from protocols.vocabulary import COUNTED_STATUSES
from synthetic.params import AGE_BAND_LOWER, AGE_BANDS

# Columns `tickets_by` can group by besides the ticket table's own.
DERIVED_COLUMNS: Final[tuple[str, ...]] = (
    "quarter",
    "year",
    "institution_type",
    "institution_region",
    "institution_country",
    "home_region",
    "latent_segment",
    "engagement_tier",
    "age_band",
)
_UNKNOWN_REGION: Final[str] = "UNKNOWN"


class GroundTruth:
    """Person-level truth: people, accounts, every ticket, the programme and the institutions.

    people: one row per person who placed at least one order in the configured years (also an
        order later cancelled, or one bought anonymously at the desk): person_id, latent_segment
        (0..10), segment_name, engagement_tier, birth_year, home_region, home_postcode_area,
        home_postcode, country, email (null for people without one), lat, lon and
        home_institution_id (the institution whose catchment the person was drawn in).
    accounts: (institution_id, customer_id) -> person_id, is_duplicate (a second account).
    tickets: every ticket row of every institution, the canonical columns plus institution_id
        and person_id (null for anonymous walk-ins).
    performances: the programme (institution_id, performance_id, venue_id, performance_start,
        discipline, base_price_eur, capacity for stage venues).
    institutions: public metadata, one row per institution.
    """

    def __init__(
        self,
        people: pl.DataFrame,
        accounts: pl.DataFrame,
        tickets: pl.DataFrame,
        performances: pl.DataFrame,
        institutions: pl.DataFrame,
    ) -> None:
        self.people = people
        self.accounts = accounts
        self.tickets = tickets
        self.performances = performances
        self.institutions = institutions
        self._bookings: pl.DataFrame | None = None

    def counted_tickets(self) -> pl.DataFrame:
        """Tickets of paid orders (what attendance and ticket statistics count)."""
        return self.tickets.filter(pl.col("order_status").is_in(list(COUNTED_STATUSES)))

    def _with_derived(self, frame: pl.DataFrame, columns: tuple[str, ...]) -> pl.DataFrame:
        wanted = set(columns)
        start = pl.col("performance_start")
        out = frame
        if "quarter" in wanted:
            out = out.with_columns(
                quarter=pl.concat_str(
                    [
                        start.dt.year().cast(pl.String),
                        pl.lit("Q"),
                        start.dt.quarter().cast(pl.String),
                    ]
                )
            )
        if "year" in wanted:
            out = out.with_columns(year=start.dt.year().cast(pl.Int64))
        inst_cols = {
            "institution_type": "type",
            "institution_region": "region",
            "institution_country": "country",
        }
        needed_inst = [c for c in inst_cols if c in wanted]
        if needed_inst:
            meta = self.institutions.select(
                "institution_id", *[pl.col(inst_cols[c]).alias(c) for c in needed_inst]
            )
            out = out.join(meta, on="institution_id", how="left", maintain_order="left")
        person_cols = [
            c for c in ("home_region", "latent_segment", "engagement_tier") if c in wanted
        ]
        if person_cols or "age_band" in wanted:
            meta = self.people.select(
                "person_id",
                *person_cols,
                pl.col("birth_year").alias("_true_birth_year"),
            )
            out = out.join(meta, on="person_id", how="left", maintain_order="left")
            if "home_region" in wanted:
                out = out.with_columns(pl.col("home_region").fill_null(_UNKNOWN_REGION))
            if "age_band" in wanted:
                age = start.dt.year().cast(pl.Int64) - pl.col("_true_birth_year")
                band = pl.lit(None, dtype=pl.String)
                for label, lower in reversed(list(zip(AGE_BANDS, AGE_BAND_LOWER, strict=True))):
                    band = pl.when(age >= lower).then(pl.lit(label)).otherwise(band)
                out = out.with_columns(age_band=band)
        return out

    def tickets_by(self, *columns: str) -> pl.DataFrame:
        """Counted tickets grouped by `columns`, one row per group that has tickets.

        A column may be any column of the ticket table or one of DERIVED_COLUMNS: "quarter"
        (e.g. "2024Q3", from performance_start), "year", "institution_type",
        "institution_region", "institution_country", "home_region" (the person's true home
        region; UNKNOWN for walk-ins), "latent_segment", "engagement_tier" and "age_band" (age
        in the performance's year; null for walk-ins). The count column is "tickets".
        """
        if not columns:
            raise ValueError("tickets_by needs at least one column")
        allowed = set(self.tickets.columns) | set(DERIVED_COLUMNS)
        unknown = [c for c in columns if c not in allowed]
        if unknown:
            raise ValueError(
                f"tickets_by: unknown columns {unknown}; use ticket columns or {DERIVED_COLUMNS}"
            )
        frame = self._with_derived(self.counted_tickets(), columns)
        return (
            frame.group_by(list(columns))
            .agg(tickets=pl.len().cast(pl.Int64))
            .sort(list(columns), nulls_last=True)
        )

    def bookings(self) -> pl.DataFrame:
        """One row per order with counted tickets of an identified person: institution_id,
        person_id, order_id, year, venue_id, performance_id, discipline, tickets. Cached."""
        if self._bookings is None:
            self._bookings = (
                self.counted_tickets()
                .filter(pl.col("person_id").is_not_null())
                .group_by("institution_id", "order_id")
                .agg(
                    pl.col("person_id").first(),
                    year=pl.col("performance_start").first().dt.year().cast(pl.Int64),
                    venue_id=pl.col("venue_id").first(),
                    performance_id=pl.col("performance_id").first(),
                    discipline=pl.col("discipline").first(),
                    tickets=pl.len().cast(pl.Int64),
                )
                .sort("institution_id", "order_id")
            )
        return self._bookings

    def _bookings_in(self, year: int | None) -> pl.DataFrame:
        frame = self.bookings()
        return frame if year is None else frame.filter(pl.col("year") == year)

    def institutions_per_person(self, year: int | None = None) -> pl.DataFrame:
        """For every person with a counted ticket (in `year`, or in any configured year): the
        number of distinct institutions they have counted tickets at. Columns person_id,
        institutions; sorted by person_id."""
        return (
            self._bookings_in(year)
            .group_by("person_id")
            .agg(institutions=pl.col("institution_id").n_unique().cast(pl.Int64))
            .sort("person_id")
        )

    def reach(self, year: int | None = None) -> int:
        """Distinct people with at least one counted ticket anywhere in the sector in `year`
        (or in any configured year when `year` is None)."""
        return int(self._bookings_in(year)["person_id"].n_unique())

    def visits_per_person_institution(self, year: int | None = None) -> pl.DataFrame:
        """Orders with counted tickets per (institution, person, year): how often each booker
        booked there. Columns institution_id, person_id, year, orders."""
        return (
            self._bookings_in(year)
            .group_by("institution_id", "person_id", "year")
            .agg(orders=pl.len().cast(pl.Int64))
            .sort("institution_id", "person_id", "year")
        )

    def venues_per_person(self, year: int | None = None) -> pl.DataFrame:
        """Distinct venues with counted tickets per person (in `year` or all years)."""
        return (
            self._bookings_in(year)
            .group_by("person_id")
            .agg(venues=pl.col("venue_id").n_unique().cast(pl.Int64))
            .sort("person_id")
        )

    def equals(self, other: GroundTruth) -> bool:
        return all(
            a.equals(b)
            for a, b in (
                (self.people, other.people),
                (self.accounts, other.accounts),
                (self.tickets, other.tickets),
                (self.performances, other.performances),
                (self.institutions, other.institutions),
            )
        )
