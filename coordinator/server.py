"""The coordinator's gRPC server: the Federation service, the standard health service, TLS.

Messages are handled as raw bytes and decoded by ``protocols.serde``, so a truncated or hostile
message becomes a clear protocol error for that session instead of an opaque transport failure.

Identity: TLS (grpc) refuses any client certificate not issued by the sector CA during the
handshake; grpc gives the application no hook there, so such a refusal is not in this log (the
node says it in its own). Past the handshake, a node's Hello must name the institution its
certificate names (common name and node URI), and the certificate must not be on the sector
CA's revocation list; connected nodes whose certificate is revoked later are disconnected when
the list changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from coordinator.registry import NodeRegistry, Session
from coordinator.transport import NodeInfo
from protocols.certificates import CertificateError, CrlFile, node_identity_problem, serial_text
from protocols.errors import ErrorCode, MalformedMessage
from protocols.messages import (
    ErrorInfo,
    Heartbeat,
    Hello,
    Rejection,
    TaskResult,
    Welcome,
)
from protocols.serde import decode_node_message, encode_coordinator_message
from protocols.transport import CONNECT_METHOD, SERVER_OPTIONS, SERVICE_NAME
from protocols.version import PROTOCOL_VERSION, software_version

log = logging.getLogger("publiek.coordinator")

HELLO_TIMEOUT_S = 10.0
HEARTBEAT_INTERVAL_MS = 10_000
# How often connected nodes are checked against the revocation list (it is re-read on change).
REVOCATION_SWEEP_S = 5.0

# After the server has stopped, how long to let grpc's own per-RPC tasks finish (see stop()).
RPC_DRAIN_S = 5.0
# The coroutines grpc aio (1.85) runs each RPC in: _schedule_rpc_coro awaits _handle_exceptions,
# which runs the servicer. Matched by name; if a grpc release renames them, stop() no longer
# waits and tests/test_deployment_e2e.py (no unstructured line in the coordinator's log) fails.
_GRPC_RPC_COROUTINES = frozenset({"_schedule_rpc_coro", "_handle_exceptions"})

# (direction, institution id or peer, raw message) -> None; for audits and wire inspection.
WireTap = Callable[[str, str, bytes], None]


class TlsConfigError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class ServerTls:
    ca: Path
    cert: Path
    key: Path
    crl: Path | None = None  # the sector CA's revocation list, honoured when given

    def revocations(self) -> CrlFile | None:
        if self.crl is None:
            return None
        try:
            return CrlFile.open(self.crl, self.ca.read_bytes())
        except (OSError, CertificateError) as err:
            raise TlsConfigError(f"--crl {self.crl}: {err}") from err

    def credentials(self) -> grpc.ServerCredentials:
        paths = [self.ca, self.cert, self.key, *([self.crl] if self.crl else [])]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise TlsConfigError(f"TLS file(s) not found: {', '.join(missing)}")
        # require_client_auth: every node must present a certificate from the sector CA.
        return grpc.ssl_server_credentials(
            [(self.key.read_bytes(), self.cert.read_bytes())],
            root_certificates=self.ca.read_bytes(),
            require_client_auth=True,
        )


def _grpc_error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"[:200]


def _peer_identity(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    auth = context.auth_context()
    names = auth.get("x509_common_name") or []
    return names[0].decode("utf-8", "replace") if names else None


def _peer_certificate(context: grpc.aio.ServicerContext[Any, Any]) -> x509.Certificate | None:
    pems = context.auth_context().get("x509_pem_cert") or []
    if not pems:
        return None
    try:
        return x509.load_pem_x509_certificate(pems[0])
    except ValueError:
        return None


class FederationService:
    def __init__(
        self,
        registry: NodeRegistry,
        coordinator_id: str,
        *,
        require_identity: bool,
        protocol_version: int = PROTOCOL_VERSION,
        wire_tap: WireTap | None = None,
        revocations: CrlFile | None = None,
    ) -> None:
        self.registry = registry
        self.coordinator_id = coordinator_id
        self.require_identity = require_identity
        self.protocol_version = protocol_version
        self.wire_tap = wire_tap
        self.revocations = revocations

    def handler(self) -> grpc.GenericRpcHandler:
        service, method = CONNECT_METHOD.strip("/").split("/")
        # No (de)serialisers: we see the bytes and decode them ourselves.
        return grpc.method_handlers_generic_handler(
            service, {method: grpc.stream_stream_rpc_method_handler(self.connect)}
        )

    async def _write(self, context: Any, who: str, data: bytes) -> None:
        if self.wire_tap:
            self.wire_tap("to_node", who, data)
        await context.write(data)

    async def _reject(self, context: Any, who: str, code: ErrorCode, message: str) -> None:
        log.warning(
            "rejected %s: %s: %s",
            who,
            code.value,
            message,
            extra={
                "event": "node_rejected",
                "node": who,
                "code": code.value,
                "peer": context.peer(),
            },
        )
        await self._write(
            context, who, encode_coordinator_message(Rejection(ErrorInfo(code, message)))
        )
        status = (
            grpc.StatusCode.PERMISSION_DENIED
            if code is ErrorCode.IDENTITY_MISMATCH
            else grpc.StatusCode.FAILED_PRECONDITION
        )
        await context.abort(status, f"{code.value}: {message}")

    async def connect(self, request_iterator: Any, context: Any) -> None:
        """One node's session. Nothing but grpc's own abort escapes: an exception that leaves
        a servicer is printed by grpc aio with ``traceback.print_exc()`` straight to stderr
        (when its own cancellation watcher has not yet seen the peer go, which under load it
        often has not), outside every log format; here each one becomes a log record."""
        peer = context.peer()
        try:
            await self._session(context, peer)
        except grpc.aio.AbortError:
            raise  # context.abort() ends the RPC by raising this; grpc expects it back
        except asyncio.CancelledError:
            # grpc cancels the servicer when the server stops with the session still open (the
            # plan is done while a node lingers) or when it saw the peer go; the session has
            # been closed and unregistered on the way out. Let out, grpc prints the cancellation
            # as "Exception not handled" with a traceback.
            log.info(
                "session with %s cancelled (the coordinator is stopping or the node went)",
                peer,
                extra={"event": "session_cancelled", "peer": peer},
            )
        except grpc.aio.InternalError as err:
            # A read, write or status grpc could not carry out: the node's end has gone (killed,
            # cancelled, connection reset) while we were using the stream. Nothing to answer.
            log.info(
                "stream from %s ended under us: %s",
                peer,
                _grpc_error_text(err),
                extra={"event": "stream_lost", "peer": peer},
            )
        except Exception:  # our bug: say it in the log, end the RPC with a fixed message
            log.exception(
                "internal error serving %s", peer, extra={"event": "internal_error", "peer": peer}
            )
            with contextlib.suppress(grpc.aio.InternalError):
                await context.abort(grpc.StatusCode.INTERNAL, "internal error in the coordinator")

    async def _session(self, context: Any, peer: str) -> None:
        try:
            first = await asyncio.wait_for(context.read(), HELLO_TIMEOUT_S)
        except TimeoutError:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "no Hello within 10 s")
            return
        if first is grpc.aio.EOF:
            return
        if self.wire_tap:
            self.wire_tap("from_node", peer, first)
        try:
            hello = decode_node_message(first)
        except MalformedMessage as err:
            await self._reject(context, peer, ErrorCode.PROTOCOL_VIOLATION, err.message)
            return
        if not isinstance(hello, Hello):
            await self._reject(
                context, peer, ErrorCode.PROTOCOL_VIOLATION, "the first message must be a Hello"
            )
            return
        who = hello.institution_id
        if hello.protocol_version != self.protocol_version:
            await self._reject(
                context,
                who,
                ErrorCode.PROTOCOL_VERSION_MISMATCH,
                f"this coordinator speaks protocol v{self.protocol_version}; node {who} speaks"
                f" v{hello.protocol_version} (publiek {hello.software_version}). Upgrade the older"
                " side.",
            )
            return
        serial: int | None = None
        if self.require_identity:
            cert_id = _peer_identity(context)
            if cert_id != hello.institution_id:
                await self._reject(
                    context,
                    who,
                    ErrorCode.IDENTITY_MISMATCH,
                    f"the Hello says {who!r} but the TLS certificate is for {cert_id!r}",
                )
                return
            problem = self._certificate_problem(context, who)
            if problem is not None:
                await self._reject(context, who, ErrorCode.IDENTITY_MISMATCH, problem)
                return
            cert = _peer_certificate(context)
            serial = cert.serial_number if cert is not None else None

        session = Session(
            NodeInfo(
                institution_id=who,
                software_version=hello.software_version,
                protocol_version=hello.protocol_version,
                capabilities=hello.capabilities,
                session_id=uuid.uuid4().hex,
                connected_at=time.time(),
            ),
            cert_serial=serial,
        )
        await self._write(
            context,
            who,
            encode_coordinator_message(
                Welcome(
                    session_id=session.info.session_id,
                    coordinator_id=self.coordinator_id,
                    software_version=software_version(),
                    protocol_version=self.protocol_version,
                    heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
                )
            ),
        )
        await self.registry.register(session)
        log.info(
            "node %s connected (publiek %s)",
            who,
            hello.software_version,
            extra={
                "event": "node_connected",
                "node": who,
                "version": hello.software_version,
                "peer": context.peer(),
                **({"cert_serial": serial_text(serial)} if serial is not None else {}),
            },
        )
        reason = "the node closed the session"
        writer = asyncio.create_task(self._drain(context, session))
        try:
            reason = await self._read_loop(context, session, writer)
        finally:
            writer.cancel()
            try:
                await writer
            except asyncio.CancelledError:
                pass
            except grpc.aio.InternalError as err:  # the write failed: the node's end has gone
                reason = f"could not write to the node: {_grpc_error_text(err)}"
            await _to_the_end(self._unregister(session, who, reason))

    async def _unregister(self, session: Session, who: str, reason: str) -> None:
        await self.registry.unregister(session, reason)
        log.info(
            "node %s disconnected: %s",
            who,
            reason,
            extra={"event": "node_disconnected", "node": who, "reason": reason},
        )

    def _certificate_problem(self, context: Any, who: str) -> str | None:
        """Why the session's certificate may not act as node ``who``, or None."""
        cert = _peer_certificate(context)
        if cert is None:
            return "no client certificate could be read from the TLS session"
        problem = node_identity_problem(cert, who)
        if problem is not None:
            return problem
        if self.revocations is not None:
            revoked = self.revocations.revocation(cert.serial_number)
            if revoked is not None:
                return (
                    f"the {revoked.describe()} by the sector CA; the institution must enrol"
                    " again (publiek-node init, then have the new request signed)"
                )
        return None

    async def sweep_revoked(self) -> list[str]:
        """Disconnect sessions whose certificate is revoked now; returns who was disconnected."""
        if self.revocations is None:
            return []
        gone = []
        for info in self.registry.nodes():
            session = self.registry.session(info.institution_id)
            if session is None or session.cert_serial is None:
                continue
            revoked = await asyncio.to_thread(self.revocations.revocation, session.cert_serial)
            if revoked is None:
                continue
            reason = f"its {revoked.describe()}"
            log.warning(
                "disconnecting %s: %s",
                info.institution_id,
                reason,
                extra={
                    "event": "node_revoked",
                    "node": info.institution_id,
                    "cert_serial": serial_text(session.cert_serial),
                },
            )
            session.close(reason)
            gone.append(info.institution_id)
        return gone

    async def _drain(self, context: Any, session: Session) -> None:
        who = session.info.institution_id
        while True:
            await self._write(context, who, await session.outbox.get())

    async def _read_loop(self, context: Any, session: Session, writer: asyncio.Task[None]) -> str:
        who = session.info.institution_id
        closed = asyncio.create_task(session.closed.wait())
        try:
            while True:
                read = asyncio.create_task(context.read())
                done, _ = await asyncio.wait(
                    {read, closed, writer}, return_when=asyncio.FIRST_COMPLETED
                )
                if read not in done:
                    read.cancel()
                    if writer in done:  # its error is read (and said) by the caller
                        return "the stream broke while writing to the node"
                    return session.close_reason or "replaced by a newer session"
                try:
                    raw = read.result()
                except (
                    grpc.aio.AioRpcError,
                    grpc.aio.InternalError,
                    asyncio.CancelledError,
                    ConnectionError,
                ) as err:
                    return f"stream error: {err!r}"[:200]
                if raw is grpc.aio.EOF:
                    return "the node closed the session"
                if self.wire_tap:
                    self.wire_tap("from_node", who, raw)
                session.last_seen = time.time()
                try:
                    msg = decode_node_message(raw)
                except MalformedMessage as err:
                    log.warning("unreadable message from %s: %s", who, err)
                    continue
                if isinstance(msg, TaskResult):
                    if not session.deliver(msg):
                        log.info("late or unexpected result for task %s from %s", msg.task_id, who)
                elif isinstance(msg, Heartbeat):
                    pass
                else:
                    log.warning("unexpected %s from %s mid-session", type(msg).__name__, who)
        finally:
            closed.cancel()


