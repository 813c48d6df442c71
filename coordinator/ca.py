"""The sector CA: one folder with the CA's key and certificate, every certificate it issued, and
its revocation list.

    ca/ca.pem             the sector CA certificate: every node and the coordinator trust it
    ca/ca.key             its private key (0600; keep the folder offline; --passphrase-env)
    ca/crl.pem            the revocation list: the coordinator reads it (--crl), nodes too
    ca/issued/<serial>.pem  a copy of every certificate issued, for listing and revoking
    ca/coordinator.pem / coordinator.key   the coordinator's TLS certificate and key

Node certificates are issued only from a certificate request (``publiek-node init``): the key
never leaves the institution. What a node certificate contains is ``protocols.certificates``'
profile; a request that asks for anything else is refused. A key that was in a revoked
certificate is never certified again.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from protocols.certificates import (
    CertificateError,
    RevocationList,
    common_name,
    institution_of,
    institution_uri,
    request_institution,
    serial_text,
)

CA_DAYS = 10 * 365
NODE_DAYS = 365
SERVER_DAYS = 365
CRL_DAYS = 30
# Clocks at institutions are not perfect: certificates are valid from a little before now.
BACKDATE = dt.timedelta(minutes=5)
# A serial may be typed as its first digits (ca list shows 40): this many at least, so that a
# slip of the keyboard is more likely to match nothing than the wrong certificate.
MIN_SERIAL_PREFIX = 6

REASONS = {
    "unspecified": x509.ReasonFlags.unspecified,
    "key_compromise": x509.ReasonFlags.key_compromise,
    "superseded": x509.ReasonFlags.superseded,
    "affiliation_changed": x509.ReasonFlags.affiliation_changed,
    "cessation_of_operation": x509.ReasonFlags.cessation_of_operation,
}


class CaError(ValueError):
    """Something the CA cannot do, said in words an operator can act on."""


@dataclass(frozen=True, slots=True)
class Issued:
    serial: int
    subject: str
    kind: str  # "node" | "server"
    not_after: dt.datetime
    revoked: bool
    path: Path

    def status(self, now: dt.datetime) -> str:
        if self.revoked:
            return "revoked"
        return "expired" if now > self.not_after else "valid"


def _name(cn: str, organisation: str | None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if organisation:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation))
    return x509.Name(attrs)


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _write_new(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Create a file that must not exist yet (never overwrite a key or a certificate)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError as err:
        raise CaError(f"{path} exists already; it is never overwritten") from err
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _replace(path: Path, data: bytes) -> None:
    """Replace a file atomically: a reader sees the old or the new one, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.chmod(0o644)
    os.replace(tmp, path)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey, passphrase: bytes | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def _alt_names(hosts: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


class CertificateAuthority:
    """The sector CA in its folder. Open with ``open`` (or make one with ``init``)."""

    def __init__(
        self, folder: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
    ) -> None:
        self.folder = folder
        self.cert = cert
        self.key = key

    # --- files --------------------------------------------------------------------------------

    @property
    def cert_path(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def crl_path(self) -> Path:
        return self.folder / "crl.pem"

    @property
    def issued_dir(self) -> Path:
        return self.folder / "issued"

    @classmethod
    def init(
        cls,
        folder: Path,
        *,
        name: str = "publiek sector CA",
        organisation: str | None = None,
        days: int = CA_DAYS,
        passphrase: bytes | None = None,
        now: dt.datetime | None = None,
    ) -> CertificateAuthority:
        if (folder / "ca.key").exists() or (folder / "ca.pem").exists():
            raise CaError(f"{folder} holds a CA already; a CA is made once (use another folder)")
        if days < 1:
            raise CaError("--days must be at least 1")
        moment = now or dt.datetime.now(dt.UTC)
        key = ec.generate_private_key(ec.SECP384R1())
        subject = _name(name, organisation)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(moment - BACKDATE)
            .not_valid_after(moment + dt.timedelta(days=days))
            # path_length 0: this CA signs node and server certificates, never another CA.
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA384())
        )
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700)
        _write_new(folder / "ca.key", _key_pem(key, passphrase), 0o600)
        _write_new(folder / "ca.pem", _pem(cert))
        ca = cls(folder, cert, key)
        ca.issued_dir.mkdir(exist_ok=True)
        ca._write_crl({}, number=1, days=CRL_DAYS, now=moment)
        return ca

    @classmethod
    def open(cls, folder: Path, passphrase: bytes | None = None) -> CertificateAuthority:
        key_path, cert_path = folder / "ca.key", folder / "ca.pem"
        missing = [str(p) for p in (key_path, cert_path) if not p.is_file()]
        if missing:
            raise CaError(
                f"{folder} is not a CA folder ({', '.join(missing)} missing);"
                " make one with: publiek-coordinator ca init"
            )
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), passphrase)
        except TypeError as err:
            raise CaError(
                f"{key_path} is protected by a passphrase: give it with --passphrase-env VAR"
                if passphrase is None
                else f"{key_path} is not protected by a passphrase: leave out --passphrase-env"
            ) from err
        except ValueError as err:
            raise CaError(f"{key_path} cannot be read (wrong passphrase?)") from err
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CaError(f"{key_path} is not an EC key")
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        if cert.public_key() != key.public_key():
            raise CaError(f"{key_path} is not the key of {cert_path}")
        return cls(folder, cert, key)

    # --- issuing ------------------------------------------------------------------------------

    def _builder(
        self, subject: x509.Name, public: object, days: int, now: dt.datetime
    ) -> x509.CertificateBuilder:
        if days < 1:
            raise CaError("--days must be at least 1")
        end = min(now + dt.timedelta(days=days), self.cert.not_valid_after_utc)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(public)  # type: ignore[arg-type]  # checked by the caller
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
        )

    def _record(self, cert: x509.Certificate) -> None:
        _write_new(self.issued_dir / f"{serial_text(cert.serial_number)}.pem", _pem(cert))

    def sign_request(
        self, csr_pem: bytes, *, days: int = NODE_DAYS, now: dt.datetime | None = None
    ) -> x509.Certificate:
        """A node certificate for a request made by ``publiek-node init``."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as err:
            raise CaError("not a certificate request (PEM)") from err
        try:
            institution = request_institution(csr)
        except CertificateError as err:
            raise CaError(f"refused the request: {err}") from err
        public = csr.public_key()
        revoked = self.revocation_list().revoked
        for old in self.issued() if revoked else []:
            if old.revoked and _public_key_of(old.path) == public:
                raise CaError(
                    f"refused the request: its key was in certificate {serial_text(old.serial)},"
                    " which is revoked; the institution must make a new key (publiek-node init)"
                )
        moment = now or dt.datetime.now(dt.UTC)
        subject = _name(institution, _organisation(csr.subject))
        cert = (
            self._builder(subject, public, days, moment)
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(institution_uri(institution))]
                ),
                critical=False,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(self.key, hashes.SHA384())
        )
        self._record(cert)
        return cert

    def issue_server(
        self,
        hosts: list[str],
        *,
        days: int = SERVER_DAYS,
        name: str = "coordinator",
        now: dt.datetime | None = None,
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """The coordinator's certificate and key. It can authenticate as a client too, so the
        coordinator's own health probe can speak mutual TLS to it; it never passes as a node
        (no institution name)."""
        if not hosts:
            raise CaError("name at least one host the nodes dial (--host), e.g. the DNS name")
        moment = now or dt.datetime.now(dt.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            self._builder(_name(name, None), key.public_key(), days, moment)
            .add_extension(x509.SubjectAlternativeName(_alt_names(hosts)), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .sign(self.key, hashes.SHA384())
        )
        self._record(cert)
        return cert, key

    def write_server(
        self, hosts: list[str], cert_path: Path, key_path: Path, *, days: int = SERVER_DAYS
    ) -> x509.Certificate:
        for path in (cert_path, key_path):
            if path.exists():
                raise CaError(f"{path} exists already; it is never overwritten")
        cert, key = self.issue_server(hosts, days=days)
        _write_new(key_path, _key_pem(key), 0o600)
        _write_new(cert_path, _pem(cert))
        return cert

    # --- revocation ---------------------------------------------------------------------------

    def revocation_list(self) -> RevocationList:
        try:
            return RevocationList.parse(self.crl_path.read_bytes(), self.cert, str(self.crl_path))
        except (OSError, CertificateError) as err:
            raise CaError(f"the CA's revocation list cannot be used: {err}") from err

    def _write_crl(
        self,
        revoked: dict[int, tuple[dt.datetime, str | None]],
        *,
        number: int,
        days: int,
        now: dt.datetime,
    ) -> None:
        if days < 1:
            raise CaError("--days must be at least 1")
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(now)
            .next_update(now + dt.timedelta(days=days))
            .add_extension(x509.CRLNumber(number), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
        )
        for serial, (when, reason) in sorted(revoked.items()):
            entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when)
            if reason is not None:
                entry = entry.add_extension(x509.CRLReason(REASONS[reason]), critical=False)
            builder = builder.add_revoked_certificate(entry.build())
        crl = builder.sign(self.key, hashes.SHA384())
        _replace(self.crl_path, crl.public_bytes(serialization.Encoding.PEM))

    def _current_entries(self) -> tuple[dict[int, tuple[dt.datetime, str | None]], int]:
        current = self.revocation_list()
        entries = {s: (r.revoked_at, r.reason) for s, r in current.revoked.items()}
        return entries, (current.number or 0) + 1

    def revoke(
        self, serials: list[int], reason: str = "unspecified", *, now: dt.datetime | None = None
    ) -> list[int]:
        """Revoke these certificates (issued by this CA); returns the serials newly revoked."""
        if reason not in REASONS:
            raise CaError(f"--reason must be one of {', '.join(REASONS)}")
        known = {i.serial for i in self.issued()}
        unknown = [serial_text(s) for s in serials if s not in known]
        if unknown:
            raise CaError(f"this CA issued no certificate with serial {', '.join(unknown)}")
        moment = now or dt.datetime.now(dt.UTC)
        entries, number = self._current_entries()
        new = [s for s in serials if s not in entries]
        for serial in new:
            entries[serial] = (moment, None if reason == "unspecified" else reason)
        self._write_crl(entries, number=number, days=CRL_DAYS, now=moment)
        return new

    def renew_crl(self, *, days: int = CRL_DAYS, now: dt.datetime | None = None) -> RevocationList:
        """Sign the same list again with a new next-update date (do this before it lapses)."""
        entries, number = self._current_entries()
        self._write_crl(entries, number=number, days=days, now=now or dt.datetime.now(dt.UTC))
        return self.revocation_list()

    # --- what was issued ----------------------------------------------------------------------

    def issued(self) -> list[Issued]:
        revoked = set(self.revocation_list().revoked) if self.crl_path.exists() else set()
        out = []
        for path in sorted(self.issued_dir.glob("*.pem")):
            cert = x509.load_pem_x509_certificate(path.read_bytes())
            node = institution_of(cert)
            out.append(
                Issued(
                    serial=cert.serial_number,
                    subject=common_name(cert.subject) or "?",
                    kind="node" if node is not None else "server",
                    not_after=cert.not_valid_after_utc,
                    revoked=cert.serial_number in revoked,
                    path=path,
                )
            )
        return sorted(out, key=lambda i: (i.subject, i.not_after))

    def find_serials(self, texts: list[str]) -> list[int]:
        """The serials of certificates this CA issued, each given as ``ca list`` shows it or
        as a prefix of that of at least MIN_SERIAL_PREFIX digits that no other serial starts
        with (case, colons and a leading 0x do not matter). Every problem at once."""
        issued = self.issued()
        found: list[int] = []
        unknown: list[str] = []
        problems: list[str] = []
        for text in texts:
            digits = text.strip().lower().replace(":", "").removeprefix("0x")
            if not digits or not all(c in "0123456789abcdef" for c in digits):
                problems.append(f"serial {text!r} is not hexadecimal (give it as ca list shows it)")
                continue
            value = int(digits, 16)
            # openssl pads serials with zeros; ca list (serial_text) does not.
            prefix = serial_text(value) if value else ""
            exact = [i for i in issued if i.serial == value]
            matches = exact or [i for i in issued if serial_text(i.serial).startswith(prefix)]
            if not exact and len(prefix) < MIN_SERIAL_PREFIX:
                problems.append(
                    f"serial {text}: give at least {MIN_SERIAL_PREFIX} of its hexadecimal digits"
                    " (ca list shows them all)"
                )
            elif not matches:
                unknown.append(text)
            elif len(matches) > 1:
                which = ", ".join(f"{serial_text(i.serial)} ({i.subject})" for i in matches)
                problems.append(
                    f"serial {text} is the start of {len(matches)} serials: {which}; give more"
                    " of its digits"
                )
            elif matches[0].serial not in found:
                found.append(matches[0].serial)
        if unknown:
            problems.insert(0, f"this CA issued no certificate with serial {', '.join(unknown)}")
        if problems:
            raise CaError("; ".join(problems))
        return found

    def serials_of(self, institution_id: str) -> list[int]:
        """The node certificates of an institution that are not revoked yet."""
        return [
            i.serial
            for i in self.issued()
            if i.kind == "node" and i.subject == institution_id and not i.revoked
        ]


def _organisation(subject: x509.Name) -> str | None:
    names = subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    if not names:
        return None
    value = names[0].value
    return value if isinstance(value, str) else value.decode()


def _public_key_of(path: Path) -> object:
    return x509.load_pem_x509_certificate(path.read_bytes()).public_key()
