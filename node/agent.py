"""The node's connection to the coordinator: dial out, say hello, answer tasks, reconnect.

Institutions sit behind firewalls, so the node always initiates. It keeps one long-lived gRPC
stream; when the stream breaks it reconnects with capped exponential backoff and full jitter
(so a sector's nodes do not stampede a restarted coordinator). Incompatibility (another protocol
version, an identity the coordinator does not accept) is not retried: it needs a person.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from node.handler import TaskHandler
from node.ledger import LedgerError
from node.status import NodeStatus, StatusFile
from node.tls import TlsFiles, diagnose_handshake, looks_like_handshake_failure
from protocols.errors import ErrorCode, MalformedMessage
from protocols.messages import ErrorInfo, Heartbeat, Hello, Rejection, Task, TaskResult, Welcome
from protocols.serde import (
    decode_coordinator_message,
    encode_node_message,
    task_id_of_coordinator_message,
)
from protocols.transport import CONNECT_METHOD, KEEPALIVE_OPTIONS
from protocols.version import PROTOCOL_VERSION, software_version

log = logging.getLogger("publiek.node")

# Time the coordinator has to answer Hello once the connection is up.
WELCOME_TIMEOUT_S = 15.0
_JITTER = secrets.SystemRandom()  # not privacy-relevant; `secrets` keeps `random` out of the code


class ExitCode(enum.IntEnum):
    STOPPED = 0
    INCOMPATIBLE = 3
    GAVE_UP = 4


class Incompatible(Exception):
    """The coordinator and this node cannot work together until someone changes something."""


class SessionLost(Exception):
    """The session could not be set up or broke; worth retrying."""

    welcomed = False  # set when the session got as far as a Welcome before it broke


@dataclass(frozen=True, slots=True)
class AgentSettings:
    address: str
    tls: TlsFiles | None  # None: plaintext, only for local demos
    server_name: str | None = None
    max_attempts: int | None = None  # None: retry for ever
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    status_file: Path | None = None  # for health checks (node/status.py); None: none kept


def backoff_delay(attempt: int, initial: float, cap: float) -> float:
    """Full-jitter exponential backoff (AWS architecture blog, 2015)."""
    return _JITTER.uniform(0.0, min(cap, initial * 2 ** max(0, attempt - 1)))


def _describe_rpc_error(err: grpc.aio.AioRpcError) -> str:
    details = (err.details() or "").strip()
    code = err.code()
    if code == grpc.StatusCode.UNAVAILABLE:
        reason = details.split(":")[-1].strip() if details else "unavailable"
        return f"unreachable ({reason})"
    return f"{code.name}: {details}" if details else code.name


class NodeAgent:
    def __init__(
        self,
        settings: AgentSettings,
        handler: TaskHandler,
        *,
        protocol_version: int = PROTOCOL_VERSION,
        capabilities: tuple[str, ...] | None = None,
    ) -> None:
        self.settings = settings
        self.handler = handler
        self.protocol_version = protocol_version
        self.capabilities = handler.capabilities if capabilities is None else capabilities
        self._stop = asyncio.Event()
        self.sessions_opened = 0
        self.status = StatusFile(
            settings.status_file,
            NodeStatus(
                institution_id=self.institution_id,
                coordinator=settings.address,
                state="starting",
                version=software_version(),
            ),
        )

    @property
    def institution_id(self) -> str:
        return self.handler.identity.institution_id

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> ExitCode:
        attempt = 0
        while not self._stop.is_set():
            attempt += 1
            self.status.update(state="connecting")
            try:
                welcomed = await self._session()
            except Incompatible as err:
                log.error("%s", err, extra={"event": "incompatible"})
                self.status.update(state="incompatible", last_error=str(err))
                return ExitCode.INCOMPATIBLE
            except SessionLost as err:
                welcomed = False  # as before: a broken session backs off like a failed one
                log.warning(
                    "coordinator at %s: %s",
                    self.settings.address,
                    err,
                    extra={"event": "session_lost"},
                )
                self.status.update(state="disconnected", last_error=str(err))
                if not err.welcomed:
                    await self._diagnose(str(err))
            if self._stop.is_set():
                break
            if welcomed:
                attempt = 0  # a session that worked resets the backoff
                continue
            if self.settings.max_attempts is not None and attempt >= self.settings.max_attempts:
                log.error(
                    "giving up: no session with the coordinator at %s after %d attempt(s)",
                    self.settings.address,
                    attempt,
                    extra={"event": "gave_up"},
                )
                self.status.update(state="gave_up")
                return ExitCode.GAVE_UP
            delay = backoff_delay(
                attempt, self.settings.backoff_initial_s, self.settings.backoff_max_s
            )
            log.info("retrying in %.1f s (attempt %d)", delay, attempt + 1)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=delay)
        log.info("node stopped")
        self.status.update(state="stopped")
        return ExitCode.STOPPED

    async def _diagnose(self, detail: str) -> None:
        """Say why a TLS connection fails when gRPC only says the socket closed."""
        tls = self.settings.tls
        if tls is None or not looks_like_handshake_failure(detail):
            return
        diagnosis = await asyncio.to_thread(
            diagnose_handshake, self.settings.address, tls, self.settings.server_name
        )
        if diagnosis:
            log.warning("%s", diagnosis, extra={"event": "tls_refused"})
            self.status.update(last_error=diagnosis)

    def _channel(self) -> grpc.aio.Channel:
        options: list[tuple[str, Any]] = list(KEEPALIVE_OPTIONS)
        if self.settings.server_name:
            options.append(("grpc.ssl_target_name_override", self.settings.server_name))
        if self.settings.tls is None:
            return grpc.aio.insecure_channel(self.settings.address, options=options)
        return grpc.aio.secure_channel(
            self.settings.address, self.settings.tls.channel_credentials(), options=options
        )

    async def _session(self) -> bool:
        """One session. Returns True when it got as far as a Welcome."""
        async with self._channel() as channel:
            call = channel.stream_stream(CONNECT_METHOD)()
            hello = Hello(
                institution_id=self.institution_id,
                software_version=software_version(),
                protocol_version=self.protocol_version,
                capabilities=self.capabilities,
            )
            try:
                await call.write(encode_node_message(hello))
                first = await asyncio.wait_for(call.read(), WELCOME_TIMEOUT_S)
            except grpc.aio.AioRpcError as err:
                if err.code() == grpc.StatusCode.UNIMPLEMENTED:
                    raise Incompatible(
                        f"the service at {self.settings.address} does not speak publiek protocol"
                        f" v{self.protocol_version} (UNIMPLEMENTED): is it a publiek coordinator"
                        " of a compatible release?"
                    ) from err
                raise SessionLost(_describe_rpc_error(err)) from err
            except TimeoutError as err:
                call.cancel()
                raise SessionLost(f"no answer to Hello within {WELCOME_TIMEOUT_S:.0f} s") from err
            if first is grpc.aio.EOF:
                raise SessionLost("the coordinator closed the stream before welcoming this node")
            welcome = self._check_welcome(first)
            self.sessions_opened += 1
            log.info(
                "connected to coordinator %s (publiek %s, protocol v%d) as %s",
                welcome.coordinator_id,
                welcome.software_version,
                welcome.protocol_version,
                self.institution_id,
                extra={"event": "connected", "coordinator": welcome.coordinator_id},
            )
            self.status.update(
                state="connected",
                last_contact=time.time(),
                sessions_opened=self.sessions_opened,
                last_error=None,
            )
            try:
                await self._serve(call, welcome)
            except SessionLost as err:
                err.welcomed = True
                raise
            return True

    def _check_welcome(self, raw: bytes) -> Welcome:
        try:
            msg = decode_coordinator_message(raw)
        except MalformedMessage as err:
            raise SessionLost(f"unreadable first message from the coordinator: {err}") from err
        if isinstance(msg, Rejection):
            text = f"the coordinator refused this node: {msg.error.code.value}: {msg.error.message}"
            if msg.error.code in (ErrorCode.PROTOCOL_VERSION_MISMATCH, ErrorCode.IDENTITY_MISMATCH):
                raise Incompatible(text)
            raise SessionLost(text)
        if not isinstance(msg, Welcome):
            raise SessionLost(f"expected a Welcome, got {type(msg).__name__}")
        if msg.protocol_version != self.protocol_version:
            raise Incompatible(
                f"the coordinator speaks protocol v{msg.protocol_version}; this node speaks"
                f" v{self.protocol_version}. Upgrade the older side (pip install -U publiek)."
            )
        return msg

    async def _serve(self, call: Any, welcome: Welcome) -> None:
        outbox: asyncio.Queue[bytes] = asyncio.Queue()
        tasks: asyncio.Queue[tuple[Task, float]] = asyncio.Queue()
        interval = max(0.5, welcome.heartbeat_interval_ms / 1000.0)

        async def writer() -> None:
            while True:
                await call.write(await outbox.get())

        async def heartbeats() -> None:
            seq = 0
            while True:
                await asyncio.sleep(interval)
                seq += 1
                outbox.put_nowait(encode_node_message(Heartbeat(seq)))
                # The stream is up (keep-alive ends it within 30 s of a silent peer): the
                # status file says so, which is what a health check reads.
                self.status.update(state="connected")

        async def worker() -> None:
            while True:
                task, received = await tasks.get()
                result = await self._answer(task, received, welcome.coordinator_id)
                outbox.put_nowait(encode_node_message(result))
                self.status.update(tasks_answered=self.status.status.tasks_answered + 1)

        async def reader() -> None:
            while True:
                raw = await call.read()
                if raw is grpc.aio.EOF:
                    return
                try:
                    msg = decode_coordinator_message(raw)
                except MalformedMessage as err:
                    task_id = task_id_of_coordinator_message(raw)
                    log.warning("unreadable message from the coordinator: %s", err)
                    if task_id:
                        # The institution's record of what it was asked includes what it
                        # could not even read (a hostile or broken coordinator shows there).
                        await asyncio.to_thread(
                            self._record_unreadable, task_id, welcome.coordinator_id, err
                        )
                        outbox.put_nowait(
                            encode_node_message(
                                TaskResult(task_id, ErrorInfo(err.code, err.message))
                            )
                        )
                    continue
                if isinstance(msg, Task):
                    log.info("task %s received (%s)", msg.task_id, msg.analysis_id)
                    self.status.update(last_contact=time.time())
                    tasks.put_nowait((msg, time.monotonic()))
                elif isinstance(msg, Rejection):
                    raise SessionLost(f"coordinator ended the session: {msg.error.message}")

        helpers = [asyncio.create_task(c()) for c in (writer, heartbeats, worker)]
        read = asyncio.create_task(reader())
        stop = asyncio.create_task(self._stop.wait())
        try:
            done, _ = await asyncio.wait(
                [read, stop, *helpers], return_when=asyncio.FIRST_COMPLETED
            )
            if read in done:
                exc = read.exception()
                if isinstance(exc, grpc.aio.AioRpcError):
                    raise SessionLost(f"connection lost ({exc.code().name}: {exc.details()})")
                if exc is not None:
                    raise exc
                raise SessionLost("the coordinator closed the session")
            for helper in helpers:
                if helper in done and helper.exception() is not None:
                    exc = helper.exception()
                    if isinstance(exc, grpc.aio.AioRpcError):
                        raise SessionLost(f"session lost: {_describe_rpc_error(exc)}")
                    raise exc  # type: ignore[misc]
        finally:
            for t in (read, stop, *helpers):
                t.cancel()
            call.cancel()

    def _record_unreadable(self, task_id: str, requester: str, err: MalformedMessage) -> None:
        try:
            self.handler.ledger.record_refusal(
                task_id, requester, "a task this node could not read", err.code.value, err.message
            )
        except LedgerError as problem:
            log.error("could not record the refusal of task %s: %s", task_id, problem)

    async def _answer(self, task: Task, received: float, requester: str) -> TaskResult:
        waited_ms = (time.monotonic() - received) * 1000.0
        if waited_ms > task.timeout_ms:
            return TaskResult(
                task.task_id,
                ErrorInfo(ErrorCode.DEADLINE_EXPIRED, "the task waited past its deadline"),
            )
        return await asyncio.to_thread(self.handler.handle, task, requester)