class CoordinatorServer:
    """A running gRPC server with the Federation and health services."""

    def __init__(
        self,
        registry: NodeRegistry,
        coordinator_id: str,
        *,
        tls: ServerTls | None,
        protocol_version: int = PROTOCOL_VERSION,
        wire_tap: WireTap | None = None,
    ) -> None:
        self.registry = registry
        self.tls = tls
        self.service = FederationService(
            registry,
            coordinator_id,
            require_identity=tls is not None,
            protocol_version=protocol_version,
            wire_tap=wire_tap,
            revocations=tls.revocations() if tls is not None else None,
        )
        self.health = health.aio.HealthServicer()
        self._server: grpc.aio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.port: int | None = None

    async def start(self, address: str) -> int:
        server = grpc.aio.server(options=list(SERVER_OPTIONS))
        server.add_generic_rpc_handlers((self.service.handler(),))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        if self.tls is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, self.tls.credentials())
        if port == 0:
            raise OSError(f"cannot listen on {address}")
        await server.start()
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        await self.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        self._server = server
        self.port = int(port)
        if self.service.revocations is not None:
            self._sweeper = asyncio.create_task(self._sweep_forever())
        return self.port

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(REVOCATION_SWEEP_S)
            try:
                await self.service.sweep_revoked()
            except Exception:  # a sweep must never take the server down; say it and go on
                log.exception("checking connected nodes against the revocation list failed")

    async def stop(self, grace_s: float = 2.0) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        if self._server is None:
            return
        await self.health.enter_graceful_shutdown()
        await self._server.stop(grace_s)
        self._server = None
        await _rpc_tasks_finished(RPC_DRAIN_S)


