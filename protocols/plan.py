"""Plans: declarative TOML files naming the analyses of a run and their declared privacy cost.

A plan is part of the contract: the coordinator runs it, and a node previews it (what would I
release, at what cost, does my policy accept it) before it joins.

``load_plan`` reports every problem in a plan at once (with the analysis it belongs to), so an
operator fixes a plan in one pass rather than one error per attempt.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from privacy.bounding import ContributionBound, InvalidBound
from privacy.budget import InvalidBudget, Rho, compose
from protocols.dimensions import PUBLIC_DIMENSIONS, public_keys
from protocols.errors import MalformedMessage
from protocols.messages import MEASURES, Dimension, HistogramQuery, ReleaseMode
from protocols.reach_plan import Reach, parse_reaches
from protocols.segmentation_plan import Segmentation, parse_segmentations

_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
MAX_ANALYSES = 200

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
    title = raw.get("title", aid)
    statistic = raw.get("statistic")
    if not isinstance(statistic, str) or not re.match(r"^S\d{1,2}$", statistic):
        problems.append(f"{where}: statistic must be like 'S1'")
    measure = raw.get("measure")
    if not isinstance(measure, str) or measure not in MEASURES:
        problems.append(f"{where}: measure must be one of {', '.join(MEASURES)}")
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
        or not all(isinstance(y, int) for y in years)
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
            problems.append(f"{where}: keys.{d} names a dimension the analysis does not have")
    bound: ContributionBound | None = None
    try:
        bound = ContributionBound(int(raw.get("max_cells", 0)), int(raw.get("max_per_cell", 0)))
    except (InvalidBound, TypeError, ValueError) as err:
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
    head = raw.get("plan")
    if not isinstance(head, dict):
        raise PlanError(source, ["missing [plan] table"])
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
    if not isinstance(min_nodes, int) or not (1 <= min_nodes <= 100_000):
        problems.append("plan.min_nodes must be a whole number of at least 1")
        min_nodes = 1
    timeout = head.get("task_timeout_s", 120)
    if not isinstance(timeout, int | float) or not (1 <= timeout <= 86_400):
        problems.append("plan.task_timeout_s must be between 1 and 86400 seconds")
        timeout = 120
    delta = head.get("delta", 1e-7)
    if not isinstance(delta, float) or not (0 < delta < 1e-3):
        problems.append("plan.delta must be a float in (0, 0.001), e.g. 1e-7")
        delta = 1e-7
    suppress_below = head.get("suppress_below", 1.0)
    if not isinstance(suppress_below, int | float) or not 0 <= suppress_below <= 10:
        problems.append("plan.suppress_below must be a number of half-widths between 0 and 10")
        suppress_below = 1.0
    secure_knobs: dict[str, int | None] = {}
    for knob in ("degree", "threshold"):
        value = head.get(knob)
        if value is not None and (not isinstance(value, int) or not 1 <= value <= 100_000):
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
    if not isinstance(raw_analyses, list) or not (
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
