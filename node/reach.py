"""The node's part of sector reach (S7-S10): its people as match keys, and each reach round's
noiseless sketch (the secure-aggregation client adds the noise share and the masks).

Who counts: customers with an account and a counted ticket in the query's years. A person is a
match key (the keyed hash of the e-mail address): accounts that share an address are one
person here, which is also the privacy unit of the sketch (it covers each of those accounts).
Accounts without an address count in the last cell of their keys instead, so the coordinator
can correct reach for the customers the match key cannot see. Anonymous walk-ins are not
counted (they are no one's account, and no sector statistic can attribute them).

Match keys stay in this process: what leaves is the masked, noised sum of bucket counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import polars as pl

from node.data import TicketTable
from node.ingest.matchkey import MatchKeys
from privacy.noise import IntVector
from protocols.errors import ErrorCode, PublicError
from protocols.reach import ReachQuery, bucket_digest, copy_salt, pair_cells
from protocols.vocabulary import COUNTED_STATUSES


@dataclass(frozen=True, slots=True)
class ReachData:
    """Per (person or keyless account, discipline, year): visits. Built once per node.

    ``visits``: person (dense index of a match key, -1 without one), unit (the account, for
    keyless rows), region (the customer's home region), discipline, year, visits.
    ``keys``: the match key of each person index (in memory only).
    """

    visits: pl.DataFrame
    keys: tuple[bytes, ...]
    institution_type: str
    institution_region: str = "UNKNOWN"
    key_fingerprint: str = ""  # the match-key secret's public fingerprint (announced in Hello)

    @classmethod
    def build(
        cls,
        table: TicketTable,
        match_keys: MatchKeys | None,
        institution_type: str,
        key_fingerprint: str = "",
    ) -> ReachData:
        keys_frame = (
            match_keys.frame
            if match_keys is not None
            else pl.DataFrame(schema={"unit": pl.Int64, "match_key": pl.Binary})
        )
        distinct = keys_frame["match_key"].unique(maintain_order=True)
        index = pl.DataFrame(
            {"match_key": distinct, "person": pl.Series(range(len(distinct)), dtype=pl.Int64)}
        )
        persons = keys_frame.join(index, on="match_key", how="left").select("unit", "person")
        counted = table.frame.lazy().filter(
            pl.col("has_account") & pl.col("order_status").is_in(COUNTED_STATUSES)
        )
        # Visits: distinct performances per (unit, discipline, year).
        per_unit = (
            counted.group_by("unit", "discipline", "year")
            .agg(
                pl.col("performance").n_unique().alias("visits"),
                pl.col("region").first(),
            )
            .join(persons.lazy(), on="unit", how="left")
            .with_columns(pl.col("person").fill_null(-1), pl.col("region").fill_null("UNKNOWN"))
            .collect()
        )
        return cls(
            visits=per_unit,
            keys=tuple(bytes(k) for k in distinct.to_list()),
            institution_type=institution_type,
            institution_region=table.institution_region,
            key_fingerprint=key_fingerprint,
        )

    @property
    def people(self) -> int:
        return len(self.keys)


def problems(query: ReachQuery, data: ReachData | None) -> list[str]:
    """Why this node cannot answer the query (empty: it can)."""
    if data is None or not data.keys:
        return [
            "this node has no match keys (no [matching] key_file in node.toml, or no e-mail"
            " addresses in its data), which sector reach needs"
        ]
    return []


def _buckets(query: ReachQuery, keys: tuple[bytes, ...], copy: int) -> npt.NDArray[np.int64]:
    salt = copy_salt(query.salt, copy)
    return np.asarray(
        [bucket_digest(salt, k) % query.buckets for k in keys], dtype=np.int64
    ).reshape(-1)


def _key_cells(query: ReachQuery, rows: pl.DataFrame, who: str, own_type: str) -> pl.DataFrame:
    """(who, key index): the keys each person (or keyless account) counts in, each once."""
    keys = query.by.keys
    lookup = pl.DataFrame({"key": list(keys), "k": pl.Series(range(len(keys)), dtype=pl.Int64)})
    name = query.by.name
    if name == "sector":
        out = rows.select(who).unique().with_columns(pl.lit(0, dtype=pl.Int64).alias("k"))
    elif name == "institution_type":
        own = rows.select(who).unique().with_columns(pl.lit(own_type).alias("key"))
        out = own.join(lookup, on="key", how="inner").select(who, "k")
    elif name == "region":
        # One home region per person: the one of most visits (accounts may disagree).
        home = (
            rows.group_by(who, "region")
            .agg(pl.col("visits").sum())
            .sort([who, "visits", "region"], descending=[False, True, False])
            .group_by(who, maintain_order=True)
            .first()
        )
        out = home.join(lookup, left_on="region", right_on="key", how="inner").select(who, "k")
    else:
        # Disciplines ranked by visits (ties by name), the first max_cells kept.
        ranked = (
            rows.group_by(who, "discipline")
            .agg(pl.col("visits").sum())
            .sort([who, "visits", "discipline"], descending=[False, True, False])
            .group_by(who, maintain_order=True)
            .head(query.max_cells)
        )
        out = ranked.join(lookup, left_on="discipline", right_on="key", how="inner").select(
            who, "k"
        )
    return out.unique()


def reach_contribution(query: ReachQuery, data: ReachData | None) -> IntVector:
    """The noiseless, bounded sketch this node adds to the round's sum.

    Each person adds 1 to its bucket in each of at most ``max_cells`` keys; each keyless
    account adds 1 to the last cell of each of its keys.
    """
    reasons = problems(query, data)
    if reasons:
        raise PublicError(ErrorCode.DATA_UNAVAILABLE, "; ".join(reasons))
    assert data is not None
    first, last = query.years
    years = [str(y) for y in range(first, last + 1)]
    rows = data.visits.filter(pl.col("year").is_in(years))
    if query.layout == "pairs":
        return _pairs(query, rows, data.institution_type)
    out = np.zeros(query.n_cells, dtype=np.int64)
    width = query.width
    block = len(query.by.keys) * width  # one copy of the sketch
    keyed = rows.filter(pl.col("person") >= 0)
    if keyed.height:
        cells = _key_cells(query, keyed, "person", data.institution_type)
        person = cells["person"].to_numpy().astype(np.int64)
        key = cells["k"].to_numpy().astype(np.int64)
        for copy in range(query.copies):
            bucket = _buckets(query, data.keys, copy)[person]
            index = copy * block + key * width + bucket
            out += np.bincount(index, minlength=query.n_cells).astype(np.int64)
    keyless = rows.filter(pl.col("person") < 0)
    if keyless.height:
        cells = _key_cells(query, keyless, "unit", data.institution_type)
        key = cells["k"].to_numpy().astype(np.int64)
        for copy in range(query.copies):
            index = copy * block + key * width + query.buckets
            out += np.bincount(index, minlength=query.n_cells).astype(np.int64)
    return out


def _pairs(query: ReachQuery, rows: pl.DataFrame, own_type: str) -> IntVector:
    """The ``pairs`` layout: this institution's people per pair of their (at most max_cells)
    keys, a person or keyless account once per pair, and the people themselves in the last cell.
    """
    n = len(query.by.keys)
    cell_of = {pair: i for i, pair in enumerate(pair_cells(n))}
    out = np.zeros(query.n_cells, dtype=np.int64)
    # A unit is a match key (person >= 0) or, without one, the account.
    units = rows.with_columns(
        pl.when(pl.col("person") >= 0)
        .then(pl.col("person"))
        .otherwise(-1 - pl.col("unit"))
        .alias("who")
    )
    cells = _key_cells(query, units, "who", own_type)
    by_unit = cells.group_by("who").agg(pl.col("k").sort())
    counts: dict[int, int] = {}
    for ks in by_unit["k"].to_list():
        for i, a in enumerate(ks):
            for b in ks[i:]:
                c = cell_of[(a, b)]
                counts[c] = counts.get(c, 0) + 1
    for c, value in counts.items():
        out[c] = value
    out[-1] = by_unit.height
    return out
