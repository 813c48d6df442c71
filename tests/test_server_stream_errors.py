"""A node's stream that breaks under the coordinator ends that session with a log record.

gRPC aio prints an exception that escapes a servicer with ``traceback.print_exc()`` straight to
stderr, outside every log format, whenever its own watcher has not yet seen the peer go (under
CPU load, often). The coordinator's Connect servicer therefore lets nothing escape but grpc's
own abort. Here a write that gRPC refuses (a message over the 16 MiB send limit) breaks a live
session on a real server on loopback: the session must end with a ``node_disconnected`` record
that says why, grpc must have nothing to report, and the server must keep serving other nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from coordinator.registry import NodeRegistry
from coordinator.server import CoordinatorServer
from protocols.messages import Hello, Welcome
from protocols.serde import decode_coordinator_message, encode_node_message
from protocols.transport import CONNECT_METHOD, MAX_MESSAGE_BYTES
from protocols.version import PROTOCOL_VERSION


@contextlib.contextmanager
def kept_records() -> Iterator[list[logging.LogRecord]]:
    """Every log record (any logger, DEBUG and up) while the block runs."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keep = Keep(level=logging.DEBUG)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(keep)
    root.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        root.removeHandler(keep)
        root.setLevel(old_level)


async def _hello(channel: grpc.aio.Channel, institution: str) -> Any:
    call = channel.stream_stream(CONNECT_METHOD)()
    await call.write(encode_node_message(Hello(institution, "test", PROTOCOL_VERSION, ())))
    assert isinstance(decode_coordinator_message(await call.read()), Welcome)
    return call


async def _until(predicate: Any, timeout_s: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def _scenario(records: list[logging.LogRecord]) -> tuple[str, bool]:
    registry = NodeRegistry()
    server = CoordinatorServer(registry, "test-coordinator", tls=None)
    port = await server.start("127.0.0.1:0")
    # The node may receive more than the coordinator may send: the write fails on our side.
    options = [("grpc.max_receive_message_length", 4 * MAX_MESSAGE_BYTES)]
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options)
    try:
        broken = await _hello(channel, "inst-broken")
        steady = await _hello(channel, "inst-steady")
        await _until(lambda: len(registry.nodes()) == 2)
        session = registry.session("inst-broken")
        assert session is not None
        session.outbox.put_nowait(b"\x00" * (MAX_MESSAGE_BYTES + 1))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await broken.read()
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        await _until(lambda: any(r.__dict__.get("event") == "node_disconnected" for r in records))
        # The other session is untouched and still works both ways.
        other = registry.session("inst-steady")
        assert other is not None
        other.outbox.put_nowait(b"")
        await steady.read()
        reason = next(r for r in records if r.__dict__.get("event") == "node_disconnected")
        still_there = [n.institution_id for n in registry.nodes()] == ["inst-steady"]
        steady.cancel()
        # Stop only once the server has seen the node go: a session still open at stop gets
        # grpc's own "Aborting method ... due to server stop" warning, which is not what this
        # test looks for (under CPU load the cancel can take longer than the stop's grace).
        await _until(lambda: not registry.nodes())
        return str(reason.__dict__["reason"]), still_there
    finally:
        await channel.close()
        await server.stop(0.5)


def test_a_failed_write_ends_the_session_with_a_record_and_nothing_escapes(
    capfd: pytest.CaptureFixture[str],
) -> None:
    with kept_records() as records:
        reason, still_there = asyncio.run(_scenario(records))

    assert reason.startswith("could not write to the node: ExecuteBatchError"), reason
    assert still_there
    # grpc had nothing to say: no servicer exception reached it (it would log it and print
    # the traceback itself).
    from_grpc = [r for r in records if r.name.startswith("grpc") and r.levelno >= logging.WARNING]
    assert from_grpc == [], [r.getMessage() for r in from_grpc]
    assert "Traceback" not in capfd.readouterr().err


async def _stop_while_sessions_wind_down() -> tuple[list[str], float]:
    registry = NodeRegistry()
    server = CoordinatorServer(registry, "test-coordinator", tls=None)
    port = await server.start("127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    calls = [await _hello(channel, f"inst-{i}") for i in range(3)]
    await _until(lambda: len(registry.nodes()) == 3)

    # Something else holds the registry while the server stops, so each cancelled session
    # takes a while to unregister: the state in which grpc's RPC tasks outlive Server.stop.
    async def busy() -> None:
        async with registry._changed:
            await asyncio.sleep(1.0)

    holder = asyncio.create_task(busy())
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await server.stop(0.1)
    took = loop.time() - started
    left = [
        t.get_name()
        for t in asyncio.all_tasks()
        if not t.done()
        and getattr(t.get_coro(), "__name__", "").startswith(("_schedule", "_handle"))
    ]
    await holder
    stale = [n.institution_id for n in registry.nodes()]
    for call in calls:
        call.cancel()
    await channel.close()
    assert stale == [], "sessions left registered after the server stopped"
    return left, took


def test_stop_returns_only_when_grpcs_rpc_tasks_have_finished() -> None:
    """Otherwise asyncio.run cancels them once more on the way out and grpc prints that
    CancelledError, unstructured (the flaky failure of test_deployment_e2e)."""
    left, took = asyncio.run(_stop_while_sessions_wind_down())
    assert left == []
    assert took >= 0.8  # it did wait for the sessions (the holder keeps them 1 s)


def test_a_sessions_clean_up_survives_a_second_cancel() -> None:
    # grpc cancels an RPC's task when the node goes and again at server stop. Before
    # _to_the_end, a second cancel landing while the clean-up waited for the registry's lock
    # abandoned it: under CPU load 1 stop in 40 returned at once with every session still
    # registered (the CI failure of the test above). Deterministic here: two cancels while the
    # clean-up waits; it must finish, and the task must still end cancelled.
    from coordinator.server import _to_the_end

    async def scenario() -> tuple[list[str], bool]:
        lock = asyncio.Lock()
        done: list[str] = []

        async def clean_up() -> None:
            async with lock:
                done.append("unregistered")

        async def session() -> None:
            try:
                await asyncio.sleep(10)
            finally:
                await _to_the_end(clean_up())

        await lock.acquire()  # something else holds the registry
        task = asyncio.create_task(session())
        await asyncio.sleep(0)
        task.cancel()  # the node went
        await asyncio.sleep(0)
        task.cancel()  # the server stops
        await asyncio.sleep(0)
        assert done == []
        lock.release()
        try:
            await task
        except asyncio.CancelledError:
            return done, True
        return done, False

    done, cancelled = asyncio.run(scenario())
    assert done == ["unregistered"]
    assert cancelled
