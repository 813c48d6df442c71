"""Charts as inline SVG drawn on the server: no JavaScript, no fonts or files to fetch.

Every chart is an ``<svg role="img">`` with a ``<title>`` and a ``<desc>`` (what a screen reader
says), and every mark has a ``<title>`` of its own (the tooltip: value and 95% interval). The
table behind a chart is always on the page next to it; the chart is never the only way in.

Honesty rules, because a policymaker must not be misled by noise:
- every bar carries its 95% interval as an error bar, every map tile prints its interval;
- a suppressed cell (cannot be told from zero) gets no bar and no colour, only the word;
- the value axis starts at zero, and panels of one table share one scale.

Colours are attributes, not ``style``: the pages' Content-Security-Policy forbids inline styles.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from markupsafe import Markup

from coordinator.dashboard.labels import number, short_number
from protocols.geography import REGION_BY_CODE

FONT: Final[str] = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"
BAR: Final[str] = "#3b6ea8"
WHISKER: Final[str] = "#17202a"
MUTED: Final[str] = "#5f6b76"
GRID: Final[str] = "#d9dee3"

# A tile map of the regions, placed roughly as they lie (column, row): a map without borders to
# download, readable at any size, and every region gets the same room however small it is.
TILES: Final[dict[str, tuple[int, int]]] = {
    "NL-FR": (3, 0), "NL-GR": (4, 0),
    "NL-NH": (1, 1), "NL-FL": (2, 1), "NL-DR": (4, 1),
    "NL-ZH": (1, 2), "NL-UT": (2, 2), "NL-GE": (3, 2), "NL-OV": (4, 2),
    "NL-ZE": (1, 3), "NL-NB": (2, 3), "NL-LI": (3, 3),
    "BE-VWV": (0, 4), "BE-VOV": (1, 4), "BE-VAN": (2, 4), "BE-VLI": (3, 4),
    "BE-BRU": (1, 5), "BE-VBR": (2, 5),
    "BE-WAL": (2, 6),
}  # fmt: skip
# Keys without a place on the map, shown beside it.
OFF_MAP: Final[tuple[str, ...]] = ("ABROAD", "UNKNOWN")
# Sequential blues, light to dark (ColorBrewer "Blues"); a map uses one step per round band of
# its scale (3 to 7 of them). Every tile also prints its number or, on small maps, its tooltip
# does, so colour is never the only cue.
BLUES: Final[tuple[str, ...]] = (
    "#deebf7", "#c6dbef", "#9ecae1", "#6baed6", "#4292c6", "#2171b5", "#08519c"
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Mark:
    """One cell as a chart draws it, in display units (euros, not cents)."""

    key: str
    label: str
    estimate: float | None  # None: suppressed
    low: float
    high: float

    def tooltip(self, divisor: int) -> str:
        if self.estimate is None:
            return (
                f"{self.label}: suppressed, cannot be told from zero (95% interval"
                f" {number(self.low * divisor, divisor)} to {number(self.high * divisor, divisor)})"
            )
        return (
            f"{self.label}: {number(self.estimate * divisor, divisor)} (95% interval"
            f" {number(self.low * divisor, divisor)} to {number(self.high * divisor, divisor)})"
        )


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _f(x: float) -> str:
    # Coordinates: short and locale-free.
    return f"{x:.1f}".rstrip("0").rstrip(".")


def _clip(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: chars - 1] + "…"


def nice_scale(top: float, most: int = 6) -> tuple[float, float]:
    """(axis maximum, tick step) covering ``top`` with round steps (1, 2 or 5 times 10^k): the
    tightest such axis with 3 to ``most`` steps, so that bars use the room they have."""
    if not math.isfinite(top) or top <= 0:
        return 1.0, 0.25
    power = 10 ** math.floor(math.log10(top))
    best: tuple[float, float] | None = None
    for p in (power / 100, power / 10, power):
        for m in (1, 2, 5):
            step = m * p
            n = math.ceil(top / step - 1e-9)
            if 3 <= n <= most and (best is None or n * step < best[0]):
                best = (n * step, step)
    assert best is not None  # some step of 1, 2 or 5 times a power of ten always fits
    return best


def scale_top(marks: Sequence[Mark]) -> float:
    """The largest value a chart of these marks must show (interval ends included)."""
    shown = [m.high for m in marks if m.estimate is not None]
    shown += [m.estimate for m in marks if m.estimate is not None]
    return max(shown, default=0.0)


def _tick(value: float, axis_max: float) -> str:
    # One unit along an axis: 0, 5k, 10k, 15k rather than 0, 5,000, 10k, 15k.
    if value == 0:
        return "0"
    if axis_max >= 1e7:
        return f"{value / 1e6:g}M"
    if axis_max >= 1e4:
        return f"{value / 1e3:g}k"
    return short_number(value)


def _svg_open(width: float, height: float, title: str, desc: str, css: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="{css}" role="img"'
        f' viewBox="0 0 {_f(width)} {_f(height)}" width="{_f(width)}" height="{_f(height)}"'
        f' font-family="{_e(FONT)}" font-size="12">'
        f"<title>{_e(title)}</title><desc>{_e(desc)}</desc>"
    )


def bar_chart(
    marks: Sequence[Mark],
    *,
    title: str,
    desc: str,
    axis_max: float,
    step: float,
    divisor: int,
    width: float = 720,
    label_width: float = 190,
) -> Markup:
    """Horizontal bars (one per mark, in the given order) with 95% error bars."""
    row, bar_h, top, bottom, right = 22.0, 13.0, 6.0, 26.0, 86.0
    plot_w = width - label_width - right
    height = top + row * len(marks) + bottom
    # About 7 px a character at 12 px: clip longer labels (the tooltip has them whole).
    chars = max(6, int((label_width - 10) / 7.0))
    hidden = "suppressed: cannot be told from zero" if plot_w >= 300 else "suppressed"

    def x(v: float) -> float:
        return label_width + plot_w * max(0.0, min(v, axis_max)) / axis_max

    parts = [_svg_open(width, height, title, desc, "chart bars")]
    # Grid and axis labels first, so bars draw over them.
    axis_y = top + row * len(marks)
    n_ticks = round(axis_max / step)
    for i in range(n_ticks + 1):
        v = i * step
        gx = x(v)
        parts.append(
            f'<line x1="{_f(gx)}" y1="{_f(top)}" x2="{_f(gx)}" y2="{_f(axis_y)}"'
            f' stroke="{GRID}" stroke-width="1"/>'
            f'<text x="{_f(gx)}" y="{_f(axis_y + 16)}" text-anchor="middle"'
            f' fill="{MUTED}" font-size="11">{_e(_tick(v, axis_max))}</text>'
        )
    for i, m in enumerate(marks):
        y = top + row * i
        mid = y + row / 2
        parts.append(f'<g class="mark"><title>{_e(m.tooltip(divisor))}</title>')
        parts.append(
            f'<text x="{_f(label_width - 8)}" y="{_f(mid + 4)}" text-anchor="end"'
            f' fill="{WHISKER}">{_e(_clip(m.label, chars))}</text>'
        )
        if m.estimate is None:
            parts.append(
                f'<text x="{_f(label_width + 4)}" y="{_f(mid + 4)}" fill="{MUTED}"'
                f' font-style="italic">{hidden}</text></g>'
            )
            continue
        x0, x1 = x(0), x(m.estimate)
        lo, hi = x(m.low), x(m.high)
        parts.append(
            f'<rect class="bar" x="{_f(x0)}" y="{_f(mid - bar_h / 2)}"'
            f' width="{_f(max(x1 - x0, 0.5))}" height="{_f(bar_h)}" fill="{BAR}"/>'
            f'<path class="errorbar" d="M{_f(lo)} {_f(mid)}H{_f(hi)}'
            f'M{_f(lo)} {_f(mid - 5)}V{_f(mid + 5)}M{_f(hi)} {_f(mid - 5)}V{_f(mid + 5)}"'
            f' stroke="{WHISKER}" stroke-width="1.5" fill="none"/>'
            f'<text x="{_f(hi + 5)}" y="{_f(mid + 4)}" fill="{WHISKER}" font-size="11">'
            f"{_e(short_number(m.estimate))}</text></g>"
        )
    parts.append(
        f'<line x1="{_f(x(0))}" y1="{_f(top)}" x2="{_f(x(0))}" y2="{_f(axis_y)}"'
        f' stroke="{WHISKER}" stroke-width="1"/></svg>'
    )
    return Markup("".join(parts))  # noqa: S704 (every text above went through _e)


def colour_bands(axis_max: float, step: float) -> tuple[str, ...]:
    """One colour per band of ``step`` up to ``axis_max``, spread over the palette."""
    n = max(1, min(len(BLUES), round(axis_max / step)))
    if n == 1:
        return (BLUES[-1],)
    return tuple(BLUES[round(i * (len(BLUES) - 1) / (n - 1))] for i in range(n))


def _tile_colour(value: float, axis_max: float, bands: tuple[str, ...]) -> str:
    share = 0.0 if axis_max <= 0 else max(0.0, min(value / axis_max, 1.0))
    return bands[min(int(share * len(bands)), len(bands) - 1)]


def _dark(colour: str) -> bool:
    return BLUES.index(colour) >= 4


def _short_code(code: str) -> str:
    return code.split("-", 1)[1] if "-" in code else code[:3]


def region_map(
    marks: Sequence[Mark],
    *,
    title: str,
    desc: str,
    axis_max: float,
    step: float,
    divisor: int,
    compact: bool = False,
) -> Markup:
    """The regions as tiles, shaded by estimate, each printing its value and 95% interval
    (``compact``: a small map for small multiples, codes only; values in the tooltips)."""
    by_key = {m.key: m for m in marks}
    bands = colour_bands(axis_max, step)
    tw, th, gap = (34.0, 24.0, 3.0) if compact else (104.0, 58.0, 4.0)
    cols = 1 + max(c for c, _ in TILES.values())
    rows = 1 + max(r for _, r in TILES.values())
    off = [k for k in OFF_MAP if k in by_key]
    # Off-map keys go in the empty bottom-right corner of the grid.
    width = cols * (tw + gap)
    legend_h = 0.0 if compact else 34.0
    height = rows * (th + gap) + legend_h
    css = "chart region-map compact" if compact else "chart region-map"
    parts = [_svg_open(width, height, title, desc, css)]
    placed = [(k, TILES[k]) for k in TILES if k in by_key]
    placed += [(k, (cols - 1, rows - len(off) + i)) for i, k in enumerate(off)]
    for key, (c, r) in placed:
        m = by_key[key]
        x, y = c * (tw + gap), r * (th + gap)
        name = REGION_BY_CODE[key].name if key in REGION_BY_CODE else m.label
        parts.append(f'<g class="tile"><title>{_e(m.tooltip(divisor))}</title>')
        if m.estimate is None:
            parts.append(
                f'<rect x="{_f(x)}" y="{_f(y)}" width="{_f(tw)}" height="{_f(th)}" rx="3"'
                f' fill="#f4f5f6" stroke="{MUTED}" stroke-dasharray="3 2"/>'
            )
            ink = MUTED
        else:
            colour = _tile_colour(m.estimate, axis_max, bands)
            parts.append(
                f'<rect x="{_f(x)}" y="{_f(y)}" width="{_f(tw)}" height="{_f(th)}" rx="3"'
                f' fill="{colour}"/>'
            )
            ink = "#ffffff" if _dark(colour) else WHISKER
        if compact:
            parts.append(
                f'<text x="{_f(x + tw / 2)}" y="{_f(y + th / 2 + 4)}" text-anchor="middle"'
                f' fill="{ink}" font-size="10">{_e(_short_code(key))}</text></g>'
            )
            continue
        if m.estimate is None:
            value, interval = "suppressed", f"< {short_number(m.high)}"
        else:
            value = short_number(m.estimate)
            interval = f"{short_number(m.low)}–{short_number(m.high)}"
        parts.append(
            f'<text x="{_f(x + 5)}" y="{_f(y + 14)}" fill="{ink}" font-size="10.5">'
            f"{_e(_clip(name, 17))}</text>"
            f'<text x="{_f(x + 5)}" y="{_f(y + 33)}" fill="{ink}" font-size="14"'
            f' font-weight="600">{_e(value)}</text>'
            f'<text x="{_f(x + 5)}" y="{_f(y + 49)}" fill="{ink}" font-size="10">'
            f"{_e(interval)}</text></g>"
        )
    if not compact:
        parts.append(_legend(axis_max, bands, y=rows * (th + gap) + 6, width=width))
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 (every text above went through _e)


def legend(axis_max: float, step: float, *, title: str) -> Markup:
    """The colour key of a set of small maps, as a chart of its own."""
    bands = colour_bands(axis_max, step)
    width = 120 + 64 * len(bands)
    head = _svg_open(
        width, 40, title, f"Colour key: from 0 (lightest) to {axis_max:,.0f}", "legend"
    )
    return Markup(head + _legend(axis_max, bands, y=4, width=width) + "</svg>")  # noqa: S704


def _legend(axis_max: float, bands: tuple[str, ...], *, y: float, width: float) -> str:
    sw = min(64.0, (width - 120) / len(bands))
    parts = [
        f'<text x="0" y="{_f(y + 12)}" fill="{MUTED}" font-size="11">estimate</text>',
    ]
    for i, colour in enumerate(bands):
        x = 60 + i * sw
        parts.append(
            f'<rect x="{_f(x)}" y="{_f(y)}" width="{_f(sw)}" height="12" fill="{colour}"/>'
            f'<text x="{_f(x)}" y="{_f(y + 25)}" fill="{MUTED}" font-size="10">'
            f"{_e(short_number(axis_max * i / len(bands)))}</text>"
        )
    parts.append(
        f'<text x="{_f(60 + len(bands) * sw)}" y="{_f(y + 25)}" text-anchor="end"'
        f' fill="{MUTED}" font-size="10">{_e(short_number(axis_max))}</text>'
    )
    return "".join(parts)
