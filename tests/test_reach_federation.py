"""Sector reach over real gRPC on loopback: the coordinator sees sums of sketches, nothing else.

Node agents with identities from a development CA read their exports with the node's own loader
(e-mail addresses become match keys with a key file the nodes share) and talk gRPC through a
recording proxy, so every byte they send can be searched: no match key, no node's sketch and
no e-mail address crosses the wire; each ledger is charged once per round; the release's S7,
S9 and S10 tables are there, and the sector's reach agrees with the estimator run on the
noise-free sum of the sketches within its stated error.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from coordinator.reach_estimate import key_estimates
from coordinator.runner import RunAborted, RunSettings, run_plan
from deploy.devcerts import make_dev_pki
from node.agent import AgentSettings, NodeAgent
from node.data import load
from node.handler import NodeIdentity, TaskHandler
from node.ingest.matchkey import FINGERPRINT_LABEL, MatchKeySecret
from node.ingest.pipeline import IngestSettings
from node.ingest.sources import file_source
from node.ledger import BudgetCap, Ledger, Period
from node.policy import Policy
from node.reach import ReachData, reach_contribution
from privacy.budget import Rho
from privacy.secagg import ring
from protocols.identity import PeerVerifier, Signer
from protocols.messages import ReleaseMode
from protocols.plan import parse_plan
from protocols.reach_plan import round_salt
from protocols.version import CAP_MATCH_KEY
from synthetic import Sector, SectorConfig, generate_sector
from tests.federation import coordinator
from tests.wire import recording_proxy

PLAN = """
[plan]
id = "reach-test"
min_nodes = 4
task_timeout_s = 60

