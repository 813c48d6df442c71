"""A segmentation model as a file: what the sector publishes and every institution can apply.

The model is public (it comes out of the secure, noisy rounds): the feature space it works in,
one centre per segment with a human-readable label and description, the sector's share of
customers in each segment, and a model card (method, privacy cost, measured quality, rounds).
A node applies it locally (``publiek-node segments``): each customer goes to the nearest
centre, and the institution sees its own audience by segment next to the sector's shares,
without sending anything. A model made elsewhere (by another sector, or a model of centres
from today's segmentation providers) can be distributed in this format and applied the same way,
without training.

``read_model`` reports every problem with a file at once; a model whose features differ from
what the node computes is refused by the node, not silently misapplied.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from privacy.clustering.space import Feature, FeatureSpace, InvalidSpace

SCHEMA: Final[str] = "publiek.segment-model/1"
MAX_SEGMENTS: Final[int] = 64
MAX_MODEL_BYTES: Final[int] = 5_000_000


class ModelError(ValueError):
    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{source}: {len(problems)} problem(s)\n  - " + "\n  - ".join(problems))


@dataclass(frozen=True, slots=True)
class Segment:
    key: str  # "segment_01": the key of S12 tables
    label: str  # a few words: "frequent · classical · 65+ · travels far"
    description: str  # a sentence with the centre's values in the features' own units
    centre: tuple[float, ...]  # in the scaled space
    share: float | None = None  # of the sector's customers (noisy), when known


@dataclass(frozen=True, slots=True)
class SegmentModel:
    model_id: str
    title: str
    space: FeatureSpace
    segments: tuple[Segment, ...]
    card: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def k(self) -> int:
        return len(self.segments)

    def centres(self) -> npt.NDArray[np.float64]:
        return np.asarray([s.centre for s in self.segments], dtype=np.float64)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "model_id": self.model_id,
            "title": self.title,
            "space": {
                "features": [
                    {"name": f.name, "low": f.low, "high": f.high, "transform": f.transform}
                    for f in self.space.features
                ],
                "origin": list(self.space.origin),
                "radius": self.space.radius,
            },
            "segments": [
                {
                    "key": s.key,
                    "label": s.label,
                    "description": s.description,
                    "centre": list(s.centre),
                    "share": s.share,
                }
                for s in self.segments
            ],
            "card": self.card,
        }

    def write(self, path: Path) -> Path:
        path.write_text(json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n")
        return path


def model_from_json(doc: Any, source: str = "model") -> SegmentModel:
    """A model from its JSON document; raises ModelError listing every problem."""
    problems: list[str] = []
    if not isinstance(doc, dict):
        raise ModelError(source, ["not a JSON object"])
    if doc.get("schema") != SCHEMA:
        problems.append(f"schema must be {SCHEMA!r}, got {str(doc.get('schema'))[:40]!r}")
    space: FeatureSpace | None = None
    raw_space = doc.get("space")
    try:
        if not isinstance(raw_space, dict) or not isinstance(raw_space.get("features"), list):
            raise InvalidSpace("space must hold features, origin and radius")
        space = FeatureSpace(
            tuple(
                Feature(str(f["name"]), float(f["low"]), float(f["high"]), str(f["transform"]))
                for f in raw_space["features"]
            ),
            tuple(float(o) for o in raw_space["origin"]),
            float(raw_space["radius"]),
        )
    except (InvalidSpace, KeyError, TypeError, ValueError) as err:
        problems.append(f"space: {err}")
    raw_segments = doc.get("segments")
    segments: list[Segment] = []
    if not isinstance(raw_segments, list) or not 1 <= len(raw_segments) <= MAX_SEGMENTS:
        problems.append(f"segments must be a list of 1 to {MAX_SEGMENTS}")
        raw_segments = []
    for i, s in enumerate(raw_segments):
        where = f"segment #{i + 1}"
        try:
            centre = tuple(float(v) for v in s["centre"])
            share = s.get("share")
            segment = Segment(
                key=str(s["key"]),
                label=str(s.get("label", "")),
                description=str(s.get("description", "")),
                centre=centre,
                share=None if share is None else float(share),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            problems.append(f"{where}: needs key and centre ({err})")
            continue
        if space is not None and len(centre) != space.dim:
            problems.append(f"{where}: centre has {len(centre)} values, the space {space.dim}")
        if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in centre):
            problems.append(f"{where}: centre values must lie in the scaled box [0, 1]")
        if segment.share is not None and not 0.0 <= segment.share <= 1.0:
            problems.append(f"{where}: share must be between 0 and 1")
        segments.append(segment)
    keys = [s.key for s in segments]
    if len(set(keys)) != len(keys):
        problems.append("segment keys repeat")
    card = doc.get("card", {})
    if not isinstance(card, dict):
        problems.append("card must be an object")
        card = {}
    if problems or space is None:
        raise ModelError(source, problems or ["space missing"])
    return SegmentModel(
        model_id=str(doc.get("model_id", "")),
        title=str(doc.get("title", "")),
        space=space,
        segments=tuple(segments),
        card=card,
    )


def read_model(path: Path) -> SegmentModel:
    return read_model_bytes(path)[0]


def read_model_bytes(path: Path) -> tuple[SegmentModel, bytes]:
    """The model and the exact bytes it was read from (one read: what is hashed is what is
    used)."""
    try:
        if path.stat().st_size > MAX_MODEL_BYTES:
            raise ModelError(str(path), [f"larger than {MAX_MODEL_BYTES:,} bytes"])
        data = path.read_bytes()
        doc = json.loads(data.decode("utf-8"))
    except FileNotFoundError as err:
        raise ModelError(str(path), ["file not found"]) from err
    except (OSError, UnicodeDecodeError) as err:
        raise ModelError(str(path), [f"cannot be read ({err})"]) from err
    except json.JSONDecodeError as err:
        raise ModelError(str(path), [f"not valid JSON: {err}"]) from err
    return model_from_json(doc, str(path)), data
