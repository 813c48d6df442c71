"""An in-process ``Transport``: nodes are callables in this process (tests, simulations).

Every task and result still goes through the wire encoding (``protocols.serde``) both ways, so
what works here works on the wire; only the network is missing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

from coordinator.transport import NodeInfo, NodeUnavailable, TaskTimedOut
from protocols.messages import Task, TaskResult
from protocols.serde import (
    decode_coordinator_message,
    decode_node_message,
    encode_coordinator_message,
    encode_node_message,
)
from protocols.version import (
    CAP_KMEANS,
    CAP_MODE_SECURE,
    CAP_SECAGG,
    NODE_CAPABILITIES,
    PROTOCOL_VERSION,
)

NodeHandler = Callable[[Task], TaskResult]


ALL_CAPABILITIES = (*NODE_CAPABILITIES, CAP_SECAGG, CAP_MODE_SECURE, CAP_KMEANS)


class InProcessTransport:
    def __init__(
        self,
        handlers: Mapping[str, NodeHandler],
        capabilities: dict[str, tuple[str, ...]] | None = None,
        *,
        concurrent: bool = True,
    ) -> None:
        """``concurrent``: run each node's handler on a worker thread, so a slow node can miss
        its deadline (as on a network). With False every handler runs inline, one after the
        other on the event loop's thread: faster for large simulations of fast, CPU-bound nodes
        (their cryptography holds the GIL anyway), but deadlines cannot interrupt a handler."""
        self._handlers = dict(handlers)
        self._capabilities = capabilities or {}
        self._concurrent = concurrent
        self._connected = set(handlers)
        self._changed = asyncio.Event()

    def disconnect(self, institution_id: str) -> None:
        self._connected.discard(institution_id)

    def reconnect(self, institution_id: str) -> None:
        self._connected.add(institution_id)
        self._changed.set()

    def nodes(self) -> list[NodeInfo]:
        return [
            NodeInfo(
                institution_id=i,
                software_version="in-process",
                protocol_version=PROTOCOL_VERSION,
                capabilities=self._capabilities.get(i, ALL_CAPABILITIES),
                session_id=f"inprocess-{i}",
                connected_at=time.time(),
            )
            for i in sorted(self._connected)
        ]

    async def wait_for_nodes(self, count: int, timeout_s: float) -> list[NodeInfo]:
        return self.nodes()

    async def wait_for_node(self, institution_id: str, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while institution_id not in self._connected:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return False
        return True

    async def submit(self, institution_id: str, task: Task) -> TaskResult:
        if institution_id not in self._connected:
            raise NodeUnavailable(f"{institution_id} is not connected")
        wire_task = decode_coordinator_message(encode_coordinator_message(task))
        assert isinstance(wire_task, Task)
        handler = self._handlers[institution_id]
        if self._concurrent:
            try:
                result = await asyncio.wait_for(
                    asyncio.to_thread(handler, wire_task), task.timeout_ms / 1000.0
                )
            except TimeoutError as err:
                raise TaskTimedOut(
                    f"{institution_id} did not answer {task.task_id} in time"
                ) from err
        else:
            result = handler(wire_task)
        if institution_id not in self._connected:
            raise NodeUnavailable(f"{institution_id} dropped out before answering")
        wire_result = decode_node_message(encode_node_message(result))
        assert isinstance(wire_result, TaskResult)
        return wire_result
