"""Releases: immutable, self-describing files a policymaker or an auditor can open.

A release is a JSON document (tables, intervals, and full provenance: plan text and hash, nodes
that took part or were excluded and why, noise scales, privacy cost, software version) plus one
CSV per table. Its id is a hash of its content, files are created exclusively and made
read-only: a release is never edited, only superseded by a new one.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from coordinator.aggregate import AggregatedTable
from coordinator.postprocess import Estimate, NoisyTable, post_process, suppressed
from coordinator.transport import NodeInfo
from protocols.plan import Plan
from protocols.version import PROTOCOL_VERSION, software_version

SCHEMA = "publiek.release/1"
PRIVACY_UNIT = "one customer account at one institution (an anonymous order counts as one unit)"


class ReleaseExists(FileExistsError):
    pass


@dataclass(frozen=True, slots=True)
class FailedAnalysis:
    analysis_id: str
    reason: str


def _table_json(
    t: AggregatedTable, estimate: Estimate, delta: float, suppress_below: float
) -> dict[str, Any]:
    q = t.analysis.query
    hidden = suppressed(estimate.values, estimate.half_width, suppress_below)
    cells = []
    keys_of_cells = itertools.product(*(d.keys for d in q.dimensions))
    for i, (keys, raw) in enumerate(zip(keys_of_cells, t.sums, strict=True)):
        cell: dict[str, Any] = {d.name: k for d, k in zip(q.dimensions, keys, strict=True)}
        value, h = float(estimate.values[i]), float(estimate.half_width[i])
        # The estimate is consistent with the other tables of its family and non-negative
        # (post-processing, free under DP); the raw noisy sum stays for analysts who want an
        # unbiased value.
        cell["estimate"] = None if hidden[i] else round(value)
        cell["ci95_low"] = max(0, round(value - h))
        cell["ci95_high"] = max(0, round(value + h))
        cell["noisy_sum"] = raw
        cell["suppressed"] = bool(hidden[i])
        cells.append(cell)
    return {
        "analysis_id": t.analysis.id,
        "title": t.analysis.title,
        "statistic": q.statistic,
        "measure": q.measure,
        "dimensions": [{"name": d.name, "keys": list(d.keys)} for d in q.dimensions],
        "contributors": list(t.contributors),
        "excluded": [{"institution_id": i, "reason": r} for i, r in t.excluded],
        "noise": {
            "mechanism": q.mechanism,
            "mode": q.mode.value,
            "scale_per_node": t.per_node_scale,
            "nodes_added": len(t.contributors),
            "sd_total": t.sd_total,
            "l2_sensitivity": q.bound.l2_sensitivity,
            "bound": {"max_cells": q.bound.max_cells, "max_per_cell": q.bound.max_per_cell},
            "rho_per_node": str(q.rho),
            "epsilon_per_node": q.rho.to_approx_dp(delta).epsilon,
        },
        **({"secure_aggregation": t.secure_round} if t.secure_round else {}),
        "interval": {
            "confidence": 0.95,
            "half_width_raw": t.half_width_95,
            "covers": "the added noise; contribution bounding can only lower the true totals",
        },
        "post_processing": {
            "consistent_with": [a for a in estimate.family if a != t.analysis.id],
            **(
                {
                    "not_fitted_with": list(estimate.not_fitted_with),
                    "not_fitted_because": estimate.disagreement,
                    "not_fitted_test": estimate.disagreement_test,
                }
                if estimate.not_fitted_with
                else {}
            ),
            "non_negative": True,
            "intervals": "exact for the fit" if estimate.exact_intervals else "each table's own",
            "suppressed_below_half_widths": suppress_below,
            "suppressed_cells": int(hidden.sum()),
        },
        "cells": cells,
    }


def build_release(
    *,
    plan: Plan,
    run_id: str,
    coordinator_id: str,
    participants: list[NodeInfo],
    tables: list[AggregatedTable],
    failed: list[FailedAnalysis],
    created_at: datetime | None = None,
    segmentations: list[dict[str, Any]] | None = None,
    reach_tables: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    created = (created_at or datetime.now(UTC)).isoformat(timespec="seconds")
    estimates = post_process(
        [
            NoisyTable(
                analysis_id=t.analysis.id,
                measure=t.analysis.query.measure,
                dimensions=t.analysis.query.dimensions,
                values=np.asarray(t.sums, dtype=np.float64),
                variance=t.sd_total**2,
                years=t.analysis.query.years,
                contributors=t.contributors,
            )
            for t in tables
        ]
    )
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "title": plan.title,
        "created_at": created,
        "run_id": run_id,
        "coordinator_id": coordinator_id,
        "software": {"publiek": software_version(), "protocol_version": PROTOCOL_VERSION},
        "plan": {
            "id": plan.id,
            "sha256": plan.sha256,
            "mode": plan.mode.value,
            "min_nodes": plan.min_nodes,
            "text": plan.source_text,
        },
        "participants": [
            {"institution_id": n.institution_id, "software_version": n.software_version}
            for n in participants
        ],
        "privacy": {
            "unit": PRIVACY_UNIT,
            "accounting": "zero-concentrated DP (rho), composed additively per node",
            "rho_per_node": str(plan.rho_per_node),
            "epsilon_per_node": plan.rho_per_node.to_approx_dp(plan.delta).epsilon,
            "delta": plan.delta,
            "mode": plan.mode.value,
            "note": (
                "open mode: every node added the full noise and the coordinator saw each node's"
                " noisy answer"
                if plan.mode.value == "open"
                else "secure mode: the coordinator saw only sums over nodes"
            ),
        },
        "tables": [
            _table_json(t, estimates[t.analysis.id], plan.delta, plan.suppress_below)
            for t in tables
        ]
        # Sector reach, participation and overlap (S7-S10, coordinator/reach_run.py): estimates
        # from de-duplicating sketches, in the same cell layout as every other table.
        + list(reach_tables or []),
        "failed": [{"analysis_id": f.analysis_id, "reason": f.reason} for f in failed],
    }
    if segmentations:
        # The shared segmentation's models (protocols/segment_model.py): centres, labels, the
        # sector's shares and the model card. Their S12 tables are among the tables above.
        doc["segmentations"] = segmentations
    body = json.dumps(doc, sort_keys=True, ensure_ascii=False).encode("utf-8")
    doc["release_id"] = "rel-" + hashlib.sha256(body).hexdigest()[:16]
    return doc


def _write_once(path: Path, text: str) -> None:
    try:
        with path.open("x", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
    except FileExistsError as err:
        raise ReleaseExists(f"{path} exists; releases are immutable") from err
    path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)


def table_csv(table: dict[str, Any]) -> str:
    dims = [d["name"] for d in table["dimensions"]]
    cols = [*dims, "estimate", "ci95_low", "ci95_high", "noisy_sum", "suppressed"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    writer.writeheader()
    for cell in table["cells"]:
        writer.writerow({c: cell[c] for c in cols})
    return buf.getvalue()


def write_release(doc: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write release.json and one CSV per table into ``out_dir``; never overwrites."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for table in doc["tables"]:
        path = out_dir / f"{table['analysis_id']}.csv"
        _write_once(path, table_csv(table))
        written.append(path)
    for model in doc.get("segmentations", []):
        # Each model also as a file of its own: what institutions apply with
        # `publiek-node segments MODEL` (it is part of release.json as well).
        path = out_dir / f"segment-model-{model['model_id']}.json"
        _write_once(path, json.dumps(model, indent=2, ensure_ascii=False) + "\n")
        written.append(path)
    path = out_dir / "release.json"
    _write_once(path, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    written.append(path)
    return written
