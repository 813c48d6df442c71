"""Writing a sector to a directory and reading it back.

Layout of `out_dir`:

    sector.json                      the config, the format version and the parameter file's hash
    institutions.json                public metadata: one object per institution
    <institution_id>/ticket_line.csv the institution's export in the canonical schema
    truth/people.parquet             every person who booked, with latent segment and home
    truth/accounts.parquet           (institution_id, customer_id) -> person_id
    truth/tickets.parquet            every ticket with institution_id and person_id
    truth/performances.parquet       the programme, with stage capacities

Only the CSVs and institutions.json are what a node would see; `truth/` is for tests and
benchmarks and must never be given to a node.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Final

import polars as pl

from synthetic.config import SectorConfig
from synthetic.institutions import Institution
from synthetic.params import DEFAULT_PARAMS_PATH
from synthetic.schema import write_ticket_line_csv
from synthetic.sector import Sector, institutions_frame
from synthetic.truth import GroundTruth

FORMAT_VERSION: Final[int] = 1
SECTOR_FILE: Final[str] = "sector.json"
INSTITUTIONS_FILE: Final[str] = "institutions.json"
TICKET_FILE: Final[str] = "ticket_line.csv"
TRUTH_DIR: Final[str] = "truth"
_TRUTH_TABLES: Final[tuple[str, ...]] = ("people", "accounts", "tickets", "performances")


def params_sha256() -> str:
    return hashlib.sha256(DEFAULT_PARAMS_PATH.read_bytes()).hexdigest()


def write_sector(sector: Sector, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "generator": "publiek synthetic sector",
        "format_version": FORMAT_VERSION,
        "config": sector.config.to_dict(),
        "simulation_yaml_sha256": params_sha256(),
    }
    _write_json(out_dir / SECTOR_FILE, meta)
    _write_json(out_dir / INSTITUTIONS_FILE, [inst.to_dict() for inst in sector.institutions])
    for inst in sector.institutions:
        folder = out_dir / inst.institution_id
        folder.mkdir(exist_ok=True)
        write_ticket_line_csv(sector.tickets(inst.institution_id), folder / TICKET_FILE)
    truth_dir = out_dir / TRUTH_DIR
    truth_dir.mkdir(exist_ok=True)
    for name in _TRUTH_TABLES:
        frame: pl.DataFrame = getattr(sector.truth, name)
        # Statistics off and a fixed compression keep the files byte-identical across runs.
        frame.write_parquet(truth_dir / f"{name}.parquet", compression="zstd", statistics=False)


def load_sector(out_dir: Path | str) -> Sector:
    """Read back a sector written by `Sector.write` (truth tables included)."""
    root = Path(out_dir)
    sector_file = root / SECTOR_FILE
    if not sector_file.is_file():
        raise FileNotFoundError(f"{root} holds no synthetic sector ({SECTOR_FILE} is missing)")
    meta = json.loads(sector_file.read_text(encoding="utf-8"))
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{sector_file}: format version {meta.get('format_version')!r}, "
            f"this code reads {FORMAT_VERSION}"
        )
    config = SectorConfig.from_dict(meta["config"])
    raw = json.loads((root / INSTITUTIONS_FILE).read_text(encoding="utf-8"))
    institutions = tuple(Institution.from_dict(item) for item in raw)
    tables = {name: pl.read_parquet(root / TRUTH_DIR / f"{name}.parquet") for name in _TRUTH_TABLES}
    truth = GroundTruth(
        people=tables["people"],
        accounts=tables["accounts"],
        tickets=tables["tickets"],
        performances=tables["performances"],
        institutions=institutions_frame(institutions),
    )
    return Sector(config=config, institutions=institutions, truth=truth)


def _write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
