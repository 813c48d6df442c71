"""``publiek-node report``: the institution's own audience, with exact numbers, as one HTML file.

The report is for the institution itself and never leaves its premises: nothing in it is sent
anywhere, and the file loads nothing from anywhere (no scripts, fonts, images or styles from a
network; a Content-Security-Policy forbids it even if a browser were asked to). It is written
readable by its owner only. Numbers are exact (no noise: this is the institution's own data),
so the file is as confidential as the export it was made from.

Every number is computed with polars from the minimised ticket lines and the customer
features; the HTML is plain tables with inline SVG bars, each cell carrying its exact value in a
``data-value`` attribute so that a script (or a test) can read the numbers back.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import polars as pl

from node.data import LoadedData
from node.features import AGE_BAND_KEYS, DISTANCE_BAND_KEYS
from node.geo import DistanceSource
from node.segments import SegmentData, audience_by_segment
from protocols.geography import REGION_BY_CODE, REGION_CODES
from protocols.segment_model import SegmentModel
from protocols.vocabulary import (
    CHANNELS,
    COUNTED_STATUSES,
    DISCIPLINES,
    ORDER_STATUSES,
    PRICE_TYPES,
)

Number = int | float

LEAD_BANDS: Final[tuple[tuple[str, float], ...]] = (
    ("same day", 0),
    ("1-7 days", 1),
    ("8-30 days", 8),
    ("31-90 days", 31),
    ("91-180 days", 91),
    ("more than 180 days", 181),
)
BOOKING_SIZES: Final[tuple[tuple[str, int], ...]] = (
    ("1 ticket", 1),
    ("2 tickets", 2),
    ("3 tickets", 3),
    ("4 tickets", 4),
    ("5-9 tickets", 5),
    ("10 or more", 10),
)
FREQUENCY_BANDS: Final[tuple[tuple[str, int], ...]] = (
    ("1 visit", 1),
    ("2 visits", 2),
    ("3-5 visits", 3),
    ("6-10 visits", 6),
    ("more than 10", 11),
)


@dataclass(frozen=True, slots=True)
class Row:
    label: str
    values: tuple[Number, ...]


@dataclass(frozen=True, slots=True)
class Table:
    """One section: a title, an explanation, column names and rows of (label, numbers)."""

    key: str
    title: str
    note: str
    columns: tuple[str, ...]  # the label's column first
    rows: list[Row] = field(default_factory=list)
    bar: int | None = 0  # which of the values the bars show (None: no bars)


@dataclass(frozen=True, slots=True)
class AudienceReport:
    title: str
    generated_at: str
    facts: list[tuple[str, Number, str]]  # (label, value, unit)
    quality: list[str]
    tables: list[Table]


def _band_expr(value: pl.Expr, bands: tuple[tuple[str, float], ...]) -> pl.Expr:
    expr: pl.Expr = pl.lit(bands[0][0])
    for label, low in bands[1:]:
        expr = pl.when(value >= low).then(pl.lit(label)).otherwise(expr)
    return expr


def _counts(
    frame: pl.DataFrame, key: str, keys: tuple[str, ...], value: str = "n"
) -> dict[str, int]:
    got = {r[key]: int(r[value]) for r in frame.iter_rows(named=True)}
    return {k: got.get(k, 0) for k in keys}


def _price_row(price_type: str, tickets: int, eur: float) -> Row:
    mean = round(eur / tickets, 2) if tickets else 0.0
    return Row(price_type, (tickets, round(eur, 2), mean))


def _share(part: Number, whole: Number) -> float:
    return round(100.0 * part / whole, 1) if whole else 0.0


def segment_table(model: SegmentModel, data: LoadedData) -> Table:
    """Your customers by segment of the sector's model, against the sector (applied here)."""
    rows = audience_by_segment(model, SegmentData.from_features(data.features))
    return Table(
        "segments",
        f"Your audience by segment ({model.title or model.model_id})",
        "Your customers with an account, each placed in the nearest segment of the sector's"
        " shared segmentation (applied on this machine: nothing was sent). The sector's shares"
        " come with the model and carry its privacy noise; the index is 100 where a segment is"
        " as common among your customers as in the sector.",
        ("segment", "customers", "share %", "sector share %", "index"),
        [
            Row(
                f"{r.key}: {r.label}",
                (
                    r.customers,
                    round(100.0 * r.share, 1),
                    round(100.0 * r.sector_share, 1) if r.sector_share is not None else 0.0,
                    round(r.index) if r.index is not None else 0,
                ),
            )
            for r in rows
        ],
    )


