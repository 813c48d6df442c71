"""Postcode to region, as a columnar expression (no Python loop over rows)."""

from __future__ import annotations

import polars as pl

from protocols.geography import BE_POSTCODE_RANGES, NL_POSTCODE_RANGES


def _ranges_expr(area: pl.Expr, ranges: tuple[tuple[int, int, str], ...]) -> pl.Expr:
    expr: pl.Expr = pl.lit("UNKNOWN")
    for first, last, code in reversed(ranges):
        expr = pl.when(area.is_between(first, last)).then(pl.lit(code)).otherwise(expr)
    return expr


def region_expr(postcode: pl.Expr, country: pl.Expr) -> pl.Expr:
    """Region key from a full postcode ("1234 AB", "2000") and an ISO country code.

    Only the 4-digit area is read; the letters of a Dutch postcode (which narrow it to a street)
    are never used.
    """
    cc = country.str.strip_chars().str.to_uppercase()
    area = postcode.str.extract(r"^\s*([1-9]\d{3})", 1).cast(pl.Int32, strict=False)
    return (
        pl.when(~cc.is_in(["NL", "BE"]) & cc.is_not_null() & (cc != ""))
        .then(pl.lit("ABROAD"))
        .when(area.is_null())
        .then(pl.lit("UNKNOWN"))
        .when(cc == "NL")
        .then(_ranges_expr(area, NL_POSTCODE_RANGES))
        .when(cc == "BE")
        .then(_ranges_expr(area, BE_POSTCODE_RANGES))
        .otherwise(pl.lit("UNKNOWN"))
    )
