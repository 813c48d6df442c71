"""The sector's segmentation end to end, in process: a plan with a [[segmentation]] run by the
real runner over real node handlers, ledgers, policies and secure-aggregation rounds on a small
synthetic sector; the release's model and S12 tables; every ledger's charges; a coordinator that
crashes mid-fit and resumes without charging anyone twice; a node whose policy refuses."""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from coordinator.inprocess import InProcessTransport
from coordinator.release import write_release
from coordinator.runner import RunAborted, RunSettings, run_plan
from coordinator.state import RunStateStore
from deploy.devcerts import DevPki, make_dev_pki
from node.data import TicketTable, load
from node.geo import Geography, Location
from node.handler import NodeIdentity, TaskHandler
from node.ingest.sources import file_source
from node.ledger import BudgetCap, Ledger, Period
from node.policy import Policy
from node.segments import SegmentData, audience_by_segment, label
from privacy.budget import Rho, compose
from protocols.dimensions import SEGMENT_KEYS
from protocols.identity import PeerVerifier, Signer
from protocols.messages import Task, TaskResult
from protocols.plan import parse_plan
from protocols.segment_model import model_from_json, read_model
from synthetic import SectorConfig, generate_sector
from synthetic.geography import pc4_table

PLAN = """
[plan]
id = "seg-test"
mode = "secure"
min_nodes = {n_min}
task_timeout_s = 60
delta = 1e-7

[[segmentation]]
id = "s12_segments"
title = "Audience segments"
k = 5
rho = "0.5"
max_lloyd_rounds = 4
max_depth = 8

[[segmentation.table]]
by = "region"
rho = "0.05"

[[segmentation.table]]
by = "discipline"
max_cells = 3
rho = "0.05"
"""


@dataclass
class Node:
    institution_id: str
    institution_type: str
    table: TicketTable
    data: SegmentData


@pytest.fixture(scope="module")
def sector(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Node], DevPki]:
    root = tmp_path_factory.mktemp("segsector")
    sec = generate_sector(SectorConfig(n_institutions=5, seed=11, years=(2023, 2024), scale=0.05))
    sec.write(root / "sector")
    pc4 = pc4_table()
    nodes = []
    for inst in sec.institutions:
        geo = Geography(location=Location(inst.lat, inst.lon), pc4=pc4)
        loaded = load(
            file_source(root / "sector" / inst.institution_id / "ticket_line.csv"),
            geography=geo,
        )
        data = SegmentData.from_features(loaded.features, inst.type, inst.region)
        nodes.append(Node(inst.institution_id, inst.type, loaded.table, data))
    pki = make_dev_pki(root / "pki", [n.institution_id for n in nodes])
    return nodes, pki


def handlers(
    sector: tuple[list[Node], DevPki], folder: Path, policies: dict[str, Policy] | None = None
) -> dict[str, TaskHandler]:
    nodes, pki = sector
    out = {}
    for n in nodes:
        nid = n.institution_id
        out[nid] = TaskHandler(
            NodeIdentity(nid, n.institution_type),
            n.table,
            Ledger(folder / f"{nid}.sqlite", BudgetCap(Rho.parse("10"), Period.TOTAL)),
            (policies or {}).get(nid, Policy(max_rho_per_task=Rho.parse("1"))),
            signer=Signer.from_files(nid, pki.nodes[nid].cert, pki.nodes[nid].key),
            verifier=PeerVerifier.from_file(pki.ca),
            segments=n.data,
        )
    return out


def transport(
    hs: dict[str, TaskHandler], wrap: Callable[[str, Task, TaskResult], None] | None = None
) -> InProcessTransport:
    def handle(nid: str, task: Task) -> TaskResult:
        result = hs[nid].handle(task, "test-coordinator")
        if wrap is not None:
            wrap(nid, task, result)
        return result

    return InProcessTransport({nid: functools.partial(handle, nid) for nid in hs})


def run(
    plan_text: str,
    tr: InProcessTransport,
    n: int,
    state: RunStateStore | None = None,
    run_id: str | None = "seg-run",
) -> dict[str, Any]:
    plan = parse_plan(plan_text)
    settings = RunSettings("test-coordinator", n, 5, run_id=run_id, state=state)
    return asyncio.run(run_plan(plan, tr, settings, lambda _: None))


