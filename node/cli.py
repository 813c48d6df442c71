"""``publiek-node``: what an institution's data or IT person runs next to its ticketing data."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from node.agent import AgentSettings, ExitCode, NodeAgent
from node.config import EXAMPLE, ConfigError, NodeConfig, load_config
from node.data import DataError, load_ticket_lines
from node.handler import NodeIdentity, TaskHandler
from node.ledger import Ledger, LedgerError
from node.tls import TlsConfigError
from protocols.version import PROTOCOL_VERSION, software_version

DESCRIPTION = """\
Run your institution's publiek node. The node keeps your ticketing data on your premises and
answers the sector coordinator only with differentially private aggregates, within a privacy
budget that you set and that no coordinator can raise. Every answer is recorded in a local
ledger you can inspect at any time.
"""

EPILOG = """\
first steps:
  publiek-node example-config > node.toml    write a commented configuration to edit
  publiek-node run --config node.toml        connect to the coordinator and answer tasks
  publiek-node ledger --config node.toml     see what left this node, and what budget remains

exit codes: 0 stopped, 2 configuration or data problem, 3 incompatible with the coordinator
(protocol version, identity), 4 gave up reaching the coordinator (--max-attempts).
"""


def _setup_logging(level: str, institution_id: str = "") -> None:
    tag = f"[{institution_id}]" if institution_id else ""
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format=f"%(asctime)s publiek-node{tag} %(levelname)s %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        stream=sys.stderr,
        force=True,
    )


def _fail(message: str, code: int = 2) -> int:
    print(f"publiek-node: {message}", file=sys.stderr)
    return code


def _cmd_run(args: argparse.Namespace) -> int:
    config: NodeConfig = load_config(args.config)
    _setup_logging(args.log_level, config.institution_id)
    log = logging.getLogger("publiek.node")
    if config.tls is None:
        log.warning(
            "TLS IS OFF (tls.insecure = true): answers travel in plaintext and the coordinator"
            " cannot verify who you are. Use this only for a local demo, never with real data."
        )
    table = load_ticket_lines(config.tickets, default_country=config.country)
    log.info("loaded %d ticket lines from %s", table.rows, config.tickets)
    ledger = Ledger(config.ledger_path, config.cap)
    log.info("budget: rho %s left of %s", ledger.remaining(), config.cap)
    handler = TaskHandler(
        NodeIdentity(config.institution_id, config.institution_type), table, ledger, config.policy
    )
    settings = AgentSettings(
        address=config.address,
        tls=config.tls,
        server_name=config.server_name,
        max_attempts=args.max_attempts,
    )
    agent = NodeAgent(settings, handler)

    async def main() -> ExitCode:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, agent.stop)
        return await agent.run()

    try:
        return int(asyncio.run(main()))
    finally:
        ledger.close()


def _cmd_ledger(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    ledger = Ledger(config.ledger_path, config.cap)
    try:
        entries = ledger.entries()
        print(f"Ledger of {config.institution_id}: {config.ledger_path}")
        print(
            f"Budget cap: {config.cap}; spent this period: rho {ledger.spent()};"
            f" remaining: rho {ledger.remaining()}"
        )
        if not entries:
            print("Nothing has left this node yet.")
        else:
            print(f"{'charged at (UTC)':<19}  {'status':<9} {'rho':>7}  {'for':<24} what")
            for e in entries:
                when = e.charged_at.replace("T", " ")[:19]
                print(
                    f"{when:<19}  {e.status:<9} {e.rho!s:>7}  {e.requester[:24]:<24}"
                    f" {e.description} [task {e.task_id}]"
                )
        refusals = ledger.refusals()
        if refusals:
            print(f"\nRefused requests ({len(refusals)}):")
            for r in refusals:
                when = r.refused_at.replace("T", " ")[:19]
                print(f"{when:<19}  {r.code:<16} {r.requester[:24]:<24} {r.reason}")
    finally:
        ledger.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="publiek-node",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"publiek-node {software_version()} (protocol v{PROTOCOL_VERSION})",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser(
        "run",
        help="connect to the coordinator and answer its tasks until stopped",
        description="Connect to the coordinator (reconnecting with backoff when the connection"
        " drops) and answer tasks within your budget. Stop with Ctrl-C or SIGTERM.",
    )
    run.add_argument("--config", type=Path, required=True, help="node configuration (TOML)")
    run.add_argument(
        "--max-attempts",
        type=int,
        default=None,
        metavar="N",
        help="give up after N failed connection attempts in a row (default: keep trying)",
    )
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.set_defaults(func=_cmd_run)

    led = sub.add_parser(
        "ledger",
        help="list every release that left this node and the budget that remains",
    )
    led.add_argument("--config", type=Path, required=True, help="node configuration (TOML)")
    led.set_defaults(func=_cmd_ledger)

    ex = sub.add_parser("example-config", help="print a commented configuration file")
    ex.set_defaults(func=lambda _args: print(EXAMPLE, end="") or 0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigError, DataError, LedgerError, TlsConfigError) as err:
        return _fail(str(err))
    except KeyboardInterrupt:
        return int(ExitCode.STOPPED)


if __name__ == "__main__":
    raise SystemExit(main())