async def _to_the_end(cleanup: Coroutine[Any, Any, None]) -> None:
    """Run a session's clean-up to its end even if its task is cancelled again meanwhile.

    grpc cancels an RPC's task when the node goes, and once more when the server stops with the
    call still open. A second cancel that lands while the clean-up waits (for the registry's
    lock, say) would abandon it: the session would stay registered and its "disconnected"
    record would never be written (seen under CPU load: three of three sessions left behind,
    ``tests/test_server_stream_errors.py``). The clean-up runs shielded; a cancel that arrives
    meanwhile is passed on once it is done.
    """
    step = asyncio.ensure_future(cleanup)
    cancelled = False
    while True:
        try:
            await asyncio.shield(step)
            break
        except asyncio.CancelledError:
            if step.cancelled():
                raise
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError


async def _rpc_tasks_finished(timeout_s: float) -> None:
    """Wait until grpc's tasks for the RPCs it cancelled at stop have run to their end.

    ``Server.stop`` returns once the C core is done with every call, but the Python task of a
    call it cancelled (a node still connected when the grace ran out) may still be winding down
    our servicer. If the program then leaves its event loop, asyncio.run cancels that task a
    second time, at grpc's ``await rpc_task``, and grpc prints the CancelledError with
    ``traceback.print_exc()`` straight to stderr, outside the log format.
    """
    me = asyncio.current_task()
    rpcs = [
        t
        for t in asyncio.all_tasks()
        if t is not me
        and not t.done()
        and getattr(t.get_coro(), "__name__", "") in _GRPC_RPC_COROUTINES
    ]
    if rpcs:
        _, late = await asyncio.wait(rpcs, timeout=timeout_s)
        if late:
            log.warning(
                "%d RPC task(s) still running %.0f s after the server stopped",
                len(late),
                timeout_s,
                extra={"event": "rpc_tasks_late", "count": len(late)},
            )
