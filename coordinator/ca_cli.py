"""``publiek-coordinator ca ...``: the sector CA's commands (see ``coordinator.ca``)."""

from __future__ import annotations

import argparse
import datetime as dt
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from coordinator.ca import (
    CA_DAYS,
    CRL_DAYS,
    MIN_SERIAL_PREFIX,
    NODE_DAYS,
    REASONS,
    SERVER_DAYS,
    CaError,
    CertificateAuthority,
)
from protocols.certificates import common_name, serial_text

CA_HELP = """\
The sector CA: it certifies the coordinator and every node, and revokes certificates.

  publiek-coordinator ca init ca/ --host coordinator.example.org
        make the CA (ca/ca.pem, ca/ca.key, ca/crl.pem) and the coordinator's certificate
  publiek-coordinator ca sign ca/ inst-07.csr
        certify an institution's request (made there with: publiek-node init --institution-id)
  publiek-coordinator ca revoke ca/ --institution inst-07 --reason key_compromise
        revoke; give the coordinator --crl ca/crl.pem and publish ca/crl.pem to the nodes
  publiek-coordinator ca revoke ca/ --serial 3f2a9c --reason superseded
        revoke one certificate: its serial as ca list shows it, or its first 6+ digits
  publiek-coordinator ca crl ca/          sign the revocation list again before it lapses
  publiek-coordinator ca server-cert ca/ --host ... --cert new.pem --key new.key
        a new coordinator certificate (rotation)
  publiek-coordinator ca list ca/         every certificate issued, valid, expired or revoked

Keep the CA folder offline (a separate machine or an encrypted volume): whoever has ca/ca.key
can make nodes. --passphrase-env VAR encrypts the key with the passphrase in $VAR.
"""


def _passphrase(args: argparse.Namespace) -> bytes | None:
    name = getattr(args, "passphrase_env", None)
    if not name:
        return None
    value = os.environ.get(name)
    if not value:
        raise CaError(f"--passphrase-env {name}: the environment variable {name} is not set")
    return value.encode()


def _open(args: argparse.Namespace) -> CertificateAuthority:
    return CertificateAuthority.open(args.folder, _passphrase(args))


def _cmd_init(args: argparse.Namespace) -> int:
    ca = CertificateAuthority.init(
        args.folder,
        name=args.name,
        organisation=args.organisation,
        days=args.days,
        passphrase=_passphrase(args),
    )
    print(f"sector CA made in {args.folder}:")
    print(f"  {ca.cert_path}  the CA certificate: give it to every node and the coordinator")
    print(f"  {args.folder / 'ca.key'}  its private key: keep it offline, back it up")
    print(f"  {ca.crl_path}  the revocation list (empty), valid {CRL_DAYS} days")
    if args.host:
        cert_path, key_path = args.folder / "coordinator.pem", args.folder / "coordinator.key"
        cert = ca.write_server(args.host, cert_path, key_path, days=args.server_days)
        print(
            f"  {cert_path} + {key_path}  the coordinator's certificate for"
            f" {', '.join(args.host)} (serial {serial_text(cert.serial_number)})"
        )
    else:
        print("no --host given: make the coordinator's certificate with ca server-cert")
    return 0


def _cmd_sign(args: argparse.Namespace) -> int:
    ca = _open(args)
    request: Path = args.request
    out: Path = args.out or request.with_suffix(".pem")
    if out.exists():
        raise CaError(f"{out} exists already; it is never overwritten (choose --out)")
    cert = ca.sign_request(request.read_bytes(), days=args.days)
    with out.open("xb") as fh:
        fh.write(cert.public_bytes(serialization.Encoding.PEM))
    print(
        f"certified {common_name(cert.subject)!r}: serial {serial_text(cert.serial_number)},"
        f" valid until {cert.not_valid_after_utc:%Y-%m-%d}"
    )
    print(f"wrote {out}: send it, with {ca.cert_path}, to the institution")
    return 0


def _cmd_revoke(args: argparse.Namespace) -> int:
    ca = _open(args)
    if args.institution:
        serials = ca.serials_of(args.institution)
        if not serials:
            raise CaError(f"{args.institution} has no certificate that is not revoked already")
    else:
        serials = ca.find_serials(args.serial)
    new = ca.revoke(serials, args.reason)
    for serial in serials:
        state = "revoked" if serial in new else "was revoked already"
        print(f"  {serial_text(serial)}: {state}")
    print(
        f"wrote {ca.crl_path}: the coordinator (--crl) reads it again within seconds and"
        " disconnects revoked nodes; publish it to the nodes too ([tls] crl in node.toml)"
    )
    return 0


