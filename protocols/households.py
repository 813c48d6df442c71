"""Public household counts by region: the denominator of S8 (participation per 1,000 households).

Private households on 1 January 2024, in thousands, rounded:
- Dutch provinces: CBS StatLine, table 71486ned "Huishoudens; samenstelling, grootte, regio,
  1 januari" (particuliere huishoudens per provincie);
- Flemish provinces, Brussels and Wallonia: Statbel, "Huishoudens" (private huishoudens per
  provincie/gewest, 1 januari).

Neither ../shared/domain/README.md nor simulation.yaml holds household counts, and this machine
cannot reach those sites, so the figures were entered from the publishers' 2024 tables as
remembered to the nearest thousand (about 8.4 million Dutch and 5.0 million Belgian households):
they are the right order for every region, not the exact published numbers. Before a release
is published for real, give the current table from CBS and Statbel in the plan
(``households = "file.csv"`` with ``households_source``, read by ``read_households``); the
release names the table it used, its source and the file's SHA-256, so a policymaker can check.
Abroad and unknown have no denominator and get no S8 value.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from protocols.geography import REGION_CODES

SOURCE: Final[str] = (
    "private households on 1 January 2024 (thousands, rounded): CBS StatLine 71486ned for Dutch"
    " provinces, Statbel 'Huishoudens' for Belgian provinces and regions; entered without online"
    " access, to be checked against the publishers' tables before a real publication"
)
YEAR: Final[int] = 2024

HOUSEHOLDS: Final[dict[str, int]] = {
    "NL-GR": 308_000,
    "NL-FR": 296_000,
    "NL-DR": 224_000,
    "NL-OV": 507_000,
    "NL-FL": 178_000,
    "NL-GE": 953_000,
    "NL-UT": 600_000,
    "NL-NH": 1_427_000,
    "NL-ZH": 1_770_000,
    "NL-ZE": 178_000,
    "NL-NB": 1_188_000,
    "NL-LI": 535_000,
    "BE-BRU": 555_000,
    "BE-VAN": 797_000,
    "BE-VLI": 373_000,
    "BE-VOV": 690_000,
    "BE-VBR": 488_000,
    "BE-VWV": 533_000,
    "BE-WAL": 1_614_000,
}

# Regions a household count can be given for: the Dutch and Belgian ones (abroad and unknown
# have no denominator).
COUNTED_REGIONS: Final[tuple[str, ...]] = tuple(c for c in REGION_CODES if "-" in c)
# A table of 19 regions is a few hundred bytes; anything far larger is not one.
MAX_FILE_BYTES: Final[int] = 64 * 1024
# Bounds that catch a count given in thousands, or a population given for households.
MIN_HOUSEHOLDS: Final[int] = 1_000
MAX_HOUSEHOLDS: Final[int] = 20_000_000


@dataclass(frozen=True, slots=True)
class HouseholdTable:
    """The denominators of S8: households per region, where they come from, and the file
    (name and SHA-256) when the plan gave one."""

    counts: tuple[tuple[str, int], ...]
    source: str
    file: str = ""
    sha256: str = ""

    def get(self, region: str) -> int | None:
        return dict(self.counts).get(region)

    @property
    def missing(self) -> tuple[str, ...]:
        given = dict(self.counts)
        return tuple(r for r in COUNTED_REGIONS if r not in given)

    @property
    def read(self) -> bool:
        """False for a file named by a plan parsed from its text alone (nothing to divide by)."""
        return bool(self.counts)

    @property
    def note(self) -> str:
        where = f" (file {self.file}, sha256 {self.sha256})" if self.file else ""
        return f"households: {self.source}{where}"


BUILT_IN: Final[HouseholdTable] = HouseholdTable(tuple(HOUSEHOLDS.items()), SOURCE)


class HouseholdsError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def read_households(path: Path, name: str, source: str) -> HouseholdTable:
    """A household table from a CSV file with the columns ``region`` (the codes of
    ``protocols.geography``, e.g. NL-UT, BE-VAN) and ``households`` (a whole number), comma or
    semicolon separated, as a table downloaded from CBS or Statbel is easily made into. Raises
    HouseholdsError listing every problem; OSError when the file cannot be read."""
    with path.open("rb") as f:
        data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise HouseholdsError([f"larger than {MAX_FILE_BYTES // 1024} KiB: not a household table"])
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise HouseholdsError([f"not UTF-8 text (byte {err.start})"]) from err
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise HouseholdsError(["empty: give a header 'region,households' and a row per region"])
    delimiter = ";" if lines[0].count(";") > lines[0].count(",") else ","
    try:
        rows = list(csv.reader(io.StringIO("\n".join(lines)), delimiter=delimiter, strict=True))
    except csv.Error as err:
        raise HouseholdsError([f"not a readable CSV table ({err})"]) from err
    header = [h.strip().lower() for h in rows[0]]
    if header != ["region", "households"]:
        raise HouseholdsError(
            [f"the header must be 'region{delimiter}households', not {delimiter.join(rows[0])!r}"]
        )
    problems: list[str] = []
    counts: dict[str, int] = {}
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != 2:
            problems.append(f"line {line}: {len(row)} fields, expected 2 (region, households)")
            continue
        region, value = row[0].strip(), row[1].strip()
        if region not in COUNTED_REGIONS:
            problems.append(
                f"line {line}: unknown region {region[:20]!r} (one of {', '.join(COUNTED_REGIONS)})"
            )
            continue
        if region in counts:
            problems.append(f"line {line}: {region} is given twice")
            continue
        if not (value.isascii() and value.isdigit()):
            problems.append(
                f"line {line}: {region}: households must be a whole number of households"
                f" without separators, not {value[:20]!r}"
            )
            continue
        n = int(value)
        if not MIN_HOUSEHOLDS <= n <= MAX_HOUSEHOLDS:
            problems.append(
                f"line {line}: {region}: {n} households is outside {MIN_HOUSEHOLDS:,} to"
                f" {MAX_HOUSEHOLDS:,} (a count in thousands, or of people?)"
            )
            continue
        counts[region] = n
    if not counts and not problems:
        problems.append("no regions: give a row per region after the header")
    if problems:
        raise HouseholdsError(problems)
    return HouseholdTable(
        tuple(sorted(counts.items())), source, name, hashlib.sha256(data).hexdigest()
    )
