"""Typed values of the wire contract. The rest of the code speaks these, never protobuf.

Every value is frozen and validated on construction, so a message that exists is a message that
makes sense; ``protocols.serde`` is the only bridge to the generated protobuf classes.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from privacy.bounding import ContributionBound
from privacy.budget import Rho
from protocols.dimensions import dimension_problems
from protocols.errors import ErrorCode, MalformedMessage

if TYPE_CHECKING:
    from protocols.secagg import SecAggRequest, SecAggResponse

# What one privacy unit (a customer account) adds to a cell. Every measure counts only tickets of
# paid orders (complimentary tickets included), dated by their performance.
MEASURES: Final[dict[str, str]] = {
    "tickets": "tickets",
    "visits": "visits: distinct (customer, performance) pairs",
    "orders": "orders (bookings): distinct orders",
    "bookers": "bookers: distinct customers (each counts at most once in a cell)",
    "revenue_cents": "revenue in euro cents (price paid)",
}
# The dimensions a measure adds up over: those taking one value for everything one unit of the
# measure is made of. A visit has one discipline and one quarter but can span several price
# types; a booker has one home region and age band but can book several disciplines. Tables
# that differ only by summing such a dimension out are marginals of each other (post-processing
# makes them consistent); over any other dimension they are not, and are left alone.
_PER_CUSTOMER: Final[frozenset[str]] = frozenset(
    {"region", "institution_type", "institution_region", "age_band", "distance_band", "returning"}
)
# Of those, the keys a customer has per year (age, new or returning): constant within one year
# only, so bookers add up over them only in tables of one year (or split by year).
PER_CUSTOMER_YEAR: Final[frozenset[str]] = frozenset({"age_band", "returning"})
_PER_VISIT: Final[frozenset[str]] = _PER_CUSTOMER | {
    "discipline",
    "quarter",
    "year",
    "frequency_band",
}
_PER_ORDER: Final[frozenset[str]] = _PER_VISIT | {"channel", "lead_time_band", "order_size_band"}
ADDITIVE_OVER: Final[dict[str, frozenset[str]]] = {
    "tickets": _PER_ORDER | {"price_type"},
    "revenue_cents": _PER_ORDER | {"price_type"},
    "visits": _PER_VISIT,
    "orders": _PER_ORDER,
    "bookers": _PER_CUSTOMER,
}
MECHANISMS: Final[tuple[str, ...]] = ("discrete_gaussian",)
MAX_ID_CHARS: Final[int] = 128
MAX_CELLS: Final[int] = 100_000
MIN_YEAR: Final[int] = 1900
MAX_YEAR: Final[int] = 2100


class ReleaseMode(enum.Enum):
    OPEN = "open"  # each node adds full noise; the coordinator sees each noisy answer
    SECURE = "secure"  # secure aggregation: the coordinator sees only the sum


def _check_id(kind: str, value: str) -> None:
    if not value:
        raise MalformedMessage(f"{kind} is empty")
    if len(value) > MAX_ID_CHARS:
        raise MalformedMessage(f"{kind} is longer than {MAX_ID_CHARS} characters")
    if not value.isprintable():
        raise MalformedMessage(f"{kind} contains unprintable characters")


@dataclass(frozen=True, slots=True)
class Hello:
    institution_id: str
    software_version: str
    protocol_version: int
    capabilities: tuple[str, ...]

    def __post_init__(self) -> None:
        _check_id("institution_id", self.institution_id)


@dataclass(frozen=True, slots=True)
class Welcome:
    session_id: str
    coordinator_id: str
    software_version: str
    protocol_version: int
    heartbeat_interval_ms: int


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    code: ErrorCode
    message: str


@dataclass(frozen=True, slots=True)
class Rejection:
    error: ErrorInfo


@dataclass(frozen=True, slots=True)
class Heartbeat:
    sequence: int


@dataclass(frozen=True, slots=True)
class Dimension:
    name: str
    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class HistogramQuery:
    statistic: str
    measure: str
    dimensions: tuple[Dimension, ...]
    bound: ContributionBound
    rho: Rho
    mode: ReleaseMode
    years: tuple[int, int]  # first and last calendar year of the performances counted
    mechanism: str = "discrete_gaussian"

    def __post_init__(self) -> None:
        problems = []
        first, last = self.years
        if not (MIN_YEAR <= first <= last <= MAX_YEAR):
            problems.append(
                f"the period must be years {MIN_YEAR}..{MAX_YEAR} with first <= last,"
                f" got {first}..{last}"
            )
        for d in self.dimensions:
            if d.name in ("year", "quarter") and any(
                not first <= int(k[:4]) <= last for k in d.keys if k[:4].isdigit()
            ):
                problems.append(f"dimension {d.name!r} has keys outside the period {first}..{last}")
        if self.measure not in MEASURES:
            problems.append(f"unknown measure {self.measure[:40]!r}")
        if self.mechanism not in MECHANISMS:
            problems.append(f"unknown mechanism {self.mechanism[:40]!r}")
        if not self.dimensions:
            problems.append("a histogram needs at least one dimension")
        names = [d.name for d in self.dimensions]
        if len(set(names)) != len(names):
            problems.append("a dimension appears twice")
        for d in self.dimensions:
            problems += dimension_problems(d.name, d.keys)
        if not problems and self.n_cells > MAX_CELLS:
            problems.append(f"the table has {self.n_cells} cells (at most {MAX_CELLS})")
        if self.rho.is_zero():
            problems.append("rho must be positive")
        if problems:
            raise MalformedMessage("; ".join(problems), ErrorCode.INVALID_TASK)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(d.keys) for d in self.dimensions)

    @property
    def l2_sensitivity(self) -> float:
        return self.bound.l2_sensitivity

    @property
    def l1_sensitivity(self) -> float:
        return float(self.bound.l1_sensitivity)

    @property
    def n_cells(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True, slots=True)
class Task:
    task_id: str
    run_id: str
    analysis_id: str
    timeout_ms: int
    spec: HistogramQuery | SecAggRequest

    def __post_init__(self) -> None:
        _check_id("task_id", self.task_id)
        _check_id("run_id", self.run_id)
        _check_id("analysis_id", self.analysis_id)
        if self.timeout_ms <= 0:
            raise MalformedMessage("timeout_ms must be positive", ErrorCode.INVALID_TASK)


@dataclass(frozen=True, slots=True)
class HistogramAnswer:
    values: tuple[int, ...]
    noise_scale: float
    rho: Rho
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class TaskResult:
    task_id: str
    outcome: HistogramAnswer | ErrorInfo | SecAggResponse

    @property
    def ok(self) -> bool:
        return not isinstance(self.outcome, ErrorInfo)


NodeMessage = Hello | TaskResult | Heartbeat
CoordinatorMessage = Welcome | Rejection | Task | Heartbeat