def _cmd_crl(args: argparse.Namespace) -> int:
    crl = _open(args).renew_crl(days=args.days)
    print(
        f"signed the revocation list again: {len(crl.revoked)} revoked certificate(s),"
        f" valid until {crl.next_update:%Y-%m-%d %H:%M} UTC"
    )
    return 0


def _cmd_server_cert(args: argparse.Namespace) -> int:
    cert = _open(args).write_server(args.host, args.cert, args.key, days=args.days)
    print(
        f"wrote {args.cert} and {args.key}: the coordinator's certificate for"
        f" {', '.join(args.host)}, serial {serial_text(cert.serial_number)}, valid until"
        f" {cert.not_valid_after_utc:%Y-%m-%d}"
    )
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    ca = _open(args)
    now = dt.datetime.now(dt.UTC)
    issued = ca.issued()
    crl = ca.revocation_list()
    print(f"sector CA {common_name(ca.cert.subject)!r} ({args.folder})")
    print(
        f"revocation list: {len(crl.revoked)} revoked, valid until"
        f" {crl.next_update:%Y-%m-%d}" + ("  ** LAPSED: run ca crl **" if crl.stale(now) else "")
    )
    if not issued:
        print("no certificates issued yet")
        return 0
    rows = [
        [i.subject, i.kind, i.status(now), f"{i.not_after:%Y-%m-%d}", serial_text(i.serial)]
        for i in issued
    ]
    headers = ["SUBJECT", "KIND", "STATUS", "VALID UNTIL", "SERIAL"]
    widths = [max(len(h), *(len(r[c]) for r in rows)) for c, h in enumerate(headers)]
    for line in [headers, *rows]:
        print("  " + "  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())
    return 0


def _days(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of days, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1 day, got {value}")
    return value


def add_ca_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ca = sub.add_parser(
        "ca",
        help="the sector CA: certify the coordinator and nodes, revoke, list",
        description=CA_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ca.add_argument("--log-level", default="warning", choices=["debug", "info", "warning"])
    verbs = ca.add_subparsers(dest="ca_command", metavar="ACTION", required=True)

    def verb(name: str, help_text: str) -> argparse.ArgumentParser:
        p = verbs.add_parser(name, help=help_text, description=help_text)
        p.add_argument("folder", type=Path, help="the CA folder")
        p.add_argument(
            "--passphrase-env",
            metavar="VAR",
            help="the CA key's passphrase is in this environment variable",
        )
        return p

    init = verb("init", "make the sector CA (and the coordinator's certificate with --host)")
    init.add_argument(
        "--host",
        action="append",
        default=[],
        help="a name or address nodes dial the coordinator at (repeat for more)",
    )
    init.add_argument("--name", default="publiek sector CA", help="the CA's common name")
    init.add_argument("--organisation", help="the sector body's name, in the CA certificate")
    init.add_argument("--days", type=_days, default=CA_DAYS, help=f"default {CA_DAYS}")
    init.add_argument(
        "--server-days", type=_days, default=SERVER_DAYS, help=f"default {SERVER_DAYS}"
    )
    init.set_defaults(func=_cmd_init)

    sign = verb("sign", "certify a node's request (from publiek-node init)")
    sign.add_argument("request", type=Path, help="the institution's .csr file")
    sign.add_argument("--out", type=Path, help="certificate file (default: REQUEST with .pem)")
    sign.add_argument("--days", type=_days, default=NODE_DAYS, help=f"default {NODE_DAYS}")
    sign.set_defaults(func=_cmd_sign)

    revoke = verb("revoke", "revoke certificates: by serial, or all of an institution")
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--serial",
        action="append",
        help="serial as ca list shows it, or its first digits (at least"
        f" {MIN_SERIAL_PREFIX}, if no other serial starts with them); repeat for more",
    )
    which.add_argument("--institution", help="every valid certificate of this institution")
    revoke.add_argument("--reason", default="unspecified", choices=sorted(REASONS))
    revoke.set_defaults(func=_cmd_revoke)

    crl = verb("crl", "sign the revocation list again with a new validity")
    crl.add_argument("--days", type=_days, default=CRL_DAYS, help=f"default {CRL_DAYS}")
    crl.set_defaults(func=_cmd_crl)

    server = verb("server-cert", "a new certificate for the coordinator (rotation)")
    server.add_argument("--host", action="append", required=True, help="as for init")
    server.add_argument("--cert", type=Path, required=True, help="certificate file to write")
    server.add_argument("--key", type=Path, required=True, help="key file to write")
    server.add_argument("--days", type=_days, default=SERVER_DAYS, help=f"default {SERVER_DAYS}")
    server.set_defaults(func=_cmd_server_cert)

    lst = verb("list", "every certificate issued, with its status")
    lst.set_defaults(func=_cmd_list)
