"""E-mail address -> keyed match key (HMAC-SHA256), then the address is dropped.

Cross-institution statistics (sector reach, overlap, frequency per person) need to recognise
the same person at two institutions without anyone learning who it is. Every node computes
``HMAC-SHA256(key, normalised e-mail)`` with a key the nodes share and the coordinator never
holds: without the key a match key cannot be tested against a guessed address, and two nodes
with the same key get the same match key for the same address. Normalisation is deliberately
simple (trim, lower-case) so every node does exactly the same thing.

Match keys are pseudonymous data (GDPR): they stay in memory, apart from what queries read, and
this module never writes them anywhere.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import polars as pl

MIN_KEY_BYTES: Final[int] = 32


FINGERPRINT_LABEL: Final[bytes] = b"publiek match-key fingerprint v1"


class MatchKeyError(ValueError):
    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


@dataclass(frozen=True, slots=True)
class MatchKeySecret:
    """The shared HMAC key, read from the key file named in the node configuration."""

    key: bytes = field(repr=False)
    source: Path
    warnings: tuple[str, ...] = ()

    @classmethod
    def load(cls, path: Path) -> MatchKeySecret:
        try:
            text = path.read_text(encoding="ascii").strip()
            mode = path.stat().st_mode
        except FileNotFoundError as err:
            raise MatchKeyError(str(path), ["key file not found"]) from err
        except (OSError, UnicodeDecodeError) as err:
            raise MatchKeyError(str(path), [f"key file cannot be read: {err}"]) from err
        try:
            key = bytes.fromhex(text)
        except ValueError:
            key = b""
        if len(key) < MIN_KEY_BYTES:
            raise MatchKeyError(
                str(path),
                [
                    f"the key file must hold at least {MIN_KEY_BYTES * 2} hexadecimal characters"
                    f" ({MIN_KEY_BYTES * 8} bits), e.g. from `openssl rand -hex 32`"
                ],
            )
        warnings: tuple[str, ...] = ()
        if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
            warnings = (
                f"{path} can be read by other users of this machine; make it private"
                f" (chmod 600 {path})",
            )
        return cls(key=key, source=path, warnings=warnings)

    @property
    def fingerprint(self) -> str:
        """A public name for this secret: HMAC(key, a fixed label), 64 bits in hex.

        Nodes of one sector must show the same one (``publiek-node check``, and in the Hello
        the coordinator checks before a reach round). Without the key it cannot be computed,
        and it gives nothing to test a guessed address with: it is the PRF at one public point
        that no match key uses (match keys are HMAC(key, address)).
        """
        mac = hmac.new(self.key, FINGERPRINT_LABEL, "sha256").hexdigest()
        return mac[:16]


class MatchKeys:
    """Per privacy unit, the match key of its e-mail address (32 bytes), held in memory only."""

    def __init__(self, frame: pl.DataFrame) -> None:
        self._frame = frame

    @property
    def frame(self) -> pl.DataFrame:
        """unit (Int64), match_key (Binary, 32 bytes)."""
        return self._frame

    def __len__(self) -> int:
        return self._frame.height

    def __repr__(self) -> str:  # never print the keys themselves
        return f"MatchKeys({self._frame.height} units)"


def derive_match_keys(unit: pl.Series, email: pl.Series, secret: MatchKeySecret) -> MatchKeys:
    """The match key of each unit's address (one address per unit, chosen by the caller).

    Addresses are normalised here (trim, lower case: every node must do exactly this). The
    HMAC is computed once per distinct address: polars has no keyed cryptographic hash, so this
    is the one step that calls into Python per value (about a million a second).
    """
    pairs = (
        pl.DataFrame({"unit": unit, "email": email})
        .drop_nulls()
        .with_columns(pl.col("email").str.strip_chars().str.to_lowercase())
    )
    addresses = pairs["email"].unique()
    digests = list(map(_hmac_sha256(secret.key), addresses.cast(pl.Binary).to_list()))
    table = pl.DataFrame({"email": addresses, "match_key": pl.Series(digests, dtype=pl.Binary)})
    frame = pairs.join(table, on="email", how="left").select("unit", "match_key").sort("unit")
    return MatchKeys(frame)


def _hmac_sha256(key: bytes) -> Callable[[bytes], bytes]:
    """HMAC-SHA256 under ``key`` (RFC 2104), with the key's two padded blocks hashed once.

    ``hmac.digest`` hashes them again for every message: for short messages such as e-mail
    addresses that is half the work, and this is about 2.5 times faster. The result is the
    same HMAC (tests/test_node_ingest.py compares it with ``hmac.digest``).
    """
    block = hashlib.sha256().block_size
    if len(key) > block:
        key = hashlib.sha256(key).digest()
    key = key.ljust(block, b"\0")
    inner_start = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    outer_start = hashlib.sha256(bytes(b ^ 0x5C for b in key))

    def mac(message: bytes) -> bytes:
        inner = inner_start.copy()
        inner.update(message)
        outer = outer_start.copy()
        outer.update(inner.digest())
        return outer.digest()

    return mac
