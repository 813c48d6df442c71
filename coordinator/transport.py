"""The small interface round logic is written against: which nodes are there, send a task.

Implementations: ``coordinator.inprocess.InProcessTransport`` (tests, simulations) and
``coordinator.registry.NodeRegistry`` (live gRPC sessions). A Flower transport can sit behind the
same three calls, which is why rounds never touch grpc objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from protocols.messages import Task, TaskResult


@dataclass(frozen=True, slots=True)
class NodeInfo:
    institution_id: str
    software_version: str
    protocol_version: int
    capabilities: tuple[str, ...]
    session_id: str
    connected_at: float  # unix time


class NodeUnavailable(Exception):
    """The node is not connected, or its session ended before it answered."""


class TaskTimedOut(Exception):
    """The node did not answer within the task's deadline."""


class Transport(Protocol):
    def nodes(self) -> list[NodeInfo]:
        """Nodes connected now, sorted by institution id."""
        ...

    async def wait_for_nodes(self, count: int, timeout_s: float) -> list[NodeInfo]:
        """Wait until at least ``count`` nodes are connected or the timeout passes."""
        ...

    async def wait_for_node(self, institution_id: str, timeout_s: float) -> bool:
        """Wait until this node is connected (again); False when the timeout passes first."""
        ...

    async def submit(self, institution_id: str, task: Task) -> TaskResult:
        """Send a task and wait for its result (at most the task's timeout).

        Raises NodeUnavailable or TaskTimedOut.
        """
        ...
