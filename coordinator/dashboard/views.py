"""A stored release as a page shows it: tables with their charts, cost and provenance in words.

Any table is drawn from its dimensions alone, so tables of shapes that do not exist yet (a
``segment`` dimension from the segmentation) are drawn too:
- one dimension: bars with error bars;
- two or more: small multiples, one panel per key of the first dimension, bars over the rest,
  all panels on one scale;
- a region dimension: also the region tile map (small maps per key of the other dimension).
Values are the stored ones; revenue is shown in euros (stored in cents), nothing else changes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from markupsafe import Markup

from coordinator.dashboard import charts, labels
from coordinator.store import ReleaseSummary, StoredRelease

# Top-level fields of a release document this view knows how to show; anything else (a model
# published with a segmentation, say) is shown as it is under "Other content".
KNOWN_FIELDS: Final[frozenset[str]] = frozenset(
    {
        "schema",
        "title",
        "created_at",
        "run_id",
        "coordinator_id",
        "software",
        "plan",
        "participants",
        "privacy",
        "tables",
        "failed",
        "release_id",
    }
)
# How a table names its keys: labels.key_label, or a release's own names (segment labels).
KeyNamer = Callable[[str, str], str]

# Tables up to this many cells show their data table open; larger ones behind a click (that
# needs no JavaScript: <details>).
OPEN_TABLE_CELLS: Final[int] = 40


@dataclass(frozen=True, slots=True)
class Dimension:
    name: str
    label: str
    keys: tuple[str, ...]
    key_labels: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Cell:
    keys: tuple[str, ...]
    labels: tuple[str, ...]
    estimate: str  # formatted for reading ("suppressed" when suppressed)
    low: str
    high: str
    noisy_sum: str
    suppressed: bool


@dataclass(frozen=True, slots=True)
class Figure:
    kind: str  # "bars", "panels", "region-map", "region-maps"
    caption: str
    svgs: tuple[Markup, ...]
    panel_titles: tuple[str, ...] = ()
    legend: Markup | None = None


@dataclass(frozen=True, slots=True)
class TableView:
    analysis_id: str
    title: str
    statistic: str
    measure: str
    measure_label: str
    measure_meaning: str
    dimensions: tuple[Dimension, ...]
    cells: tuple[Cell, ...]
    figures: tuple[Figure, ...]
    summary: str
    cost: str
    noise: str
    bound: str
    consistency: str
    n_suppressed: int
    n_contributors: int
    excluded: tuple[tuple[str, str], ...]
    open_table: bool
    # Estimated tables (reach, S7-S10) say how, and what their intervals leave out.
    method: str = ""  # in plain words (estimated tables only)
    method_detail: str = ""  # the release's own method text, for analysts
    method_note: str = ""

    @property
    def by(self) -> str:
        return " × ".join(d.label.lower() for d in self.dimensions)


@dataclass(frozen=True, slots=True)
class SegmentRow:
    key: str
    label: str
    description: str
    share: str  # of the sector's customers, "23.4%" (noisy), or "not published"
    centre: tuple[str, ...]  # per feature, in the scaled space [0, 1]


@dataclass(frozen=True, slots=True)
class SegmentationView:
    """A published segmentation model (``protocols/segment_model.py``): its segments in words,
    their sector shares and centres; its S12 tables are among the release's tables."""

    model_id: str
    title: str
    features: tuple[str, ...]
    segments: tuple[SegmentRow, ...]
    card: str  # the model card as JSON


@dataclass(frozen=True, slots=True)
class ReleaseView:
    release_id: str
    ref: str
    plan_id: str
    version: int
    title: str
    created_at: str
    stored_at: str
    mode: str
    run_id: str
    coordinator_id: str
    software: str
    plan_sha256: str
    plan_text: str
    participants: tuple[tuple[str, str], ...]
    privacy_unit: str
    rho: str
    epsilon: str
    delta: str
    cost: str
    mode_note: str
    tables: tuple[TableView, ...]
    failed: tuple[tuple[str, str], ...]
    excluded: tuple[tuple[str, str, str], ...]  # institution, reason, tables
    segmentations: tuple[SegmentationView, ...]
    other: tuple[tuple[str, str], ...]  # unknown top-level fields as pretty JSON


@dataclass(frozen=True, slots=True)
class CatalogueEntry:
    release_id: str
    ref: str
    title: str
    created_at: str
    mode: str
    n_tables: int
    n_participants: int
    cost: str


