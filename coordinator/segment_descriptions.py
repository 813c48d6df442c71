"""Human-readable names for segments: "frequent · classical · 65+ · travels far".

A segment is described by what sets its centre apart from the sector: its main disciplines,
then the three or four features on which it differs most from the customer-weighted average of
all centres (measured in units of how much the centres spread on that feature, so that
kilometres and shares compare), each phrased only when its value is telling by itself (a
"frequent" segment visits at least four times a year). Everything here is post-processing of
the published centres and sizes: it costs no privacy.

Feature spaces other than the customer features (library use) get "high x1 · low x3" labels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from privacy.clustering.space import FeatureSpace
from protocols.features import NUMERIC_FEATURES

DISCIPLINE_WORDS: Final[dict[str, str]] = {
    "toneel": "theatre",
    "cabaret_kleinkunst": "cabaret",
    "musical_operette": "musical",
    "opera_muziektheater": "opera",
    "dans": "dance",
    "klassieke_muziek": "classical",
    "populaire_muziek": "pop",
    "jeugd_familie": "family shows",
    "amateur": "amateur arts",
    "film": "film",
    "museum_tentoonstelling": "museums",
    "erfgoed": "heritage",
    "literatuur_lezing": "literature",
    "festival_multidisciplinair": "festivals",
    "overig": "other",
}
MAIN_DISCIPLINE_SHARE: Final[float] = 0.25


@dataclass(frozen=True, slots=True)
class _Rule:
    """A phrase for a feature when its value passes the test, high side and low side."""

    high: tuple[float, str] | None
    low: tuple[float, str] | None


_RULES: Final[dict[str, _Rule]] = {
    "frequency": _Rule((4.0, "frequent"), (1.2, "once a year or less")),
    "recency_days": _Rule((365.0, "lapsed"), (60.0, "recent")),
    "spend_eur": _Rule((150.0, "big spenders"), (20.0, "low spend")),
    "distance_km": _Rule((30.0, "travels far"), (5.0, "local")),
    "age": _Rule((60.0, "65+"), (38.0, "under 35")),
    "lead_time_days": _Rule((60.0, "books early"), (7.0, "last-minute")),
    "group_size": _Rule((3.0, "groups and families"), (1.4, "comes alone")),
    "online_share": _Rule((0.9, "books online"), (0.4, "box office and phone")),
    "discount_share": _Rule((0.4, "discounts"), (0.05, "full price")),
}
_UNITS: Final[dict[str, Callable[[float], str]]] = {
    "frequency": lambda v: f"{v:.1f} visits a year",
    "recency_days": lambda v: f"last visit {v:.0f} days ago",
    "spend_eur": lambda v: f"EUR {v:.0f} a year",
    "distance_km": lambda v: f"{v:.0f} km from home",
    "age": lambda v: f"aged about {v:.0f}",
    "lead_time_days": lambda v: f"books {v:.0f} days ahead",
    "group_size": lambda v: f"{v:.1f} tickets per booking",
    "online_share": lambda v: f"{v:.0%} online",
    "discount_share": lambda v: f"{v:.0%} of tickets discounted",
}


@dataclass(frozen=True, slots=True)
class Description:
    label: str
    description: str


def _spread(
    scaled: npt.NDArray[np.float64], w: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    mean = (w[:, None] * scaled).sum(axis=0)
    sd = np.sqrt((w[:, None] * (scaled - mean) ** 2).sum(axis=0))
    return mean, np.maximum(sd, 1e-9)


def describe(
    space: FeatureSpace, centres: npt.NDArray[np.float64], sizes: npt.ArrayLike
) -> list[Description]:
    """One label and one sentence per centre (rows of ``centres``, in the scaled space)."""
    w = np.maximum(np.asarray(sizes, dtype=np.float64), 0.0)
    w = w / w.sum() if w.sum() > 0 else np.full(centres.shape[0], 1.0 / centres.shape[0])
    mean, sd = _spread(centres, w)
    z = (centres - mean) / sd
    raw = space.unscale(centres)
    names = space.names
    customer = {f.name for f in NUMERIC_FEATURES} <= set(names)
    out = []
    for i in range(centres.shape[0]):
        share = f"{w[i]:.0%} of customers"
        if customer:
            out.append(_customer(names, raw[i], z[i], share))
        else:
            out.append(_generic(names, raw[i], z[i], share))
    return out


def _customer(
    names: tuple[str, ...], raw: npt.NDArray[np.float64], z: npt.NDArray[np.float64], share: str
) -> Description:
    index = {n: j for j, n in enumerate(names)}
    mix = sorted(
        ((raw[j], n.removeprefix("mix_")) for n, j in index.items() if n.startswith("mix_")),
        reverse=True,
    )
    main = [d for s, d in mix if s >= MAIN_DISCIPLINE_SHARE][:2]
    words = [" and ".join(DISCIPLINE_WORDS.get(d, d) for d in main)] if main else ["mixed tastes"]
    telling = []
    for name, rule in _RULES.items():
        if name not in index:
            continue
        value, score = raw[index[name]], z[index[name]]
        if rule.high and value >= rule.high[0] and score > 0:
            telling.append((abs(score), rule.high[1]))
        elif rule.low and value <= rule.low[0] and score < 0:
            telling.append((abs(score), rule.low[1]))
    words += [w for _, w in sorted(telling, reverse=True)[:3]]
    mixes = ", ".join(f"{DISCIPLINE_WORDS.get(d, d)} {s:.0%}" for s, d in mix[:3] if s >= 0.05)
    facts = [_UNITS[n](raw[index[n]]) for n in _UNITS if n in index]
    sentence = f"{share}: {'; '.join(facts)}; visits: {mixes or 'spread over many disciplines'}."
    return Description(" · ".join(words), sentence)


def _generic(
    names: tuple[str, ...], raw: npt.NDArray[np.float64], z: npt.NDArray[np.float64], share: str
) -> Description:
    order = np.argsort(-np.abs(z))[:3]
    words = [f"{'high' if z[j] > 0 else 'low'} {names[j]}" for j in order if abs(z[j]) >= 0.5]
    facts = ", ".join(f"{n} = {v:.3g}" for n, v in zip(names, raw, strict=True))
    return Description(" · ".join(words) or "average", f"{share}: {facts}.")
