"""The node's part of the sector's segmentation: its customers as scaled rows, and each round's
noiseless contribution (the secure-aggregation client adds the noise share and the masks).

Which customers take part: those with an account and at least one visit (``node.features``).
Anonymous walk-ins are left out: one order each, no age, no home, they describe no audience.
Every row is a customer's features scaled by the public contract (``protocols.features``), so a
row means the same at every institution and one customer's influence on any round is bounded
in advance (``privacy.clustering.steps``).

Applying a model (``label``) happens here too: the institution sees its own audience by segment
exactly, and nothing per customer ever leaves.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import numpy.typing as npt
import polars as pl

from node.features import MIX_FEATURES, SEGMENTATION_SPACE, CustomerFeatures
from privacy.bounding import ContributionBound, bounded_histogram
from privacy.clustering.space import FeatureSpace, FloatMatrix
from privacy.clustering.steps import contribution, nearest
from privacy.noise import IntVector
from protocols.errors import ErrorCode, PublicError
from protocols.kmeans import KMeansQuery, SegmentCounts
from protocols.segment_model import SegmentModel
from protocols.vocabulary import DISCIPLINES


@dataclass(frozen=True, slots=True)
class SegmentData:
    """One row per customer with an account: scaled features and the keys S12 counts by."""

    scaled: FloatMatrix
    region: npt.NDArray[np.str_]
    age_band: npt.NDArray[np.str_]
    distance_band: npt.NDArray[np.str_]
    mix: FloatMatrix  # share of the customer's visits per discipline (DISCIPLINES order)
    as_of: date
    institution_type: str = ""
    institution_region: str = "UNKNOWN"
    space: FeatureSpace = SEGMENTATION_SPACE  # what the rows mean

    @classmethod
    def from_matrix(cls, scaled: FloatMatrix, space: FeatureSpace, as_of: date) -> SegmentData:
        """Any numeric rows already scaled to ``space`` (the library's nodes): no S12 keys."""
        n = int(np.asarray(scaled).shape[0])
        empty = np.full(n, "UNKNOWN")
        return cls(
            scaled=space.clip_to_box(scaled),
            region=empty,
            age_band=empty,
            distance_band=empty,
            mix=np.zeros((n, 0)),
            as_of=as_of,
            space=space,
        )

    @property
    def customers(self) -> int:
        return int(self.scaled.shape[0])

    @classmethod
    def from_features(
        cls,
        features: CustomerFeatures,
        institution_type: str = "",
        institution_region: str = "UNKNOWN",
    ) -> SegmentData:
        accounts = features.frame.filter(pl.col("has_account"))
        scaled = CustomerFeatures(
            accounts, features.as_of, features.distance_source, 0
        ).segmentation_matrix()
        mix = accounts.select(f.name for f in MIX_FEATURES).to_numpy().astype(np.float64)
        return cls(
            scaled=scaled,
            region=accounts["home_region"].fill_null("UNKNOWN").to_numpy().astype(str),
            age_band=accounts["age_band"].to_numpy().astype(str),
            distance_band=accounts["distance_band"].to_numpy().astype(str),
            mix=np.nan_to_num(mix),
            as_of=features.as_of,
            institution_type=institution_type,
            institution_region=institution_region,
        )


def problems(query: KMeansQuery, data: SegmentData | None) -> list[str]:
    """Why this node cannot answer the query (empty: it can)."""
    if data is None:
        return ["this node has no customer features loaded, which the segmentation needs"]
    out = []
    if query.space.features != data.space.features:
        out.append(
            "the plan's feature space is not this node's: the features, their bounds or their"
            " scaling differ (different software versions?)"
        )
    if query.as_of and query.as_of != data.as_of.isoformat():
        out.append(
            f"this node measures customer features as of {data.as_of.isoformat()}, the plan"
            f" asks for {query.as_of}: set data.as_of = {query.as_of!r} in node.toml"
        )
    return out


def kmeans_contribution(query: KMeansQuery, data: SegmentData | None) -> IntVector:
    """The noiseless, bounded, encoded vector this node adds to the round's sum."""
    reasons = problems(query, data)
    if reasons:
        raise PublicError(ErrorCode.DATA_UNAVAILABLE, "; ".join(reasons))
    assert data is not None
    step = query.step
    if isinstance(step, SegmentCounts):
        return segment_counts(step, data)
    return contribution(step, query.space, data.scaled)


def label(data: SegmentData, centres: FloatMatrix) -> npt.NDArray[np.int64]:
    """Each customer's segment (index of the nearest centre)."""
    if data.customers == 0:
        return np.zeros(0, dtype=np.int64)
    return nearest(data.scaled, np.asarray(centres, dtype=np.float64))


def _keys(step: SegmentCounts, data: SegmentData) -> tuple[npt.NDArray[np.int64], IntVector]:
    """(row, key index) pairs: one per customer, or per discipline visited (most visited
    first, at most ``max_cells``), keys outside the query's key set left out."""
    keys = step.dimension.keys
    name = step.dimension.name
    if name == "discipline":
        index = np.asarray([keys.index(d) if d in keys else -1 for d in DISCIPLINES])
        # Rank each customer's disciplines by share, so a heavy customer keeps its largest.
        order = np.argsort(-data.mix, axis=1, kind="stable")[:, : step.max_cells]
        rows = np.repeat(np.arange(data.customers), order.shape[1])
        picked = order.reshape(-1)
        visited = data.mix[rows, picked] > 0
        key = index[picked]
        keep = visited & (key >= 0)
        return rows[keep], key[keep].astype(np.int64)
    if name in ("institution_type", "institution_region"):
        own = data.institution_type if name == "institution_type" else data.institution_region
        value = np.full(data.customers, own)
    else:
        value = getattr(data, name)
    lookup = {k: i for i, k in enumerate(keys)}
    key = np.asarray([lookup.get(str(v), -1) for v in value], dtype=np.int64)
    rows = np.arange(data.customers)
    return rows[key >= 0], key[key >= 0]


def segment_counts(step: SegmentCounts, data: SegmentData) -> IntVector:
    """Customers per (segment, key), each in at most ``max_cells`` keys, once per cell."""
    labels = label(data, np.asarray(step.centres))
    rows, key = _keys(step, data)
    n_keys = len(step.dimension.keys)
    cell = labels[rows] * n_keys + key
    return bounded_histogram(
        rows.astype(np.int64),
        cell.astype(np.int64),
        np.ones(rows.size, dtype=np.int64),
        step.k * n_keys,
        ContributionBound(step.max_cells, 1),
    )


@dataclass(frozen=True, slots=True)
class SegmentRow:
    """The institution's own customers in one segment of a model, next to the sector's share."""

    key: str
    label: str
    description: str
    customers: int
    share: float  # of this institution's customers
    sector_share: float | None  # of the sector's, from the model (noisy, published)

    @property
    def index(self) -> float | None:
        """100: as common here as in the sector; 200: twice as common."""
        if self.sector_share is None or self.sector_share <= 0:
            return None
        return 100.0 * self.share / self.sector_share


class ModelMismatch(ValueError):
    """The model was made for other features than this node computes."""


def audience_by_segment(model: SegmentModel, data: SegmentData) -> list[SegmentRow]:
    """Apply a model to this institution's customers, here: nothing leaves the node."""
    if model.space.features != data.space.features:
        own = {f.name for f in data.space.features}
        theirs = {f.name for f in model.space.features}
        differ = sorted(own ^ theirs) or ["(the same names with other bounds or scaling)"]
        raise ModelMismatch(
            f"the model {model.model_id or model.title!r} was made for other features than this"
            f" node computes: {', '.join(differ[:6])}; it cannot be applied here"
        )
    labels = label(data, model.centres())
    counts = np.bincount(labels, minlength=model.k) if labels.size else np.zeros(model.k, int)
    total = max(int(counts.sum()), 1)
    return [
        SegmentRow(
            key=s.key,
            label=s.label,
            description=s.description,
            customers=int(counts[i]),
            share=float(counts[i]) / total,
            sector_share=s.share,
        )
        for i, s in enumerate(model.segments)
    ]
