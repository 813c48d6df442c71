"""A synthetic sector run as a Flower simulation: publiek's ServerApp and ClientApp on Flower's
Simulation Engine (Ray), or in this process without Ray.

    python -m deploy.flower_sim --institutions 12 --out flower-sim/ [--engine ray]

It wires the apps of ``coordinator.flower`` and ``node.flower`` (nothing of the round logic is
here): a synthetic sector, throw-away certificates, one node.toml per institution exactly as a
real node has it, and a ClientApp whose nodes are the institutions by Flower partition id. The
release lands in ``--out/release/`` and in the run's release store, as with
``publiek-coordinator run``.

Engines:
- ``inprocess`` (default): ``deploy.flower_inprocess``, Flower's Grid and ClientApp calling
  convention without Ray; quick, for a few dozen institutions.
- ``ray``: ``flwr.simulation.run_simulation`` (Flower's Simulation Engine on Ray, the
  ``flower`` extra installs it). Each node's secure-round state travels in its Flower Context
  (``node.round_state``), so any actor can serve any node's next message; each actor loads the
  data of the nodes it serves once.
"""

from __future__ import annotations

import os

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
# Ray warns (FutureWarning) that it will stop overriding CUDA_VISIBLE_DEVICES for CPU-only
# actors; this opts in to that future now (no GPUs are used here).
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.app.user_config import UserConfig
from flwr.clientapp import ClientApp

from coordinator.flower import FlowerRunConfig, server_app
from deploy.demo import DEFAULT_PLAN, write_match_key, write_node_configs
from deploy.devcerts import make_dev_pki
from deploy.flower_inprocess import run_server_app
from node.flower import client_app, handler_for_config
from node.handler import TaskHandler
from protocols.logs import setup_logging
from synthetic import SectorConfig, generate_sector

PARTITION_KEY = "partition-id"


def write_sector(out: Path, institutions: int, seed: int, scale: float) -> list[Path]:
    """The synthetic sector, its certificates and one node.toml per institution, in order."""
    sector = generate_sector(
        SectorConfig(n_institutions=institutions, seed=seed, years=(2023, 2024), scale=scale)
    )
    sector.write(out / "sector")
    pki = make_dev_pki(out / "pki", [i.institution_id for i in sector.institutions])
    match_key = write_match_key(out / "nodes")
    # port 0: unused, Flower carries the messages.
    configs = list(write_node_configs(out, sector, pki, 0, match_key).values())
    return configs


def partition_client_app(configs: list[Path]) -> ClientApp:
    """The ClientApp of the simulation: node ``partition-id`` is the institution configured by
    ``configs[partition-id]`` (its handler built once per process)."""

    def handler_for(context: Context) -> TaskHandler:
        index = context.node_config.get(PARTITION_KEY)
        if not isinstance(index, int) or not 0 <= index < len(configs):
            raise ValueError(f"no institution for Flower partition {index!r}")
        return handler_for_config(configs[index])

    return client_app(handler_for)


def run(
    out: Path,
    *,
    institutions: int,
    seed: int,
    scale: float,
    plan: Path,
    engine: str,
    workers: int = 4,
) -> dict[str, Any]:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    configs = write_sector(out, institutions, seed, scale)
    config = FlowerRunConfig(
        plan=plan,
        out=out / "release",
        state=out / "publiek-state.sqlite",
        store=out / "publiek-releases.sqlite",
        expect_nodes=institutions,
        wait_s=120.0,
        coordinator_id="flower-simulation",
        ca=out / "pki" / "ca.pem",
    )
    server = server_app(config)
    client = partition_client_app(configs)
    if engine == "ray":
        from flwr.simulation import run_simulation

        run_simulation(
            server_app=server,
            client_app=client,
            num_supernodes=institutions,
            backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
        )
    else:
        node_configs: list[UserConfig] = [
            {PARTITION_KEY: i, "num-partitions": institutions} for i in range(institutions)
        ]
        run_server_app(server, client, node_configs, workers=workers)
    release = out / "release" / "release.json"
    if not release.exists():
        raise RuntimeError(f"the simulation ended without a release (see the log); no {release}")
    doc: dict[str, Any] = json.loads(release.read_text(encoding="utf-8"))
    return doc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.flower_sim",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--institutions", type=int, default=12)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--scale", type=float, default=0.1, help="synthetic sector size factor")
    parser.add_argument("--plan", type=Path, default=DEFAULT_PLAN)
    parser.add_argument("--out", type=Path, default=Path("flower-sim"))
    parser.add_argument("--engine", choices=["inprocess", "ray"], default="inprocess")
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning"])
    args = parser.parse_args(argv)
    setup_logging("publiek-flower-sim", args.log_level)
    started = time.monotonic()
    try:
        doc = run(
            args.out,
            institutions=args.institutions,
            seed=args.seed,
            scale=args.scale,
            plan=args.plan,
            engine=args.engine,
        )
    except (RuntimeError, ValueError, OSError) as err:
        print(f"flower simulation: {err}", file=sys.stderr)
        return 1
    print(
        f"release {doc['release_id']} of plan {doc['plan']['id']!r} over Flower ({args.engine}):"
        f" {len(doc['tables'])} table(s), {len(doc['participants'])} institutions,"
        f" {time.monotonic() - started:.1f} s; in {args.out / 'release'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
