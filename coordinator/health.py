"""``publiek-coordinator health``: is a running coordinator serving? (``HELP`` says more.)"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protocols.transport import SERVICE_NAME

# The command's --help: plain text, as a terminal shows it.
HELP = """\
Ask a running coordinator whether it serves, over mutual TLS. For container health checks,
systemd watchdogs and monitoring.

It calls the standard gRPC health check (grpc.health.v1.Health/Check) for the Federation service
with a deadline: exit 0 when it is SERVING, 1 when it answers anything else or cannot be reached.
The coordinator requires a client certificate on every connection, health checks included: its
own certificate (ca init and ca server-cert issue it for client auth too) or any node's will do.
"""


class HealthUsageError(ValueError):
    pass


def _credentials(args: argparse.Namespace) -> grpc.ChannelCredentials | None:
    given = [a for a in ("ca", "cert", "key") if getattr(args, a) is not None]
    if args.insecure and given:
        raise HealthUsageError(
            "--insecure conflicts with --" + ", --".join(given) + ": choose TLS or plaintext"
        )
    if args.insecure:
        return None
    if len(given) != 3:
        raise HealthUsageError(
            "the coordinator requires mutual TLS: give --ca, --cert and --key"
            " (or --insecure for a coordinator started with --insecure)"
        )
    paths: list[Path] = [args.ca, args.cert, args.key]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise HealthUsageError(f"TLS file(s) not found: {', '.join(missing)}")
    return grpc.ssl_channel_credentials(
        root_certificates=args.ca.read_bytes(),
        private_key=args.key.read_bytes(),
        certificate_chain=args.cert.read_bytes(),
    )


async def check(
    address: str,
    credentials: grpc.ChannelCredentials | None,
    *,
    server_name: str | None = None,
    timeout_s: float = 5.0,
) -> tuple[bool, str]:
    """(serving, what was seen) for the coordinator at ``address``."""
    options: list[tuple[str, Any]] = []
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    channel = (
        grpc.aio.insecure_channel(address, options=options)
        if credentials is None
        else grpc.aio.secure_channel(address, credentials, options=options)
    )
    async with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(
                health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=timeout_s
            )
        except grpc.aio.AioRpcError as err:
            detail = (err.details() or "").strip()
            return False, f"{err.code().name}{': ' + detail if detail else ''}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return reply.status == health_pb2.HealthCheckResponse.SERVING, status


def _cmd_health(args: argparse.Namespace) -> int:
    credentials = _credentials(args)
    serving, seen = asyncio.run(
        check(args.address, credentials, server_name=args.server_name, timeout_s=args.timeout)
    )
    print(f"coordinator at {args.address}: {seen}", file=sys.stdout if serving else sys.stderr)
    return 0 if serving else 1


def add_health_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    h = sub.add_parser(
        "health",
        help="is a running coordinator serving? (exit 0 yes, 1 no; for health checks)",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    h.add_argument("--address", default="127.0.0.1:50051", help="host:port of the coordinator")
    h.add_argument("--ca", type=Path, help="sector CA certificate (PEM)")
    h.add_argument("--cert", type=Path, help="a client certificate (the coordinator's own)")
    h.add_argument("--key", type=Path, help="its private key")
    h.add_argument(
        "--server-name", help="the name in the coordinator's certificate, if not the host's"
    )
    h.add_argument("--insecure", action="store_true", help="plaintext (a --insecure coordinator)")
    h.add_argument("--timeout", type=float, default=5.0, metavar="S", help="deadline (default 5)")
    h.add_argument("--log-level", default="warning", choices=["debug", "info", "warning"])
    h.set_defaults(func=_cmd_health)
