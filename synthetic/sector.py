"""`generate_sector`: runs the stages in order and returns a `Sector`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from synthetic.config import SectorConfig
from synthetic.identity import build_accounts, person_identities
from synthetic.institutions import Institution, build_institutions
from synthetic.orders import build_orders
from synthetic.params import SimulationParams, load_params
from synthetic.performances import build_programme
from synthetic.population import build_population
from synthetic.rng import stage_rng
from synthetic.schema import TICKET_LINE_COLUMNS
from synthetic.segments import check_segments
from synthetic.tables import build_tables
from synthetic.truth import GroundTruth

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True, eq=False)
class Sector:
    """A generated sector: its config, the institutions' public metadata and the ground truth."""

    config: SectorConfig
    institutions: tuple[Institution, ...]
    truth: GroundTruth

    def institution(self, institution_id: str) -> Institution:
        for inst in self.institutions:
            if inst.institution_id == institution_id:
                return inst
        raise KeyError(f"no institution {institution_id!r} in this sector")

    def tickets(self, institution_id: str) -> pl.DataFrame:
        """The canonical ticket_line table of one institution, as its node would read it."""
        self.institution(institution_id)
        return self.truth.tickets.filter(pl.col("institution_id") == institution_id).select(
            TICKET_LINE_COLUMNS
        )

    def write(self, out_dir: Path) -> None:
        """Write the sector to `out_dir` (see `synthetic.io.write_sector` for the layout)."""
        from synthetic.io import write_sector  # io imports this module

        write_sector(self, Path(out_dir))


def institutions_frame(institutions: tuple[Institution, ...]) -> pl.DataFrame:
    return pl.DataFrame(
        [{k: v for k, v in inst.to_dict().items() if k != "venue_ids"} for inst in institutions],
        schema={
            "institution_id": pl.String,
            "name": pl.String,
            "type": pl.String,
            "region": pl.String,
            "country": pl.String,
            "city": pl.String,
            "lat": pl.Float64,
            "lon": pl.Float64,
        },
    )


def generate_sector(
    config: SectorConfig,
    params: SimulationParams | None = None,
    progress: Progress | None = None,
) -> Sector:
    """Generate the sector described by `config` (deterministic: same config, same sector)."""
    params = load_params() if params is None else params
    check_segments(params)
    years = config.year_list
    seed = config.seed
    started = time.perf_counter()

    def report(message: str) -> None:
        if progress is not None:
            progress(f"[{time.perf_counter() - started:6.1f}s] {message}")

    plans = build_institutions(
        config.n_institutions, years, config.scale, params, stage_rng(seed, "institutions")
    )
    report(f"{len(plans)} institutions placed")
    population = build_population(plans, years, params, stage_rng(seed, "population"))
    report(f"{population.n_people:,} people with {len(population.link_person):,} bookings links")
    programme = build_programme(plans, years, config.scale, params, stage_rng(seed, "programme"))
    report(f"{len(programme):,} performances programmed")
    orders, tickets = build_orders(
        population, programme, plans, years, params, stage_rng(seed, "orders")
    )
    report(f"{len(orders):,} orders with {len(tickets):,} tickets")
    identities = person_identities(population, stage_rng(seed, "people"))
    accounts = build_accounts(
        population, orders, plans, identities, params, stage_rng(seed, "accounts")
    )
    report(f"{len(accounts.institution):,} customer accounts")
    tables = build_tables(
        plans,
        population,
        programme,
        orders,
        tickets,
        identities,
        accounts,
        params,
        stage_rng(seed, "tables"),
    )
    institutions = tuple(p.institution for p in plans)
    truth = GroundTruth(
        people=tables.people,
        accounts=tables.accounts,
        tickets=tables.tickets,
        performances=tables.performances,
        institutions=institutions_frame(institutions),
    )
    report("tables built")
    return Sector(config=config, institutions=institutions, truth=truth)
