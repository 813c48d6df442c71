"""publiek on Flower's Deployment Engine, for real: a SuperLink and three SuperNodes as
processes (``flower-superlink``, ``flower-supernode --node-config publiek-config=...``), the
app bundle in ``deploy/flower`` started with ``flwr run``, a secure plan released.

Flower starts a fresh ClientApp process for every message here, so every stage of the secure
round is answered by a process that loads the node from its node.toml and its round state from
the Flower Context (``node.round_state``). Slow: about a minute (process start-up per message).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("flwr", reason="the Flower runtime needs the flower extra")

from deploy.flower_sim import write_sector
from node.ledger import BudgetCap, Ledger, Period
from privacy.budget import Rho
from tests.ports import unused_port

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PLAN = """
[plan]
id = "flower-deployment"
mode = "secure"
min_nodes = 3
task_timeout_s = 120

[[analysis]]
id = "by-discipline"
statistic = "S1"
measure = "tickets"
dimensions = ["discipline"]
years = [2024, 2024]
max_cells = 8
max_per_cell = 32
rho = "0.1"
"""


def _listening(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on port {port}")


@pytest.mark.slow
def test_a_secure_plan_on_flowers_deployment_engine(tmp_path: Path) -> None:
    configs = write_sector(tmp_path / "sim", 3, 5, 0.03)
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN)
    home = tmp_path / "flwr-home"  # Flower's apps, run environments and CLI config
    home.mkdir()
    link = unused_port()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "local"\n\n[superlink.local]\n'
        f'address = "127.0.0.1:{link}"\ninsecure = true\n'
    )
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "FLWR_HOME": str(home),
        "FLWR_TELEMETRY_ENABLED": "0",
    }
    started: list[subprocess.Popen[bytes]] = []

    def start(argv: list[str], log: str) -> None:
        with (tmp_path / log).open("wb") as fh:
            started.append(
                subprocess.Popen(
                    argv, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True
                )
            )

    out = tmp_path / "out"
    try:
        start(
            [str(BIN / "flower-superlink"), "--insecure", "--host", "127.0.0.1",
             "--port", str(link)],
            "superlink.log",
        )  # fmt: skip
        _listening(link, 60)
        for i, config in enumerate(configs):
            start(
                [str(BIN / "flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{link}",
                 "--port", str(unused_port()), "--node-config", f'publiek-config="{config}"'],
                f"supernode-{i}.log",
            )  # fmt: skip
        run_config = " ".join(
            [
                f'plan="{plan}"',
                f'out="{out}"',
                f'state="{tmp_path / "state.sqlite"}"',
                f'store="{tmp_path / "releases.sqlite"}"',
                f'ca="{tmp_path / "sim" / "pki" / "ca.pem"}"',
                'crl=""',
                "expect-nodes=3",
                "wait-s=120.0",
            ]
        )
        launched = subprocess.run(
            [str(BIN / "flwr"), "run", str(REPO / "deploy" / "flower"), "local",
             "--run-config", run_config],
            capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path,
        )  # fmt: skip
        assert "Successfully started run" in launched.stdout, launched.stdout + launched.stderr
        run_id = launched.stdout.split("Successfully started run")[1].split()[0]
        deadline = time.monotonic() + 300
        status = ""
        while time.monotonic() < deadline:
            listed = subprocess.run(
                [str(BIN / "flwr"), "ls", "--run-id", run_id, "--format", "json"],
                capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path,
            )  # fmt: skip
            try:
                status = json.loads(listed.stdout)["runs"][0]["status"]
            except (ValueError, KeyError, IndexError):
                status = f"unreadable: {listed.stdout} {listed.stderr}"
            if status.startswith("finished"):
                break
            time.sleep(3)
        assert status == "finished:completed", status
    finally:
        for proc in started:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in started:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)

    release = json.loads((out / "release.json").read_text())
    assert release["failed"] == []
    assert release["tables"][0]["contributors"] == ["inst-01", "inst-02", "inst-03"]
    assert release["participants"][0]["software_version"]  # from the node's Hello over Flower
    for config in configs:  # each node charged exactly once, in its own ledger
        ledger = Ledger(config.parent / "ledger.sqlite", BudgetCap(Rho.parse("1"), Period.YEAR))
        charged = [e.analysis_id for e in ledger.entries() if e.run_id == release["run_id"]]
        ledger.close()
        assert charged == ["by-discipline"], config
