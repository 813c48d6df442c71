"""A node ready to answer: its data loaded, its ledger open, its identity and the sector CA.

One construction for every transport: ``publiek-node run`` (gRPC) and the Flower ClientApp
(``node.flower``) both build the task handler here, so a node answers the same way whichever
way its tasks arrive.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

from node.config import NodeConfig
from node.data import load
from node.datasource import setup_from_config
from node.handler import NodeIdentity, TaskHandler
from node.ledger import Ledger
from node.reach import ReachData
from node.segments import SegmentData
from protocols.certificates import CertificateError
from protocols.identity import IdentityError, PeerVerifier, Signer

log = logging.getLogger("publiek.node")


@dataclass
class NodeService:
    config: NodeConfig
    handler: TaskHandler
    ledger: Ledger

    def close(self) -> None:
        self.ledger.close()


def open_node(config: NodeConfig, config_path: Path) -> NodeService:
    """Load the data, open the ledger, read the identity; log what was loaded."""
    setup = setup_from_config(config)
    loaded = load(setup.source, setup.settings, setup.geography, setup.as_of)
    # The institution's own region is a key of its own (institution_region), like its type.
    table = replace(loaded.table, institution_region=config.institution_region)
    for line in loaded.report.summary_lines():
        log.info("%s", line.strip())
    for note in loaded.report.notices:
        log.info("note: %s", note)
    if loaded.report.quarantined:
        log.warning(
            "%d row(s) quarantined; see them with: publiek-node check --config %s",
            loaded.report.quarantined,
            config_path,
        )
    log.info(
        "loaded %d ticket lines; %d customers with features as of %s",
        table.rows,
        loaded.features.customers,
        loaded.features.as_of,
    )
    signer = verifier = None
    if config.tls is not None:
        # The TLS identity also signs this node's secure-aggregation keys; the sector CA checks
        # its peers'.
        signer = Signer.from_files(config.institution_id, config.tls.cert, config.tls.key)
        try:
            verifier = PeerVerifier.from_file(config.tls.ca, config.tls.crl)
        except CertificateError as err:
            raise IdentityError(f"tls.crl: {err}") from err
    else:
        log.warning("without a certificate this node cannot take part in secure aggregation")
    ledger = Ledger(config.ledger_path, config.cap)
    log.info("budget: rho %s left of %s", ledger.remaining(), config.cap)
    if setup.settings.match_key is not None:
        log.info("match-key fingerprint %s", setup.settings.match_key.fingerprint)
    handler = TaskHandler(
        NodeIdentity(config.institution_id, config.institution_type),
        table,
        ledger,
        config.policy,
        signer=signer,
        verifier=verifier,
        # The customers as the sector's segmentation sees them (node/segments.py).
        segments=SegmentData.from_features(
            loaded.features, config.institution_type, config.institution_region
        ),
        # Its people as match keys, for sector reach (node/reach.py); none without a key file.
        reach=(
            ReachData.build(
                table,
                loaded.match_keys,
                config.institution_type,
                setup.settings.match_key.fingerprint if setup.settings.match_key else "",
            )
            if loaded.match_keys is not None
            else None
        ),
    )
    return NodeService(config, handler, ledger)
