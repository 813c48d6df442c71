"""The ``[[segmentation]]`` section of a plan: the sector's shared segmentation and S12.

    [[segmentation]]
    id = "s12_segments"
    title = "Audience segments (federated DP k-means)"
    k = 11                     # segments
    epsilon = 1.0              # per node for the fit, at the plan's delta (or rho = "0.02")
    max_lloyd_rounds = 8       # refinement rounds at most (a stopping rule may end them early)
    max_depth = 16             # levels of the partition tree at most
    # as_of = "2024-12-31"     # the date features are measured at (default: each node's own)
    years = [2024, 2024]       # the period the S12 tables are labelled with

    [[segmentation.table]]     # S12: customers by segment and one public dimension
    by = "region"
    rho = "0.005"

    [[segmentation.table]]
    by = "discipline"
    max_cells = 3              # a customer counts in up to 3 disciplines (most visited first)
    rho = "0.005"

A segmentation can also **apply a model made before** instead of fitting one: ``model`` names a
model file (``publiek.segment-model/1``: the ``segment-model-*.json`` of an earlier release, or
centres made elsewhere), relative to the plan file. Nothing is fitted and nothing is spent on a
fit; only the S12 tables are counted with the model's centres, and the release carries the model
as it was given, with its file's SHA-256::

    [[segmentation]]
    id = "s12_2025"
    model = "releases/sector-2024/segment-model-seg-0123456789abcdef.json"
    years = [2025, 2025]

    [[segmentation.table]]
    by = "region"
    rho = "0.005"

The fit's cost is the most it can take (the stopping rule may leave part of it unspent); each
table costs its rho. ``epsilon`` is converted to rho with OpenDP's conversion at the plan's
delta (``privacy.budget.rho_for_epsilon``), rounded down, so the fit never costs more than the
epsilon declared. Segmentation runs in secure mode only.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Final

from privacy.bounding import ContributionBound
from privacy.budget import InvalidBudget, Rho, compose, rho_for_epsilon
from privacy.clustering.budget import DEFAULT_LLOYD_ROUNDS, DEFAULT_MAX_DEPTH
from privacy.clustering.space import FeatureSpace
from privacy.clustering.tree import MAX_DEPTH
from protocols.dimensions import SEGMENT_KEYS, public_keys
from protocols.features import customer_space
from protocols.kmeans import SEGMENT_DIMENSIONS, KMeansQuery, SegmentCounts
from protocols.messages import Dimension, HistogramQuery, ReleaseMode
from protocols.plan_sections import section_tables, unknown_keys, whole_number
from protocols.segment_model import ModelError, SegmentModel, read_model_bytes

MAX_SEGMENTATIONS: Final[int] = 4
MAX_TABLES: Final[int] = 12
STATISTIC: Final[str] = "S12"
_FIELDS: Final[frozenset[str]] = frozenset(
    {
        "id",
        "title",
        "k",
        "epsilon",
        "rho",
        "max_lloyd_rounds",
        "max_depth",
        "as_of",
        "years",
        "table",
        "model",
    }
)
_TABLE_FIELDS: Final[frozenset[str]] = frozenset({"by", "max_cells", "rho"})
_MODEL_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# What only a fit has: a segmentation that applies a given model must leave them out.
_FIT_FIELDS: Final[tuple[str, ...]] = ("k", "epsilon", "rho", "max_lloyd_rounds", "max_depth")


@dataclass(frozen=True, slots=True)
class SegmentTable:
    """One S12 table: customers by segment and ``by``."""

    id: str
    by: str
    max_cells: int
    rho: Rho


@dataclass(frozen=True, slots=True)
class Segmentation:
    id: str
    title: str
    k: int
    rho: Rho  # the most the fit may cost each node
    epsilon: float | None  # as the plan declared it, if it did
    max_lloyd_rounds: int
    max_depth: int
    as_of: str
    years: tuple[int, int]
    tables: tuple[SegmentTable, ...]
    # A model to apply instead of fitting one: the file as the plan names it, and, once read
    # (the plan was loaded from a file), the model and the file's SHA-256.
    model_file: str = ""
    model: SegmentModel | None = None
    model_sha256: str = ""

    @property
    def space(self) -> FeatureSpace:
        return customer_space()

    @property
    def segment_keys(self) -> tuple[str, ...]:
        return SEGMENT_KEYS[: self.k]

    @property
    def total_rho(self) -> Rho:
        return compose([self.rho, *(t.rho for t in self.tables)])

    def table_dimension(self, table: SegmentTable) -> Dimension:
        return Dimension(table.by, public_keys(table.by, *self.years))

    def table_query(
        self, table: SegmentTable, centres: tuple[tuple[float, ...], ...]
    ) -> KMeansQuery:
        step = SegmentCounts(centres, self.table_dimension(table), table.max_cells)
        return KMeansQuery(STATISTIC, self.space, step, table.rho, as_of=self.as_of)

    def table_histogram(self, table: SegmentTable) -> HistogramQuery:
        """How the table is released: bookers by segment x ``by``, like any other table."""
        return HistogramQuery(
            statistic=STATISTIC,
            measure="bookers",
            dimensions=(Dimension("segment", self.segment_keys), self.table_dimension(table)),
            bound=ContributionBound(table.max_cells, 1),
            rho=table.rho,
            mode=ReleaseMode.SECURE,
            years=self.years,
        )


def _rho(raw: Any, where: str, problems: list[str]) -> Rho | None:
    try:
        rho = Rho.parse(str(raw))
    except InvalidBudget as err:
        problems.append(f"{where}: {err}")
        return None
    if rho.is_zero():
        problems.append(f"{where}: rho must be positive")
        return None
    return rho


def _whole(
    raw: dict[str, Any],
    key: str,
    default: int,
    low: int,
    high: int,
    where: str,
    problems: list[str],
) -> int:
    value = raw.get(key, default)
    if not whole_number(value) or not low <= value <= high:
        problems.append(f"{where}: {key} must be a whole number from {low} to {high}")
        return default
    return value


def _tables(raw: Any, seg_id: str, where: str, problems: list[str]) -> list[SegmentTable]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        problems.append(
            f"{where}: its tables must be written [[segmentation.table]] (a list of tables),"
            " not [segmentation.table]"
        )
        return []
    if len(raw) > MAX_TABLES:
        problems.append(f"{where}: table must be a list of at most {MAX_TABLES} [[...table]]")
        return []
    out = []
    seen: set[str] = set()
    for i, t in enumerate(raw):
        here = f"{where}, table #{i + 1}"
        if not isinstance(t, dict):
            problems.append(f"{here} is not a table")
            continue
        unknown_keys(t, _TABLE_FIELDS, here, problems)
        by = t.get("by")
        if by not in SEGMENT_DIMENSIONS:
            problems.append(f"{here}: by must be one of {', '.join(SEGMENT_DIMENSIONS)}")
            continue
        if by in seen:
            problems.append(f"{here}: a table by {by} is there already")
        seen.add(by)
        keys = len(public_keys(by, 2024, 2024))
        max_cells = _whole(t, "max_cells", 1, 1, keys, here, problems)
        rho = _rho(t.get("rho", ""), here, problems)
        if rho is not None:
            out.append(SegmentTable(f"{seg_id}_by_{by}", by, max_cells, rho))
    return out


def _given_model(
    s: dict[str, Any], where: str, base: Path | None, problems: list[str]
) -> tuple[str, SegmentModel | None, str]:
    """The model a segmentation applies: (file as named, model, SHA-256). The file is read
    only when the plan came from a file (``base``: its folder)."""
    name = s["model"]
    if not isinstance(name, str) or not name.strip():
        problems.append(f"{where}: model must be the path of a segment model file")
        return "", None, ""
    given = [f for f in _FIT_FIELDS if f in s]
    if given:
        problems.append(
            f"{where}: a segmentation that applies a model fits none, so it takes no"
            f" {', '.join(given)} (the model's own segments are used)"
        )
    if base is None:
        return name, None, ""
    path = Path(name) if Path(name).is_absolute() else base / name
    try:
        model, data = read_model_bytes(path)
        digest = hashlib.sha256(data).hexdigest()
    except ModelError as err:
        problems.append(f"{where}: model {name}: " + "; ".join(err.problems))
        return name, None, ""
    except OSError as err:
        problems.append(f"{where}: model {name}: cannot be read ({err.strerror or err})")
        return name, None, ""
    if model.space != customer_space():
        problems.append(
            f"{where}: model {name} works on other features than the nodes compute"
            f" ({', '.join(f.name for f in model.space.features)})"
        )
    if not 2 <= model.k <= len(SEGMENT_KEYS):
        problems.append(
            f"{where}: model {name} has {model.k} segment(s); S12 needs 2 to {len(SEGMENT_KEYS)}"
        )
    keys = [x.key for x in model.segments]
    if keys != list(SEGMENT_KEYS[: model.k]):
        # The S12 tables are keyed segment_01, segment_02, ... in the model's order; a model
        # keyed otherwise would be released with keys its own tables do not use.
        problems.append(
            f"{where}: model {name} must key its segments {SEGMENT_KEYS[0]},"
            f" {SEGMENT_KEYS[1]}, ... in order, as S12 does (it has {', '.join(keys[:4])}"
            f"{', ...' if len(keys) > 4 else ''})"
        )
    if not _MODEL_ID.fullmatch(model.model_id):
        # The release writes the model as segment-model-<model_id>.json.
        problems.append(
            f"{where}: model {name} has model_id {model.model_id[:40]!r}; it must be 1 to 64"
            " letters, digits, '.', '_' or '-'"
        )
    return name, model, digest


def parse_segmentations(
    raw: Any,
    mode: ReleaseMode,
    delta: float,
    problems: list[str],
    seen: set[str],
    base: Path | None = None,
) -> tuple[Segmentation, ...]:
    """The plan's [[segmentation]] sections; every problem goes into ``problems``.

    ``base``: the plan file's folder, which a ``model`` path is relative to; without it (a plan
    parsed from text alone) a model is named but not read, and cannot be run."""
    out = []
    models_seen: set[str] = set()
    for s, sid, where, before in section_tables(
        raw,
        "segmentation",
        MAX_SEGMENTATIONS,
        f"segmentation must be at most {MAX_SEGMENTATIONS} [[segmentation]]",
        _FIELDS,
        mode,
        "a segmentation runs in secure mode only",
        problems,
        seen,
    ):
        model_file, model, model_sha256 = "", None, ""
        if "model" in s:
            model_file, model, model_sha256 = _given_model(s, where, base, problems)
            if model is not None:
                # The release holds one file per model id.
                if model.model_id in models_seen:
                    problems.append(
                        f"{where}: model {model.model_id} is applied by another segmentation"
                        " of this plan already"
                    )
                models_seen.add(model.model_id)
        k = (
            model.k
            if model is not None
            else _whole(s, "k", 11, 2, len(SEGMENT_KEYS), where, problems)
        )
        rounds = _whole(s, "max_lloyd_rounds", DEFAULT_LLOYD_ROUNDS, 1, 50, where, problems)
        depth = _whole(s, "max_depth", DEFAULT_MAX_DEPTH, 1, MAX_DEPTH, where, problems)
        epsilon = s.get("epsilon")
        rho: Rho | None = None
        if "model" in s:
            rho = Rho.zero()  # nothing is fitted
        elif (epsilon is None) == ("rho" not in s):
            problems.append(f"{where}: give the fit's budget as epsilon or as rho (one of them)")
        elif epsilon is not None:
            if isinstance(epsilon, bool) or not isinstance(epsilon, int | float) or epsilon <= 0:
                problems.append(f"{where}: epsilon must be a positive number")
            else:
                rho = rho_for_epsilon(float(epsilon), delta)
        else:
            rho = _rho(s["rho"], where, problems)
        as_of = s.get("as_of", "")
        if isinstance(as_of, date):
            as_of = as_of.isoformat()
        if not isinstance(as_of, str):
            problems.append(f"{where}: as_of must be a date like 2024-12-31")
            as_of = ""
        elif as_of:
            try:
                date.fromisoformat(as_of)
            except ValueError:
                problems.append(f"{where}: as_of must be a date like 2024-12-31")
        years = s.get("years", [2024, 2024])
        if (
            not isinstance(years, list)
            or len(years) != 2
            or not all(isinstance(y, int) and not isinstance(y, bool) for y in years)
            or not 1990 <= years[0] <= years[1] <= 2100
        ):
            problems.append(f"{where}: years must be [first, last] within 1990..2100")
            years = [2024, 2024]
        tables = _tables(s.get("table"), sid, where, problems)
        for t in tables:
            if t.id in seen:
                problems.append(f"{where}: table id {t.id!r} is used twice")
            seen.add(t.id)
        if len(problems) > before or rho is None:
            continue
        out.append(
            Segmentation(
                id=sid,
                title=str(s.get("title", sid)),
                k=k,
                rho=rho,
                epsilon=float(epsilon) if epsilon is not None else None,
                max_lloyd_rounds=rounds,
                max_depth=depth,
                as_of=as_of,
                years=(years[0], years[1]),
                tables=tuple(tables),
                model_file=model_file,
                model=model,
                model_sha256=model_sha256,
            )
        )
    return tuple(out)
