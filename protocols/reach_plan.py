"""The ``[[reach]]`` section of a plan: sector reach, participation and overlap (S7-S10).

    [[reach]]
    id = "reach_2024"
    title = "Sector reach, participation and overlap, 2024"
    years = [2024, 2024]
    epsilon = 1.0              # per node for all rounds together (or rho = "0.015")
    by = ["sector", "region", "discipline", "institution_type"]   # one secure round each
    max_disciplines = 8        # disciplines per person and institution in the pair counts
    # buckets = { sector = "auto", region = 256, institution_type = 256 }
    # split = { sector = 3, region = 1, discipline = 1, institution_type = 1 }  # budget weights
    # sector_copies = 2        # independent sketches in the sector round
    # households = "households-2025.csv"   # S8's denominators (region,households), relative
    # households_source = "CBS StatLine 71486ned and Statbel, 1 January 2025"  # to the plan

Each ``by`` is one secure round (``protocols/reach.py``); the budget is split over them by the
weights of ``split`` (exactly: rho * weight / sum of weights). What each round gives: sector ->
S7 (sector reach) and S10 (people by institutions visited); region -> S7 by home region and S8
(per 1,000 households); discipline -> a within-institution co-visit histogram (``pairs``
layout, no sketch): S7 by discipline and S9 (overlap between disciplines); institution_type ->
a sketch per type: S9 (overlap between institution types). S9 needs the sector round's
cross-visiting (docs/reach.md). The discipline round runs first: its count of people sets the
sector sketch's buckets when they are "auto". Secure mode only. The bucket hash is salted per
run and round at run time. S8's household counts are public data: the built-in table
(``protocols/households.py``) unless the plan names a file and says where it comes from.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Final

from privacy.budget import InvalidBudget, Rho, rho_for_epsilon
from protocols.dimensions import public_keys
from protocols.errors import MalformedMessage
from protocols.households import BUILT_IN, HouseholdsError, HouseholdTable, read_households
from protocols.messages import Dimension, ReleaseMode
from protocols.plan_sections import section_tables
from protocols.reach import (
    MAX_BUCKETS,
    MAX_COPIES,
    MIN_BUCKETS,
    REACH_DIMENSIONS,
    SECTOR_KEYS,
    ReachQuery,
)

MAX_REACH: Final[int] = 4
# 0: "auto" (sector only): chosen at run time from the discipline round's count of people.
AUTO: Final[int] = 0
# The sector sketch's buckets when "auto" has nothing to go by (no discipline round).
FALLBACK_SECTOR_BUCKETS: Final[int] = 2048
DEFAULT_BUCKETS: Final[dict[str, int]] = {
    "sector": AUTO,
    "region": 256,
    "institution_type": 256,
}
DEFAULT_SPLIT: Final[dict[str, int]] = {
    "sector": 3,
    "region": 1,
    "discipline": 1,
    "institution_type": 1,
}
STATISTIC_OF: Final[dict[str, str]] = {
    "sector": "S7",
    "region": "S7",
    "discipline": "S9",
    "institution_type": "S9",
}
_FIELDS: Final[frozenset[str]] = frozenset(
    {
        "id",
        "title",
        "years",
        "epsilon",
        "rho",
        "by",
        "max_disciplines",
        "buckets",
        "split",
        "sector_copies",
        "households",
        "households_source",
    }
)


@dataclass(frozen=True, slots=True)
class Reach:
    id: str
    title: str
    years: tuple[int, int]
    rho: Rho  # for all rounds together
    epsilon: float | None
    by: tuple[str, ...]
    max_disciplines: int
    buckets: tuple[tuple[str, int], ...]
    split: tuple[tuple[str, int], ...] = ()  # budget weights of the rounds (default: even)
    sector_copies: int = 1
    households: HouseholdTable = BUILT_IN  # S8's denominators (public)

    @property
    def total_rho(self) -> Rho:
        total = Fraction(0)
        for by in self.by:
            total += self.round_rho(by).value
        return Rho(total)

    def round_rho(self, by: str) -> Rho:
        """The round's exact share of the section's budget."""
        weights = dict(self.split)
        total = sum(weights.get(b, 1) for b in self.by)
        return Rho(self.rho.value * weights.get(by, 1) / total)

    @property
    def run_order(self) -> tuple[str, ...]:
        """The discipline round first: its count of people sizes an "auto" sector sketch."""
        return tuple(sorted(self.by, key=lambda b: b != "discipline"))

    def round_id(self, by: str) -> str:
        return f"{self.id}_{by}"

    def query(self, by: str, salt: str = "plan", sector_buckets: int | None = None) -> ReachQuery:
        keys = SECTOR_KEYS if by == "sector" else public_keys(by, *self.years)
        rho = self.round_rho(by)
        if by == "discipline":
            return ReachQuery(
                statistic=STATISTIC_OF[by],
                by=Dimension(by, keys),
                buckets=0,
                max_cells=self.max_disciplines,
                years=self.years,
                rho=rho,
                salt=salt,
                layout="pairs",
            )
        buckets = dict(self.buckets).get(by, AUTO)
        if by == "sector" and buckets == AUTO:
            buckets = sector_buckets or FALLBACK_SECTOR_BUCKETS
        return ReachQuery(
            statistic=STATISTIC_OF[by],
            by=Dimension(by, keys),
            buckets=buckets,
            max_cells=1,
            years=self.years,
            rho=rho,
            salt=salt,
            copies=self.sector_copies if by == "sector" else 1,
        )


def round_salt(run_id: str, reach_id: str, by: str) -> str:
    """The bucket hash's salt: new for every run and round (a sketch is never reused)."""
    return hashlib.sha256(f"{run_id}\x00{reach_id}\x00{by}".encode()).hexdigest()[:32]


