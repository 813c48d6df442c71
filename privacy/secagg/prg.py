"""The masking PRG: a ChaCha20 keystream read as little-endian uint64 ring elements.

Each key is used for exactly one stream (per round, per pair or per node), so a fixed nonce is
safe; keys come from HKDF (pairwise) or the OS CSPRNG (self masks).
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from privacy.secagg.ring import RingVector

SEED_BYTES = 32
_NONCE = b"\x00" * 16  # ChaCha20 in cryptography takes a 16-byte counter||nonce block


def mask_vector(seed: bytes, length: int) -> RingVector:
    if len(seed) != SEED_BYTES:
        raise ValueError(f"a mask seed is {SEED_BYTES} bytes, got {len(seed)}")
    if length < 0:
        raise ValueError("length must be non-negative")
    encryptor = Cipher(algorithms.ChaCha20(seed, _NONCE), mode=None).encryptor()
    stream = encryptor.update(b"\x00" * (8 * length))
    return np.frombuffer(stream, dtype="<u8").astype(np.uint64)
