"""A node's secure-aggregation rounds, carried between ClientApp processes in Flower's Context.

A secure round spans five messages, and the node keeps state between them (its round keys, its
self-mask seed, the shares its neighbours sent it, what it answered). ``publiek-node run`` keeps
it in memory. Flower's Deployment Engine starts a fresh ClientApp process for every message,
and its Simulation Engine may run a node's consecutive messages in different actors; what
Flower does keep per node is the ``Context`` (``context.state``, held by the SuperNode on the
node's own machine, or by the simulation). So around every message the node's rounds are read
from the context into the handler and written back afterwards: the context is the authority,
the handler's memory a copy.

What is stored is what the round needs and nothing of the data: keys and seeds of the round
(the same secrets ``publiek-node run`` holds in memory), the coordinator's requests and the
node's replies as wire bytes (``protocols.serde``), neighbours' shares. Finished rounds keep
their replies only (their secrets are dropped when the round ends, as in memory), and only the
last ``KEEP_FINISHED`` of them.
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

from flwr.app import ConfigRecord, RecordDict

from node.handler import TaskHandler
from node.secure import _Round
from privacy.secagg import keys, shamir
from protocols.messages import Task, TaskResult
from protocols.secagg import (
    STAGE_ORDER,
    SecAggReply,
    SecAggRequest,
    SecAggResponse,
    SecAggSetup,
    SecAggShareKeys,
    SecAggStage,
)
from protocols.serde import (
    decode_coordinator_message,
    decode_node_message,
    encode_coordinator_message,
    encode_node_message,
)

STATE_RECORD = "publiek.rounds"
STATE_KEY = "rounds"
KEEP_FINISHED = 16
# Every field of node.secure._Round this module carries; a test fails when the round gains one.
CARRIED_FIELDS = frozenset(
    {
        "round_id", "setup", "me", "neighbours", "graph", "enc", "mask", "self_seed", "started",
        "done", "replies", "peers", "channel_secrets", "holders", "received", "masked_with",
        "signed",
    }
)  # fmt: skip
_CARRIER_ID = "round-state"  # the task fields of the wire messages that carry stored stages


class RoundStateError(ValueError):
    """The round state in the Flower context cannot be read back (damaged, or another version)."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def _stage_bytes(round_id: str, stage: SecAggStage) -> str:
    task = Task(_CARRIER_ID, _CARRIER_ID, _CARRIER_ID, 1, SecAggRequest(round_id, stage))
    return _b64(encode_coordinator_message(task))


def _stage_from(text: str) -> SecAggStage:
    msg = decode_coordinator_message(_unb64(text))
    if not (isinstance(msg, Task) and isinstance(msg.spec, SecAggRequest)):
        raise RoundStateError("a stored request is not a secure-aggregation stage")
    return msg.spec.stage


def _reply_bytes(round_id: str, reply: SecAggReply) -> str:
    return _b64(encode_node_message(TaskResult(_CARRIER_ID, SecAggResponse(round_id, reply))))


def _reply_from(text: str) -> SecAggReply:
    msg = decode_node_message(_unb64(text))
    if not (isinstance(msg, TaskResult) and isinstance(msg.outcome, SecAggResponse)):
        raise RoundStateError("a stored reply is not a secure-aggregation reply")
    return msg.outcome.stage


def _share(share: shamir.Share) -> list[int]:
    return [share.x, share.y]


def encode_round(r: _Round) -> dict[str, Any]:
    age = max(0.0, time.monotonic() - r.started)
    return {
        "round_id": r.round_id,
        "setup": _stage_bytes(r.round_id, r.setup),
        "me": r.me,
        "neighbours": list(r.neighbours),
        "graph": {k: list(v) for k, v in r.graph.items()},
        "enc": _b64(r.enc.private),
        "mask": _b64(r.mask.private),
        "self_seed": _b64(r.self_seed),
        "started_at": time.time() - age,  # wall clock: a monotonic time means nothing elsewhere
        "done": r.done,
        "replies": [
            [i, _stage_bytes(r.round_id, stage), _reply_bytes(r.round_id, reply)]
            for i, (stage, reply) in sorted(r.replies.items())
        ],
        "peers": _stage_bytes(r.round_id, SecAggShareKeys(tuple(r.peers.values())))
        if r.peers
        else None,
        "channel_secrets": {k: _b64(v) for k, v in r.channel_secrets.items()},
        "holders": list(r.holders),
        "received": {k: [_share(a), _share(b)] for k, (a, b) in r.received.items()},
        "masked_with": list(r.masked_with),
        "signed": list(r.signed) if r.signed is not None else None,
    }


