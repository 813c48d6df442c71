"""The institution's local policy: what it is willing to answer, checked before any charge.

A policy is the institution's own, written in its configuration (``[policy]`` in node.toml, or
a file of its own named by ``[policy] file``); no coordinator can change it. Every task is
checked against it before the ledger is charged, and a refusal lists every reason at once, in
plain language, for the coordinator's operator and for the institution's own ledger.

| field | default | refuses |
|---|---|---|
| allowed_modes | ["secure"] | a release mode not listed ("open": the coordinator sees this |
| | | node's own noisy table) |
| allowed_statistics | all | a statistic (S1, S2, ...) not listed |
| allowed_measures | all | a measure not listed |
| max_rho_per_task | "0.5" | a task that costs more |
| max_rho_per_run | none | a task that would take its run's total (all tasks with its run |
| | | id) above it |
| min_n_min | 2 | a secure round that may release a sum of fewer contributions |
| max_cells | 100000 | a table with more cells |
| max_contribution | none | a per-customer bound (max_per_cell x max_cells) above it: one |
| | | number for every measure, or a table by measure (cents for revenue) |
| allow_social_tariff | false | a price-type table whose keys include the social tariff |
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from node.queries import effective_bound
from privacy.budget import InvalidBudget, Rho
from protocols.errors import ErrorCode, PublicError
from protocols.kmeans import KMeansQuery
from protocols.messages import MAX_CELLS, MEASURES, HistogramQuery, ReleaseMode
from protocols.reach import ReachQuery

# Social-tariff use can reveal poverty (../shared/domain/README.md: sensitive, opt-in).
SENSITIVE_PRICE_TYPE: Final[str] = "social"
_STATISTIC: Final[re.Pattern[str]] = re.compile(r"^S\d{1,2}$")
FIELDS: Final[tuple[str, ...]] = (
    "allowed_modes",
    "allowed_statistics",
    "allowed_measures",
    "max_rho_per_task",
    "max_rho_per_run",
    "min_n_min",
    "max_cells",
    "max_contribution",
    "allow_social_tariff",
)


def _default_rho() -> Rho:
    return Rho.parse("0.5")


@dataclass(frozen=True, slots=True)
class Policy:
    max_rho_per_task: Rho = field(default_factory=_default_rho)
    # Secure aggregation unless the institution opts in to open mode (which shows the
    # coordinator its own noisy answer).
    allowed_modes: frozenset[ReleaseMode] = frozenset({ReleaseMode.SECURE})
    # None: every statistic / measure the node can compute.
    allowed_statistics: frozenset[str] | None = None
    allowed_measures: frozenset[str] | None = None
    max_rho_per_run: Rho | None = None
    # With n_min = 1 a coordinator could unmask one institution's (noisy) table on its own; 2
    # keeps "only ever seen summed with other institutions" true by default.
    min_n_min: int = 2
    max_cells: int = MAX_CELLS
    # None: no cap beyond the plan's; otherwise per measure (a measure not named: no cap).
    max_contribution: Mapping[str, int] | None = field(default=None, hash=False)
    allow_social_tariff: bool = False

    def reasons(
        self,
        query: HistogramQuery | KMeansQuery | ReachQuery,
        *,
        n_min: int | None = None,
        spent_in_run: Rho | None = None,
    ) -> list[str]:
        """Every reason this policy refuses the query (empty: accepted).

        ``n_min``: a secure round's fewest surviving contributions; ``spent_in_run``: what the
        other tasks of the same run already cost this node. A k-means round of the
        segmentation (statistic S12) is held to the same modes, statistics, costs, n_min and
        size; measures, per-customer caps and the social tariff concern histograms only (a
        k-means round bounds each customer by the public feature space instead). A reach
        sketch (S7-S10, protocols/reach.py) is held to the same rules as a k-means round; its
        bound is one bucket in each of at most max_cells keys per person.
        """
        out = []
        if query.mode not in self.allowed_modes:
            allowed = " or ".join(sorted(m.value for m in self.allowed_modes)) or "none"
            out.append(
                f"release mode {query.mode.value!r} is not allowed here (allowed: {allowed})"
            )
        if self.allowed_statistics is not None and query.statistic not in self.allowed_statistics:
            out.append(
                f"statistic {query.statistic} is not among the allowed statistics"
                f" ({', '.join(sorted(self.allowed_statistics)) or 'none'})"
            )
        if (
            isinstance(query, HistogramQuery)
            and self.allowed_measures is not None
            and query.measure not in self.allowed_measures
        ):
            out.append(
                f"measure {query.measure!r} is not among the allowed measures"
                f" ({', '.join(sorted(self.allowed_measures)) or 'none'})"
            )
        if query.rho > self.max_rho_per_task:
            out.append(
                f"a single task may cost at most rho {self.max_rho_per_task}, this one costs"
                f" rho {query.rho}"
            )
        if self.max_rho_per_run is not None and spent_in_run is not None:
            total = spent_in_run + query.rho
            if total > self.max_rho_per_run:
                out.append(
                    f"one run may cost at most rho {self.max_rho_per_run}, with this task it"
                    f" would cost rho {total} (rho {spent_in_run} spent on its other tasks)"
                )
        if query.mode is ReleaseMode.SECURE and n_min is not None and n_min < self.min_n_min:
            out.append(
                f"the round would release a sum of as few as {n_min} institution(s), this node"
                f" takes part only in sums of at least {self.min_n_min} (n_min)"
            )
        if query.n_cells > self.max_cells:
            out.append(f"the table has {query.n_cells} cells, more than {self.max_cells}")
        if isinstance(query, KMeansQuery | ReachQuery):
            return out
        cap = (self.max_contribution or {}).get(query.measure)
        bound = effective_bound(query)
        if cap is not None and bound.l1_sensitivity > cap:
            unit = " cents" if query.measure == "revenue_cents" else ""
            out.append(
                f"one customer could add up to {bound.l1_sensitivity}{unit} to this table"
                f" ({bound.max_per_cell} in each of {bound.max_cells} cells), more than the"
                f" {cap}{unit} allowed for {query.measure} (max_contribution)"
            )
        if not self.allow_social_tariff and any(
            d.name == "price_type" and SENSITIVE_PRICE_TYPE in d.keys for d in query.dimensions
        ):
            out.append(
                "the table breaks out the social tariff, which can reveal poverty: this node"
                " does not release it unless allow_social_tariff = true (a price-type table"
                " without the 'social' key is accepted)"
            )
        return out

    def check(
        self,
        query: HistogramQuery | KMeansQuery | ReachQuery,
        *,
        n_min: int | None = None,
        spent_in_run: Rho | None = None,
    ) -> None:
        """Raise POLICY_REFUSED with every reason (joined by "; ") when the query is refused."""
        reasons = self.reasons(query, n_min=n_min, spent_in_run=spent_in_run)
        if reasons:
            raise PublicError(ErrorCode.POLICY_REFUSED, "; ".join(reasons))


class PolicyError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def parse_policy(raw: Mapping[str, Any], where: str = "policy.") -> Policy:
    """A policy from its TOML table; raises PolicyError listing every problem.

    ``where`` prefixes each field in messages: "policy." inline, "policy.toml: " for a file.
    """
    problems: list[str] = []
    unknown = sorted(k for k in raw if k not in FIELDS)
    if unknown:
        problems.append(
            f"{where.rstrip('.: ')}: unknown field(s) {', '.join(unknown)}"
            f" (known: {', '.join(FIELDS)})"
        )

    def names(key: str, allowed: tuple[str, ...] | None, example: str) -> frozenset[str] | None:
        value = raw.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            problems.append(f"{where}{key} must be a list such as {example}")
            return None
        bad = [v for v in value if (allowed is not None and v not in allowed)]
        if bad:
            problems.append(
                f"{where}{key}: {', '.join(repr(b) for b in bad)} not known"
                f" (known: {', '.join(allowed or ())})"
            )
        return frozenset(value)

    def rho(key: str) -> Rho | None:
        value = raw.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            problems.append(f'{where}{key} must be a number such as "0.5"')
            return None
        try:
            return Rho.parse(str(value))
        except InvalidBudget as err:
            problems.append(f"{where}{key}: {err}")
            return None

    def whole(key: str, low: int, high: int) -> int | None:
        value = raw.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            problems.append(f"{where}{key} must be a whole number from {low} to {high}")
            return None
        return value

    modes = names("allowed_modes", tuple(m.value for m in ReleaseMode), '["secure"]')
    statistics = names("allowed_statistics", None, '["S1", "S2"]')
    if statistics is not None and not all(_STATISTIC.match(s) for s in statistics):
        problems.append(f"{where}allowed_statistics must name statistics such as 'S1'")
    measures = names("allowed_measures", tuple(MEASURES), '["tickets", "visits"]')
    per_task = rho("max_rho_per_task")
    per_run = rho("max_rho_per_run")
    min_n_min = whole("min_n_min", 1, 100_000)
    max_cells = whole("max_cells", 1, MAX_CELLS)
    contribution = _contribution(raw.get("max_contribution"), where, problems)
    social = raw.get("allow_social_tariff")
    if social is not None and not isinstance(social, bool):
        problems.append(f"{where}allow_social_tariff must be true or false")
    if problems:
        raise PolicyError(problems)
    default = Policy()
    return Policy(
        max_rho_per_task=per_task or default.max_rho_per_task,
        allowed_modes=(
            frozenset(ReleaseMode(m) for m in modes) if modes is not None else default.allowed_modes
        ),
        allowed_statistics=statistics,
        allowed_measures=measures,
        max_rho_per_run=per_run,
        min_n_min=min_n_min if min_n_min is not None else default.min_n_min,
        max_cells=max_cells if max_cells is not None else default.max_cells,
        max_contribution=contribution,
        allow_social_tariff=social is True,
    )


def _contribution(value: Any, where: str, problems: list[str]) -> Mapping[str, int] | None:
    """One cap for every measure, or a table of caps by measure."""
    key = f"{where}max_contribution"
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            problems.append(f"{key} must be at least 1")
            return None
        return dict.fromkeys(MEASURES, value)
    if isinstance(value, dict):
        caps: dict[str, int] = {}
        for measure, cap in value.items():
            if measure not in MEASURES:
                problems.append(
                    f"{key}: unknown measure {measure!r} (known: {', '.join(MEASURES)})"
                )
            elif isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
                problems.append(f"{key}.{measure} must be a whole number of at least 1")
            else:
                caps[measure] = cap
        return caps
    problems.append(
        f"{key} must be a whole number, or a table by measure such as"
        " { tickets = 256, revenue_cents = 100000 }"
    )
    return None


def read_policy_file(path: Path) -> dict[str, Any]:
    """The fields of a policy file: at its top level (or under ``[policy]``)."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise PolicyError([f"policy file {path}: file not found"]) from err
    except (OSError, UnicodeDecodeError) as err:
        raise PolicyError([f"policy file {path}: cannot be read ({err})"]) from err
    except tomllib.TOMLDecodeError as err:
        raise PolicyError([f"policy file {path}: not valid TOML: {err}"]) from err
    if set(raw) == {"policy"} and isinstance(raw["policy"], dict):
        raw = raw["policy"]
    if "file" in raw:
        raise PolicyError([f"policy file {path}: a policy file cannot name another policy file"])
    return raw


def load_policy_file(path: Path) -> Policy:
    return parse_policy(read_policy_file(path), f"{path}: ")