def build_report(data: LoadedData, title: str, model: SegmentModel | None = None) -> AudienceReport:
    lines = data.lines
    counted = lines.filter(pl.col("order_status").is_in(COUNTED_STATUSES))
    feats = data.features.frame
    tickets = counted.height
    revenue = float(counted["price_paid_eur"].sum() or 0.0)
    bookings = counted.group_by("unit", "order", "performance").agg(
        pl.len().alias("n"),
        (
            (
                pl.col("performance_start").first() - pl.col("order_datetime").first()
            ).dt.total_seconds()
            / 86400.0
        )
        .clip(0, None)
        .alias("lead"),
    )
    visits = counted.select("unit", "performance").unique()
    first, last = counted["performance_start"].min(), counted["performance_start"].max()
    period = (
        f"{first:%Y-%m-%d} to {last:%Y-%m-%d}"
        if isinstance(first, datetime) and isinstance(last, datetime)
        else "no visits"
    )
    facts: list[tuple[str, Number, str]] = [
        ("tickets (paid and complimentary)", tickets, ""),
        ("visits (customer x performance)", visits.height, ""),
        ("customers with a visit", feats.height, ""),
        ("... of whom with an account", int(feats["has_account"].sum() or 0), ""),
        ("performances", counted["performance"].n_unique(), ""),
        ("revenue from these tickets", round(revenue, 2), "EUR"),
        ("mean price per ticket", round(revenue / tickets, 2) if tickets else 0.0, "EUR"),
        (
            "mean tickets per booking",
            round(tickets / bookings.height, 2) if bookings.height else 0.0,
            "",
        ),
    ]

    report = data.report
    quality = [
        f"Source: {report.source} ({report.description})",
        f"Rows read: {report.rows_read:,}; used: {report.rows_kept:,}; quarantined:"
        f" {report.quarantined:,} ({report.bad_share:.2%}).",
        f"Performances from {period}; customer features measured as of {data.features.as_of}.",
    ]
    for group in report.counts().iter_rows(named=True):
        quality.append(
            f"{group['severity']}: {group['column']}: {group['kind']} in {group['rows']:,} row(s)"
        )
    quality += list(report.notices)

    tables: list[Table] = []
    by_disc_year = counted.group_by(
        "discipline", pl.col("performance_start").dt.year().alias("year")
    ).len("n")
    years = sorted(by_disc_year["year"].unique().to_list())
    disc_rows: list[Row] = []
    for d in DISCIPLINES:
        per_year = {
            r["year"]: int(r["n"])
            for r in by_disc_year.filter(pl.col("discipline") == d).iter_rows(named=True)
        }
        values = [per_year.get(y, 0) for y in years]
        if sum(values):
            disc_rows.append(Row(d, (sum(values), *values)))
    tables.append(
        Table(
            "discipline-year",
            "Tickets by discipline and year",
            "Paid and complimentary tickets, by the year of the performance.",
            ("discipline", "all years", *(str(y) for y in years)),
            disc_rows,
        )
    )
    quarters = (
        counted.group_by(
            (
                pl.col("performance_start").dt.year().cast(pl.String)
                + "Q"
                + pl.col("performance_start").dt.quarter().cast(pl.String)
            ).alias("quarter")
        )
        .len("n")
        .sort("quarter")
    )
    tables.append(
        Table(
            "quarter",
            "Tickets by quarter",
            "Paid and complimentary tickets by the quarter of the performance.",
            ("quarter", "tickets"),
            [Row(r["quarter"], (int(r["n"]),)) for r in quarters.iter_rows(named=True)],
        )
    )
    status = _counts(lines.group_by("order_status").len("n"), "order_status", ORDER_STATUSES)
    tables.append(
        Table(
            "status",
            "All ticket rows by order status",
            "Only paid tickets count as attendance; the rest is shown for completeness.",
            ("order status", "ticket rows", "share %"),
            [Row(k, (v, _share(v, lines.height))) for k, v in status.items()],
        )
    )
    channel = _counts(counted.group_by("channel").len("n"), "channel", CHANNELS)
    tables.append(
        Table(
            "channel",
            "Sales channels",
            "Paid and complimentary tickets by the channel they were sold through.",
            ("channel", "tickets", "share %"),
            [Row(k, (v, _share(v, tickets))) for k, v in channel.items()],
        )
    )
    price = counted.group_by("price_type").agg(
        pl.len().alias("n"), pl.col("price_paid_eur").sum().alias("eur")
    )
    price_map = {
        r["price_type"]: (int(r["n"]), float(r["eur"])) for r in price.iter_rows(named=True)
    }
    tables.append(
        Table(
            "price-type",
            "Price types",
            "Tickets, revenue and mean price per price type.",
            ("price type", "tickets", "revenue EUR", "mean price EUR"),
            [_price_row(k, *price_map.get(k, (0, 0.0))) for k in PRICE_TYPES],
        )
    )
    lead = _counts(
        bookings.group_by(_band_expr(pl.col("lead").floor(), LEAD_BANDS).alias("band")).len("n"),
        "band",
        tuple(b for b, _ in LEAD_BANDS),
    )
    tables.append(
        Table(
            "lead-time",
            "Booking lead time",
            "Bookings (the tickets of one order for one performance) by the days between booking"
            " and the performance.",
            ("booked", "bookings", "share %"),
            [Row(k, (v, _share(v, bookings.height))) for k, v in lead.items()],
        )
    )
    size = _counts(
        bookings.group_by(_band_expr(pl.col("n"), BOOKING_SIZES).alias("band")).len("n"),
        "band",
        tuple(b for b, _ in BOOKING_SIZES),
    )
    tables.append(
        Table(
            "booking-size",
            "Tickets per booking",
            "How many tickets people buy together for one performance.",
            ("booking of", "bookings", "share %"),
            [Row(k, (v, _share(v, bookings.height))) for k, v in size.items()],
        )
    )
    accounts = feats.filter(pl.col("has_account"))
    active = accounts.filter(pl.col("frequency") >= 1)
    freq = _counts(
        active.group_by(_band_expr(pl.col("frequency"), FREQUENCY_BANDS).alias("band")).len("n"),
        "band",
        tuple(b for b, _ in FREQUENCY_BANDS),
    )
    tables.append(
        Table(
            "frequency",
            "Visit frequency in the last 12 months",
            f"Customers with an account who visited in the 12 months up to"
            f" {data.features.as_of}, by their number of visits in that period.",
            ("visited", "customers", "share %"),
            [Row(k, (v, _share(v, active.height))) for k, v in freq.items()],
        )
    )
    first_year = (
        counted.filter(pl.col("unit").is_in(accounts["unit"].implode()))
        .group_by("unit")
        .agg(pl.col("performance_start").dt.year().min().alias("first"))
    )
    active_years = (
        counted.filter(pl.col("unit").is_in(accounts["unit"].implode()))
        .select("unit", pl.col("performance_start").dt.year().alias("year"))
        .unique()
        .join(first_year, on="unit")
    )
    returning = (
        active_years.group_by("year")
        .agg(pl.len().alias("customers"), (pl.col("year") == pl.col("first")).sum().alias("new"))
        .sort("year")
    )
    tables.append(
        Table(
            "new-returning",
            "New and returning customers",
            "Customers with an account who visited in each year: new means no visit in an earlier"
            " year of this export (the first year of an export counts everyone as new).",
            ("year", "customers", "new", "returning"),
            [
                Row(
                    str(r["year"]),
                    (int(r["customers"]), int(r["new"]), int(r["customers"] - r["new"])),
                )
                for r in returning.iter_rows(named=True)
            ],
        )
    )
    region = _counts(feats.group_by("home_region").len("n"), "home_region", REGION_CODES)
    tables.append(
        Table(
            "home-region",
            "Where customers live",
            "Customers by the region of their home postcode (unknown: no or an unreadable"
            " postcode).",
            ("region", "customers", "share %"),
            [
                Row(REGION_BY_CODE[k].name, (v, _share(v, feats.height)))
                for k, v in region.items()
                if v or k != "UNKNOWN"
            ],
        )
    )
    source = data.features.distance_source
    how = {
        DistanceSource.PC4: "from the centroid of each customer's postcode area (PC4 table)",
        DistanceSource.REGION: "from the centroid of each customer's province: coarse, no PC4"
        " centroid table is configured",
        None: "not measured: no venue location is configured ([geography] location)",
    }[source]
    dist = _counts(feats.group_by("distance_band").len("n"), "distance_band", DISTANCE_BAND_KEYS)
    tables.append(
        Table(
            "distance",
            "Distance travelled",
            f"Customers by mean distance from home to the venues they visited, {how}.",
            ("distance", "customers", "share %"),
            [Row(k, (v, _share(v, feats.height))) for k, v in dist.items()],
        )
    )
    age = _counts(feats.group_by("age_band").len("n"), "age_band", AGE_BAND_KEYS)
    tables.append(
        Table(
            "age",
            "Age",
            f"Customers by age on {data.features.as_of} (unknown: no birth year).",
            ("age", "customers", "share %"),
            [Row(k, (v, _share(v, feats.height))) for k, v in age.items()],
        )
    )
    mix = (
        counted.select("unit", "discipline")
        .unique()
        .group_by("unit")
        .len("k")
        .group_by(
            pl.when(pl.col("k") >= 3)
            .then(pl.lit("3 or more"))
            .otherwise(pl.col("k").cast(pl.String))
            .alias("band")
        )
        .len("n")
    )
    mix_counts = _counts(mix, "band", ("1", "2", "3 or more"))
    tables.append(
        Table(
            "discipline-count",
            "How many disciplines customers visit",
            "Customers by the number of different disciplines they visited.",
            ("disciplines", "customers", "share %"),
            [Row(k, (v, _share(v, feats.height))) for k, v in mix_counts.items()],
        )
    )
    if model is not None:
        tables.append(segment_table(model, data))
    return AudienceReport(
        title=title,
        generated_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        facts=facts,
        quality=quality,
        tables=tables,
    )