def decode_round(d: dict[str, Any]) -> _Round:
    setup = _stage_from(d["setup"])
    if not isinstance(setup, SecAggSetup):
        raise RoundStateError("a stored round does not start with its setup")
    peers: dict[str, Any] = {}
    if d["peers"] is not None:
        stage = _stage_from(d["peers"])
        if not isinstance(stage, SecAggShareKeys):
            raise RoundStateError("a stored round's peers are not signed keys")
        peers = {k.institution_id: k for k in stage.keys}
    replies: dict[int, tuple[SecAggStage, SecAggReply]] = {
        int(i): (_stage_from(stage), _reply_from(reply)) for i, stage, reply in d["replies"]
    }
    age = max(0.0, time.time() - float(d["started_at"]))
    return _Round(
        round_id=d["round_id"],
        setup=setup,
        me=d["me"],
        neighbours=tuple(d["neighbours"]),
        graph={k: tuple(v) for k, v in d["graph"].items()},
        enc=keys.KeyPair.from_private(_unb64(d["enc"])),
        mask=keys.KeyPair.from_private(_unb64(d["mask"])),
        self_seed=_unb64(d["self_seed"]),
        started=time.monotonic() - age,
        done=int(d["done"]),
        replies=replies,
        peers=peers,
        channel_secrets={k: _unb64(v) for k, v in d["channel_secrets"].items()},
        holders=list(d["holders"]),
        received={
            k: (shamir.Share(int(a[0]), int(a[1])), shamir.Share(int(b[0]), int(b[1])))
            for k, (a, b) in d["received"].items()
        },
        masked_with=list(d["masked_with"]),
        signed=tuple(d["signed"]) if d["signed"] is not None else None,
    )


def export_rounds(handler: TaskHandler) -> bytes:
    """The handler's secure rounds as bytes (open ones, and the last finished ones)."""
    client = handler.secagg
    if client is None:
        return b""
    with client._lock, handler._lock:
        last = len(STAGE_ORDER) - 1
        rounds = list(client._rounds.values())
        open_rounds = [r for r in rounds if r.done < last]
        finished = sorted((r for r in rounds if r.done >= last), key=lambda r: r.started)
        kept = open_rounds + finished[-KEEP_FINISHED:]
        tasks = {
            rid: [_b64(encode_coordinator_message(task)), requester]
            for rid, (task, requester) in handler._rounds.items()
            if rid in {r.round_id for r in kept}
        }
        doc = {"rounds": [encode_round(r) for r in kept], "tasks": tasks}
    return json.dumps(doc, separators=(",", ":")).encode("utf-8")


def import_rounds(handler: TaskHandler, blob: bytes) -> None:
    """Make the handler's rounds those in ``blob`` (the context is the authority)."""
    client = handler.secagg
    if client is None or not blob:
        return
    doc = json.loads(blob.decode("utf-8"))
    rounds = {r.round_id: r for r in (decode_round(d) for d in doc["rounds"])}
    tasks: dict[str, tuple[Task, str]] = {}
    for rid, (task_text, requester) in doc["tasks"].items():
        task = decode_coordinator_message(_unb64(task_text))
        if not isinstance(task, Task):
            raise RoundStateError("a stored round's task is not a task")
        tasks[rid] = (task, str(requester))
    with client._lock, handler._lock:
        client._rounds.update(rounds)
        handler._rounds.update(tasks)


@contextlib.contextmanager
def persisted_rounds(handler: TaskHandler, state: RecordDict) -> Iterator[None]:
    """Read the node's rounds from the Flower context before a message, write them back after."""
    record = state.config_records.get(STATE_RECORD)
    if record is not None:
        blob = record.get(STATE_KEY)
        if isinstance(blob, bytes):
            import_rounds(handler, blob)
    try:
        yield
    finally:
        blob = export_rounds(handler)
        if blob:
            state.config_records[STATE_RECORD] = ConfigRecord({STATE_KEY: blob})
