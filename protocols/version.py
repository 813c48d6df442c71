"""Versions a peer announces: the contract's major version and the software's release."""

from __future__ import annotations

from importlib import metadata
from typing import Final

# Major version of the wire contract in protocols/v1. Peers with different majors refuse each
# other with PROTOCOL_VERSION_MISMATCH; additive changes (new optional fields, new task kinds
# announced through capabilities) do not bump it.
PROTOCOL_VERSION: Final[int] = 1

# What a node of this release can answer; a coordinator only sends tasks a node announced.
CAP_HISTOGRAM: Final[str] = "histogram/1"
CAP_MODE_OPEN: Final[str] = "mode/open"
CAP_MODE_SECURE: Final[str] = "mode/secure"
CAP_SECAGG: Final[str] = "secagg/1"
# The node holds customer features and answers the segmentation's k-means rounds (in secure
# rounds only, so it comes with CAP_SECAGG).
CAP_KMEANS: Final[str] = "kmeans/1"
# The node holds match keys (a [matching] key file) and answers reach rounds (secure only).
# 2: the pairs layout and sketch copies (a reach/1 node would misread both), so reach/1 nodes
# sit a section out rather than send a vector of the wrong shape.
CAP_REACH: Final[str] = "reach/2"
# Followed by the public fingerprint of the node's match-key secret (node/ingest/matchkey.py):
# nodes with different secrets would put one person in different buckets, silently; the
# coordinator refuses to mix them.
CAP_MATCH_KEY: Final[str] = "match-key/"
# Every node can answer open-mode histograms; secure mode needs an identity (see TaskHandler).
NODE_CAPABILITIES: Final[tuple[str, ...]] = (CAP_HISTOGRAM, CAP_MODE_OPEN)


def software_version() -> str:
    try:
        return metadata.version("publiek")
    except metadata.PackageNotFoundError:  # running from a source tree that was not installed
        return "0+unknown"


def match_key_fingerprint(capabilities: tuple[str, ...]) -> str | None:
    """The match-key fingerprint a node announced (None: it announced none)."""
    for c in capabilities:
        if c.startswith(CAP_MATCH_KEY):
            return c[len(CAP_MATCH_KEY) :][:32]
    return None