[[reach]]
id = "reach"
years = [2024, 2024]
rho = "0.5"
by = ["sector", "discipline"]
buckets = { sector = 256 }
"""


@pytest.fixture(scope="module")
def sector(tmp_path_factory: pytest.TempPathFactory) -> tuple[Sector, Path]:
    out = tmp_path_factory.mktemp("sector")
    sec = generate_sector(SectorConfig(n_institutions=5, seed=23, years=(2024, 2024), scale=0.04))
    sec.write(out)
    return sec, out


def test_reach_over_grpc_reveals_no_match_key_and_no_sketch(
    sector: tuple[Sector, Path], tmp_path: Path
) -> None:
    sec, sector_dir = sector
    ids = [i.institution_id for i in sec.institutions]
    pki = make_dev_pki(tmp_path / "pki", ids)
    plan = parse_plan(PLAN)
    [reach] = plan.reaches
    secret = MatchKeySecret(key=secrets.token_bytes(32), source=tmp_path / "match.key")
    handlers: dict[str, TaskHandler] = {}
    keys: list[bytes] = []
    for inst in sec.institutions:
        nid = inst.institution_id
        loaded = load(
            file_source(sector_dir / nid / "ticket_line.csv"), IngestSettings(match_key=secret)
        )
        assert loaded.match_keys is not None
        keys += [bytes(k) for k in loaded.match_keys.frame["match_key"].to_list()]
        ledger = Ledger(tmp_path / f"{nid}.sqlite", BudgetCap(Rho.parse("1"), Period.YEAR))
        handlers[nid] = TaskHandler(
            NodeIdentity(nid, inst.type),
            loaded.table,
            ledger,
            Policy(allowed_modes=frozenset({ReleaseMode.SECURE})),
            signer=Signer.from_files(nid, pki.nodes[nid].cert, pki.nodes[nid].key),
            verifier=PeerVerifier.from_file(pki.ca),
            reach=ReachData.build(loaded.table, loaded.match_keys, inst.type),
        )

    async def scenario() -> tuple[dict[str, Any], list[tuple[bytearray, bytearray]]]:
        async with coordinator(None) as (server, port), recording_proxy(port) as (proxy, cap):
            agents = [
                NodeAgent(AgentSettings(f"127.0.0.1:{proxy}", None), h) for h in handlers.values()
            ]
            running = [asyncio.create_task(a.run()) for a in agents]
            try:
                doc = await asyncio.wait_for(
                    run_plan(
                        plan,
                        server.registry,
                        RunSettings("c", len(ids), 30, verifier=PeerVerifier.from_file(pki.ca)),
                        lambda _: None,
                    ),
                    180,
                )
            finally:
                for a in agents:
                    a.stop()
                await asyncio.gather(*running)
            return doc, cap.connections

    doc, connections = asyncio.run(scenario())
    tables = {t["analysis_id"]: t for t in doc["tables"]}
    assert set(tables) == {
        "reach_people_by_sector",
        "reach_institutions_per_person",
        "reach_people_by_discipline",
        "reach_overlap_discipline",
    }
    assert [t["statistic"] for t in doc["tables"]] == ["S7", "S10", "S7", "S9"]
    # Each table says in words what made it: the sector sketch's e-mail codes for the sector's
    # reach, the pairs round and a model for the discipline tables (never the other's text).
    from coordinator import reach_run

    assert tables["reach_people_by_sector"]["reach"]["plain"] == reach_run.PLAIN_SKETCH
    assert tables["reach_institutions_per_person"]["reach"]["plain"] == reach_run.PLAIN_S10
    assert (
        tables["reach_people_by_discipline"]["reach"]["plain"]
        == reach_run.PLAIN_PEOPLE_BY_DISCIPLINE
    )
    assert (
        tables["reach_overlap_discipline"]["reach"]["plain"] == reach_run.PLAIN_OVERLAP_DISCIPLINE
    )
    for h in handlers.values():
        entries = h.ledger.entries()
        assert sorted(e.analysis_id for e in entries) == ["reach_discipline", "reach_sector"]
        assert all((e.mode, e.status) == ("secure", "answered") for e in entries)

    # The sector's reach agrees with the estimator on the noise-free sum, within its own error:
    # |difference| <= 4.5 stated sd. The estimate is not normal (skewed low, more so at small
    # budgets: at rho 0.05 two of 6,000 simulated draws fell below -4.5 sd); at this plan's rho
    # 0.5, 3,200 draws over 8 keys gave z with sd 0.60, skew -0.3 and a minimum of -2.8: the
    # bound is over 7 of its real sds away, a false alarm far below 1e-6.
    query = reach.query("sector", round_salt(doc["run_id"], "reach", "sector"))
    sketches = {nid: reach_contribution(query, h.reach) for nid, h in handlers.items()}
    exact = key_estimates(query, np.sum(np.stack(list(sketches.values())), axis=0), 0.0)[0].reach
    [cell] = tables["reach_people_by_sector"]["cells"]
    sd = (cell["ci95_high"] - cell["ci95_low"]) / (2 * 1.96)
    assert abs(cell["noisy_sum"] - exact.reach) <= 4.5 * sd
    assert exact.reach > 0

    # Nothing the nodes hold crossed the wire: no match key (raw or hex), no node's sketch
    # (its ring encoding), no e-mail address.
    raw = b"".join(bytes(up) + bytes(down) for up, down in connections)
    assert len(raw) > 10_000
    assert len(keys) > 100
    for key in keys:
        assert key not in raw
        assert key.hex().encode() not in raw
    for vector in sketches.values():
        assert np.count_nonzero(vector) > 10
        assert ring.to_bytes(ring.to_ring(vector))[:80] not in raw
    for inst in sec.institutions:
        frame = pl.read_csv(
            sector_dir / inst.institution_id / "ticket_line.csv", infer_schema=False
        )
        for value in frame["email"].drop_nulls().unique().to_list()[:300]:
            assert value.encode() not in raw
            assert value.strip().lower().encode() not in raw


def _handlers(
    sec: Sector, sector_dir: Path, tmp_path: Path, secrets_of: dict[str, MatchKeySecret]
) -> tuple[dict[str, TaskHandler], Path]:
    ids = [i.institution_id for i in sec.institutions]
    pki = make_dev_pki(tmp_path / "pki", ids)
    handlers = {}
    for inst in sec.institutions:
        nid = inst.institution_id
        secret = secrets_of[nid]
        loaded = load(
            file_source(sector_dir / nid / "ticket_line.csv"), IngestSettings(match_key=secret)
        )
        handlers[nid] = TaskHandler(
            NodeIdentity(nid, inst.type),
            loaded.table,
            Ledger(tmp_path / f"{nid}.sqlite", BudgetCap(Rho.parse("1"), Period.YEAR)),
            Policy(allowed_modes=frozenset({ReleaseMode.SECURE})),
            signer=Signer.from_files(nid, pki.nodes[nid].cert, pki.nodes[nid].key),
            verifier=PeerVerifier.from_file(pki.ca),
            reach=ReachData.build(loaded.table, loaded.match_keys, inst.type, secret.fingerprint),
        )
    return handlers, pki.ca


def test_the_fingerprint_names_the_secret_and_reveals_no_match_key(tmp_path: Path) -> None:
    a = MatchKeySecret(key=bytes(range(32)), source=tmp_path / "a")
    again = MatchKeySecret(key=bytes(range(32)), source=tmp_path / "elsewhere")
    b = MatchKeySecret(key=bytes(range(1, 33)), source=tmp_path / "b")
    assert a.fingerprint == again.fingerprint
    assert a.fingerprint != b.fingerprint
    assert len(a.fingerprint) == 16
    assert int(a.fingerprint, 16) >= 0
    # It is the keyed hash at a label no e-mail address can be (a match key of that label
    # would be the full HMAC; the fingerprint is a 64-bit prefix of it and nothing else).
    assert b"@" not in FINGERPRINT_LABEL
    assert a.key.hex()[:16] != a.fingerprint


def test_nodes_with_different_match_keys_are_refused_by_name_and_not_charged(
    sector: tuple[Sector, Path], tmp_path: Path
) -> None:
    sec, sector_dir = sector
    ids = [i.institution_id for i in sec.institutions]
    shared = MatchKeySecret(key=secrets.token_bytes(32), source=tmp_path / "match.key")
    stray = MatchKeySecret(key=secrets.token_bytes(32), source=tmp_path / "other.key")
    odd = ids[-1]
    handlers, pki_ca = _handlers(
        sec, sector_dir, tmp_path, {n: stray if n == odd else shared for n in ids}
    )
    assert f"{CAP_MATCH_KEY}{stray.fingerprint}" in handlers[odd].capabilities
    plan = parse_plan(PLAN)

    async def scenario() -> dict[str, Any]:
        async with coordinator(None) as (server, port):
            agents = [
                NodeAgent(AgentSettings(f"127.0.0.1:{port}", None), h) for h in handlers.values()
            ]
            running = [asyncio.create_task(a.run()) for a in agents]
            try:
                return await asyncio.wait_for(
                    run_plan(
                        plan,
                        server.registry,
                        RunSettings("c", len(ids), 30, verifier=PeerVerifier.from_file(pki_ca)),
                        lambda _: None,
                    ),
                    120,
                )
            finally:
                for a in agents:
                    a.stop()
                await asyncio.gather(*running)

    # The plan has nothing else, so the run ends with nothing released, saying why.
    with pytest.raises(RunAborted) as caught:
        asyncio.run(scenario())
    reason = str(caught.value)
    assert "different match-key secrets" in reason
    assert f"fingerprint {stray.fingerprint}: {odd}" in reason
    assert f"fingerprint {shared.fingerprint}: {', '.join(sorted(ids[:-1]))}" in reason
    assert "charged for that round, as their ledgers show: nobody" in reason
    for h in handlers.values():
        assert h.ledger.entries() == []
