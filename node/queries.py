"""The local query engine: from the ticket table to a contribution-bounded histogram.

Every measure and dimension of the contract (``protocols.messages.MEASURES``,
``protocols.dimensions.PUBLIC_DIMENSIONS``) is computed here, with these semantics:

- Only counted tickets count (order status paid; complimentary tickets are a price type of paid
  orders), and only those of performances in the query's years, whatever its dimensions.
  Periods (``year``, ``quarter``) are the performance's.
- A ticket's cell is given by its keys; a ticket whose key in some dimension is not in the
  query's key set falls outside the table and is not counted at all.
- ``tickets`` counts tickets; ``revenue_cents`` sums the price paid, in cents.
- ``visits`` counts distinct (customer, performance) pairs and ``orders`` distinct orders among
  a cell's tickets. A visit (or order) whose tickets lie in several cells (two price types, two
  channels, a subscription order over several quarters) counts once in each of them, so such
  cells do not add up to the total number of visits (or orders).
- ``bookers`` counts distinct customer accounts among a cell's tickets. Anonymous walk-ins (an
  order without a customer) are no booker; they still count as tickets, visits and orders.
- Ticket-level keys: discipline, price_type, channel, region (the customer's home region),
  lead_time_band (whole days from order to performance; an order after the start counts as
  0), order_size_band (counted tickets in the whole order). Customer-year keys: age_band (age
  in the performance's year, from the birth year), distance_band (the customer's mean
  distance, as in ``node.features``), frequency_band (the customer's visits to this institution
  in the performance's year), returning (whether the customer had a counted ticket here in the
  year before: in the first year of the data everyone is "new", since the data cannot tell).
  Walk-ins have no frequency band and no returning key. Node keys: institution_type and
  institution_region put every ticket in the node's own key (or outside the table).

Each unit's contribution is bounded before any noise, exactly as ``privacy.bounding`` says: at
most ``max_per_cell`` in a cell (cents for revenue; for ``bookers`` at most 1 whatever the plan
says, since a booker is counted once) and at most ``max_cells`` cells. The noiseless counts
computed here never leave the node.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import polars as pl

from node.data import CUSTOMER_KEYS, TicketTable
from privacy.bounding import ContributionBound, bounded_histogram
from privacy.mechanisms import GaussianHistogram
from privacy.noise import IntVector
from protocols.errors import ErrorCode, PublicError
from protocols.messages import HistogramQuery
from protocols.vocabulary import COUNTED_STATUSES

# Keys that are properties of the answering institution, not of its tickets.
NODE_DIMENSIONS: Final[tuple[str, ...]] = ("institution_type", "institution_region")
# Keys read from the ticket frame.
TICKET_DIMENSIONS: Final[tuple[str, ...]] = (
    "discipline",
    "quarter",
    "year",
    "region",
    "price_type",
    "channel",
    "lead_time_band",
    "order_size_band",
)
SUPPORTED_DIMENSIONS: Final[tuple[str, ...]] = (
    *TICKET_DIMENSIONS,
    *CUSTOMER_KEYS,
    *NODE_DIMENSIONS,
)
SUPPORTED_MEASURES: Final[tuple[str, ...]] = (
    "tickets",
    "visits",
    "orders",
    "bookers",
    "revenue_cents",
)
# What makes a row distinct for the measures that count things once per cell.
_DISTINCT: Final[dict[str, tuple[str, ...]]] = {
    "visits": ("unit", "performance", "cell"),
    "orders": ("unit", "order", "cell"),
    "bookers": ("unit", "cell"),
}


def unsupported(query: HistogramQuery) -> list[str]:
    """What in the query this node cannot compute (empty when it can compute all of it)."""
    what = [f"dimension {d.name!r}" for d in query.dimensions if d.name not in SUPPORTED_DIMENSIONS]
    if query.measure not in SUPPORTED_MEASURES:
        what.append(f"measure {query.measure!r}")
    return what


def effective_bound(query: HistogramQuery) -> ContributionBound:
    """The bound a unit's contribution is clipped to: the plan's, with bookers at 1 per cell."""
    if query.measure == "bookers":
        return ContributionBound(query.bound.max_cells, min(query.bound.max_per_cell, 1))
    return query.bound


def mechanism_for(query: HistogramQuery) -> GaussianHistogram:
    # Noise follows the declared bound (which the coordinator also uses for error bars), even
    # where the effective bound is tighter: never less noise than the plan promised.
    return GaussianHistogram(n_cells=query.n_cells, bound=query.bound, rho=query.rho)


def _key_index(column: pl.Expr, keys: tuple[str, ...]) -> pl.Expr:
    mapping = {k: i for i, k in enumerate(keys)}
    return column.replace_strict(mapping, default=-1, return_dtype=pl.Int64)


def _node_key(value: str, keys: tuple[str, ...]) -> pl.Expr:
    return pl.lit(keys.index(value) if value in keys else -1, dtype=pl.Int64)


def bounded_counts(
    table: TicketTable,
    query: HistogramQuery,
    institution_type: str,
    institution_region: str | None = None,
) -> IntVector:
    """Contribution-bounded true values over the query's key set, row-major.

    ``institution_region`` defaults to the table's (the node's configured region).
    """
    missing = unsupported(query)
    if missing:
        raise PublicError(
            ErrorCode.UNSUPPORTED_TASK, f"this node cannot compute {', '.join(missing)}"
        )
    own = {
        "institution_type": institution_type,
        "institution_region": institution_region or table.institution_region,
    }
    first, last = query.years
    rows = table.frame.lazy().filter(
        pl.col("order_status").is_in(COUNTED_STATUSES),
        pl.col("year").is_in([str(y) for y in range(first, last + 1)]),
    )
    if query.measure == "bookers":
        rows = rows.filter("has_account")
    wanted = [d.name for d in query.dimensions if d.name in CUSTOMER_KEYS]
    if wanted:
        # Every counted ticket has its customer-year row, so an inner join loses nothing.
        customers = table.customers.lazy().select("unit", "year", *wanted)
        rows = rows.join(customers, on=["unit", "year"], how="inner")

    cell = pl.lit(0, dtype=pl.Int64)
    valid = pl.lit(True)
    stride = 1
    for dim in reversed(query.dimensions):
        if dim.name in NODE_DIMENSIONS:
            idx = _node_key(own[dim.name], dim.keys)
        else:
            idx = _key_index(pl.col(dim.name), dim.keys)
        cell = cell + idx * stride
        valid = valid & (idx >= 0)
        stride *= len(dim.keys)

    weight = pl.col("price_cents") if query.measure == "revenue_cents" else pl.lit(1, pl.Int64)
    cells = rows.filter(valid).select(
        "unit", "performance", "order", cell.alias("cell"), weight.alias("weight")
    )
    if query.measure in _DISTINCT:
        cells = cells.unique(subset=list(_DISTINCT[query.measure])).with_columns(
            pl.lit(1, dtype=pl.Int64).alias("weight")
        )
    # Summed per (unit, cell) here, in polars; privacy.bounding then clips each such total and
    # keeps each unit's largest cells, exactly as it would from the individual rows.
    per_pair = cells.group_by("unit", "cell").agg(pl.col("weight").sum()).collect()
    return bounded_histogram(
        per_pair["unit"].to_numpy().astype(np.int64, copy=False),
        per_pair["cell"].to_numpy().astype(np.int64, copy=False),
        per_pair["weight"].to_numpy().astype(np.int64, copy=False),
        query.n_cells,
        effective_bound(query),
    )
