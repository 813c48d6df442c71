"""The coordinator's side of the Flower runtime: a ``Transport`` over a Flower ``Grid``, and the
ServerApp that runs a plan over it.

The round logic (``coordinator.runner``, ``rounds``, ``secure``) is the same that runs over
gRPC: only how a task reaches a node differs. Over Flower each exchange is one message of type
``query.publiek`` carrying our wire bytes (``protocols.flower_envelope``):

- nodes: Flower knows nodes by number. The transport sends each new Flower node a ``Welcome``;
  the ClientApp answers with the node's ``Hello`` (institution id, versions, capabilities), as
  on the gRPC stream. A node of another protocol version is refused with a log line.
- tasks: ``submit`` pushes the task to the node's Flower id and waits (at most the task's
  timeout) for its reply, which the transport's poller pulls from the Grid.

Identity: over Flower the coordinator does not see the node's TLS certificate (Flower's
SuperLink authenticates SuperNodes with its own keys), so the institution id in the Hello is
what the node says it is. Secure aggregation still binds every node's round keys to its
certificate from the sector CA, checked by every other node (and by this coordinator with
``ca`` set), so a node cannot take another institution's place in a secure sum.

Grid calls are blocking (the Deployment Engine's grid talks to the SuperLink); they run on one
worker thread of their own, one at a time, so the event loop never waits on them.

ServerApp: ``serverapp = "coordinator.flower:app"`` in a Flower app bundle, configured through
the run config (``plan``, ``out``, ``state``, ``store``, ``expect-nodes``, ``wait-s``,
``coordinator-id``, ``ca``, ``crl``; see ``FlowerRunConfig``), or built with ``server_app(config)``.
"""

from __future__ import annotations

import os

# Flower reads this when its telemetry module is first imported: before any flwr import.
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.common.constant import ErrorCode as FlowerErrorCode
from flwr.serverapp import Grid, ServerApp

from coordinator.publish import publish
from coordinator.runner import Progress, RunAborted, RunSettings, new_run_id, run_plan
from coordinator.state import NodeSnapshot, RunStateStore
from coordinator.store import ReleaseStore
from coordinator.transport import NodeInfo, NodeUnavailable, TaskTimedOut
from protocols.errors import ErrorCode, MalformedMessage
from protocols.flower_envelope import KEY_COORDINATOR, KEY_MESSAGE, MESSAGE_TYPE, RECORD
from protocols.identity import PeerVerifier
from protocols.logs import ensure_logging
from protocols.messages import ErrorInfo, Hello, Task, TaskResult, Welcome
from protocols.plan import Plan, load_plan
from protocols.serde import decode_node_message, encode_coordinator_message
from protocols.version import PROTOCOL_VERSION, software_version

log = logging.getLogger("publiek.coordinator")

T = TypeVar("T")

# How long a Flower node has to answer the Welcome before it counts as absent for now.
HELLO_TIMEOUT_S = 30.0
# Extra time over a task's own deadline for Flower to deliver its reply (polling, process
# start-up per message in the Deployment Engine).
RESULT_GRACE_S = 10.0
# Flower errors that mean the node is not there (as opposed to its ClientApp failing).
_ABSENT = {
    FlowerErrorCode.NODE_UNAVAILABLE,
    FlowerErrorCode.MESSAGE_UNAVAILABLE,
    FlowerErrorCode.REPLY_MESSAGE_UNAVAILABLE,
}


@dataclass(frozen=True, slots=True)
class _Known:
    flower_id: int
    info: NodeInfo


