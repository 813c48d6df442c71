"""`publiek-synth`: generate a synthetic sector on disk, or report how realistic one is."""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from synthetic.config import MAX_INSTITUTIONS, MAX_SCALE, SectorConfig
from synthetic.io import SECTOR_FILE, load_sector
from synthetic.params import load_params
from synthetic.realism import format_report, realism_report
from synthetic.sector import generate_sector

_DESCRIPTION = """\
Generate a synthetic Dutch/Flemish cultural sector: institutions that share one population of
people, each with a ticketing export in the canonical ticket_line schema, plus the person-level
ground truth that tests and benchmarks compare federated releases against.

The same arguments always produce the same files, byte for byte.
"""

_GENERATE_EPILOG = """\
what is written to OUT:
  institutions.json                 public metadata of every institution
  <institution_id>/ticket_line.csv  one ticketing export per institution (what a node reads)
  truth/*.parquet                   people, accounts, tickets, performances: the ground truth,
                                    never to be given to a node
  sector.json                       the arguments, to reproduce or reload the sector

examples:
  publiek-synth generate --institutions 12 --seed 7 --out demo-output/sector
  publiek-synth generate --institutions 50 --seed 1 --years 2019-2024 --scale 0.1 --out s50
  publiek-synth report demo-output/sector
"""


class _CliError(Exception):
    """A problem the user can fix; reported as one line, without a traceback."""


def _years(text: str) -> tuple[int, int]:
    parts = text.split("-")
    try:
        if len(parts) == 1:
            year = int(parts[0])
            return year, year
        if len(parts) == 2:
            return int(parts[0]), int(parts[1])
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"expected a year or a range like 2023-2024, got {text!r}")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="publiek-synth",
        description=_DESCRIPTION,
        epilog="start with:\n  publiek-synth generate --institutions 12 --seed 7 --out OUT\n"
        "and see `publiek-synth generate --help` for every option.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    gen = commands.add_parser(
        "generate",
        help="generate a sector and write it to a directory",
        description="Generate a synthetic sector and write it to OUT.",
        epilog=_GENERATE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gen.add_argument(
        "--institutions",
        type=_positive_int,
        required=True,
        metavar="N",
        help=f"number of institutions (nodes), 1 to {MAX_INSTITUTIONS}",
    )
    gen.add_argument(
        "--seed", type=_non_negative_int, required=True, help="random seed (a whole number >= 0)"
    )
    gen.add_argument("--out", type=Path, required=True, metavar="OUT", help="output directory")
    gen.add_argument(
        "--years",
        type=_years,
        default=(2023, 2024),
        metavar="FIRST-LAST",
        help="calendar years of performances, e.g. 2024 or 2019-2024 (default: 2023-2024)",
    )
    gen.add_argument(
        "--scale",
        type=_positive_float,
        default=1.0,
        help=f"size multiplier, up to {MAX_SCALE:g}: 1.0 is realistic (12 institutions give about "
        "two million tickets), 0.02 a tiny sector for tests (default: 1.0)",
    )
    gen.add_argument(
        "--force",
        action="store_true",
        help="replace OUT if it holds a previously generated sector",
    )
    gen.add_argument("--quiet", action="store_true", help="print only the summary line")

    rep = commands.add_parser(
        "report",
        help="compare a generated sector with the targets of simulation.yaml",
        description="Print realism statistics of a generated sector next to their targets.",
    )
    rep.add_argument("directory", type=Path, metavar="DIR", help="a directory written by generate")
    return parser


def _prepare_output(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise _CliError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not (out / SECTOR_FILE).is_file():
            raise _CliError(
                f"{out} is not empty and holds no generated sector; choose another --out"
            )
        if not force:
            raise _CliError(f"{out} already holds a sector; pass --force to replace it")
        shutil.rmtree(out)


def _generate(args: argparse.Namespace) -> int:
    try:
        config = SectorConfig(
            n_institutions=args.institutions, seed=args.seed, years=args.years, scale=args.scale
        )
    except ValueError as exc:
        raise _CliError(str(exc)) from None
    _prepare_output(args.out, args.force)

    def progress(message: str) -> None:
        if not args.quiet:
            print(message, flush=True)

    started = time.perf_counter()
    sector = generate_sector(config, progress=progress)
    progress(f"writing {args.out}")
    sector.write(args.out)
    seconds = time.perf_counter() - started
    print(
        f"{len(sector.institutions)} institutions, {sector.truth.people.height:,} people, "
        f"{sector.truth.tickets.height:,} tickets in {seconds:.1f} s -> {args.out}",
        flush=True,
    )
    return 0


def _report(args: argparse.Namespace) -> int:
    try:
        sector = load_sector(args.directory)
    except (FileNotFoundError, ValueError) as exc:
        raise _CliError(str(exc)) from None
    print(format_report(realism_report(sector, load_params())))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed the usage and the error (or the help)
        return int(exc.code) if isinstance(exc.code, int) else 2
    try:
        if args.command == "generate":
            return _generate(args)
        return _report(args)
    except _CliError as exc:
        print(f"publiek-synth: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"publiek-synth: error: {exc}", file=sys.stderr)
        return 1
