"""X25519 key pairs and the keys derived from them.

Every node makes two fresh X25519 key pairs per round: one to agree pairwise mask seeds, one to
agree keys for the encrypted channel that carries its Shamir shares. Derivation is HKDF-SHA256
with the round id and both institution ids in the info string, so a seed or key is bound to one
round and one pair, in one direction where that matters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32


def _raw_public(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _raw_private(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True, slots=True)
class KeyPair:
    private: bytes  # raw 32 bytes; Shamir-shared for dropout recovery (the mask key only)
    public: bytes
    key: X25519PrivateKey = field(repr=False, compare=False)

    @classmethod
    def generate(cls) -> KeyPair:
        key = X25519PrivateKey.generate()  # OS CSPRNG
        return cls(private=_raw_private(key), public=_raw_public(key), key=key)

    @classmethod
    def from_private(cls, private: bytes) -> KeyPair:
        key = X25519PrivateKey.from_private_bytes(private)
        return cls(private=private, public=_raw_public(key), key=key)

    def shared(self, peer_public: bytes) -> bytes:
        """The raw X25519 secret with a peer; only ever used as HKDF input."""
        secret = self.key.exchange(X25519PublicKey.from_public_bytes(peer_public))
        if secret == b"\x00" * KEY_BYTES:  # a low-order peer key: never derive from zeros
            raise ValueError("X25519 agreement produced the all-zero secret")
        return secret


def public_key_problem(public: bytes) -> str | None:
    """Why these bytes are not a usable X25519 public key, or None."""
    if len(public) != KEY_BYTES:
        return f"an X25519 public key is {KEY_BYTES} bytes, got {len(public)}"
    try:
        X25519PublicKey.from_public_bytes(public)
    except ValueError as err:
        return f"not an X25519 public key: {err}"
    return None


def _hkdf(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(secret)


def agree(private: bytes, peer_public: bytes, info: bytes) -> bytes:
    """A 32-byte key shared by the two holders of these key pairs, bound to ``info``."""
    return _hkdf(KeyPair.from_private(private).shared(peer_public), info)


def _info(kind: bytes, round_id: str, a: str, b: str) -> bytes:
    parts = [kind, round_id.encode(), a.encode(), b.encode()]
    return b"publiek-secagg-v1/" + b"".join(len(p).to_bytes(2, "big") + p for p in parts)


def mask_seed(shared: bytes, round_id: str, me: str, peer: str) -> bytes:
    """The pairwise mask seed of two nodes in one round (symmetric in the pair).

    ``shared`` is ``KeyPair.shared`` of the two nodes' mask key pairs.
    """
    low, high = sorted((me, peer))
    return _hkdf(shared, _info(b"mask", round_id, low, high))


def channel_key(shared: bytes, round_id: str, sender: str, recipient: str) -> bytes:
    """The key for shares sent from ``sender`` to ``recipient`` in one round (directional).

    ``shared`` is the ``shared_secret`` of the two nodes' channel key pairs; a node computes it
    once per peer and derives both directions from it.
    """
    return _hkdf(shared, _info(b"channel", round_id, sender, recipient))
