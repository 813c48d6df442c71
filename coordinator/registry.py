"""Live node sessions, and the ``Transport`` over them.

A session is one node's Connect stream. Tasks for a node go into its outbox; results come back
through its reader and resolve the waiting future. When a node reconnects, the new session
replaces the old one (the old stream may linger until keep-alive notices it is dead), and tasks
pending on the old session fail with NodeUnavailable so the round can re-send them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from coordinator.transport import NodeInfo, NodeUnavailable, TaskTimedOut
from protocols.messages import Task, TaskResult
from protocols.serde import encode_coordinator_message

log = logging.getLogger("publiek.coordinator")

# Extra time over the task's own deadline for the answer to travel back.
RESULT_GRACE_S = 5.0


@dataclass(eq=False)
class Session:
    info: NodeInfo
    outbox: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)
    pending: dict[str, asyncio.Future[TaskResult]] = field(default_factory=dict)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    last_seen: float = field(default_factory=time.time)
    cert_serial: int | None = None  # of the node's TLS certificate (None without TLS)
    close_reason: str | None = None

    def deliver(self, result: TaskResult) -> bool:
        fut = self.pending.get(result.task_id)
        if fut is None or fut.done():
            return False
        fut.set_result(result)
        return True

    def close(self, reason: str) -> None:
        if self.close_reason is None:
            self.close_reason = reason
        self.closed.set()
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(NodeUnavailable(reason))
        self.pending.clear()


class NodeRegistry:
    """Connected nodes; implements ``coordinator.transport.Transport``."""

    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}
        self._changed = asyncio.Condition()

    async def register(self, session: Session) -> None:
        async with self._changed:
            old = self._sessions.get(session.info.institution_id)
            if old is not None:
                log.info(
                    "%s reconnected; closing its previous session", session.info.institution_id
                )
                old.close("the node opened a new session")
            self._sessions[session.info.institution_id] = session
            self._changed.notify_all()

    async def unregister(self, session: Session, reason: str) -> None:
        async with self._changed:
            if self._sessions.get(session.info.institution_id) is session:
                del self._sessions[session.info.institution_id]
            session.close(reason)
            self._changed.notify_all()

    def session(self, institution_id: str) -> Session | None:
        return self._sessions.get(institution_id)

    def nodes(self) -> list[NodeInfo]:
        return sorted((s.info for s in self._sessions.values()), key=lambda i: i.institution_id)

    def last_seen(self) -> dict[str, float]:
        return {k: s.last_seen for k, s in self._sessions.items()}

    async def wait_for_nodes(self, count: int, timeout_s: float) -> list[NodeInfo]:
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: len(self._sessions) >= count), timeout_s
                )
        return self.nodes()

    async def wait_for_node(self, institution_id: str, timeout_s: float) -> bool:
        async with self._changed:
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: institution_id in self._sessions), timeout_s
                )
            except TimeoutError:
                return False
        return True

    async def submit(self, institution_id: str, task: Task) -> TaskResult:
        session = self._sessions.get(institution_id)
        if session is None or session.closed.is_set():
            raise NodeUnavailable(f"{institution_id} is not connected")
        fut: asyncio.Future[TaskResult] = asyncio.get_running_loop().create_future()
        session.pending[task.task_id] = fut
        session.outbox.put_nowait(encode_coordinator_message(task))
        try:
            return await asyncio.wait_for(fut, task.timeout_ms / 1000.0 + RESULT_GRACE_S)
        except TimeoutError as err:
            raise TaskTimedOut(
                f"{institution_id} did not answer task {task.task_id} within"
                f" {task.timeout_ms / 1000:.0f} s"
            ) from err
        finally:
            session.pending.pop(task.task_id, None)
