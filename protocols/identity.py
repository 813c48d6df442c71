"""Who signed what: node identities from the sector CA, and the statements they sign.

A node's identity is its TLS key pair and the certificate the sector CA issued for it, with the
institution id as common name. In secure aggregation a node signs its round keys and the
survivor set it agrees to; peers check the certificate chain (directly issued by the sector
CA, valid now, right common name) and the signature, so a coordinator that relays the messages
cannot substitute keys or tell different nodes different stories.

With a revocation list (``crl``), a peer whose certificate the sector CA revoked is refused
too, also when its certificate was accepted earlier in the process's life: a key compromised
mid-plan stops counting as soon as the list says so.

Statements are length-prefixed byte strings with a fixed tag, so no two different statements
share an encoding.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from protocols.certificates import CrlFile, institution_of

SigningKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
_TAG = b"publiek-v1/"


class IdentityError(ValueError):
    """A certificate or signature that does not prove what it claims."""


def statement(tag: str, *parts: str | bytes) -> bytes:
    encoded = [p.encode() if isinstance(p, str) else p for p in (tag, *parts)]
    return _TAG + b"".join(len(p).to_bytes(4, "big") + p for p in encoded)


def common_name(cert: x509.Certificate) -> str | None:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        return None
    value = names[0].value
    return value if isinstance(value, str) else value.decode()


@dataclass(frozen=True, slots=True)
class Signer:
    institution_id: str
    certificate_pem: bytes
    key: SigningKey

    @classmethod
    def from_files(cls, institution_id: str, cert: Path, key: Path) -> Signer:
        cert_pem = cert.read_bytes()
        private = serialization.load_pem_private_key(key.read_bytes(), password=None)
        if not isinstance(private, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
            raise IdentityError("node keys must be EC or Ed25519 keys")
        loaded = x509.load_pem_x509_certificate(cert_pem)
        if common_name(loaded) != institution_id:
            raise IdentityError(
                f"the certificate {cert} is for {common_name(loaded)!r}, not {institution_id!r}"
            )
        return cls(institution_id, cert_pem, private)

    def sign(self, message: bytes) -> bytes:
        if isinstance(self.key, ec.EllipticCurvePrivateKey):
            return self.key.sign(message, ec.ECDSA(hashes.SHA256()))
        return self.key.sign(message)


@dataclass(frozen=True, slots=True)
class _Checked:
    """A certificate that passed the CA check once, with what verification needs from it."""

    cert: x509.Certificate
    name: str | None
    public_key: object


@dataclass
class PeerVerifier:
    """Checks peers' certificates against the sector CA and their signatures; caches certs."""

    ca_pem: bytes
    clock: dt.datetime | None = None
    crl: CrlFile | None = None
    _ca: x509.Certificate = field(init=False)
    _known: dict[bytes, _Checked] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._ca = x509.load_pem_x509_certificate(self.ca_pem)

    @classmethod
    def from_file(cls, ca: Path, crl: Path | None = None) -> PeerVerifier:
        ca_pem = ca.read_bytes()
        return cls(ca_pem, crl=CrlFile.open(crl, ca_pem) if crl is not None else None)

    def certificate(self, cert_pem: bytes, institution_id: str) -> x509.Certificate:
        return self._checked(cert_pem, institution_id).cert

    def _checked(self, cert_pem: bytes, institution_id: str) -> _Checked:
        checked = self._known.get(cert_pem)
        if checked is None:
            try:
                cert = x509.load_pem_x509_certificate(cert_pem)
            except ValueError as err:
                raise IdentityError(f"the certificate of {institution_id} is unreadable") from err
            try:
                cert.verify_directly_issued_by(self._ca)
            except (ValueError, TypeError, InvalidSignature) as err:
                raise IdentityError(
                    f"the certificate presented for {institution_id} is not issued by the sector CA"
                ) from err
            now = self.clock or dt.datetime.now(dt.UTC)
            if not (cert.not_valid_before_utc <= now <= cert.not_valid_after_utc):
                raise IdentityError(f"the certificate of {institution_id} is not valid now")
            name = common_name(cert)
            # The node name (URI) must agree with the common name: only node certificates
            # sign round keys, never, say, the coordinator's own.
            checked = _Checked(
                cert, name if institution_of(cert) == name else None, cert.public_key()
            )
            self._known[cert_pem] = checked
        if checked.name != institution_id:
            raise IdentityError(
                f"a certificate for {common_name(checked.cert)!r} was presented as"
                f" {institution_id!r}"
            )
        if self.crl is not None:
            revoked = self.crl.revocation(checked.cert.serial_number)
            if revoked is not None:
                raise IdentityError(f"{institution_id}'s {revoked.describe()}")
        return checked

    def verify(
        self, cert_pem: bytes, institution_id: str, message: bytes, signature: bytes
    ) -> None:
        public = self._checked(cert_pem, institution_id).public_key
        try:
            if isinstance(public, ec.EllipticCurvePublicKey):
                public.verify(signature, message, ec.ECDSA(hashes.SHA256()))
            elif isinstance(public, ed25519.Ed25519PublicKey):
                public.verify(signature, message)
            else:
                raise IdentityError(f"{institution_id} has an unsupported key type")
        except InvalidSignature as err:
            raise IdentityError(f"the signature of {institution_id} does not verify") from err
