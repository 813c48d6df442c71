"""Plans: declarative TOML files naming the analyses of a run and their declared privacy cost.

A plan is part of the contract: the coordinator runs it, and a node previews it (what would I
release, at what cost, does my policy accept it) before it joins.

``load_plan`` reports every problem in a plan at once (with the analysis it belongs to), so an
operator fixes a plan in one pass rather than one error per attempt. Parsing is strict: a key a
table does not take is a problem (with the closest key it does take), never ignored, and a
number that must be whole is refused when it is not (100.5, true, "8"), never rounded.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeGuard

from privacy.bounding import ContributionBound, InvalidBound
from privacy.budget import InvalidBudget, Rho, compose
from protocols.dimensions import PUBLIC_DIMENSIONS, public_keys
from protocols.errors import MalformedMessage
from protocols.messages import MEASURES, Dimension, HistogramQuery, ReleaseMode
from protocols.plan_sections import closest, shown, unknown_keys, whole_number
from protocols.reach_plan import Reach, parse_reaches
from protocols.segmentation_plan import STATISTIC as SEGMENT_STATISTIC
from protocols.segmentation_plan import Segmentation, parse_segmentations

_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
MAX_ANALYSES = 200

# The sector statistics (../shared/domain/README.md, "Statistics"; docs/statistics.md). An
# [[analysis]] is one histogram of each institution's own customers, summed over institutions:
# S1-S6, which need no matching of people across institutions. The others count distinct people
# across institutions and come from sections of their own (S7-S10: [[reach]], S12:
# [[segmentation]]) or from nothing yet (S11). Summed per-institution counts would count a
# person once per institution visited, so an [[analysis]] under one of those codes would publish
# something else under its name, and a node's allowed_statistics would judge it by that name.
STATISTICS: Final[dict[str, str]] = {
    "S1": "tickets, visits, performances, occupancy by discipline x region x period",
    "S2": "revenue, mean price, share discounted / youth / social tariff",
    "S3": "channel mix, booking lead time, tickets per order",
    "S4": "distance travelled (bands), share from own municipality",
    "S5": "bookers per institution type, visit frequency, new vs returning, retention",
    "S6": "age-band composition of bookers",
    "S7": "sector and regional reach (distinct people)",
    "S8": "participation rate per 1,000 households by home region",
    "S9": "cross-visiting / overlap between disciplines and institution types",
    "S10": "sector-level visit frequency per person",
    "S11": "recovery and churn vs 2019, first time in the sector",
    "S12": "segment distribution vs population, from the federated segmentation",
}
ANALYSIS_STATISTICS: Final[tuple[str, ...]] = ("S1", "S2", "S3", "S4", "S5", "S6")
_COMES_FROM: Final[dict[str, str]] = {
    **dict.fromkeys(("S7", "S8", "S9", "S10"), "comes from a [[reach]] section"),
    "S11": "needs people matched across institutions, which no plan section computes yet",
    SEGMENT_STATISTIC: "comes from a [[segmentation]] section",
}

# The keys each table of a plan takes ([[segmentation]] and [[reach]] list their own).
SECTIONS: Final[frozenset[str]] = frozenset({"plan", "analysis", "segmentation", "reach"})
PLAN_KEYS: Final[frozenset[str]] = frozenset(
    {
        "id",
        "title",
        "mode",
        "min_nodes",
        "degree",
        "threshold",
        "task_timeout_s",
        "delta",
        "suppress_below",
    }
)
ANALYSIS_KEYS: Final[frozenset[str]] = frozenset(
    {
        "id",
        "title",
        "statistic",
        "measure",
        "dimensions",
        "keys",
        "years",
        "max_cells",
        "max_per_cell",
        "rho",
    }
)
# A key written in the wrong table: where it belongs (TOML puts every key after a [[analysis]]
# header into that analysis, so a plan setting written last lands there).
_PLAN_ONLY: Final[dict[str, str]] = dict.fromkeys(PLAN_KEYS - ANALYSIS_KEYS, "[plan]")
_ANALYSIS_ONLY: Final[dict[str, str]] = dict.fromkeys(ANALYSIS_KEYS - PLAN_KEYS, "[[analysis]]")


def _number(value: Any) -> TypeGuard[int | float]:
    """A TOML integer or float, not a bool (TOML true is Python's 1)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


EXAMPLE = """\
# A publiek plan: what the sector asks of every node in one run.
[plan]
id = "s1-2024"                       # lowercase letters, digits, - _ .
title = "Tickets by discipline and quarter, 2024"
mode = "secure"                      # secure (default): the coordinator sees only sums;
                                     # "open": each node adds full noise, answers seen one by one
min_nodes = 3                        # fewer contributions: nothing is released (n_min, the
                                     # fewest survivors for which the privacy guarantee holds)
# degree = 8                         # secure: neighbours per node (default about 2 log2 n)
# threshold = 5                      # secure: shares to recover a node (default: a majority)
task_timeout_s = 120
delta = 1e-7                         # only to display (epsilon, delta); accounting is in rho
suppress_below = 1.0                 # hide cells smaller than this many 95% half-widths

[[analysis]]
id = "s1_tickets_discipline_quarter"
title = "Tickets by discipline and quarter"
statistic = "S1"
measure = "tickets"
dimensions = ["discipline", "quarter"]
years = [2024, 2024]                 # first and last year of period dimensions
max_cells = 4                        # cells one customer may touch
max_per_cell = 8                     # tickets one customer may add to a cell
rho = "0.1"                          # zCDP cost to every node (exact decimal)
"""


class PlanError(ValueError):
    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{source}: {len(problems)} problem(s)\n  - " + "\n  - ".join(problems))


@dataclass(frozen=True, slots=True)
class Analysis:
    id: str
    title: str
    query: HistogramQuery


@dataclass(frozen=True, slots=True)
class Plan:
    id: str
    title: str
    mode: ReleaseMode
    min_nodes: int
    task_timeout_s: float
    delta: float
    analyses: tuple[Analysis, ...]
    source_text: str
    sha256: str
    degree: int | None = None
    threshold: int | None = None
    suppress_below: float = 1.0
    # The sector's segmentation and its S12 tables (protocols/segmentation_plan.py).
    segmentations: tuple[Segmentation, ...] = ()
    # Sector reach, participation and overlap, S7-S10 (protocols/reach_plan.py).
    reaches: tuple[Reach, ...] = ()

    @property
    def rho_per_node(self) -> Rho:
        """The most the plan can cost a node: every analysis and every segmentation."""
        return compose(
            [a.query.rho for a in self.analyses]
            + [s.total_rho for s in self.segmentations]
            + [r.total_rho for r in self.reaches]
        )

    @property
    def analysis_ids(self) -> tuple[str, ...]:
        """Everything the plan releases under an id of its own, in running order."""
        return (
            *(a.id for a in self.analyses),
            *(s.id for s in self.segmentations),
            *(r.id for r in self.reaches),
        )


def _analysis(
    raw: Any, index: int, mode: ReleaseMode, problems: list[str], seen: set[str]
) -> Analysis | None:
    where = f"analysis #{index + 1}"
    if not isinstance(raw, dict):
        problems.append(f"{where} is not a table")
        return None
    aid = raw.get("id")
    if not isinstance(aid, str) or not _ID.match(aid):
        problems.append(f"{where}: id must be lowercase letters, digits, '-', '_' or '.'")
        aid = f"#{index + 1}"
    else:
        where = f"analysis {aid!r}"
        if aid in seen:
            problems.append(f"{where}: id is used twice")
        seen.add(aid)
    before = len(problems)
    unknown_keys(raw, ANALYSIS_KEYS, where, problems, belongs=_PLAN_ONLY)
    title = raw.get("title", aid)
    if not isinstance(title, str):
        problems.append(f"{where}: title must be text (in quotes)")
    statistic = raw.get("statistic")
    if isinstance(statistic, str) and statistic in _COMES_FROM:
        problems.append(
            f"{where}: statistic {statistic} ({STATISTICS[statistic]}) counts distinct people"
            f" across institutions and {_COMES_FROM[statistic]}; an [[analysis]] sums each"
            f" institution's own counts: {', '.join(ANALYSIS_STATISTICS)}"
        )
    elif statistic not in ANALYSIS_STATISTICS:
        given = "it is missing" if statistic is None else f"not {shown(statistic)}"
        problems.append(
            f"{where}: statistic must be one of {', '.join(ANALYSIS_STATISTICS)}"
            f" (docs/statistics.md), {given}"
        )
    measure = raw.get("measure")
    if not isinstance(measure, str) or measure not in MEASURES:
        near = closest(measure, MEASURES) if isinstance(measure, str) else None
        hint = f" (did you mean {near!r}?)" if near else ""
        problems.append(f"{where}: measure must be one of {', '.join(MEASURES)}{hint}")
    dims = raw.get("dimensions")
    if not isinstance(dims, list) or not dims or not all(isinstance(d, str) for d in dims):
        problems.append(f"{where}: dimensions must be a non-empty list of names")
        dims = []
    unknown = [d for d in dims if d not in PUBLIC_DIMENSIONS]
    if unknown:
        problems.append(
            f"{where}: unknown dimension(s) {', '.join(unknown)}"
            f" (known: {', '.join(sorted(PUBLIC_DIMENSIONS))})"
        )
    years = raw.get("years", [2024, 2024])
    if (
        not isinstance(years, list)
        or len(years) != 2
        or not all(whole_number(y) for y in years)
        or not (1990 <= years[0] <= years[1] <= 2100)
    ):
        problems.append(f"{where}: years must be [first, last] with 1990 <= first <= last <= 2100")
        years = [2024, 2024]
    # A dimension's keys are its whole public key set unless the plan picks some of them
    # (e.g. leaving the sensitive social tariff out of a price-type table).
    key_sets: dict[str, tuple[str, ...]] = {}
    chosen = raw.get("keys", {})
    if not isinstance(chosen, dict):
        problems.append(f"{where}: keys must be a table such as {{ price_type = [...] }}")
        chosen = {}
    for d in dims:
        public = public_keys(d, years[0], years[1]) if d in PUBLIC_DIMENSIONS else ()
        picked = chosen.get(d)
        if picked is None:
            key_sets[d] = public
        elif (
            not isinstance(picked, list)
            or not picked
            or not all(isinstance(k, str) for k in picked)
        ):
            problems.append(f"{where}: keys.{d} must be a non-empty list of keys")
        else:
            outside = [k for k in picked if k not in public]
            if outside:
                problems.append(f"{where}: keys.{d} has keys not in its public set: {outside}")
            key_sets[d] = tuple(picked)
    for d in chosen:
        if d not in dims:
            near = closest(d, dims)
            hint = f" (did you mean {near!r}?)" if near else ""
            problems.append(f"{where}: keys.{d} names a dimension the analysis does not have{hint}")
    bound: ContributionBound | None = None
    limits = {}
    for knob, what in (
        ("max_cells", "cells one customer may touch"),
        ("max_per_cell", "what one customer may add to a cell"),
    ):
        value = raw.get(knob)
        if value is None:
            problems.append(f"{where}: {knob} is missing (a whole number: {what})")
        elif not whole_number(value):
            # int() would quietly turn 100.5 into 100 and true into 1: the noise would then be
            # calibrated to a bound the operator did not write.
            problems.append(f"{where}: {knob} must be a whole number ({what}), not {shown(value)}")
        else:
            limits[knob] = value
    if len(limits) == 2:
        try:
            bound = ContributionBound(limits["max_cells"], limits["max_per_cell"])
        except InvalidBound as err:
            problems.append(f"{where}: {err}")
    if measure == "bookers" and bound is not None and bound.max_per_cell != 1:
        # The node counts a booker once per cell whatever the plan says; noise calibrated to a
        # larger bound would only make the table worse.
        problems.append(
            f"{where}: bookers counts each customer at most once in a cell: max_per_cell must"
            f" be 1, not {bound.max_per_cell}"
        )
    rho: Rho | None = None
    try:
        rho = Rho.parse(str(raw.get("rho", "")))
        if rho.is_zero():
            problems.append(f"{where}: rho must be positive")
    except InvalidBudget as err:
        problems.append(f"{where}: {err}")
    if len(problems) > before or bound is None or rho is None:
        return None
    try:
        query = HistogramQuery(
            statistic=str(statistic),
            measure=str(measure),
            dimensions=tuple(Dimension(d, key_sets[d]) for d in dims),
            bound=bound,
            rho=rho,
            mode=mode,
            years=(years[0], years[1]),
        )
    except MalformedMessage as err:
        problems.append(f"{where}: {err.message}")
        return None
    return Analysis(id=aid, title=str(title), query=query)


def parse_plan(text: str, source: str = "plan", base: Path | None = None) -> Plan:
    """A plan from its TOML text; ``base``: the folder files it names (a segment model, a
    household table) are relative to. Raises PlanError listing every problem."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise PlanError(source, [f"not valid TOML: {err}"]) from err
    problems: list[str] = []
    # A key above the first [table] header is at the top of the plan: say where it belongs.
    unknown_keys(
        raw,
        SECTIONS,
        "plan file",
        problems,
        "section or key",
        {**dict.fromkeys(ANALYSIS_KEYS, "[[analysis]]"), **dict.fromkeys(PLAN_KEYS, "[plan]")},
    )
    head = raw.get("plan")
    if not isinstance(head, dict):
        missing = "missing [plan] table" if head is None else "plan must be one [plan] table"
        raise PlanError(source, [*problems, missing])
    unknown_keys(head, PLAN_KEYS, "[plan]", problems, belongs=_ANALYSIS_ONLY)
    if not isinstance(head.get("title", ""), str):
        problems.append("plan.title must be text (in quotes)")
    pid = head.get("id")
    if not isinstance(pid, str) or not _ID.match(pid):
        problems.append("plan.id must be lowercase letters, digits, '-', '_' or '.'")
    try:
        # Secure aggregation is the default for sector releases; open mode must be asked for.
        mode = ReleaseMode(head.get("mode", "secure"))
    except ValueError:
        problems.append('plan.mode must be "secure" (the default) or "open"')
        mode = ReleaseMode.SECURE
    min_nodes = head.get("min_nodes", 3)
    if not whole_number(min_nodes) or not (1 <= min_nodes <= 100_000):
        problems.append("plan.min_nodes must be a whole number of at least 1")
        min_nodes = 1
    timeout = head.get("task_timeout_s", 120)
    if not _number(timeout) or not (1 <= timeout <= 86_400):
        problems.append("plan.task_timeout_s must be between 1 and 86400 seconds")
        timeout = 120
    delta = head.get("delta", 1e-7)
    if not isinstance(delta, float) or not (0 < delta < 1e-3):
        problems.append("plan.delta must be a float in (0, 0.001), e.g. 1e-7")
        delta = 1e-7
    suppress_below = head.get("suppress_below", 1.0)
    if not _number(suppress_below) or not 0 <= suppress_below <= 10:
        problems.append("plan.suppress_below must be a number of half-widths between 0 and 10")
        suppress_below = 1.0
    secure_knobs: dict[str, int | None] = {}
    for knob in ("degree", "threshold"):
        value = head.get(knob)
        if value is not None and (not whole_number(value) or not 1 <= value <= 100_000):
            problems.append(f"plan.{knob} must be a whole number of at least 1")
            value = None
        if value is not None and mode is not ReleaseMode.SECURE:
            problems.append(f"plan.{knob} only applies to secure mode")
        secure_knobs[knob] = value
    if (
        secure_knobs["degree"] is not None
        and secure_knobs["threshold"] is not None
        and secure_knobs["threshold"] > secure_knobs["degree"]
    ):
        problems.append("plan.threshold cannot exceed plan.degree")
    raw_analyses = raw.get("analysis", [])
    if isinstance(raw_analyses, dict):
        problems.append("analyses must be written [[analysis]] (a list of tables), not [analysis]")
        raw_analyses = []
    elif not isinstance(raw_analyses, list) or not (
        raw_analyses or raw.get("segmentation") or raw.get("reach")
    ):
        problems.append("a plan needs at least one [[analysis]] (or [[segmentation]], [[reach]])")
        raw_analyses = []
    if len(raw_analyses) > MAX_ANALYSES:
        problems.append(f"a plan may hold at most {MAX_ANALYSES} analyses")
        raw_analyses = raw_analyses[:MAX_ANALYSES]
    seen: set[str] = set()
    analyses = [_analysis(a, i, mode, problems, seen) for i, a in enumerate(raw_analyses)]
    segmentations = parse_segmentations(raw.get("segmentation"), mode, delta, problems, seen, base)
    reaches = parse_reaches(raw.get("reach"), mode, delta, problems, seen, base)
    if problems:
        raise PlanError(source, problems)
    return Plan(
        id=str(pid),
        title=str(head.get("title", pid)),
        mode=mode,
        min_nodes=min_nodes,
        task_timeout_s=float(timeout),
        delta=delta,
        analyses=tuple(a for a in analyses if a is not None),
        source_text=text,
        sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
        degree=secure_knobs["degree"],
        threshold=secure_knobs["threshold"],
        suppress_below=float(suppress_below),
        segmentations=segmentations,
        reaches=reaches,
    )


def load_plan(path: Path) -> Plan:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise PlanError(str(path), ["file not found"]) from err
    except UnicodeDecodeError as err:
        raise PlanError(str(path), ["not UTF-8 text"]) from err
    return parse_plan(text, str(path), path.parent)