def when(iso: str) -> str:
    """An ISO timestamp as a person reads it: ``2026-11-21 12:10 UTC``."""
    text = iso.replace("T", " ")
    return text[:16] + " UTC" if len(text) >= 16 else text


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def delta_text(delta: float) -> str:
    """δ as printed: ``10⁻⁷`` for a power of ten, else as it is (``2e-07``)."""
    if delta <= 0:
        return "0"
    exponent = f"{delta:.0e}"
    mantissa, _, power = exponent.partition("e")
    if mantissa == "1" and float(exponent) == delta:
        return "10" + str(int(power)).translate(_SUPERSCRIPT)
    return f"{delta:g}"


def cost_sentence(privacy: dict[str, Any], n_participants: int) -> str:
    return (
        f"Each of the {n_participants} institutions that took part spent"
        f" {labels.rho(privacy['rho_per_node'])} of its privacy budget on this release (ε ≈ "
        f"{labels.epsilon(float(privacy['epsilon_per_node']))} at δ = "
        f"{delta_text(float(privacy['delta']))})."
    )


def _marks(
    cells: Sequence[dict[str, Any]], dims: Sequence[str], divisor: int, name: KeyNamer
) -> list[charts.Mark]:
    out = []
    for cell in cells:
        keys = [str(cell[d]) for d in dims]
        est = cell["estimate"]
        out.append(
            charts.Mark(
                key=" × ".join(keys),
                label=" × ".join(name(d, k) for d, k in zip(dims, keys, strict=True)),
                estimate=None if cell["suppressed"] or est is None else est / divisor,
                low=cell["ci95_low"] / divisor,
                high=cell["ci95_high"] / divisor,
            )
        )
    return out


def _describe(marks: Sequence[charts.Mark], what: str, divisor: int) -> str:
    shown = [m for m in marks if m.estimate is not None]
    hidden = len(marks) - len(shown)
    text = f"{what}, {len(marks)} values with 95% intervals."
    if shown:
        hi = max(shown, key=lambda m: m.estimate or 0.0)
        lo = min(shown, key=lambda m: m.estimate or 0.0)
        text += f" Largest: {hi.tooltip(divisor)}."
        if lo is not hi:
            text += f" Smallest shown: {lo.tooltip(divisor)}."
    if hidden:
        text += f" {hidden} suppressed (cannot be told from zero)."
    return text + " Every value is in the table below the chart."


def _label_width(marks: Sequence[charts.Mark], most: float) -> float:
    # Room for the longest label (about 7 px a character at 12 px), within reason.
    longest = max((len(m.label) for m in marks), default=0)
    return max(48.0, min(most, 7.0 * longest + 12))


def _figures(table: dict[str, Any], title: str, name: KeyNamer) -> tuple[Figure, ...]:
    dims = [d["name"] for d in table["dimensions"]]
    divisor = labels.unit_divisor(table["measure"])
    cells = table["cells"]
    marks = _marks(cells, dims, divisor, name)
    axis_max, step = charts.nice_scale(charts.scale_top(marks))
    unit = labels.measure_label(table["measure"])
    figures: list[Figure] = []
    if len(dims) <= 1:
        figures.append(
            Figure(
                "bars",
                f"{title}: estimates with 95% error bars ({unit.lower()}).",
                (
                    charts.bar_chart(
                        marks,
                        title=title,
                        desc=_describe(marks, f"Bar chart of {title.lower()}", divisor),
                        axis_max=axis_max,
                        step=step,
                        divisor=divisor,
                        label_width=_label_width(marks, most=200),
                    ),
                ),
            )
        )
    else:
        first = table["dimensions"][0]
        rest = dims[1:]
        svgs, titles = [], []
        for key, panel_cells in _grouped(cells, first).items():
            panel = _marks(panel_cells, rest, divisor, name)
            panel_name = name(first["name"], key)
            titles.append(panel_name)
            svgs.append(
                charts.bar_chart(
                    panel,
                    title=f"{title}: {panel_name}",
                    desc=_describe(panel, f"Bar chart of {title.lower()}, {panel_name}", divisor),
                    axis_max=axis_max,
                    step=step,
                    divisor=divisor,
                    width=360,
                    label_width=_label_width(panel, most=150),
                )
            )
        figures.append(
            Figure(
                "panels",
                f"{title}: one panel per {labels.dimension_label(first['name']).lower()}, all on"
                f" one scale; estimates with 95% error bars ({unit.lower()}).",
                tuple(svgs),
                tuple(titles),
            )
        )
    figures.extend(_region_figures(table, title, dims, divisor, name))
    return tuple(figures)


