"""Enrolment: the node makes its own key and a certificate request; the sector body signs it.

The private key is made here and never leaves the institution (the file is created 0600 and is
never overwritten: losing a key to a typo would mean enrolling again). The request names the
institution the way the coordinator checks it (``protocols.certificates``).

Before it dials out, ``publiek-node run`` checks its own certificate the way the coordinator
will, so that a wrong file is a clear message at the institution instead of a refused TLS
handshake, which the coordinator cannot explain to it.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from protocols.certificates import (
    CertificateError,
    new_node_key,
    node_identity_problem,
    node_request,
)
from protocols.identity import IdentityError

# Renew in time: a warning at start-up once less than this much of the certificate's life is
# left (30 days of a year's certificate; a third of a short-lived one, as ACME clients do).
EXPIRY_WARNING_DAYS = 30


@dataclass(frozen=True, slots=True)
class Enrolment:
    key: Path
    request: Path


def make_request(
    institution_id: str, key_path: Path, request_path: Path, organisation: str | None = None
) -> Enrolment:
    """Write a new private key and a certificate request for it. Refuses to replace either."""
    for path in (key_path, request_path):
        if path.exists():
            raise IdentityError(
                f"{path} exists already; keys and requests are never replaced (move it away,"
                " or name new files with --key-out and --csr-out)"
            )
    key = new_node_key()
    try:
        csr = node_request(key, institution_id, organisation)
    except CertificateError as err:
        raise IdentityError(str(err)) from err
    key_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    request_path.parent.mkdir(parents=True, exist_ok=True)
    with request_path.open("xb") as fh:
        fh.write(csr.public_bytes(serialization.Encoding.PEM))
    return Enrolment(key_path, request_path)


def _load_certs(path: Path, what: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError) as err:
        raise IdentityError(f"the {what} {path} is not a readable PEM certificate") from err
    return certs


def check_own_certificate(
    institution_id: str,
    ca: Path,
    cert: Path,
    key: Path,
    now: dt.datetime | None = None,
) -> list[str]:
    """Check the node's certificate as the coordinator will; returns warnings (expiring soon).

    Raises IdentityError with what is wrong: not for this institution, not issued by the sector
    CA in ``ca``, not valid now, or not matching the private key.
    """
    moment = now or dt.datetime.now(dt.UTC)
    authorities = _load_certs(ca, "sector CA certificate")
    own = _load_certs(cert, "certificate")[0]
    problem = node_identity_problem(own, institution_id)
    if problem:
        raise IdentityError(f"{cert}: {problem}")
    issuer = None
    for authority in authorities:
        try:
            own.verify_directly_issued_by(authority)
        except (ValueError, TypeError, InvalidSignature):
            continue
        issuer = authority
        break
    if issuer is None:
        raise IdentityError(
            f"{cert} was not issued by the sector CA in {ca} (it names"
            f" {own.issuer.rfc4514_string()!r} as its issuer): the coordinator will refuse it."
            " Make a request with publiek-node init and have the sector body sign it"
        )
    if moment < own.not_valid_before_utc:
        raise IdentityError(
            f"{cert} is not valid before {own.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
        )
    if moment > own.not_valid_after_utc:
        raise IdentityError(
            f"{cert} expired on {own.not_valid_after_utc:%Y-%m-%d}: request a new one"
            " (docs/runbook.md, rotating certificates)"
        )
    try:
        private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as err:
        raise IdentityError(f"the private key {key} cannot be read (PEM, no passphrase)") from err
    if private.public_key() != own.public_key():
        raise IdentityError(f"the private key {key} does not belong to the certificate {cert}")
    warnings = []
    left = own.not_valid_after_utc - moment
    lifetime = own.not_valid_after_utc - own.not_valid_before_utc
    if left < min(dt.timedelta(days=EXPIRY_WARNING_DAYS), lifetime / 3):
        warnings.append(
            f"the certificate {cert} expires in {left.days} day(s), on"
            f" {own.not_valid_after_utc:%Y-%m-%d}: request a new one now"
            " (docs/runbook.md, rotating certificates)"
        )
    return warnings
