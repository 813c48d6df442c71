"""Authenticated encryption of the shares one node sends another through the coordinator.

ChaCha20-Poly1305 under the directional channel key (``keys.channel_key``), with the round id,
sender and recipient as associated data: the coordinator relays ciphertexts it can neither read
nor redirect to another node or round without detection.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

NONCE_BYTES = 12


class ChannelError(ValueError):
    """A ciphertext that does not authenticate (tampered, misrouted or replayed elsewhere)."""


def _aad(round_id: str, sender: str, recipient: str) -> bytes:
    parts = [round_id.encode(), sender.encode(), recipient.encode()]
    return b"".join(len(p).to_bytes(2, "big") + p for p in parts)


def seal(key: bytes, round_id: str, sender: str, recipient: str, plaintext: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + ChaCha20Poly1305(key).encrypt(
        nonce, plaintext, _aad(round_id, sender, recipient)
    )


def open_sealed(key: bytes, round_id: str, sender: str, recipient: str, sealed: bytes) -> bytes:
    if len(sealed) < NONCE_BYTES + 16:
        raise ChannelError("ciphertext too short")
    try:
        return ChaCha20Poly1305(key).decrypt(
            sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], _aad(round_id, sender, recipient)
        )
    except InvalidTag as err:
        raise ChannelError(f"the shares from {sender} to {recipient} do not authenticate") from err