_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:60rem;
color:#1d2433;padding:0 1rem;line-height:1.4}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.15rem;margin-top:2.2rem}
.lead{color:#4a5568}.warn{background:#fff8e1;border-left:4px solid #f2a900;padding:.6rem 1rem}
table{border-collapse:collapse;width:100%;margin:.5rem 0}th,td{padding:.25rem .5rem;
border-bottom:1px solid #e2e8f0;text-align:right;font-variant-numeric:tabular-nums}
th:first-child,td:first-child{text-align:left}td.bar{width:35%}svg{display:block}
.facts td:first-child{width:60%}.note{color:#4a5568;font-size:.9rem}
footer{margin-top:3rem;color:#4a5568;font-size:.85rem}
"""
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def _fmt(value: Number) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if value != int(value) or abs(value) < 1000 else f"{value:,.0f}"
    return f"{value:,}"


def _bar(value: Number, biggest: Number) -> str:
    width = 0.0 if not biggest else max(0.0, 100.0 * float(value) / float(biggest))
    return (
        '<svg width="100%" height="14" role="img" aria-hidden="true">'
        f'<rect x="0" y="2" width="{width:.1f}%" height="10" fill="#3b6fb6"/></svg>'
    )


def render_html(report: AudienceReport) -> str:
    e = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(report.title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{e(report.title)}</h1>",
        f'<p class="lead">Your own audience, from your own ticket data, made on this machine'
        f" on {e(report.generated_at)}.</p>",
        '<p class="warn">Exact numbers about your customers: this report never leaves your'
        " premises unless you send it. Nothing in it was shared with the sector coordinator.</p>",
        '<h2 id="facts">At a glance</h2><table class="facts">',
    ]
    for label, value, unit in report.facts:
        out.append(
            f'<tr><td>{e(label)}</td><td data-value="{value}">{e(_fmt(value))}'
            f"{(' ' + e(unit)) if unit else ''}</td></tr>"
        )
    out.append('</table><h2 id="quality">Data quality</h2><ul class="note">')
    out += [f"<li>{e(q)}</li>" for q in report.quality]
    out.append("</ul>")
    for table in report.tables:
        out.append(
            f'<h2 id="{e(table.key)}">{e(table.title)}</h2><p class="note">{e(table.note)}</p>'
        )
        out.append(f'<table id="t-{e(table.key)}"><thead><tr>')
        out += [f"<th>{e(c)}</th>" for c in table.columns]
        bar = table.bar
        if bar is not None:
            out.append("<th></th>")
        out.append("</tr></thead><tbody>")
        biggest = (
            max((float(r.values[bar]) for r in table.rows), default=0.0) if bar is not None else 0.0
        )
        for row in table.rows:
            out.append(f"<tr><td>{e(row.label)}</td>")
            out += [f'<td data-value="{v}">{e(_fmt(v))}</td>' for v in row.values]
            if bar is not None:
                out.append(f'<td class="bar">{_bar(row.values[bar], biggest)}</td>')
            out.append("</tr>")
        out.append("</tbody></table>")
    out.append(
        "<footer>Made by publiek-node report. Customers are privacy units: a customer account,"
        " or one order of an anonymous buyer. Visits are distinct (customer, performance) pairs"
        " with a paid or complimentary ticket. Definitions: docs/node-data.md.</footer>"
    )
    out.append("</body></html>")
    return "\n".join(out)


def write_report(
    data: LoadedData, out: Path, title: str, model: SegmentModel | None = None
) -> Path:
    """Write the report, readable by its owner only (it holds exact numbers)."""
    text = render_html(build_report(data, title, model))
    out.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    return out