def _grouped(
    cells: Sequence[dict[str, Any]], dim: dict[str, Any]
) -> dict[str, list[dict[str, Any]]]:
    """Cells by their key in one dimension, in the order of that dimension's keys."""
    groups: dict[str, list[dict[str, Any]]] = {str(k): [] for k in dim["keys"]}
    for cell in cells:
        groups[str(cell[dim["name"]])].append(cell)
    return groups


def _region_figures(
    table: dict[str, Any], title: str, dims: list[str], divisor: int, name: KeyNamer
) -> list[Figure]:
    region = next((d for d in dims if d in labels.REGION_DIMENSIONS), None)
    if region is None or len(dims) > 2:
        return []
    cells = table["cells"]
    if len(dims) == 1:
        marks = _marks(cells, dims, divisor, name)
        axis_max, step = charts.nice_scale(charts.scale_top(marks), most=len(charts.BLUES))
        return [
            Figure(
                "region-map",
                f"{title} on a map of the regions (tiles placed roughly as the regions lie;"
                " darker is more; each tile prints its estimate and 95% interval).",
                (
                    charts.region_map(
                        marks,
                        title=f"{title}: map",
                        desc=_describe(marks, f"Map of {title.lower()}", divisor),
                        axis_max=axis_max,
                        step=step,
                        divisor=divisor,
                    ),
                ),
            )
        ]
    other = next(d for d in table["dimensions"] if d["name"] != region)
    all_marks = _marks(cells, [region], divisor, name)
    axis_max, step = charts.nice_scale(
        max((m.estimate or 0.0) for m in all_marks), most=len(charts.BLUES)
    )
    svgs, titles = [], []
    for key, group in _grouped(cells, other).items():
        map_name = name(other["name"], key)
        marks = _marks(group, [region], divisor, name)
        titles.append(map_name)
        svgs.append(
            charts.region_map(
                marks,
                title=f"{title}: {map_name}",
                desc=_describe(marks, f"Map of {title.lower()}, {map_name}", divisor),
                axis_max=axis_max,
                step=step,
                divisor=divisor,
                compact=True,
            )
        )
    return [
        Figure(
            "region-maps",
            f"{title}: one small map per {labels.dimension_label(other['name']).lower()}, one"
            " colour scale for all (darker is more; dashed outline: suppressed). Hover a region"
            " for its value and interval.",
            tuple(svgs),
            tuple(titles),
            charts.legend(axis_max, step, title=f"{title}: colour key"),
        )
    ]


def _cells(table: dict[str, Any], name: KeyNamer) -> tuple[Cell, ...]:
    dims = [d["name"] for d in table["dimensions"]]
    divisor = labels.unit_divisor(table["measure"])
    out = []
    for cell in table["cells"]:
        keys = tuple(str(cell[d]) for d in dims)
        hidden = bool(cell["suppressed"]) or cell["estimate"] is None
        out.append(
            Cell(
                keys=keys,
                labels=tuple(name(d, k) for d, k in zip(dims, keys, strict=True)),
                estimate="suppressed" if hidden else labels.number(cell["estimate"], divisor),
                low=labels.number(cell["ci95_low"], divisor),
                high=labels.number(cell["ci95_high"], divisor),
                noisy_sum=labels.number(cell["noisy_sum"], divisor),
                suppressed=hidden,
            )
        )
    return tuple(out)


