"""A loopback TCP proxy whose link can be cut, restored and slowed, for fault tests.

It forwards bytes unchanged (TLS passes straight through), so nodes and the coordinator see a
real network fault: connections that die mid-stream, a coordinator that cannot be reached for a
while, or a link so slow that answers miss their deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class FaultyLink:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.delay_s = 0.0  # added before each chunk is forwarded, both directions
        self.connections = 0  # accepted while up: each reconnect counts
        self._up = True
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    def cut(self) -> None:
        """Drop every open connection and refuse new ones until ``restore``."""
        self._up = False
        for w in list(self._writers):
            w.transport.abort()  # an RST, as when a cable is pulled or a firewall drops state
        self._writers.clear()

    def restore(self) -> None:
        self._up = True

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while chunk := await src.read(65536):
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                dst.write(chunk)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            dst.transport.abort()

    async def close(self) -> None:
        """Cut the link and end every connection's forwarding, even one asleep in a delay: a
        handler still running when the event loop closes is cancelled there, and asyncio's
        stream callback then leaves its sockets unclosed (a ResourceWarning pytest reports)."""
        self.cut()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._forward(client_r, client_w)
        except asyncio.CancelledError:
            # Ended by close(): the connection is aborted; ending normally lets asyncio's stream
            # callback see a finished task (it does not close the transports of a cancelled one).
            client_w.transport.abort()
        finally:
            self._handlers.discard(task)

    async def _forward(
        self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
    ) -> None:
        if not self._up:
            client_w.transport.abort()
            return
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_w.transport.abort()
            return
        self.connections += 1
        self._writers |= {client_w, server_w}
        try:
            await asyncio.gather(self._pump(client_r, server_w), self._pump(server_r, client_w))
        finally:
            self._writers -= {client_w, server_w}


@contextlib.asynccontextmanager
async def faulty_link(target_port: int) -> AsyncIterator[tuple[int, FaultyLink]]:
    link = FaultyLink(target_port)
    server = await asyncio.start_server(link.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port, link
    finally:
        await link.close()
        server.close()
        await server.wait_closed()
