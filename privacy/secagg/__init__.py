"""Secure-aggregation primitives (SecAgg, Bonawitz et al. 2017; SecAgg+, Bell et al. 2020).

Only cryptography and arithmetic live here, no protocol I/O, so that an auditor can read every
primitive in one place:

- ``keys``: X25519 key pairs and HKDF-SHA256 derivation of pairwise mask and channel keys;
- ``prg``: the masking PRG, ChaCha20 keystreams read as vectors over Z_(2^64);
- ``shamir``: Shamir secret sharing over the prime field GF(2^521 - 1);
- ``channel``: authenticated encryption (ChaCha20-Poly1305) of the shares one node sends another;
- ``graph``: the sparse neighbour graph (a Harary graph on a seeded permutation);
- ``ring``: signed integer vectors in and out of Z_(2^64).

Every secret comes from the operating system's CSPRNG (``os.urandom`` / ``secrets``); every mask
from ChaCha20 keyed by HKDF output. Nothing here uses ``random`` or numpy's generators.
"""
