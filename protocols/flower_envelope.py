"""How publiek's messages travel inside Flower messages (the Flower runtime's envelope).

Flower is a third transport, next to gRPC and in-process: every exchange is one Flower
``Message`` of type ``query.publiek`` whose content is a ``ConfigRecord`` named ``publiek``
holding one of our wire messages, encoded by ``protocols.serde``, as bytes (``message``), and the
coordinator's id (``coordinator``; the gRPC transport says it in the Welcome). The node replies
with the same record holding its answer. What the coordinator sends and what the node replies
are exactly the bytes the gRPC stream carries:

- ``Welcome`` -> ``Hello``: how the coordinator learns which institution a Flower node is, its
  software and protocol versions and its capabilities;
- ``Task`` -> ``TaskResult``: every task, open and secure stages alike.

This module holds only the names both sides must agree on; it imports nothing of Flower.
"""

from __future__ import annotations

from typing import Final

MESSAGE_TYPE: Final[str] = "query.publiek"
RECORD: Final[str] = "publiek"
KEY_MESSAGE: Final[str] = "message"
KEY_COORDINATOR: Final[str] = "coordinator"
# The node's configuration file, in the SuperNode's node config (flower-supernode
# --node-config 'publiek-config="/etc/publiek/node.toml"').
NODE_CONFIG_KEY: Final[str] = "publiek-config"
