"""A Flower ``Grid`` whose nodes are ClientApps in this process: Flower's runtime without a
SuperLink, SuperNodes or Ray, for tests and small simulations.

What it keeps of Flower's runtime, so that what works here works there:

- the interface: the ServerApp talks to ``flwr.serverapp.Grid`` (push, pull, node ids), the
  ClientApp is called as Flower calls it, with the node's ``Context``, and the Context (its
  ``state``) is kept per node between messages, as the SuperNode and the simulation keep it;
- the wire: every message is deflated into Flower's content-addressed objects and inflated on
  the other side, both ways, as its transports do, with message ids set where Flower sets them;
- asynchrony: ``push_messages`` returns at once; ClientApps run on worker threads, one message
  at a time per node, different nodes at once; ``pull_messages`` hands out finished replies;
- failure: an exception in a ClientApp becomes an error reply (``CLIENT_APP_RAISED_EXCEPTION``);
- the Deployment Engine's process per message, on request (``before_message``): a hook run
  before each delivery that can drop whatever the node kept in memory, so only its Context
  carries state from one message to the next.

``Message(...)`` reads Flower's process-wide task identity; ``run_server_app`` sets it to the
ServerApp's for the run (as Flower's own simulation does) and restores it after.
"""

from __future__ import annotations

import os

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

import contextlib
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from uuid import uuid4

from flwr.app import Context, Error, Message, RecordDict
from flwr.app.user_config import UserConfig
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.proto.node_pb2 import NodeInfo
from flwr.serverapp import Grid, ServerApp
from flwr.supercore.inflatable.inflatable_object import (
    get_all_nested_objects,
    no_object_id_recompute,
)
from flwr.supercore.inflatable.inflatable_utils import inflate_object_from_contents
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity


def _wire_copy(message: Message, message_id: str) -> Message:
    """The message as the other side gets it: deflated to Flower's objects and inflated."""
    with no_object_id_recompute():
        objects = get_all_nested_objects(message)
        contents = {object_id: obj.deflate() for object_id, obj in objects.items()}
        root = message.object_id
    copy = inflate_object_from_contents(root, contents)
    if not isinstance(copy, Message):
        raise TypeError(f"expected a Message on the wire, got {type(copy).__name__}")
    copy.metadata.__dict__["_message_id"] = message_id
    return copy


def node_ids(count: int) -> list[int]:
    """Distinct 63-bit node ids, like Flower's (never the SuperLink's own id)."""
    ids: list[int] = []
    while len(ids) < count:
        candidate = secrets.randbits(63)
        if candidate > SUPERLINK_NODE_ID and candidate not in ids:
            ids.append(candidate)
    return ids


class InProcessGrid(Grid):  # type: ignore[misc, unused-ignore]  # Grid is Any without flwr
    def __init__(
        self,
        app: ClientApp,
        contexts: Mapping[int, Context],
        *,
        workers: int = 4,
        before_message: Callable[[int], None] | None = None,
    ) -> None:
        self._app = app
        self._contexts = dict(contexts)
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="flower-node")
        self._node_locks = {node_id: threading.Lock() for node_id in self._contexts}
        self._replies: dict[str, Message] = {}
        self._lock = threading.Lock()
        self._before = before_message
        self._run: Run | None = None
        self.delivered = 0

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        if self._run is None:
            raise RuntimeError("the grid has no run; call set_run first")
        return self._run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self._contexts)

    def get_nodes(self) -> Iterable[NodeInfo]:
        return [NodeInfo(node_id=node_id) for node_id in self._contexts]

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in messages:
            meta = message.metadata
            if meta.reply_to_message_id or meta.ttl <= 0 or meta.dst_node_id not in self._contexts:
                raise ValueError(f"invalid instruction for this grid: {meta}")
            message_id = str(uuid4())
            meta.__dict__["_message_id"] = message_id  # as the SuperLink does
            received = _wire_copy(message, message_id)
            self._pool.submit(self._deliver, received, message_id)
            ids.append(message_id)
        return ids

    def _deliver(self, received: Message, message_id: str) -> None:
        node_id = received.metadata.dst_node_id
        with self._node_locks[node_id]:
            if self._before is not None:
                self._before(node_id)
            context = self._contexts[node_id]
            try:
                reply = self._app(received, context)
            except Exception as ex:  # as Flower's runtime reports a ClientApp that raised
                reason = f"{type(ex)}:<'{ex}'>"
                reply = Message(
                    Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason),
                    reply_to=received,
                )
            copy = _wire_copy(reply, reply.object_id)
            with self._lock:
                self._replies[message_id] = copy
                self.delivered += 1

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        with self._lock:
            return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        wanted = set(self.push_messages(messages))
        end = None if timeout is None else time.monotonic() + timeout
        out: list[Message] = []
        while wanted and (end is None or time.monotonic() < end):
            got = list(self.pull_messages(wanted))
            out += got
            wanted -= {m.metadata.reply_to_message_id for m in got}
            if wanted:
                time.sleep(0.005)
        return out


def contexts_for(node_configs: list[UserConfig], run_id: int) -> dict[int, Context]:
    """One Context per node (its node config as given), keyed by fresh Flower node ids."""
    return {
        node_id: Context(
            run_id=run_id, node_id=node_id, node_config=dict(cfg), state=RecordDict(), run_config={}
        )
        for node_id, cfg in zip(node_ids(len(node_configs)), node_configs, strict=True)
    }


@contextlib.contextmanager
def server_identity(run_id: int) -> Iterator[None]:
    """Flower's process-wide task identity, set to the ServerApp's and restored afterwards."""
    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id = 1
    TaskIdentity.run_id = run_id
    TaskIdentity.node_id = SUPERLINK_NODE_ID
    try:
        yield
    finally:
        TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


def run_server_app(
    server_app: ServerApp,
    client_app: ClientApp,
    node_configs: list[UserConfig],
    *,
    run_config: UserConfig | None = None,
    workers: int = 4,
    before_message: Callable[[Context], None] | None = None,
) -> InProcessGrid:
    """Run a ServerApp against ClientApps in this process; returns the grid (with the nodes'
    contexts) once the ServerApp returns."""
    run_id = secrets.randbits(62) + 1
    contexts = contexts_for(node_configs, run_id)
    hook = None
    if before_message is not None:
        callback = before_message

        def hook(node_id: int) -> None:
            callback(contexts[node_id])

    grid = InProcessGrid(client_app, contexts, workers=workers, before_message=hook)
    grid.set_run(Run.create_empty(run_id=run_id))
    server_context = Context(
        run_id=run_id,
        node_id=SUPERLINK_NODE_ID,
        node_config={},
        state=RecordDict(),
        run_config=dict(run_config or {}),
    )
    try:
        with server_identity(run_id):
            server_app(grid, server_context)
    finally:
        grid.close()
    return grid
