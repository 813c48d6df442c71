"""The node's TLS material: its own key and certificate, and the sector CA it trusts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc


class TlsConfigError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path

    def read(self) -> tuple[bytes, bytes, bytes]:
        problems = [
            f"{what} file {p} does not exist" for what, p in self._named() if not p.is_file()
        ]
        if problems:
            raise TlsConfigError("; ".join(problems))
        return self.ca.read_bytes(), self.cert.read_bytes(), self.key.read_bytes()

    def _named(self) -> list[tuple[str, Path]]:
        return [("CA certificate", self.ca), ("certificate", self.cert), ("private key", self.key)]

    def channel_credentials(self) -> grpc.ChannelCredentials:
        ca, cert, key = self.read()
        return grpc.ssl_channel_credentials(
            root_certificates=ca, private_key=key, certificate_chain=cert
        )