def _cost(x: np.ndarray, c: np.ndarray) -> float:
    d2 = (x**2).sum(1)[:, None] - 2 * x @ c.T + (c**2).sum(1)[None, :]
    return float(np.maximum(d2.min(1), 0).sum())


def test_a_plan_fits_the_segmentation_and_releases_its_model_and_s12(
    sector: tuple[list[Node], DevPki], tmp_path: Path
) -> None:
    from sklearn.cluster import KMeans

    nodes, _ = sector
    hs = handlers(sector, tmp_path)
    doc = run(PLAN.format(n_min=4), transport(hs), len(nodes))
    [raw] = doc["segmentations"]
    model = model_from_json(raw)
    assert [s.key for s in model.segments] == list(SEGMENT_KEYS[:5])
    assert all(s.label and s.description for s in model.segments)
    assert sum(s.share or 0 for s in model.segments) == pytest.approx(1.0)

    # Quality: at this generous budget the federated model is about as good as k-means on the
    # pooled data (a broken decoding or update would be far off: random centres cost 2-3x).
    x = np.vstack([n.data.scaled for n in nodes])
    pooled = KMeans(5, n_init=10, random_state=0).fit(x)
    assert _cost(x, model.centres()) <= 1.15 * pooled.inertia_

    # The S12 tables: customers by segment x region and x discipline, with error bars.
    tables = {t["analysis_id"]: t for t in doc["tables"]}
    region = tables["s12_segments_by_region"]
    assert [d["name"] for d in region["dimensions"]] == ["segment", "region"]
    noisy_total = sum(c["noisy_sum"] for c in region["cells"])
    sd = region["noise"]["sd_total"] * math.sqrt(len(region["cells"]))
    assert abs(noisy_total - x.shape[0]) < 5 * sd  # every customer once (5 sd: 6e-7 false alarm)
    assert "s12_segments_by_discipline" in tables

    # The release carries the model as a file of its own, which any institution applies to its
    # own customers with no further round (publiek-node segments reads the same file).
    [path] = [p for p in write_release(doc, tmp_path / "release") if "segment-model-" in p.name]
    distributed = read_model(path)
    assert distributed == model
    for n in nodes:
        rows = audience_by_segment(distributed, n.data)
        own = np.bincount(label(n.data, model.centres()), minlength=5).tolist()
        assert [r.customers for r in rows] == own
        assert sum(own) == n.data.customers
        assert [r.sector_share for r in rows] == [s.share for s in model.segments]

    # Every ledger: one charge per round it answered, all different task ids, and the total is
    # the model card's spend plus the tables, within the plan's declared cost.
    card = model.card
    spent = Rho.parse(card["privacy"]["rho_spent"]) + Rho.parse("0.1")
    declared = parse_plan(PLAN.format(n_min=4)).rho_per_node
    for h in hs.values():
        entries = [e for e in h.ledger.entries() if e.status == "answered"]
        assert len({e.task_id for e in entries}) == len(entries)
        assert len(entries) == len(card["rounds"]) + 2
        assert h.ledger.spent() == spent <= declared
        assert all(e.description.startswith("S12: segmentation") for e in entries)


def test_a_crashed_coordinator_resumes_the_fit_without_charging_twice(
    sector: tuple[list[Node], DevPki], tmp_path: Path
) -> None:
    nodes, _ = sector
    hs = handlers(sector, tmp_path / "ledgers")
    state = RunStateStore(tmp_path / "state.sqlite")
    calls = {"n": 0}

    class Crash(Exception):
        pass

    def crash_mid_round(nid: str, task: Task, result: TaskResult) -> None:
        # Dies half-way through a stage of the 7th round, after some nodes answered it.
        calls["n"] += 1
        if calls["n"] == 5 * 5 * 6 + 12:
            raise Crash("coordinator killed")

    with pytest.raises(Crash):
        run(PLAN.format(n_min=4), transport(hs, crash_mid_round), len(nodes), state)
    doc = run(PLAN.format(n_min=4), transport(hs), len(nodes), state, run_id=None)
    assert doc["run_id"] == "seg-run"
    model = model_from_json(doc["segmentations"][0])
    for h in hs.values():
        entries = h.ledger.entries()
        assert len({e.task_id for e in entries}) == len(entries)
        assert not [r for r in h.ledger.refusals() if "already left" in r.reason]
        answered = [e for e in entries if e.status == "answered"]
        assert len(answered) == len(model.card["rounds"]) + 2
        assert h.ledger.spent() == compose([e.rho for e in answered])


