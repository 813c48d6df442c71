"""``publiek-coordinator``: what the sector body runs to ask questions and publish answers."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from pathlib import Path

from coordinator.registry import NodeRegistry
from coordinator.release import ReleaseExists, write_release
from coordinator.runner import RunAborted, RunSettings, run_plan
from coordinator.server import CoordinatorServer, ServerTls, TlsConfigError
from protocols.identity import PeerVerifier
from protocols.plan import EXAMPLE, PlanError, load_plan
from protocols.version import PROTOCOL_VERSION, software_version

DESCRIPTION = """\
Coordinate a publiek federation. Nodes at the institutions dial in to this coordinator; it sends
them the analyses of a plan, adds up their differentially private answers, and writes a release
(JSON and CSV, with error bars and full provenance). It never receives personal data.
"""

EPILOG = """\
first steps:
  publiek-coordinator example-plan > plan.toml       write a commented plan to edit
  publiek-coordinator check-plan plan.toml           validate it (every problem at once)
  publiek-coordinator run plan.toml --listen 0.0.0.0:50051 \\
      --ca ca.pem --cert coordinator.pem --key coordinator.key \\
      --expect-nodes 12 --out releases/2024-s1     run it once enough nodes are connected

exit codes: 0 release written, 1 run aborted (too few nodes, nothing releasable),
2 configuration, plan or TLS problem.
"""


class UsageError(ValueError):
    pass


def _tls(args: argparse.Namespace) -> ServerTls | None:
    given = [a for a in ("ca", "cert", "key") if getattr(args, a) is not None]
    if args.insecure and given:
        raise UsageError(
            "--insecure conflicts with --" + ", --".join(given) + ": choose TLS or plaintext"
        )
    if args.insecure:
        return None
    if len(given) != 3:
        raise UsageError(
            "mutual TLS needs --ca, --cert and --key (or --insecure for a local demo only)"
        )
    return ServerTls(ca=args.ca, cert=args.cert, key=args.key)


async def _run(args: argparse.Namespace) -> int:
    plan = load_plan(args.plan)
    tls = _tls(args)
    out: Path = args.out
    if (out / "release.json").exists():
        raise ReleaseExists(f"{out / 'release.json'} exists; releases are immutable: pick --out")
    log = logging.getLogger("publiek.coordinator")
    if tls is None:
        log.warning(
            "TLS IS OFF (--insecure): nodes are not authenticated and traffic is plaintext."
            " Use this only for a local demo."
        )
    started = time.monotonic()

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", flush=True)

    registry = NodeRegistry()
    server = CoordinatorServer(registry, args.coordinator_id, tls=tls)
    port = await server.start(args.listen)
    host = args.listen.rsplit(":", 1)[0]
    progress(
        f"listening on {host}:{port} ({'mTLS' if tls else 'PLAINTEXT'}),"
        f" plan {plan.id!r} with {len(plan.analyses)} analysis(es),"
        f" rho {plan.rho_per_node} per node"
    )
    if args.port_file:
        args.port_file.write_text(f"{port}\n", encoding="utf-8")

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    settings = RunSettings(
        coordinator_id=args.coordinator_id,
        wait_for_nodes=args.expect_nodes or plan.min_nodes,
        wait_timeout_s=args.wait_s,
        # With mTLS the coordinator checks nodes' signed round keys too and drops forgeries
        # early (the nodes check each other regardless).
        verifier=PeerVerifier.from_file(tls.ca) if tls is not None else None,
    )
    job = asyncio.create_task(run_plan(plan, registry, settings, progress))
    stopper = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait({job, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if job not in done:
            job.cancel()
            progress("interrupted; nothing released")
            return 1
        try:
            doc = job.result()
        except RunAborted as err:
            progress(f"run aborted: {err}")
            return 1
        paths = write_release(doc, out)
        progress(f"release {doc['release_id']} written: " + ", ".join(str(p) for p in paths))
        return 0
    finally:
        stopper.cancel()
        await server.stop()


def _cmd_run(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))


def _cmd_check(args: argparse.Namespace) -> int:
    plan = load_plan(args.plan)
    print(
        f"plan {plan.id!r} is valid: {len(plan.analyses)} analysis(es), mode {plan.mode.value},"
        f" rho {plan.rho_per_node} per node"
        f" ({plan.rho_per_node.to_approx_dp(plan.delta)})"
    )
    for a in plan.analyses:
        q = a.query
        dims = " x ".join(f"{d.name}[{len(d.keys)}]" for d in q.dimensions)
        print(f"  {a.id}: {q.statistic} {q.measure} by {dims} = {q.n_cells} cells, rho {q.rho}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="publiek-coordinator",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"publiek-coordinator {software_version()} (protocol v{PROTOCOL_VERSION})",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser(
        "run",
        help="serve nodes, run a plan once enough are connected, write the release",
        description="Start the gRPC server, wait for nodes, run every analysis of the plan and"
        " write the release into --out.",
    )
    run.add_argument("plan", type=Path, help="plan file (TOML)")
    run.add_argument("--listen", default="127.0.0.1:50051", help="host:port (port 0: any free)")
    run.add_argument("--out", type=Path, required=True, help="folder for release.json and CSVs")
    run.add_argument(
        "--expect-nodes",
        type=int,
        default=None,
        metavar="N",
        help="start as soon as N nodes are connected (default: the plan's min_nodes)",
    )
    run.add_argument(
        "--wait-s",
        type=float,
        default=300.0,
        metavar="S",
        help="then start anyway after S seconds with whoever is there (default 300)",
    )
    run.add_argument(
        "--coordinator-id",
        default="publiek-coordinator",
        help="name nodes record in their ledgers as the requester",
    )
    run.add_argument("--ca", type=Path, help="sector CA certificate (PEM) that signs node certs")
    run.add_argument("--cert", type=Path, help="this coordinator's certificate (PEM)")
    run.add_argument("--key", type=Path, help="this coordinator's private key (PEM)")
    run.add_argument(
        "--insecure",
        action="store_true",
        help="plaintext, no node authentication: local demos only",
    )
    run.add_argument("--port-file", type=Path, help="write the port actually bound to this file")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.set_defaults(func=_cmd_run)

    check = sub.add_parser("check-plan", help="validate a plan and show what it asks")
    check.add_argument("plan", type=Path)
    check.add_argument("--log-level", default="warning", choices=["debug", "info", "warning"])
    check.set_defaults(func=_cmd_check)

    ex = sub.add_parser("example-plan", help="print a commented plan")
    ex.add_argument("--log-level", default="warning", choices=["warning"])
    ex.set_defaults(func=lambda _args: print(EXAMPLE, end="") or 0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s publiek-coordinator %(levelname)s %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args))
    except (PlanError, UsageError, TlsConfigError, ReleaseExists, OSError) as err:
        print(f"publiek-coordinator: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
