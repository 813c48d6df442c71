"""Who may connect, over real mutual-TLS gRPC on loopback: revoked certificates (at Hello, and
mid-session when the list changes), certificates of another CA, the coordinator's own
certificate posing as a node; the health probe; the node's status file and health command."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

import coordinator.server as server_module
from coordinator.cli import main as coordinator_main
from coordinator.health import check
from deploy.devcerts import DevPki, make_dev_pki
from node.agent import AgentSettings, ExitCode, NodeAgent
from node.data import load_ticket_lines
from node.handler import NodeIdentity, TaskHandler
from node.ledger import BudgetCap, Ledger, Period
from node.policy import Policy
from node.status import health, read_status
from node.tls import TlsFiles, diagnose_handshake
from privacy.budget import Rho
from protocols.certificates import CrlFile, serial_text
from tests.conftest import ticket_row, write_tickets
from tests.federation import coordinator


@pytest.fixture
def tickets(tmp_path: Path) -> Path:
    return write_tickets(tmp_path / "t.csv", [ticket_row(ticket_id=f"T{i}") for i in range(10)])


def _handler(tmp_path: Path, tickets: Path, institution: str) -> TaskHandler:
    ledger = Ledger(tmp_path / f"{institution}.sqlite", BudgetCap(Rho.parse("1"), Period.YEAR))
    return TaskHandler(
        NodeIdentity(institution, "theatre"), load_ticket_lines(tickets), ledger, Policy()
    )


def _agent(
    handler: TaskHandler,
    port: int,
    tls: TlsFiles,
    *,
    max_attempts: int = 1,
    status_file: Path | None = None,
) -> NodeAgent:
    settings = AgentSettings(
        f"127.0.0.1:{port}",
        tls,
        server_name="localhost",
        max_attempts=max_attempts,
        backoff_initial_s=0.05,
        backoff_max_s=0.1,
        status_file=status_file,
    )
    return NodeAgent(settings, handler)


def _tls(pki: DevPki, who: str, ca: Path | None = None) -> TlsFiles:
    return TlsFiles(ca or pki.ca, pki.nodes[who].cert, pki.nodes[who].key)


def _serial(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


def test_a_revoked_node_is_refused_at_hello_with_a_clear_line(
    tmp_path: Path, tickets: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pki = make_dev_pki(tmp_path / "pki", ["inst-01", "inst-02"])
    serial = _serial(pki.nodes["inst-02"].cert)
    pki.authority().revoke([serial], "key_compromise")

    async def scenario() -> tuple[ExitCode, ExitCode, list[str]]:
        async with coordinator(pki, crl=pki.crl) as (server, port):
            good = _agent(_handler(tmp_path, tickets, "inst-01"), port, _tls(pki, "inst-01"))
            running = asyncio.create_task(good.run())
            revoked = _agent(_handler(tmp_path, tickets, "inst-02"), port, _tls(pki, "inst-02"))
            refused = await asyncio.wait_for(revoked.run(), 30)
            await asyncio.wait_for(server.registry.wait_for_nodes(1, 10), 15)
            connected = [n.institution_id for n in server.registry.nodes()]
            good.stop()
            return refused, await asyncio.wait_for(running, 30), connected

    with caplog.at_level(logging.INFO):
        refused, stopped, connected = asyncio.run(scenario())
    assert refused is ExitCode.INCOMPATIBLE  # not retried: it needs a person
    assert stopped is ExitCode.STOPPED
    assert connected == ["inst-01"]
    expected = f"rejected inst-02: IDENTITY_MISMATCH: the certificate serial {serial_text(serial)}"
    assert expected in caplog.text  # the coordinator's line
    assert "reason: key_compromise" in caplog.text
    # ...and the node's: it says that the coordinator refused it, and why.
    assert "the coordinator refused this node: IDENTITY_MISMATCH" in caplog.text
    assert "enrol again" in caplog.text


def test_a_node_revoked_mid_session_is_disconnected_and_not_let_back_in(
    tmp_path: Path, tickets: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_module, "REVOCATION_SWEEP_S", 0.1)
    pki = make_dev_pki(tmp_path / "pki", ["inst-01"])

    async def scenario() -> ExitCode:
        async with coordinator(pki, crl=pki.crl) as (server, port):
            agent = _agent(
                _handler(tmp_path, tickets, "inst-01"), port, _tls(pki, "inst-01"), max_attempts=5
            )
            running = asyncio.create_task(agent.run())
            assert len(await server.registry.wait_for_nodes(1, 15)) == 1
            pki.authority().revoke([_serial(pki.nodes["inst-01"].cert)], "affiliation_changed")
            code = await asyncio.wait_for(running, 30)
            assert server.registry.nodes() == []
            return code

    with caplog.at_level(logging.INFO):
        assert asyncio.run(scenario()) is ExitCode.INCOMPATIBLE
    assert "revocation list" in caplog.text and "reloaded" in caplog.text
    assert "disconnecting inst-01: its certificate serial" in caplog.text
    assert "reason: affiliation_changed" in caplog.text
    assert "rejected inst-01: IDENTITY_MISMATCH" in caplog.text  # when it came back


def test_the_coordinators_certificate_cannot_pose_as_a_node(
    tmp_path: Path, tickets: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pki = make_dev_pki(tmp_path / "pki", [])
    tls = TlsFiles(pki.ca, pki.server.cert, pki.server.key)  # it may authenticate as a client

    async def scenario() -> ExitCode:
        async with coordinator(pki) as (server, port):
            code = await asyncio.wait_for(
                _agent(_handler(tmp_path, tickets, "coordinator"), port, tls).run(), 30
            )
            assert server.registry.nodes() == []
            return code

    with caplog.at_level(logging.WARNING):
        assert asyncio.run(scenario()) is ExitCode.INCOMPATIBLE
    assert "does not carry the node name urn:publiek:institution:coordinator" in caplog.text


def test_a_certificate_of_another_ca_is_refused_and_the_node_says_why(
    tmp_path: Path, tickets: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pki = make_dev_pki(tmp_path / "pki", ["inst-01"])
    other = make_dev_pki(tmp_path / "other", ["inst-01"], ca_name="another sector CA")
    # It trusts the sector CA (so it can check the coordinator) but holds another CA's
    # certificate: the coordinator's TLS refuses the handshake.
    foreign = TlsFiles(pki.ca, other.nodes["inst-01"].cert, other.nodes["inst-01"].key)

    async def scenario() -> ExitCode:
        async with coordinator(pki) as (server, port):
            code = await asyncio.wait_for(
                _agent(_handler(tmp_path, tickets, "inst-01"), port, foreign).run(), 30
            )
            assert server.registry.nodes() == []
            # The same node with the sector's certificate is let in (the check is real).
            ok = await asyncio.to_thread(
                diagnose_handshake, f"127.0.0.1:{port}", _tls(pki, "inst-01"), "localhost"
            )
            assert ok is None
            # A node that trusts the wrong CA cannot check the coordinator, and says so.
            wrong_ca = await asyncio.to_thread(
                diagnose_handshake,
                f"127.0.0.1:{port}",
                _tls(pki, "inst-01", ca=other.ca),
                "localhost",
            )
            assert wrong_ca is not None and "does not verify against" in wrong_ca
            return code

    with caplog.at_level(logging.INFO, logger="publiek.node"):
        assert asyncio.run(scenario()) is ExitCode.GAVE_UP
    assert "closed the connection right after the TLS handshake" in caplog.text
    assert "not issued by the sector CA it trusts" in caplog.text


def test_health_probe_over_mutual_tls(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pki = make_dev_pki(tmp_path / "pki", ["inst-01"])

    async def scenario() -> tuple[int, int, int, bool, str]:
        async with coordinator(pki) as (_, port):
            common = ["health", "--address", f"127.0.0.1:{port}", "--server-name", "localhost"]
            own = [
                "--ca",
                str(pki.ca),
                "--cert",
                str(pki.server.cert),
                "--key",
                str(pki.server.key),
            ]
            ok = await asyncio.to_thread(coordinator_main, [*common, *own])
            plaintext = await asyncio.to_thread(coordinator_main, [*common, "--insecure"])
            both = await asyncio.to_thread(
                coordinator_main, [*common, "--insecure", "--ca", str(pki.ca)]
            )
        # 5 s: a stall of a loaded machine must not turn "nobody listens" into a timeout.
        serving, seen = await check(f"127.0.0.1:{port}", None, timeout_s=5.0)
        return ok, plaintext, both, serving, seen

    ok, plaintext, both, serving_after_stop, seen = asyncio.run(scenario())
    out = capsys.readouterr()
    assert ok == 0 and "SERVING" in out.out
    assert plaintext == 1  # mTLS on every connection: a plaintext probe gets nowhere
    assert both == 2 and "--insecure conflicts with --ca" in out.err
    assert not serving_after_stop and "UNAVAILABLE" in seen


def test_the_node_keeps_a_status_file_for_health_checks(tmp_path: Path, tickets: Path) -> None:
    pki = make_dev_pki(tmp_path / "pki", ["inst-01"])
    status = tmp_path / "state" / "node-status.json"

    async def scenario() -> tuple[bool, str, bool, str]:
        async with coordinator(pki) as (server, port):
            agent = _agent(
                _handler(tmp_path, tickets, "inst-01"),
                port,
                _tls(pki, "inst-01"),
                status_file=status,
            )
            running = asyncio.create_task(agent.run())
            await server.registry.wait_for_nodes(1, 15)
            # The coordinator registers the node as it sends the Welcome; the node writes its
            # status once it has read it.
            for _ in range(100):
                if status.exists() and read_status(status).state == "connected":
                    break
                await asyncio.sleep(0.05)
            up = health(read_status(status))
            agent.stop()
            await asyncio.wait_for(running, 30)
            down = health(read_status(status))
            return (*up, *down)

    up, up_line, down, down_line = asyncio.run(scenario())
    assert up and "inst-01: connected" in up_line
    assert not down and "stopped" in down_line
    doc = json.loads(status.read_text())
    assert doc["sessions_opened"] == 1 and doc["institution_id"] == "inst-01"
    # A status nobody updates any more (the process died) is unhealthy however it ended.
    stale = read_status(status)
    healthy, line = health(stale, now=stale.updated_at + 600)
    assert not healthy and "is the node running?" in line


def test_json_logs_from_the_coordinator(tmp_path: Path) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text(subprocess.run(
        [sys.executable, "-m", "coordinator", "example-plan"], capture_output=True, text=True,
        check=True,
    ).stdout)  # fmt: skip
    result = subprocess.run(
        [
            sys.executable, "-m", "coordinator", "run", str(plan), "--insecure",
            "--listen", "127.0.0.1:0", "--wait-s", "0.5", "--out", str(tmp_path / "out"),
            "--state", str(tmp_path / "s.sqlite"), "--store", str(tmp_path / "r.sqlite"),
            "--log-format", "json",
        ],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1  # no nodes came: aborted
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    assert lines, result.stderr
    assert all(line["component"] == "publiek-coordinator" for line in lines)
    assert all({"ts", "level", "logger", "message"} <= set(line) for line in lines)
    assert any("TLS IS OFF" in line["message"] and line["level"] == "warning" for line in lines)
    progress = [line for line in lines if line.get("event") == "progress"]
    assert any("run aborted" in line["message"] for line in progress)
    assert result.stdout == ""  # progress went into the log stream


def test_coordinator_refuses_a_crl_that_is_not_the_sector_cas(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pki = make_dev_pki(tmp_path / "pki", [])
    other = make_dev_pki(tmp_path / "other", [], ca_name="another CA")
    plan = tmp_path / "plan.toml"
    assert coordinator_main(["example-plan"]) == 0
    plan.write_text(capsys.readouterr().out)
    argv = [
        "run", str(plan), "--out", str(tmp_path / "o"), "--listen", "127.0.0.1:0",
        "--ca", str(pki.ca), "--cert", str(pki.server.cert), "--key", str(pki.server.key),
        "--state", str(tmp_path / "s.sqlite"), "--store", str(tmp_path / "r.sqlite"),
    ]  # fmt: skip
    assert coordinator_main([*argv, "--crl", str(other.crl)]) == 2
    assert "not by the sector CA" in capsys.readouterr().err
    assert coordinator_main([*argv, "--crl", str(tmp_path / "nope.pem")]) == 2
    assert "nope.pem" in capsys.readouterr().err
    insecure = ["run", str(plan), "--out", str(tmp_path / "o"), "--insecure"]
    assert coordinator_main([*insecure, "--crl", str(pki.crl)]) == 2
    assert "--insecure conflicts with --crl" in capsys.readouterr().err


def test_crl_file_reload_picks_up_a_new_revocation(tmp_path: Path) -> None:
    pki = make_dev_pki(tmp_path / "pki", ["inst-01"])
    crl = CrlFile.open(pki.crl, pki.ca.read_bytes())
    serial = _serial(pki.nodes["inst-01"].cert)
    assert crl.revocation(serial) is None
    pki.authority().revoke([serial])
    assert crl.revocation(serial) is not None