def test_a_node_whose_policy_refuses_s12_is_left_out_and_charged_nothing(
    sector: tuple[list[Node], DevPki], tmp_path: Path
) -> None:
    nodes, _ = sector
    refuser = nodes[0].institution_id
    strict = Policy(allowed_statistics=frozenset({"S1"}))
    hs = handlers(sector, tmp_path, {refuser: strict})
    doc = run(PLAN.format(n_min=3), transport(hs), len(nodes))
    model = model_from_json(doc["segmentations"][0])
    assert "refused" in model.card["provenance"]["dropped"][refuser]
    assert all(r["contributors"] == len(nodes) - 1 for r in model.card["rounds"])
    assert hs[refuser].ledger.spent().is_zero()
    [first, *_] = hs[refuser].ledger.refusals()
    assert "statistic S12 is not among the allowed statistics" in first.reason


def test_a_node_measuring_features_at_another_date_refuses_with_the_fix(
    sector: tuple[list[Node], DevPki], tmp_path: Path
) -> None:
    nodes, _ = sector
    hs = handlers(sector, tmp_path)
    text = PLAN.format(n_min=5).replace("k = 5\n", 'k = 5\nas_of = "2020-01-01"\n')
    with pytest.raises(RunAborted, match="no one was charged") as err:
        run(text, transport(hs), len(nodes))
    assert "set data.as_of = '2020-01-01' in node.toml" in str(err.value)
    assert all(h.ledger.spent().is_zero() for h in hs.values())


