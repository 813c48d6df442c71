"""The node's TLS material: its own key and certificate, and the sector CA it trusts."""

from __future__ import annotations

import socket
import ssl
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
    # The sector CA's revocation list: peers whose certificate it lists are not trusted in
    # secure aggregation (their signed keys are refused). Optional; re-read when it changes.
    crl: Path | None = None

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


# Failures of a TLS connection attempt that a handshake diagnosis can explain (grpc reports a
# refused client certificate as a closed socket, nothing more).
_HANDSHAKE_HINTS = ("socket closed", "ssl", "handshake", "certificate", "tsi_")
# The HTTP/2 client preface and an empty SETTINGS frame: what a gRPC client sends first.
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes.fromhex("000000040000000000")


def looks_like_handshake_failure(detail: str) -> bool:
    text = detail.lower()
    return any(h in text for h in _HANDSHAKE_HINTS)


def _host_port(address: str) -> tuple[str, int] | None:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def diagnose_handshake(
    address: str, tls: TlsFiles, server_name: str | None, timeout_s: float = 5.0
) -> str | None:
    """Why a TLS connection to the coordinator fails, in words, or None if it does not (or the
    coordinator cannot be reached at all, which needs no diagnosis).

    gRPC only says "Socket closed" when the coordinator refuses this node's certificate. So the
    handshake is repeated here with Python's ``ssl``: our check of the coordinator's certificate
    fails with a reason, and the coordinator's check of ours (TLS 1.3 does it after the
    handshake) shows as the connection closing before its first HTTP/2 frame.
    """
    target = _host_port(address)
    if target is None:
        return None
    host, port = target
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca))
        ctx.load_cert_chain(str(tls.cert), str(tls.key))
    except (OSError, ssl.SSLError) as err:
        return f"the node's TLS files cannot be used: {err}"
    ctx.set_alpn_protocols(["h2"])
    try:
        raw = socket.create_connection((host, port), timeout=timeout_s)
    except OSError:
        return None
    with raw:
        try:
            conn = ctx.wrap_socket(raw, server_hostname=server_name or host)
        except ssl.SSLCertVerificationError as err:
            return (
                f"the coordinator's certificate does not verify against {tls.ca}"
                f" ({err.verify_message}): is that file the sector CA, and the address right?"
            )
        except (ssl.SSLError, OSError) as err:
            return f"the TLS handshake with the coordinator failed: {err}"
        with conn:
            try:
                conn.sendall(_H2_PREFACE)
                first = conn.recv(9)
            except ssl.SSLError as err:
                return f"the coordinator refused this node's certificate ({err.reason})"
            except TimeoutError:
                return None
            except OSError as err:
                return f"the coordinator closed the connection after the TLS handshake ({err})"
    if not first:
        return (
            "the coordinator closed the connection right after the TLS handshake: it does not"
            f" accept this node's certificate {tls.cert} (not issued by the sector CA it trusts,"
            " or expired)"
        )
    return None
