"""How expensive is reading real data properly, against simply reading the file?

Loads a canonical ticket_line CSV the way ``publiek-node run`` does (read, every check,
quarantine accounting, e-mail match keys with a real key file, postcode areas and regions,
customer features with distances from a PC4 centroid table) and compares it with a plain
columnar read of the same file (``polars.read_csv``), measured side by side in one process,
alternating, medians. Peak memory is measured in a fresh process that does one load.

    python -m benchmarks.ingest --quick     # 200,000 rows, under a minute
    python -m benchmarks.ingest             # 1,000,000 rows

Targets (issue 4): ratio_vs_raw_read <= 3, peak_rss_mb < 2048.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import polars as pl

from benchmarks.common import last_line, write_result

FULL_ROWS = 1_000_000
QUICK_ROWS = 200_000


def make_data(folder: Path, rows: int) -> dict[str, Path]:
    """A synthetic export of ``rows`` ticket lines, a PC4 table and a match key file."""
    from synthetic import SectorConfig, generate_sector
    from synthetic.geography import pc4_table
    from synthetic.schema import TICKET_LINE_COLUMNS, write_ticket_line_csv

    scale = max(0.05, rows / 950_000)
    while True:
        sector = generate_sector(
            SectorConfig(n_institutions=8, seed=3, years=(2023, 2024), scale=scale)
        )
        tickets = sector.truth.tickets
        if tickets.height >= rows:
            break
        scale *= 1.5
    # The eight institutions' exports become one: their own numbering of performances and
    # customers would collide (P000002 at two houses is two performances), so each is prefixed
    # with its house, as a merged export of several houses would do. Orders and tickets are
    # numbered sector-wide already.
    tickets = tickets.with_columns(
        pl.concat_str("institution_id", pl.lit(":"), c).alias(c)
        for c in ("performance_id", "customer_id")
    )
    csv = folder / "ticket_line.csv"
    write_ticket_line_csv(tickets.select(TICKET_LINE_COLUMNS).head(rows), csv)
    pc4 = folder / "pc4.csv"
    pc4_table().write_csv(pc4)
    key = folder / "match.key"
    key.write_text("ab" * 32 + "\n")
    key.chmod(0o600)
    return {"csv": csv, "pc4": pc4, "key": key}


def _load(files: dict[str, Path], match_key: bool = True) -> Any:
    from node.data import load
    from node.geo import Geography, Location, load_pc4_centroids
    from node.ingest.matchkey import MatchKeySecret
    from node.ingest.pipeline import IngestSettings
    from node.ingest.sources import file_source

    secret = MatchKeySecret.load(files["key"]) if match_key else None
    settings = IngestSettings(match_key=secret)
    geography = Geography(location=Location(52.37, 4.89), pc4=load_pc4_centroids(files["pc4"]))
    return load(file_source(files["csv"]), settings, geography)


def child_timing(files: dict[str, Path], repeats: int) -> dict[str, Any]:
    raw_times: list[float] = []
    load_times: list[float] = []
    no_key_times: list[float] = []
    _load(files)  # warm-up: imports, page cache
    pl.read_csv(files["csv"])
    loaded = None
    for _ in range(repeats):
        start = time.perf_counter()
        pl.read_csv(files["csv"])
        raw_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        loaded = _load(files)
        load_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        _load(files, match_key=False)
        no_key_times.append(time.perf_counter() - start)
    assert loaded is not None
    return {
        "raw_s": statistics.median(raw_times),
        "load_s": statistics.median(load_times),
        "load_no_key_s": statistics.median(no_key_times),
        "rows_loaded": loaded.table.rows,
        "customers": loaded.features.customers,
        "quarantined": loaded.report.quarantined,
        "match_keys": len(loaded.match_keys) if loaded.match_keys is not None else 0,
    }


def child_memory(files: dict[str, Path]) -> dict[str, Any]:
    _load(files)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    return {"peak_rss_mb": peak_kb / 1024.0}


def _run_child(mode: str, folder: Path, repeats: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.ingest", "--child", mode, str(folder), str(repeats)],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def run(quick: bool, rows: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    n = rows or (QUICK_ROWS if quick else FULL_ROWS)
    repeats = 3 if quick else 5
    with tempfile.TemporaryDirectory(prefix="publiek-ingest-") as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        files = make_data(folder, n)
        print(f"{n:,} rows written in {time.perf_counter() - started:.1f} s", flush=True)
        timing = _run_child("timing", folder, repeats)
        memory = _run_child("memory", folder, 1)
        size_mb = files["csv"].stat().st_size / 1e6
    result = {
        "rows": n,
        "rows_per_s": n / timing["load_s"],
        "ratio_vs_raw_read": timing["load_s"] / timing["raw_s"],
        # The same without a match key file: what the per-address HMAC costs.
        "ratio_without_match_keys": timing["load_no_key_s"] / timing["raw_s"],
        "peak_rss_mb": memory["peak_rss_mb"],
        "load_s_median": timing["load_s"],
        "raw_read_s_median": timing["raw_s"],
        "file_mb": size_mb,
        "customers": timing["customers"],
        "match_keys": timing["match_keys"],
        "quarantined": timing["quarantined"],
    }
    config = {"quick": quick, "rows": n, "repeats": repeats, "baseline": "polars.read_csv"}
    return config, result


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    if args_in[:1] == ["--child"]:
        mode, folder, repeats = args_in[1], Path(args_in[2]), int(args_in[3])
        files = {"csv": folder / "ticket_line.csv", "pc4": folder / "pc4.csv"}
        files["key"] = folder / "match.key"
        out = child_timing(files, repeats) if mode == "timing" else child_memory(files)
        print(json.dumps(out))
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ingest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ROWS:,} rows, 3 repeats")
    parser.add_argument("--rows", type=int, default=None, help="override the number of rows")
    args = parser.parse_args(args_in)
    config, result = run(args.quick, args.rows)
    for key, value in result.items():
        print(f"{key:>24}: {value:,.3f}" if isinstance(value, float) else f"{key:>24}: {value:,}")
    write_result("ingest", config, result)
    print(last_line(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