def test_the_sector_plan_has_the_segmentation_and_check_plan_lists_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from coordinator.cli import main as coordinator_main
    from protocols.plan import load_plan

    path = Path(__file__).resolve().parent.parent / "deploy" / "plans" / "sector-2024.toml"
    plan = load_plan(path)
    [seg] = plan.segmentations
    assert (seg.id, seg.k, seg.epsilon) == ("s12_segments", 11, 1.0)
    assert [t.by for t in seg.tables] == ["region", "discipline"]
    assert coordinator_main(["check-plan", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"s12_segments: S12 segmentation into 11 segments, the fit at most rho {seg.rho}" in out
    assert "s12_segments_by_discipline rho 0.01" in out


GIVEN_MODEL_PLAN = """
[plan]
id = "seg-given"
mode = "secure"
min_nodes = 4
task_timeout_s = 60

[[segmentation]]
id = "s12_given"
title = "Audience segments, last year's model"
model = "{model}"

[[segmentation.table]]
by = "region"
rho = "0.05"
"""


def _made_elsewhere(nodes: list[Node], folder: Path) -> tuple[Path, np.ndarray]:
    """A model trained outside publiek: scikit-learn's k-means on pooled features, written in
    the model file format (what a segmentation provider could hand the sector)."""
    from sklearn.cluster import KMeans

    from protocols.features import customer_space
    from protocols.segment_model import Segment, SegmentModel

    x = np.vstack([n.data.scaled for n in nodes])
    # (clipped: a mean of values in [0, 1] can come out a rounding error below 0)
    centres = np.clip(KMeans(4, n_init=4, random_state=1).fit(x).cluster_centers_, 0.0, 1.0)
    segments = tuple(
        Segment(key, f"group {i + 1}", f"centre {i + 1} of a pooled fit", tuple(map(float, c)))
        for i, (key, c) in enumerate(zip(SEGMENT_KEYS, centres, strict=False))
    )
    model = SegmentModel("seg-elsewhere-0001", "Made elsewhere", customer_space(), segments)
    folder.mkdir(parents=True, exist_ok=True)
    return model.write(folder / "given.json"), centres


def test_a_plan_applies_a_given_model_without_fitting_and_counts_s12_with_it(
    sector: tuple[list[Node], DevPki], tmp_path: Path
) -> None:
    import hashlib

    from protocols.plan import load_plan

    nodes, _ = sector
    model_path, centres = _made_elsewhere(nodes, tmp_path / "models")
    plan_path = tmp_path / "plans" / "given.toml"
    plan_path.parent.mkdir()
    # The path is relative to the plan file's folder.
    plan_path.write_text(GIVEN_MODEL_PLAN.format(model="../models/given.json"))
    plan = load_plan(plan_path)
    [seg] = plan.segmentations
    assert seg.k == 4 and seg.rho.is_zero() and plan.rho_per_node == Rho.parse("0.05")

    hs = handlers(sector, tmp_path / "ledgers")
    settings = RunSettings("test-coordinator", len(nodes), 5, run_id="given-run")
    doc = asyncio.run(run_plan(plan, transport(hs), settings, lambda _: None))

    # The release carries the model as given (same id and centres), with a note of this run.
    [raw] = doc["segmentations"]
    released = model_from_json(raw)
    assert released.model_id == "seg-elsewhere-0001"
    assert np.array_equal(released.centres(), centres)
    applied = released.card["applied"]
    assert applied["file_sha256"] == hashlib.sha256(model_path.read_bytes()).hexdigest()
    assert applied["run_id"] == "given-run"
    assert applied["model_shares"] == [None] * 4  # the file had none

    # S12 counted with the given centres: per segment, the noisy counts over all regions agree
    # with every node labelling its own customers (5 sd over 4 sums: 2.3e-6 false alarm).
    [table] = doc["tables"]
    own = sum(np.bincount(label(n.data, centres), minlength=4) for n in nodes)
    noisy = np.zeros(4)
    for cell in table["cells"]:
        noisy[SEGMENT_KEYS.index(cell["segment"])] += cell["noisy_sum"]
    regions = len(table["dimensions"][1]["keys"])
    sd = table["noise"]["sd_total"] * math.sqrt(regions)
    assert np.all(np.abs(noisy - own) < 5 * sd), (noisy, own, sd)
    # The released shares are this run's: the same noisy sums, normalised (post-processing).
    shares = [x.share for x in released.segments]
    assert shares == pytest.approx(list(np.maximum(noisy, 0) / np.maximum(noisy, 0).sum()))

    # Nothing was fitted: each node answered the one table round and paid only its rho.
    for h in hs.values():
        entries = [e for e in h.ledger.entries() if e.status == "answered"]
        assert len(entries) == 1 and h.ledger.spent() == Rho.parse("0.05")


def test_a_plan_naming_a_model_badly_is_refused_with_every_problem(tmp_path: Path) -> None:
    from privacy.clustering.space import Feature, FeatureSpace
    from protocols.plan import PlanError, load_plan
    from protocols.segment_model import Segment, SegmentModel

    plan_path = tmp_path / "p.toml"
    plan_path.write_text(
        GIVEN_MODEL_PLAN.format(model="missing.json").replace(
            'model = "missing.json"', 'model = "missing.json"\nk = 5\nrho = "0.1"'
        )
    )
    with pytest.raises(PlanError) as err:
        load_plan(plan_path)
    text = str(err.value)
    assert "fits none, so it takes no k, rho" in text
    assert "model missing.json: file not found" in text

    # A model over other features than the nodes compute is refused before any round.
    space = FeatureSpace((Feature("height_cm", 100.0, 220.0),), (0.0,), 1.0)
    other = SegmentModel("seg-x", "x", space, (Segment("segment_01", "a", "b", (0.1,)),))
    other.write(tmp_path / "other.json")
    plan_path.write_text(GIVEN_MODEL_PLAN.format(model="other.json"))
    with pytest.raises(PlanError, match="works on other features than the nodes compute"):
        load_plan(plan_path)


def test_a_model_plan_parsed_from_text_alone_fails_clearly_and_charges_nobody(
    sector: tuple[list[Node], DevPki], tmp_path: Path
) -> None:
    nodes, _ = sector
    hs = handlers(sector, tmp_path)
    with pytest.raises(RunAborted, match="must be loaded from its file"):
        run(GIVEN_MODEL_PLAN.format(model="given.json"), transport(hs), len(nodes))
    assert all(h.ledger.spent().is_zero() for h in hs.values())


def test_check_plan_and_the_node_preview_show_a_given_model_and_its_cost(
    sector: tuple[list[Node], DevPki], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from coordinator.cli import main as coordinator_main
    from node.cli import main as node_main
    from tests.conftest import ticket_row, write_tickets

    nodes, _ = sector
    _made_elsewhere(nodes, tmp_path)
    plan = tmp_path / "plan.toml"
    plan.write_text(GIVEN_MODEL_PLAN.format(model="given.json"))
    assert coordinator_main(["check-plan", str(plan)]) == 0
    out = capsys.readouterr().out
    assert "s12_given: S12 with the given model seg-elsewhere-0001 (4 segments" in out
    assert "no fit; s12_given_by_region rho 0.05" in out

    write_tickets(tmp_path / "tickets.csv", [ticket_row()])
    (tmp_path / "node.toml").write_text(
        'institution_id = "inst-01"\ninstitution_type = "theatre"\n'
        'institution_region = "NL-UT"\n[data]\ntickets = "tickets.csv"\n'
        '[coordinator]\naddress = "localhost:1"\n[tls]\ninsecure = true\n'
        '[ledger]\npath = "ledger.sqlite"\n[budget]\nrho_cap = "1.0"\nperiod = "year"\n'
    )
    code = node_main(["preview", str(plan), "--config", str(tmp_path / "node.toml")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "the given model seg-elsewhere-0001 (given.json), applied without fitting" in out
    assert "at most 1 secure round(s) (tables)" in out
    assert "cost       at most rho 0.05 (epsilon" in out and "): no fit, the tables" in out


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"keys": ["a", "b", "c", "d"]},
            "must key its segments segment_01, segment_02, ... in order",
        ),
        ({"model_id": "provider/2024"}, "model_id 'provider/2024'; it must be 1 to 64"),
        ({"k": 1}, "has 1 segment(s); S12 needs 2 to"),
    ],
)
def test_a_model_s12_cannot_key_or_publish_is_refused(
    sector: tuple[list[Node], DevPki], tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    import json

    from protocols.plan import PlanError, load_plan

    nodes, _ = sector
    path, _ = _made_elsewhere(nodes, tmp_path)
    doc = json.loads(path.read_text())
    if "keys" in change:
        for seg, key in zip(doc["segments"], change["keys"], strict=True):
            seg["key"] = key
    if "model_id" in change:
        doc["model_id"] = change["model_id"]
    if "k" in change:
        doc["segments"] = doc["segments"][: change["k"]]
    path.write_text(json.dumps(doc))
    plan_path = tmp_path / "p.toml"
    plan_path.write_text(GIVEN_MODEL_PLAN.format(model="given.json"))
    with pytest.raises(PlanError) as err:
        load_plan(plan_path)
    assert message in str(err.value)


def test_one_model_applied_by_two_sections_is_refused(
    sector: tuple[list[Node], DevPki], tmp_path: Path
) -> None:
    from protocols.plan import PlanError, load_plan

    nodes, _ = sector
    _made_elsewhere(nodes, tmp_path)
    second = GIVEN_MODEL_PLAN.split("[[segmentation]]")[1].replace("s12_given", "s12_again")
    plan_path = tmp_path / "p.toml"
    plan_path.write_text(
        GIVEN_MODEL_PLAN.format(model="given.json")
        + "[[segmentation]]"
        + second.format(model="given.json")
    )
    with pytest.raises(PlanError, match="is applied by another segmentation of this plan"):
        load_plan(plan_path)


def test_a_resumed_run_refuses_a_model_file_changed_since_it_began(
    sector: tuple[list[Node], DevPki], tmp_path: Path
) -> None:
    from protocols.plan import load_plan

    nodes, _ = sector
    model_path, _ = _made_elsewhere(nodes, tmp_path)
    plan_path = tmp_path / "p.toml"
    plan_path.write_text(GIVEN_MODEL_PLAN.format(model="given.json"))
    hs = handlers(sector, tmp_path / "ledgers")
    state = RunStateStore(tmp_path / "state.sqlite")
    calls = {"n": 0}

    class Crash(Exception):
        pass

    def crash_mid_round(nid: str, task: Task, result: TaskResult) -> None:
        calls["n"] += 1
        if calls["n"] == 5 * 2 + 3:  # during the table round's masked inputs
            raise Crash("coordinator killed")

    def run_it(tr: InProcessTransport, run_id: str | None) -> dict[str, Any]:
        settings = RunSettings("test-coordinator", len(nodes), 5, run_id=run_id, state=state)
        return asyncio.run(run_plan(load_plan(plan_path), tr, settings, lambda _: None))

    with pytest.raises(Crash):
        run_it(transport(hs, crash_mid_round), "given-run")
    before = {nid: len(h.ledger.entries()) for nid, h in hs.items()}
    # Someone replaces the model file before the coordinator is restarted.
    model_path.write_text(model_path.read_text().replace('"group 1"', '"group one"'))
    with pytest.raises(RunAborted, match="changed since this run began"):
        run_it(transport(hs), None)
    assert {nid: len(h.ledger.entries()) for nid, h in hs.items()} == before
