"""The local query engine: from the ticket table to a contribution-bounded histogram.

Rows are mapped to cells of the public key set (rows whose key is not in the set fall outside
the table and are not counted), weighted by the measure, and handed to ``privacy/`` for bounding.
The noiseless counts computed here never leave the node.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from node.data import TicketTable
from privacy.mechanisms import GaussianHistogram
from privacy.noise import IntVector
from protocols.errors import ErrorCode, PublicError
from protocols.messages import HistogramQuery
from protocols.vocabulary import COUNTED_STATUSES

# Dimensions read from the ticket table; "institution_type" is a property of the node itself.
_TABLE_DIMENSIONS = ("discipline", "quarter", "year", "region", "price_type", "channel")
SUPPORTED_DIMENSIONS = (*_TABLE_DIMENSIONS, "institution_type")
SUPPORTED_MEASURES = ("tickets",)


def _key_index(column: pl.Expr, keys: tuple[str, ...]) -> pl.Expr:
    mapping = {k: i for i, k in enumerate(keys)}
    return column.replace_strict(mapping, default=-1, return_dtype=pl.Int64)


def mechanism_for(query: HistogramQuery) -> GaussianHistogram:
    return GaussianHistogram(n_cells=query.n_cells, bound=query.bound, rho=query.rho)


def bounded_counts(table: TicketTable, query: HistogramQuery, institution_type: str) -> IntVector:
    """Contribution-bounded true counts over the query's key set, row-major."""
    unsupported = [d.name for d in query.dimensions if d.name not in SUPPORTED_DIMENSIONS]
    if unsupported or query.measure not in SUPPORTED_MEASURES:
        what = ", ".join(unsupported) if unsupported else f"measure {query.measure!r}"
        raise PublicError(ErrorCode.UNSUPPORTED_TASK, f"this node cannot compute {what}")

    df = table.frame.filter(pl.col("order_status").is_in(COUNTED_STATUSES))
    cell = pl.lit(0, dtype=pl.Int64)
    valid = pl.lit(True)
    stride = 1
    for dim in reversed(query.dimensions):
        if dim.name == "institution_type":
            idx = pl.lit(dim.keys.index(institution_type) if institution_type in dim.keys else -1)
        else:
            idx = _key_index(pl.col(dim.name), dim.keys)
        cell = cell + idx * stride
        valid = valid & (idx >= 0)
        stride *= len(dim.keys)
    rows = df.select(pl.col("unit"), cell.alias("cell"), valid.alias("valid")).filter("valid")
    unit = rows["unit"].to_numpy().astype(np.int64, copy=False)
    cells = rows["cell"].to_numpy().astype(np.int64, copy=False)
    weight = np.ones(unit.shape[0], dtype=np.int64)  # one per ticket
    return mechanism_for(query).true_counts(unit, cells, weight)