def table_view(
    table: dict[str, Any], titles: dict[str, str], name: KeyNamer = labels.key_label
) -> TableView:
    measure = table["measure"]
    divisor = labels.unit_divisor(measure)
    unit = labels.unit_word(measure)
    noise, post = table["noise"], table["post_processing"]
    dims = tuple(
        Dimension(
            name=d["name"],
            label=labels.dimension_label(d["name"]),
            keys=tuple(d["keys"]),
            key_labels=tuple(name(d["name"], k) for k in d["keys"]),
        )
        for d in table["dimensions"]
    )
    cells = _cells(table, name)
    n_suppressed = sum(c.suppressed for c in cells)
    partners = [titles.get(a, a) for a in post.get("consistent_with", [])]
    estimated = table.get("reach", {})  # S7-S10: how the estimate was made
    return TableView(
        analysis_id=table["analysis_id"],
        title=table["title"],
        statistic=table["statistic"],
        measure=measure,
        measure_label=labels.measure_label(measure),
        measure_meaning=labels.measure_meaning(measure),
        dimensions=dims,
        cells=cells,
        figures=_figures(table, table["title"], name),
        summary=(
            f"{len(cells)} cell{'s' if len(cells) != 1 else ''}"
            + (
                f", {n_suppressed} suppressed (cannot be told from zero)"
                if n_suppressed
                else ", none suppressed"
            )
        ),
        cost=(
            f"{labels.rho(noise['rho_per_node'])} per institution (ε ≈"
            f" {labels.epsilon(float(noise['epsilon_per_node']))})"
        ),
        noise=_noise_sentence(table, unit, divisor, bool(partners)),
        bound=_bound_sentence(table, unit, divisor),
        consistency=_consistency_sentence(table, titles, partners),
        n_suppressed=n_suppressed,
        n_contributors=len(table["contributors"]),
        excluded=tuple((e["institution_id"], e["reason"]) for e in table.get("excluded", [])),
        open_table=len(cells) <= OPEN_TABLE_CELLS,
        method=_plain_method(estimated) if estimated else "",
        method_detail=str(estimated.get("method", "")),
        method_note=str(estimated.get("note", "")),
    )


def _plain_method(estimated: dict[str, Any]) -> str:
    """What an estimated table rests on, in words: the release says it (``reach.plain``, set
    per table by the coordinator, which knows which round and model made it)."""
    plain = str(estimated.get("plain", ""))
    return plain or "An estimate from noisy counts; see the technical detail below."


def _noise_sentence(table: dict[str, Any], unit: str, divisor: int, fitted: bool) -> str:
    noise, interval = table["noise"], table["interval"]
    if "reach" in table:
        # An estimated table: the noise is on the sketch's buckets, not on the cells; the
        # intervals are the estimator's own, cell by cell.
        return (
            "Random noise was added to every bucket of the sketch the institutions summed"
            f" (standard deviation {labels.number(noise['sd_total'])} per bucket); each"
            " interval carries that noise and the hashing of people into buckets through the"
            f" estimator (median half-width ± {labels.number(interval['half_width_raw'], divisor)}"
            f" {unit}). It leaves out the model's own error: see Method."
        )
    return (
        f"Every cell carries random noise with a standard deviation of"
        f" {labels.number(noise['sd_total'], divisor)} {unit}; 95 times in 100 the noise is"
        f" smaller than ± {labels.number(interval['half_width_raw'], divisor)}"
        + (
            " before post-processing (the intervals shown are those of the consistent"
            " estimates, often narrower)."
            if fitted
            else "."
        )
    )


def _bound_sentence(table: dict[str, Any], unit: str, divisor: int) -> str:
    bound = table["noise"]["bound"]
    if "reach" in table:
        return (
            "Each person counts once per institution, whatever they bought; an estimate of"
            " distinct people has no cap to trim."
        )
    cells = int(bound["max_cells"])
    where = "in one cell" if cells == 1 else f"in at most {cells} cells"
    if bound["max_per_cell"] == 1 and divisor == 1:
        return (
            f"Before any noise, each customer counts once, {where}; one who would belong in more"
            " cells is left out of some, which the interval does not include."
        )
    return (
        f"Before any noise, each customer counts {where} and adds at most"
        f" {labels.number(bound['max_per_cell'], divisor)} {unit} to any one. The cap trims the"
        " heaviest buyers (schools, groups, subscribers), so estimates sit under the truth by"
        " what it trimmed, which the interval does not include."
    )


def _consistency_sentence(
    table: dict[str, Any], titles: dict[str, str], partners: list[str]
) -> str:
    post = table["post_processing"]
    if "reach" in table:
        return "Each estimate is held at zero or above (post-processing, which costs no privacy)."
    apart = [titles.get(a, a) for a in post.get("not_fitted_with", [])]
    not_fitted = (
        f" Not made consistent with {', '.join(apart)}: {post['not_fitted_because']}."
        if apart
        else ""
    )
    if partners:
        return (
            f"Made consistent with {', '.join(partners)}: the estimates add up across these"
            " tables exactly, and none is negative." + not_fitted
        )
    return "None is negative (post-processing, which costs no privacy)." + not_fitted