class FlowerTransport:
    """``coordinator.transport.Transport`` over a Flower ``Grid``. Use as an async context
    manager (or call ``aclose``): it owns a worker thread and a poller task."""

    def __init__(
        self,
        grid: Grid,
        coordinator_id: str,
        *,
        poll_interval_s: float = 0.05,
        rediscover_s: float = 1.0,
        hello_timeout_s: float = HELLO_TIMEOUT_S,
    ) -> None:
        self.grid = grid
        self.coordinator_id = coordinator_id
        self.poll_interval_s = poll_interval_s
        self.rediscover_s = rediscover_s
        self.hello_timeout_s = hello_timeout_s
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="publiek-flower-grid")
        self._known: dict[str, _Known] = {}
        self._refused: set[int] = set()  # Flower nodes we will not talk to (protocol version)
        self._pending: dict[str, asyncio.Future[Message]] = {}
        self._last_seen: dict[str, float] = {}
        self._poller: asyncio.Task[None] | None = None
        self._discovering = asyncio.Lock()

    async def __aenter__(self) -> FlowerTransport:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        for fut in self._pending.values():
            if not fut.done():
                fut.cancel()
        self._executor.shutdown(wait=True, cancel_futures=True)

    # --- the grid, off the event loop ---------------------------------------------------------

    async def _grid(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def _exchange(self, flower_id: int, body: bytes, ttl_s: float, group: str) -> Message:
        content = RecordDict(
            {RECORD: ConfigRecord({KEY_MESSAGE: body, KEY_COORDINATOR: self.coordinator_id})}
        )
        message = Message(content, flower_id, MESSAGE_TYPE, ttl=ttl_s, group_id=group)
        try:
            ids = await self._grid(lambda: list(self.grid.push_messages([message])))
        except Exception as err:  # the grid refused it: treat the node as gone
            raise NodeUnavailable(f"Flower could not deliver to node {flower_id}: {err}") from err
        if not ids:
            raise NodeUnavailable(f"Flower accepted no message for node {flower_id}")
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[ids[0]] = fut
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll())
        try:
            return await asyncio.wait_for(fut, ttl_s)
        finally:
            self._pending.pop(ids[0], None)

    def _pull(self, message_ids: list[str]) -> list[Message]:
        return list(self.grid.pull_messages(message_ids))

    async def _poll(self) -> None:
        while self._pending:
            wanted = list(self._pending)
            try:
                replies = await self._grid(functools.partial(self._pull, wanted))
            except Exception:
                log.exception("pulling replies from Flower failed; trying again")
                replies = []
            for reply in replies:
                fut = self._pending.get(reply.metadata.reply_to_message_id)
                if fut is not None and not fut.done():
                    fut.set_result(reply)
            if not replies:
                await asyncio.sleep(self.poll_interval_s)

    # --- which nodes are there ----------------------------------------------------------------

    def nodes(self) -> list[NodeInfo]:
        return sorted((k.info for k in self._known.values()), key=lambda i: i.institution_id)

    def last_seen(self) -> dict[str, float]:
        return dict(self._last_seen)

    async def _hello(self, flower_id: int) -> tuple[int, Hello | str]:
        welcome = Welcome(
            session_id=uuid.uuid4().hex,
            coordinator_id=self.coordinator_id,
            software_version=software_version(),
            protocol_version=PROTOCOL_VERSION,
            heartbeat_interval_ms=0,  # Flower keeps its own liveness
        )
        try:
            reply = await self._exchange(
                flower_id, encode_coordinator_message(welcome), self.hello_timeout_s, "hello"
            )
        except (TimeoutError, NodeUnavailable) as err:
            return flower_id, f"no Hello ({type(err).__name__})"
        if reply.has_error():
            return flower_id, f"Flower error {reply.error.code}: {reply.error.reason}"
        try:
            msg = decode_node_message(_body(reply))
        except MalformedMessage as err:
            return flower_id, f"unreadable Hello: {err.message}"
        if not isinstance(msg, Hello):
            return flower_id, f"answered the Welcome with a {type(msg).__name__}"
        return flower_id, msg

    async def discover(self) -> None:
        """Greet Flower nodes not known yet and register those that answer with a Hello."""
        async with self._discovering:
            ids = await self._grid(lambda: list(self.grid.get_node_ids()))
            taken = {k.flower_id for k in self._known.values()}
            new = [i for i in ids if i not in taken and i not in self._refused]
            if not new:
                return
            for flower_id, outcome in await asyncio.gather(*(self._hello(i) for i in new)):
                if isinstance(outcome, str):
                    log.info("Flower node %d is not available yet: %s", flower_id, outcome)
                    continue
                self._register(flower_id, outcome)

    def _register(self, flower_id: int, hello: Hello) -> None:
        who = hello.institution_id
        if hello.protocol_version != PROTOCOL_VERSION:
            self._refused.add(flower_id)
            log.warning(
                "rejected %s: PROTOCOL_VERSION_MISMATCH: this coordinator speaks protocol v%d;"
                " node %s speaks v%d (publiek %s). Upgrade the older side.",
                who,
                PROTOCOL_VERSION,
                who,
                hello.protocol_version,
                hello.software_version,
                extra={"event": "node_rejected", "node": who, "flower_node": flower_id},
            )
            return
        old = self._known.get(who)
        if old is not None and old.flower_id != flower_id:
            log.info("%s is now Flower node %d (was %d)", who, flower_id, old.flower_id)
        now = time.time()
        self._known[who] = _Known(
            flower_id,
            NodeInfo(
                institution_id=who,
                software_version=hello.software_version,
                protocol_version=hello.protocol_version,
                capabilities=hello.capabilities,
                session_id=f"flower-{flower_id}",
                connected_at=now,
            ),
        )
        self._last_seen[who] = now
        log.info(
            "node %s connected over Flower (node %d, publiek %s)",
            who,
            flower_id,
            hello.software_version,
            extra={"event": "node_connected", "node": who, "flower_node": flower_id},
        )

    async def wait_for_nodes(self, count: int, timeout_s: float) -> list[NodeInfo]:
        deadline = time.monotonic() + timeout_s
        while True:
            await self.discover()
            remaining = deadline - time.monotonic()
            if len(self._known) >= count or remaining <= 0:
                return self.nodes()
            await asyncio.sleep(min(self.rediscover_s, remaining))

    async def wait_for_node(self, institution_id: str, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while True:
            if institution_id in self._known:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await asyncio.sleep(min(self.rediscover_s, remaining))
            await self.discover()

    # --- tasks --------------------------------------------------------------------------------

    async def submit(self, institution_id: str, task: Task) -> TaskResult:
        known = self._known.get(institution_id)
        if known is None:
            raise NodeUnavailable(f"{institution_id} is not known to Flower's grid")
        ttl = task.timeout_ms / 1000.0 + RESULT_GRACE_S
        try:
            reply = await self._exchange(
                known.flower_id, encode_coordinator_message(task), ttl, task.task_id
            )
        except TimeoutError as err:
            raise TaskTimedOut(
                f"{institution_id} did not answer task {task.task_id} within"
                f" {task.timeout_ms / 1000:.0f} s"
            ) from err
        except NodeUnavailable:
            self._forget(institution_id, known)
            raise
        self._last_seen[institution_id] = time.time()
        if reply.has_error():
            code = reply.error.code
            if code in _ABSENT:
                self._forget(institution_id, known)
                raise NodeUnavailable(f"{institution_id}: Flower error {code}")
            # The ClientApp itself failed (ours never raises; Flower's runtime around it did).
            return TaskResult(
                task.task_id,
                ErrorInfo(ErrorCode.INTERNAL, f"the node's Flower ClientApp failed (error {code})"),
            )
        try:
            result = decode_node_message(_body(reply))
        except MalformedMessage as err:
            return TaskResult(task.task_id, ErrorInfo(ErrorCode.PROTOCOL_VIOLATION, err.message))
        if not isinstance(result, TaskResult) or result.task_id != task.task_id:
            return TaskResult(
                task.task_id,
                ErrorInfo(ErrorCode.PROTOCOL_VIOLATION, "the reply does not answer this task"),
            )
        return result

    def _forget(self, institution_id: str, known: _Known) -> None:
        if self._known.get(institution_id) is known:
            del self._known[institution_id]
            log.info("node %s is gone from Flower's grid", institution_id)


def _body(reply: Message) -> bytes:
    try:
        body = reply.content.config_records[RECORD][KEY_MESSAGE]
    except (KeyError, AttributeError) as err:
        raise MalformedMessage("the Flower reply holds no publiek message") from err
    if not isinstance(body, bytes):
        raise MalformedMessage("the Flower reply's publiek message is not bytes")
    return body


# --- the ServerApp ----------------------------------------------------------------------------


class FlowerConfigError(ValueError):
    pass


# As ``publiek-coordinator run``: in the folder the ServerApp runs in, unless configured.
DEFAULT_STATE = Path("publiek-state.sqlite")
DEFAULT_STORE = Path("publiek-releases.sqlite")


@dataclass(frozen=True, slots=True)
class FlowerRunConfig:
    """What the ServerApp runs: the run config of a Flower app (``[tool.flwr.app.config]``)."""

    plan: Path
    out: Path
    state: Path = DEFAULT_STATE
    store: Path = DEFAULT_STORE
    expect_nodes: int = 0  # 0: the plan's min_nodes
    wait_s: float = 300.0
    coordinator_id: str = "publiek-coordinator"
    ca: Path | None = None  # the sector CA: check nodes' signed round keys here too
    crl: Path | None = None
    poll_s: float = 0.05

    @classmethod
    def from_run_config(cls, config: Mapping[str, Any]) -> FlowerRunConfig:
        problems = []

        def path(key: str, required: bool = False) -> Path | None:
            value = config.get(key)
            if value in (None, ""):
                if required:
                    problems.append(f"{key} is missing")
                return None
            if not isinstance(value, str):
                problems.append(f"{key} must be a path (a string)")
                return None
            return Path(value)

        def number(key: str, default: float) -> float:
            value = config.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                problems.append(f"{key} must be a number of at least 0")
                return default
            return float(value)

        plan, out = path("plan", True), path("out", True)
        coordinator_id = config.get("coordinator-id", "publiek-coordinator")
        if not isinstance(coordinator_id, str) or not coordinator_id:
            problems.append("coordinator-id must be a non-empty string")
        made = cls(
            plan=plan or Path(),
            out=out or Path(),
            state=path("state") or DEFAULT_STATE,
            store=path("store") or DEFAULT_STORE,
            expect_nodes=int(number("expect-nodes", 0)),
            wait_s=number("wait-s", 300.0),
            coordinator_id=str(coordinator_id),
            ca=path("ca"),
            crl=path("crl"),
            poll_s=number("poll-s", 0.05),
        )
        if made.crl is not None and made.ca is None:
            problems.append("crl needs ca (the revocation list is checked against the CA)")
        if problems:
            raise FlowerConfigError("the Flower run config: " + "; ".join(problems))
        return made


def _snapshots(transport: FlowerTransport, connected: bool) -> list[NodeSnapshot]:
    seen = transport.last_seen()
    return [
        NodeSnapshot(
            institution_id=n.institution_id,
            software_version=n.software_version,
            protocol_version=n.protocol_version,
            capabilities=tuple(n.capabilities),
            connected=connected,
            connected_at=n.connected_at,
            last_seen=seen.get(n.institution_id, n.connected_at),
        )
        for n in transport.nodes()
    ]


async def run_on_grid(
    grid: Grid,
    plan: Plan,
    settings: RunSettings,
    progress: Progress,
    *,
    poll_s: float = 0.05,
    state: RunStateStore | None = None,
) -> dict[str, Any]:
    """Run the plan over Flower's grid with the same round logic as over gRPC."""
    async with FlowerTransport(grid, settings.coordinator_id, poll_interval_s=poll_s) as transport:
        try:
            return await run_plan(plan, transport, settings, progress)
        finally:
            if state is not None:
                state.record_nodes(_snapshots(transport, connected=False))


def run_flower_plan(grid: Grid, config: FlowerRunConfig) -> int:
    """The ServerApp's work: run the plan and publish its release. 0 released, 1 aborted."""

    def progress(message: str) -> None:
        log.info("%s", message, extra={"event": "progress"})

    plan = load_plan(config.plan)
    if (config.out / "release.json").exists():
        raise FlowerConfigError(f"{config.out / 'release.json'} exists; pick another out")
    verifier = PeerVerifier.from_file(config.ca, config.crl) if config.ca is not None else None
    with RunStateStore(config.state) as state, ReleaseStore(config.store) as store:
        run_id = state.unfinished_run(plan.sha256) or new_run_id(plan)
        settings = RunSettings(
            coordinator_id=config.coordinator_id,
            wait_for_nodes=config.expect_nodes or plan.min_nodes,
            wait_timeout_s=config.wait_s,
            run_id=run_id,
            state=state,
            verifier=verifier,
        )
        progress(f"running plan {plan.id!r} over Flower ({len(plan.analyses)} analysis(es))")
        try:
            doc = asyncio.run(
                run_on_grid(grid, plan, settings, progress, poll_s=config.poll_s, state=state)
            )
        except RunAborted as err:
            state.finish_run(run_id, "aborted", None)
            progress(f"run aborted: {err}")
            return 1
        return publish(
            doc, run_id=run_id, store=store, state=state, out=config.out, progress=progress
        )


def server_app(config: FlowerRunConfig | None = None) -> ServerApp:
    """A ServerApp running one plan: ``config``, or the Flower run config when None."""
    app = ServerApp()

    @app.main()  # type: ignore[untyped-decorator, unused-ignore]  # Any without flwr
    def main(grid: Grid, context: Context) -> None:
        ensure_logging("publiek-coordinator")
        chosen = config or FlowerRunConfig.from_run_config(context.run_config)
        code = run_flower_plan(grid, chosen)
        if code != 0:
            raise RuntimeError(f"the publiek plan ended without a release (exit {code})")

    return app


# What a Flower app bundle names: serverapp = "coordinator.flower:app".
app = server_app()
