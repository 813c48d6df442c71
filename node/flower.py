"""The node's side of the Flower runtime: a ClientApp that answers publiek's messages.

Flower is a transport here, as gRPC is for ``publiek-node run``: the ClientApp unwraps our wire
message from the Flower message (``protocols.flower_envelope``), hands a task to the same
``TaskHandler`` (built by ``node.service`` from the same node.toml: data, ledger, policy,
identity), and wraps the answer. Nothing about answering is specific to Flower.

Deployment Engine: ``flower-supernode ... --node-config 'publiek-config="/etc/publiek/node.toml"'``
and the app's ``clientapp = "node.flower:app"``. Flower starts a fresh ClientApp process per
message, so the handler is rebuilt from the configuration each time (the data is read again;
the ledger is on disk) and a secure round's state travels in the node's Flower ``Context``
between stages (``node.round_state``). In one process (the Simulation Engine's actors, or the
in-process harness) the handler is built once and kept.

Never raises into Flower: an error becomes a ``TaskResult`` with a code and a safe message, as
on the gRPC stream, so no stack trace (which could quote data) leaves through Flower's error
replies.
"""

from __future__ import annotations

import os

# Flower reads this when its telemetry module is first imported: before any flwr import.
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from node.config import load_config
from node.handler import TaskHandler
from node.round_state import persisted_rounds
from node.service import NodeService, open_node
from protocols.errors import INTERNAL_MESSAGE, ErrorCode, MalformedMessage
from protocols.flower_envelope import KEY_COORDINATOR, KEY_MESSAGE, NODE_CONFIG_KEY, RECORD
from protocols.logs import ensure_logging
from protocols.messages import ErrorInfo, Hello, Task, TaskResult, Welcome
from protocols.serde import (
    decode_coordinator_message,
    encode_node_message,
    task_id_of_coordinator_message,
)
from protocols.version import PROTOCOL_VERSION, software_version

log = logging.getLogger("publiek.node")

HandlerFactory = Callable[[Context], TaskHandler]

_services: dict[Path, NodeService] = {}
_services_lock = threading.Lock()


def handler_from_node_config(context: Context) -> TaskHandler:
    """The handler of the node whose node.toml the SuperNode's node config names (built once
    per process)."""
    value = context.node_config.get(NODE_CONFIG_KEY)
    if not isinstance(value, str) or not value:
        raise ValueError(
            f"the SuperNode has no {NODE_CONFIG_KEY!r} in its node config: start it with"
            f" --node-config '{NODE_CONFIG_KEY}=\"/path/to/node.toml\"'"
        )
    return handler_for_config(Path(value))


def handler_for_config(config_path: Path) -> TaskHandler:
    """The handler of the node configured by ``config_path``, built once per process."""
    path = config_path.resolve()
    with _services_lock:
        service = _services.get(path)
        if service is None:
            service = open_node(load_config(path), path)
            _services[path] = service
    return service.handler


def _error(task_id: str, code: ErrorCode, message: str) -> bytes:
    return encode_node_message(TaskResult(task_id, ErrorInfo(code, message)))


def respond(handler: TaskHandler, raw: bytes, coordinator_id: str) -> bytes:
    """The node's answer (wire bytes) to one coordinator message (wire bytes)."""
    try:
        msg = decode_coordinator_message(raw)
    except MalformedMessage as err:
        log.warning("unreadable message from the coordinator: %s", err)
        return _error(task_id_of_coordinator_message(raw), err.code, err.message)
    if isinstance(msg, Welcome):
        if msg.protocol_version != PROTOCOL_VERSION:
            log.error(
                "the coordinator %s speaks protocol v%d; this node speaks v%d: it will not send"
                " tasks until the older side is upgraded",
                msg.coordinator_id,
                msg.protocol_version,
                PROTOCOL_VERSION,
            )
        return encode_node_message(
            Hello(
                institution_id=handler.identity.institution_id,
                software_version=software_version(),
                protocol_version=PROTOCOL_VERSION,
                capabilities=handler.capabilities,
            )
        )
    if isinstance(msg, Task):
        log.info("task %s received over Flower (%s)", msg.task_id, msg.analysis_id)
        return encode_node_message(handler.handle(msg, coordinator_id or "flower"))
    return _error("", ErrorCode.PROTOCOL_VIOLATION, f"unexpected {type(msg).__name__} over Flower")


def _unwrap(message: Message) -> tuple[bytes, str] | None:
    try:
        record = message.content.config_records[RECORD]
        raw = record[KEY_MESSAGE]
        coordinator = record.get(KEY_COORDINATOR, "")
    except (KeyError, AttributeError):
        return None
    if not isinstance(raw, bytes):
        return None
    return raw, coordinator if isinstance(coordinator, str) else ""


def _answer(message: Message, context: Context, handler_for: HandlerFactory) -> Message:
    ensure_logging("publiek-node")
    unwrapped = _unwrap(message)
    if unwrapped is None:
        reply = _error("", ErrorCode.PROTOCOL_VIOLATION, "not a publiek message")
    else:
        raw, coordinator = unwrapped
        try:
            handler = handler_for(context)
            with persisted_rounds(handler, context.state):
                reply = respond(handler, raw, coordinator)
        except Exception:
            # Our configuration or our bug: the detail stays in this node's log.
            log.exception("the Flower ClientApp could not answer")
            reply = _error(
                task_id_of_coordinator_message(raw), ErrorCode.INTERNAL, INTERNAL_MESSAGE
            )
    return Message(RecordDict({RECORD: ConfigRecord({KEY_MESSAGE: reply})}), reply_to=message)


def client_app(handler_for: HandlerFactory = handler_from_node_config) -> ClientApp:
    """A ClientApp answering ``query.publiek`` messages with the handler ``handler_for`` gives
    for the node's context."""
    app = ClientApp()

    @app.query("publiek")  # type: ignore[untyped-decorator, unused-ignore]  # Any without flwr
    def publiek(message: Message, context: Context) -> Message:
        return _answer(message, context, handler_for)

    return app


# What a Flower app bundle names: clientapp = "node.flower:app".
app = client_app()