def _segmentations(doc: dict[str, Any]) -> tuple[SegmentationView, ...] | None:
    """The release's segmentation models, or None if they are not in the shape this view
    knows (they are then shown as they are, like any unknown content)."""
    try:
        views = []
        for model in doc.get("segmentations", []):
            rows = tuple(
                SegmentRow(
                    key=str(s["key"]),
                    label=str(s.get("label") or ""),
                    description=str(s.get("description") or ""),
                    share=(
                        "not published"
                        if s.get("share") is None
                        else f"{100 * float(s['share']):.1f}%"
                    ),
                    centre=tuple(f"{float(v):.2f}" for v in s["centre"]),
                )
                for s in model["segments"]
            )
            views.append(
                SegmentationView(
                    model_id=str(model.get("model_id", "")),
                    title=str(model.get("title", "")),
                    features=tuple(str(f["name"]) for f in model["space"]["features"]),
                    segments=rows,
                    card=json.dumps(model.get("card", {}), indent=2, ensure_ascii=False),
                )
            )
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return tuple(views)


def _namer(segmentations: Sequence[SegmentationView]) -> KeyNamer:
    """Key names of a release: a segment is called by its model's label where it has one."""
    named: Mapping[str, str] = {
        s.key: f"{labels.key_label('segment', s.key)}: {s.label}"
        for m in segmentations
        for s in m.segments
        if s.label
    }

    def name(dimension: str, key: str) -> str:
        if dimension == "segment" and key in named:
            return named[key]
        return labels.key_label(dimension, key)

    return name


def release_view(stored: StoredRelease) -> ReleaseView:
    doc = stored.document()
    segmentations = _segmentations(doc)
    known = KNOWN_FIELDS | ({"segmentations"} if segmentations is not None else set())
    name = _namer(segmentations or ())
    privacy = doc["privacy"]
    titles = {t["analysis_id"]: t["title"] for t in doc["tables"]}
    excluded: dict[tuple[str, str], list[str]] = {}
    for t in doc["tables"]:
        for e in t.get("excluded", []):
            excluded.setdefault((e["institution_id"], e["reason"]), []).append(t["title"])
    mode = str(privacy["mode"])
    return ReleaseView(
        release_id=stored.release_id,
        ref=stored.ref,
        plan_id=stored.plan_id,
        version=stored.version,
        title=stored.title,
        created_at=when(stored.created_at),
        stored_at=when(stored.stored_at),
        mode=mode,
        run_id=doc["run_id"],
        coordinator_id=doc["coordinator_id"],
        software=(
            f"publiek {doc['software']['publiek']}, protocol v{doc['software']['protocol_version']}"
        ),
        plan_sha256=doc["plan"]["sha256"],
        plan_text=doc["plan"]["text"],
        participants=tuple(
            (p["institution_id"], p["software_version"]) for p in doc["participants"]
        ),
        privacy_unit=privacy["unit"],
        rho=labels.rho(privacy["rho_per_node"]),
        epsilon=labels.epsilon(float(privacy["epsilon_per_node"])),
        delta=delta_text(float(privacy["delta"])),
        cost=cost_sentence(privacy, len(doc["participants"])),
        mode_note=(
            "Secure aggregation: the coordinator saw only sums over the institutions; each"
            " institution added its share of the noise before its numbers left its premises."
            if mode == "secure"
            else "Open mode: each institution added the full noise itself, and the coordinator"
            " saw each institution's noisy answer."
        ),
        tables=tuple(table_view(t, titles, name) for t in doc["tables"]),
        failed=tuple((f["analysis_id"], f["reason"]) for f in doc.get("failed", [])),
        excluded=tuple((i, r, ", ".join(ts)) for (i, r), ts in excluded.items()),
        segmentations=segmentations or (),
        other=tuple(
            (k, json.dumps(v, indent=2, ensure_ascii=False))
            for k, v in doc.items()
            if k not in known
        ),
    )


def catalogue_entry(summary: ReleaseSummary, doc: dict[str, Any]) -> CatalogueEntry:
    return CatalogueEntry(
        release_id=summary.release_id,
        ref=summary.ref,
        title=summary.title,
        created_at=when(summary.created_at),
        mode=summary.mode,
        n_tables=summary.n_tables,
        n_participants=summary.n_participants,
        cost=(
            f"{labels.rho(doc['privacy']['rho_per_node'])} (ε ≈"
            f" {labels.epsilon(float(doc['privacy']['epsilon_per_node']))}) per institution"
        ),
    )
