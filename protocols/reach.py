"""The reach query: one secure round of the sector's de-duplicated audience (S7-S10).

Every node hashes each of its customers' match keys (the keyed hash of the e-mail address,
``node/ingest/matchkey.py``) into one of ``buckets`` buckets with a hash salted by the query,
and counts, per key of one public dimension (the whole sector, home region, discipline,
institution type), how many of its people fall in each bucket. The nodes share the match-key
secret, so one person lands in the same bucket at every institution; the secure sum of these
count vectors is a linear sketch of how many institutions each person visited, from which the
coordinator estimates distinct people (``privacy/reach.py``). A last cell per key counts the
node's customers without a match key (no e-mail), for the documented coverage correction.

Contribution bound: the privacy unit here is a person at one institution (one match key;
accounts sharing an address are one unit, which also covers each account). A unit adds 1 to one
bucket in each of at most ``max_cells`` keys, in each of ``copies`` independent sketches (their
own salts): L1 sensitivity ``max_cells * copies``, L2 ``sqrt(max_cells * copies)``. A customer
without a match key adds 1 to its keys' last cell instead (in each copy).

The ``pairs`` layout hashes nothing: each institution counts its own people (match keys and
keyless accounts alike) per unordered pair of keys {a, b} (a may equal b) they visited at this
institution, among their ``max_cells`` most visited keys, plus one last cell counting the
people themselves. A unit with d keys adds 1 to d (d + 1) / 2 pair cells and to the last cell:
L1 = L2^2 = max_cells (max_cells + 1) / 2 + 1. It gives the within-institution part of S9 and
each key's people counted once per institution (the diagonal).

Secure mode only: a node's own sketch is never seen, only the noisy sum over nodes.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from typing import Final

from privacy.budget import Rho
from protocols.dimensions import dimension_problems
from protocols.errors import ErrorCode, MalformedMessage
from protocols.messages import MAX_CELLS, MAX_YEAR, MECHANISMS, MIN_YEAR, Dimension, ReleaseMode

# What a person's reach can be broken down by; "sector" has the single key "all".
REACH_DIMENSIONS: Final[tuple[str, ...]] = ("sector", "region", "discipline", "institution_type")
SECTOR_KEYS: Final[tuple[str, ...]] = ("all",)
MIN_BUCKETS: Final[int] = 16
MAX_BUCKETS: Final[int] = 65_536
MAX_SALT_CHARS: Final[int] = 128
MAX_COPIES: Final[int] = 8
LAYOUTS: Final[tuple[str, ...]] = ("sketch", "pairs")
# Keys whose within-institution co-visits can be counted (an institution has one type).
PAIR_DIMENSIONS: Final[tuple[str, ...]] = ("discipline",)
_STATISTIC: Final[re.Pattern[str]] = re.compile(r"^S\d{1,2}$")


def copy_salt(salt: str, copy: int) -> str:
    """The bucket hash's salt of one copy of the sketch (copy 0 is the query's own salt)."""
    return salt if copy == 0 else f"{salt}/{copy}"


def pair_cells(n_keys: int) -> list[tuple[int, int]]:
    """The (a, b) key-index pairs of the ``pairs`` layout, a <= b, in cell order."""
    return [(a, b) for a in range(n_keys) for b in range(a, n_keys)]


def _bad(message: str) -> MalformedMessage:
    return MalformedMessage(message, ErrorCode.INVALID_TASK)


def bucket_digest(salt: str, match_key: bytes) -> int:
    """The first 8 bytes of SHA-256(domain, salt, match key), as an integer.

    Public and the same at every node; without the shared secret behind the match key nobody
    can compute it for a guessed address. ``bucket = bucket_digest(...) % buckets``.
    """
    body = b"publiek-reach/1\x00" + salt.encode("utf-8") + b"\x00" + match_key
    return int.from_bytes(hashlib.sha256(body).digest()[:8], "big")


@dataclass(frozen=True, slots=True)
class ReachQuery:
    statistic: str
    by: Dimension  # name in REACH_DIMENSIONS; sector: keys ("all",)
    buckets: int
    max_cells: int  # keys one person may count in (disciplines: most visited first)
    years: tuple[int, int]
    rho: Rho
    salt: str  # public; makes each analysis's bucket hash its own
    mode: ReleaseMode = ReleaseMode.SECURE
    mechanism: str = "discrete_gaussian"
    layout: str = "sketch"
    copies: int = 1

    def __post_init__(self) -> None:
        problems = []
        if not _STATISTIC.match(self.statistic):
            problems.append("statistic must be like 'S7'")
        if self.mode is not ReleaseMode.SECURE:
            problems.append("a reach sketch is summed in secure mode only")
        if self.mechanism not in MECHANISMS:
            problems.append(f"unknown mechanism {self.mechanism[:40]!r}")
        if self.rho.is_zero():
            problems.append("rho must be positive")
        if self.by.name not in REACH_DIMENSIONS:
            problems.append(
                f"reach can be broken down by {', '.join(REACH_DIMENSIONS)},"
                f" not {self.by.name[:40]!r}"
            )
        elif self.by.name == "sector":
            if self.by.keys != SECTOR_KEYS:
                problems.append("the sector dimension has the single key 'all'")
        else:
            problems += dimension_problems(self.by.name, self.by.keys)
        if self.layout not in LAYOUTS:
            problems.append(f"layout must be one of {', '.join(LAYOUTS)}")
        elif self.layout == "pairs":
            if self.by.name not in PAIR_DIMENSIONS:
                problems.append(f"the pairs layout counts {', '.join(PAIR_DIMENSIONS)} only")
            if self.buckets != 0 or self.copies != 1:
                problems.append("the pairs layout has no buckets (0) and one copy")
        else:
            if not MIN_BUCKETS <= self.buckets <= MAX_BUCKETS:
                problems.append(f"buckets must be between {MIN_BUCKETS} and {MAX_BUCKETS}")
            if not 1 <= self.copies <= MAX_COPIES:
                problems.append(f"copies must be between 1 and {MAX_COPIES}")
        if not 1 <= self.max_cells <= max(1, len(self.by.keys)):
            problems.append("max_cells must be between 1 and the number of keys")
        if self.by.name != "discipline" and self.max_cells != 1:
            problems.append("only discipline lets a person count in several keys (max_cells 1)")
        first, last = self.years
        if not MIN_YEAR <= first <= last <= MAX_YEAR:
            problems.append(f"the period must be years {MIN_YEAR}..{MAX_YEAR}, first <= last")
        if not self.salt or len(self.salt) > MAX_SALT_CHARS or not self.salt.isprintable():
            problems.append(f"salt must be 1 to {MAX_SALT_CHARS} printable characters")
        if not problems and self.n_cells > MAX_CELLS:
            problems.append(f"the sketch has {self.n_cells} cells (at most {MAX_CELLS})")
        if problems:
            raise _bad("; ".join(problems))

    @property
    def width(self) -> int:
        """Cells per key and copy: the buckets and the count of customers without a match key."""
        return self.buckets + 1

    @property
    def n_cells(self) -> int:
        if self.layout == "pairs":
            n = len(self.by.keys)
            return n * (n + 1) // 2 + 1
        return self.copies * len(self.by.keys) * self.width

    @property
    def l1_sensitivity(self) -> float:
        if self.layout == "pairs":
            d = self.max_cells
            return float(d * (d + 1) // 2 + 1)
        return float(self.max_cells * self.copies)

    @property
    def l2_sensitivity(self) -> float:
        # Every cell a unit touches gets exactly 1, so L2^2 = L1.
        return math.sqrt(self.l1_sensitivity)

    def describe(self) -> str:
        what = "sector" if self.by.name == "sector" else self.by.name.replace("_", " ")
        if self.layout == "pairs":
            return (
                f"{self.statistic}: people per {what} pair within each institution"
                f" ({self.n_cells} cells, {self.mode.value} mode)"
            )
        copies = f"{self.copies} x " if self.copies > 1 else ""
        return (
            f"{self.statistic}: reach sketch by {what} ({copies}{len(self.by.keys)} x"
            f" {self.buckets} buckets, {self.mode.value} mode)"
        )


__all__ = [
    "LAYOUTS",
    "MAX_BUCKETS",
    "MAX_COPIES",
    "MIN_BUCKETS",
    "PAIR_DIMENSIONS",
    "REACH_DIMENSIONS",
    "SECTOR_KEYS",
    "ReachQuery",
    "bucket_digest",
    "copy_salt",
    "pair_cells",
]