def _households(
    r: dict[str, Any], where: str, base: Path | None, problems: list[str]
) -> HouseholdTable:
    """S8's household counts: the plan's file (relative to the plan's folder ``base``) with
    its stated source, or the built-in table."""
    name, source = r.get("households"), r.get("households_source")
    if name is None:
        if source is not None:
            problems.append(f"{where}: households_source is given without a households file")
        return BUILT_IN
    if not isinstance(name, str) or not name.strip():
        problems.append(f"{where}: households must be the path of a CSV file (region,households)")
        return BUILT_IN
    if not isinstance(source, str) or not source.strip():
        # A release names where its denominators come from, so a reader can check them.
        problems.append(
            f"{where}: households_source must say where the counts of {name} come from"
            ' (e.g. "CBS StatLine 71486ned and Statbel, 1 January 2025")'
        )
        return BUILT_IN
    if base is None:
        # A plan from text only (say, the run state checking a plan it stored): the file is
        # named, not read; a run refuses it before any round (``HouseholdTable.read``).
        return HouseholdTable((), source.strip(), name)
    path = Path(name) if Path(name).is_absolute() else base / name
    try:
        return read_households(path, name, source.strip())
    except HouseholdsError as err:
        problems.append(f"{where}: households {name}: " + "; ".join(err.problems))
    except OSError as err:
        problems.append(f"{where}: households {name}: cannot be read ({err.strerror or err})")
    return BUILT_IN


