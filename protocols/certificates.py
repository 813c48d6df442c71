"""The certificate profile both sides agree on, and the sector CA's revocation list.

A node's certificate names its institution twice: as the subject's common name and as a URI
``urn:publiek:institution:<id>`` in its subject alternative names, with extended key usage
``clientAuth``. The coordinator accepts a session only when both name the institution the
node's Hello names, so a certificate made for anything else (the coordinator's own, which may
authenticate a health probe) can never pass as a node.

Revocation is a CRL signed by the sector CA. It is checked where a certificate is accepted: by
the coordinator when a node says Hello (and again for connected nodes when the list changes),
and by nodes and the coordinator when they check a peer's signed secure-aggregation keys. A CRL
file is re-read when it changes, so a revocation needs no restart; a replacement that is not
signed by the CA, or is older than the one in use, is refused and the one in use is kept (a
revocation cannot be undone by swapping the file).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger("publiek.identity")

INSTITUTION_URI_PREFIX = "urn:publiek:institution:"
# Lower case letters, digits and . _ -, starting with a letter or digit: safe in file names,
# URIs, log lines and TOML without quoting surprises.
_INSTITUTION_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


class CertificateError(ValueError):
    """A certificate, request or revocation list that cannot be used, and why."""


def institution_id_problem(text: str) -> str | None:
    if _INSTITUTION_ID.fullmatch(text):
        return None
    return (
        f"{text!r} is not a valid institution id: 1 to 64 characters, lower case letters,"
        " digits, '.', '_' or '-', starting with a letter or digit"
    )


def institution_uri(institution_id: str) -> str:
    return INSTITUTION_URI_PREFIX + institution_id


def common_name(subject: x509.Name) -> str | None:
    names = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        return None
    value = names[0].value
    return value if isinstance(value, str) else value.decode()


def _uris(extensions: x509.Extensions) -> list[str]:
    try:
        san = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(u) for u in san.get_values_for_type(x509.UniformResourceIdentifier)]


def institution_of(cert: x509.Certificate) -> str | None:
    """The institution a node certificate is for: its URI name, when exactly one is there."""
    ids = [
        u[len(INSTITUTION_URI_PREFIX) :]
        for u in _uris(cert.extensions)
        if u.startswith(INSTITUTION_URI_PREFIX)
    ]
    return ids[0] if len(ids) == 1 else None


def node_identity_problem(cert: x509.Certificate, institution_id: str) -> str | None:
    """Why this certificate does not identify ``institution_id`` as a node, or None."""
    cn = common_name(cert.subject)
    if cn != institution_id:
        return f"the certificate is for {cn!r}, not {institution_id!r}"
    if institution_of(cert) != institution_id:
        return (
            f"the certificate for {cn!r} does not carry the node name"
            f" {institution_uri(institution_id)} (it is not a node certificate of this sector)"
        )
    return None


def serial_text(serial: int) -> str:
    """A serial number as operators see it (and type it): hexadecimal, as openssl shows it."""
    return f"{serial:x}"


def new_node_key() -> ec.EllipticCurvePrivateKey:
    # P-256: what every TLS stack and gRPC build supports, and what Signer signs with.
    return ec.generate_private_key(ec.SECP256R1())


def node_request(
    key: ec.EllipticCurvePrivateKey, institution_id: str, organisation: str | None = None
) -> x509.CertificateSigningRequest:
    """A certificate request bound to the institution: CN and URI name, client auth."""
    problem = institution_id_problem(institution_id)
    if problem:
        raise CertificateError(problem)
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, institution_id)]
    if organisation:
        attributes.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation))
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name(attributes))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(institution_uri(institution_id))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )


def request_institution(csr: x509.CertificateSigningRequest) -> str:
    """The institution a request asks a certificate for; refuses anything ambiguous."""
    if not csr.is_signature_valid:
        raise CertificateError("the request's signature does not verify (damaged or forged)")
    key = csr.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in ("secp256r1", "secp384r1"):
            raise CertificateError(f"EC keys must be on P-256 or P-384, not {key.curve.name}")
    elif not isinstance(key, ed25519.Ed25519PublicKey):
        raise CertificateError("node keys must be EC (P-256 or P-384) or Ed25519 keys")
    cn = common_name(csr.subject)
    if cn is None:
        raise CertificateError("the request has no common name (the institution id)")
    problem = institution_id_problem(cn)
    if problem:
        raise CertificateError(problem)
    uris = _uris(csr.extensions)
    if uris and uris != [institution_uri(cn)]:
        raise CertificateError(
            f"the request for {cn!r} also names {', '.join(uris)}; only"
            f" {institution_uri(cn)} may be named"
        )
    return cn


# --- revocation ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Revocation:
    serial: int
    revoked_at: dt.datetime
    reason: str | None

    def describe(self) -> str:
        why = f", reason: {self.reason}" if self.reason else ""
        return (
            f"certificate serial {serial_text(self.serial)} was revoked on"
            f" {self.revoked_at:%Y-%m-%d %H:%M} UTC{why}"
        )


def _reason(entry: x509.RevokedCertificate) -> str | None:
    try:
        return str(entry.extensions.get_extension_for_class(x509.CRLReason).value.reason.name)
    except x509.ExtensionNotFound:
        return None


@dataclass(frozen=True, slots=True)
class RevocationList:
    """A CRL whose signature was checked against the sector CA."""

    revoked: dict[int, Revocation]
    last_update: dt.datetime
    next_update: dt.datetime | None
    number: int | None
    source: str

    @classmethod
    def parse(cls, pem: bytes, ca: x509.Certificate, source: str) -> RevocationList:
        try:
            crl = x509.load_pem_x509_crl(pem)
        except ValueError:
            try:
                crl = x509.load_der_x509_crl(pem)
            except ValueError as err:
                raise CertificateError(f"{source} is not a certificate revocation list") from err
        if crl.issuer != ca.subject:
            raise CertificateError(
                f"{source} was issued by {crl.issuer.rfc4514_string()!r}, not by the sector CA"
                f" {ca.subject.rfc4514_string()!r}"
            )
        public = ca.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey) or not (
            crl.is_signature_valid(public)
        ):
            raise CertificateError(f"{source} is not signed by the sector CA")
        try:
            number: int | None = crl.extensions.get_extension_for_class(
                x509.CRLNumber
            ).value.crl_number
        except x509.ExtensionNotFound:
            number = None
        return cls(
            revoked={
                e.serial_number: Revocation(e.serial_number, e.revocation_date_utc, _reason(e))
                for e in crl
            },
            last_update=crl.last_update_utc,
            next_update=crl.next_update_utc,
            number=number,
            source=source,
        )

    def revocation(self, serial: int) -> Revocation | None:
        return self.revoked.get(serial)

    def stale(self, now: dt.datetime | None = None) -> bool:
        moment = now or dt.datetime.now(dt.UTC)
        return self.next_update is not None and moment > self.next_update

    def newer_than(self, other: RevocationList) -> bool:
        if self.number is not None and other.number is not None:
            return self.number >= other.number
        return self.last_update >= other.last_update


class CrlFile:
    """A CRL on disk, re-read when the file changes; thread-safe.

    The first read must succeed (a bad file named on the command line is a configuration
    error). Later, a replacement that does not verify, or is older than the list in use, is
    refused with an error in the log and the list in use stays: revocations only ever grow.
    """

    def __init__(self, path: Path, ca: x509.Certificate) -> None:
        self.path = path
        self._ca = ca
        self._lock = threading.Lock()
        self._stamp = self._file_stamp()
        self._list = self._read()
        self._warned_stale = False

    @classmethod
    def open(cls, path: Path, ca_pem: bytes) -> CrlFile:
        try:
            ca = x509.load_pem_x509_certificate(ca_pem)
        except ValueError as err:
            raise CertificateError("the sector CA certificate is unreadable") from err
        return cls(path, ca)

    def _file_stamp(self) -> tuple[int, int]:
        try:
            st = self.path.stat()
        except OSError as err:
            raise CertificateError(
                f"the revocation list {self.path} cannot be read: {err}"
            ) from err
        return (st.st_mtime_ns, st.st_size)

    def _read(self) -> RevocationList:
        try:
            pem = self.path.read_bytes()
        except OSError as err:
            raise CertificateError(
                f"the revocation list {self.path} cannot be read: {err}"
            ) from err
        return RevocationList.parse(pem, self._ca, str(self.path))

    def current(self) -> RevocationList:
        with self._lock:
            try:
                stamp = self._file_stamp()
            except CertificateError as err:
                log.error("%s; still using the list read earlier", err)
                return self._list
            if stamp != self._stamp:
                self._stamp = stamp
                try:
                    fresh = self._read()
                except CertificateError as err:
                    log.error(
                        "refused the new revocation list: %s; still using the earlier one", err
                    )
                    return self._list
                if not fresh.newer_than(self._list):
                    log.error(
                        "refused the new revocation list %s: it is older than the one in use",
                        self.path,
                    )
                    return self._list
                added = set(fresh.revoked) - set(self._list.revoked)
                log.info(
                    "revocation list %s reloaded: %d revoked certificate(s), %d new",
                    self.path,
                    len(fresh.revoked),
                    len(added),
                    extra={"event": "crl_reloaded", "revoked": len(fresh.revoked)},
                )
                self._list = fresh
                self._warned_stale = False
            if self._list.stale() and not self._warned_stale:
                self._warned_stale = True
                log.warning(
                    "the revocation list %s was due for renewal on %s; the sector CA should"
                    " publish a new one (publiek-coordinator ca crl)",
                    self.path,
                    self._list.next_update,
                )
            return self._list

    def revocation(self, serial: int) -> Revocation | None:
        return self.current().revocation(serial)
