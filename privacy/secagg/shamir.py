"""Shamir secret sharing over the prime field GF(2^521 - 1).

A secret (a 32-byte seed or X25519 private key, below 2^256) is the constant term of a random
polynomial of degree threshold - 1; holder i receives its value at x = i (i >= 1). Any
``threshold`` shares reconstruct it by Lagrange interpolation at 0; fewer reveal nothing.
Coefficients come from ``secrets.randbelow``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

PRIME = 2**521 - 1  # a Mersenne prime, comfortably above any 256-bit secret
SECRET_BYTES = 32
SHARE_BYTES = 66  # 521 bits


@dataclass(frozen=True, slots=True)
class Share:
    x: int  # the holder's evaluation point, 1-based
    y: int

    def to_bytes(self) -> bytes:
        return self.y.to_bytes(SHARE_BYTES, "big")


def split(secret: bytes, threshold: int, points: list[int]) -> dict[int, Share]:
    """Shares of ``secret`` at the given evaluation points (distinct, positive)."""
    if len(secret) != SECRET_BYTES:
        raise ValueError(f"a secret is {SECRET_BYTES} bytes, got {len(secret)}")
    if not 1 <= threshold <= len(points):
        raise ValueError(f"threshold {threshold} must be between 1 and {len(points)} holders")
    if len(set(points)) != len(points) or min(points) < 1:
        raise ValueError("evaluation points must be distinct and positive")
    coefficients = [int.from_bytes(secret, "big")] + [
        secrets.randbelow(PRIME) for _ in range(threshold - 1)
    ]
    shares = {}
    for x in points:
        y = 0
        for c in reversed(coefficients):  # Horner
            y = (y * x + c) % PRIME
        shares[x] = Share(x, y)
    return shares


def combine(shares: list[Share], threshold: int) -> bytes:
    """The secret from at least ``threshold`` shares (the first ``threshold`` are used)."""
    if len(shares) < threshold:
        raise ValueError(f"need {threshold} shares to reconstruct, got {len(shares)}")
    use = shares[:threshold]
    xs = [s.x for s in use]
    if len(set(xs)) != len(xs):
        raise ValueError("two shares have the same evaluation point")
    secret = 0
    for i, si in enumerate(use):
        num, den = 1, 1
        for j, sj in enumerate(use):
            if i != j:
                num = (num * -sj.x) % PRIME
                den = (den * (si.x - sj.x)) % PRIME
        secret = (secret + si.y * num * pow(den, -1, PRIME)) % PRIME
    if secret >= 2 ** (8 * SECRET_BYTES):
        raise ValueError("shares do not reconstruct a valid secret (inconsistent shares)")
    return secret.to_bytes(SECRET_BYTES, "big")


def share_from_bytes(x: int, data: bytes) -> Share:
    if len(data) != SHARE_BYTES:
        raise ValueError(f"a share is {SHARE_BYTES} bytes, got {len(data)}")
    y = int.from_bytes(data, "big")
    if y >= PRIME:
        raise ValueError("share value outside the field")
    return Share(x, y)