def parse_reaches(
    raw: Any,
    mode: ReleaseMode,
    delta: float,
    problems: list[str],
    seen: set[str],
    base: Path | None = None,
) -> tuple[Reach, ...]:
    """The plan's [[reach]] sections; every problem goes into ``problems``. ``base``: the plan
    file's folder, which a ``households`` path is relative to."""
    out = []
    for r, rid, where, before in section_tables(
        raw,
        "reach",
        MAX_REACH,
        f"reach must be at most {MAX_REACH} [[reach]] sections",
        _FIELDS,
        mode,
        "reach sketches are summed in secure mode only",
        problems,
        seen,
    ):
        by = r.get("by", list(REACH_DIMENSIONS))
        if (
            not isinstance(by, list)
            or not by
            or not all(isinstance(b, str) and b in REACH_DIMENSIONS for b in by)
            or len(set(by)) != len(by)
        ):
            problems.append(
                f"{where}: by must be a list of distinct names from {', '.join(REACH_DIMENSIONS)}"
            )
            by = []
        for b in by:
            if f"{rid}_{b}" in seen:
                problems.append(f"{where}: id {rid}_{b} is used twice")
            seen.add(f"{rid}_{b}")
        max_d = r.get("max_disciplines", 8)
        if isinstance(max_d, bool) or not isinstance(max_d, int) or not 1 <= max_d <= 15:
            problems.append(f"{where}: max_disciplines must be a whole number from 1 to 15")
            max_d = 8
        buckets = dict(DEFAULT_BUCKETS)
        given = r.get("buckets", {})
        if not isinstance(given, dict):
            problems.append(f"{where}: buckets must be a table such as {{ sector = 1024 }}")
            given = {}
        for name, value in given.items():
            if name not in REACH_DIMENSIONS or name == "discipline":
                problems.append(
                    f"{where}: buckets.{name} is not one of sector, region, institution_type"
                    " (the discipline round counts pairs, without buckets)"
                )
            elif name == "sector" and value == "auto":
                buckets[name] = AUTO
            elif (
                isinstance(value, bool)
                or not isinstance(value, int)
                or not MIN_BUCKETS <= value <= MAX_BUCKETS
            ):
                problems.append(
                    f"{where}: buckets.{name} must be a whole number from {MIN_BUCKETS}"
                    f" to {MAX_BUCKETS}"
                )
            else:
                buckets[name] = value
        split = dict(DEFAULT_SPLIT)
        given_split = r.get("split", {})
        if not isinstance(given_split, dict):
            problems.append(f"{where}: split must be a table such as {{ sector = 3 }}")
            given_split = {}
        for name, value in given_split.items():
            if name not in REACH_DIMENSIONS:
                problems.append(f"{where}: split.{name} is not one of {REACH_DIMENSIONS}")
            elif isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100:
                problems.append(f"{where}: split.{name} must be a whole number from 1 to 100")
            else:
                split[name] = value
        copies = r.get("sector_copies", 2)
        if isinstance(copies, bool) or not isinstance(copies, int) or not 1 <= copies <= MAX_COPIES:
            problems.append(f"{where}: sector_copies must be a whole number from 1 to {MAX_COPIES}")
            copies = 2
        if (
            isinstance(by, list)
            and "sector" not in by
            and {"discipline", "institution_type"} & set(by)
        ):
            problems.append(
                f"{where}: overlap (discipline, institution_type) needs the sector round too"
                " (its cross-visiting)"
            )
        years = r.get("years", [2024, 2024])
        if (
            not isinstance(years, list)
            or len(years) != 2
            or not all(isinstance(y, int) and not isinstance(y, bool) for y in years)
            or not 1990 <= years[0] <= years[1] <= 2100
        ):
            problems.append(f"{where}: years must be [first, last] within 1990..2100")
            years = [2024, 2024]
        epsilon = r.get("epsilon")
        rho: Rho | None = None
        if (epsilon is None) == ("rho" not in r):
            problems.append(f"{where}: give the budget as epsilon or as rho (one of them)")
        elif epsilon is not None:
            if isinstance(epsilon, bool) or not isinstance(epsilon, int | float) or epsilon <= 0:
                problems.append(f"{where}: epsilon must be a positive number")
            else:
                rho = rho_for_epsilon(float(epsilon), delta)
        else:
            try:
                rho = Rho.parse(str(r["rho"]))
                if rho.is_zero():
                    problems.append(f"{where}: rho must be positive")
            except InvalidBudget as err:
                problems.append(f"{where}: {err}")
        households = _households(r, where, base, problems)
        if len(problems) > before or rho is None or not by:
            continue
        reach = Reach(
            id=rid,
            title=str(r.get("title", rid)),
            years=(years[0], years[1]),
            rho=rho,
            epsilon=float(epsilon) if epsilon is not None else None,
            by=tuple(by),
            max_disciplines=max_d,
            buckets=tuple(sorted(buckets.items())),
            split=tuple(sorted(split.items())),
            sector_copies=copies,
            households=households,
        )
        for b in reach.by:
            try:
                reach.query(b)
            except MalformedMessage as err:
                problems.append(f"{where}: round {b}: {err}")
        if min(reach.round_rho(b).value for b in reach.by) < Fraction(1, 10**9):
            problems.append(f"{where}: the budget is too small to split over {len(by)} rounds")
            continue
        out.append(reach)
    return tuple(out)
