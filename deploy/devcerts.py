"""Development certificates, made on the fly: a throw-away CA, a server and one cert per node.

For local demos and tests only (short-lived, keys unencrypted on disk). It goes through the
same steps as a real enrolment (``coordinator.ca`` signs a request each node made with
``protocols.certificates``), so demos and tests use certificates of the real profile: the
institution id as common name and as node URI, client auth for nodes. The folder is a CA
folder: ``CertificateAuthority.open(pki.folder)`` revokes and lists, as ``publiek-coordinator
ca`` does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from coordinator.ca import CertificateAuthority
from protocols.certificates import new_node_key, node_request

VALIDITY_DAYS = 7


@dataclass(frozen=True, slots=True)
class CertPair:
    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class DevPki:
    ca: Path
    server: CertPair
    nodes: dict[str, CertPair]
    folder: Path
    crl: Path

    def authority(self) -> CertificateAuthority:
        return CertificateAuthority.open(self.folder)


def _write_key_file(path: Path, pem: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)


def issue_node(authority: CertificateAuthority, folder: Path, institution_id: str) -> CertPair:
    """A node key and a signed certificate for it, as enrolment would make them."""
    key = new_node_key()
    cert = authority.sign_request(
        node_request(key, institution_id, "publiek development").public_bytes(
            serialization.Encoding.PEM
        ),
        days=VALIDITY_DAYS,
    )
    pair = CertPair(folder / f"{institution_id}.pem", folder / f"{institution_id}.key")
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key_file(
        pair.key,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    return pair


def make_dev_pki(
    folder: Path,
    node_ids: list[str],
    server_names: tuple[str, ...] = ("localhost", "127.0.0.1"),
    ca_name: str = "publiek development CA",
) -> DevPki:
    authority = CertificateAuthority.init(
        folder, name=ca_name, organisation="publiek development", days=VALIDITY_DAYS
    )
    server = CertPair(folder / "coordinator.pem", folder / "coordinator.key")
    authority.write_server(list(server_names), server.cert, server.key, days=VALIDITY_DAYS)
    nodes = {nid: issue_node(authority, folder, nid) for nid in node_ids}
    return DevPki(
        ca=authority.cert_path,
        server=server,
        nodes=nodes,
        folder=folder,
        crl=authority.crl_path,
    )
