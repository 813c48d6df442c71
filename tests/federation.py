"""Helpers for tests that run a real federation: a coordinator in the test's event loop on a
loopback port, and nodes as separate processes started through the real console entry point."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from coordinator.registry import NodeRegistry
from coordinator.server import CoordinatorServer, ServerTls, WireTap
from deploy.devcerts import DevPki

if TYPE_CHECKING:
    from synthetic import Sector

NODE_CONFIG = """\
institution_id = "{id}"
institution_type = "{type}"
[data]
tickets = "{tickets}"
country = "{country}"
[coordinator]
address = "127.0.0.1:{port}"
server_name = "localhost"
{tls}
[ledger]
path = "ledger.sqlite"
[budget]
rho_cap = "{cap}"
period = "year"
[policy]
allowed_modes = {modes}
"""


def write_node_config(
    folder: Path,
    institution_id: str,
    institution_type: str,
    tickets: Path,
    port: int,
    pki: DevPki | None,
    cap: str = "1.0",
    country: str = "NL",
    cert_of: str | None = None,
    modes: tuple[str, ...] = ("open",),
) -> Path:
    """A node configuration; ``cert_of`` lets a test give a node someone else's certificate."""
    folder.mkdir(parents=True, exist_ok=True)
    if pki is None:
        tls = "[tls]\ninsecure = true"
    else:
        pair = pki.nodes[cert_of or institution_id]
        tls = f'[tls]\nca = "{pki.ca}"\ncert = "{pair.cert}"\nkey = "{pair.key}"'
    path = folder / "node.toml"
    path.write_text(
        NODE_CONFIG.format(
            id=institution_id,
            type=institution_type,
            tickets=tickets,
            country=country,
            port=port,
            tls=tls,
            cap=cap,
            modes=json.dumps(list(modes)),
        )
    )
    return path


@dataclass
class NodeProcess:
    institution_id: str
    config: Path
    proc: asyncio.subprocess.Process
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


async def start_node(config: Path, institution_id: str, *args: str) -> NodeProcess:
    log = config.parent / "node.log"
    fh = log.open("w")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "node", "run", "--config", str(config), *args,
        stdout=fh, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    fh.close()
    return NodeProcess(institution_id, config, proc, log)


async def stop_node(node: NodeProcess, timeout_s: float = 20.0) -> int:
    if node.proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            node.proc.send_signal(signal.SIGTERM)
    try:
        return await asyncio.wait_for(node.proc.wait(), timeout_s)
    except TimeoutError:
        node.proc.kill()
        return await node.proc.wait()


@contextlib.asynccontextmanager
async def coordinator(
    pki: DevPki | None,
    *,
    protocol_version: int | None = None,
    wire_tap: WireTap | None = None,
    coordinator_id: str = "test-coordinator",
    crl: Path | None = None,
) -> AsyncIterator[tuple[CoordinatorServer, int]]:
    registry = NodeRegistry()
    tls = ServerTls(pki.ca, pki.server.cert, pki.server.key, crl=crl) if pki else None
    kwargs = {} if protocol_version is None else {"protocol_version": protocol_version}
    server = CoordinatorServer(registry, coordinator_id, tls=tls, wire_tap=wire_tap, **kwargs)
    port = await server.start("127.0.0.1:0")
    try:
        yield server, port
    finally:
        await server.stop(0.5)


def node_configs(
    sector: Sector, sector_dir: Path, root: Path, port: int, pki: DevPki | None, cap: str = "1.0"
) -> dict[str, Path]:
    return {
        inst.institution_id: write_node_config(
            root / inst.institution_id,
            inst.institution_id,
            inst.type,
            sector_dir / inst.institution_id / "ticket_line.csv",
            port,
            pki,
            cap=cap,
            country=inst.country,
        )
        for inst in sector.institutions
    }
