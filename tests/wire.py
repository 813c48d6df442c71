"""Capturing what actually crosses the wire: a loopback TCP proxy that records both directions,
and a small HTTP/2 reader that reassembles the gRPC messages from the recorded bytes.

Used with plaintext gRPC (with TLS on, the capture would only show ciphertext, which proves
nothing about what the application sends).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA_FRAME = 0x0
FLAG_PADDED = 0x8


@dataclass
class Capture:
    # One entry per TCP connection: (client -> server bytes, server -> client bytes)
    connections: list[tuple[bytearray, bytearray]] = field(default_factory=list)

    def raw(self) -> bytes:
        return b"".join(bytes(a) + bytes(b) for a, b in self.connections)


async def _pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, sink: bytearray
) -> None:
    try:
        while chunk := await reader.read(65536):
            sink += chunk
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


@contextlib.asynccontextmanager
async def recording_proxy(target_port: int) -> AsyncIterator[tuple[int, Capture]]:
    capture = Capture()
    pumps: list[asyncio.Task[None]] = []

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", target_port)
        up, down = bytearray(), bytearray()
        capture.connections.append((up, down))
        pumps.append(asyncio.create_task(_pump(client_r, server_w, up)))
        pumps.append(asyncio.create_task(_pump(server_r, client_w, down)))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port, capture
    finally:
        server.close()
        for p in pumps:
            p.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)


def data_by_stream(stream: bytes, client_side: bool) -> dict[int, bytes]:
    """Concatenated DATA frame payloads per HTTP/2 stream id."""
    if client_side:
        if not stream.startswith(PREFACE):
            raise ValueError("client side does not start with the HTTP/2 preface")
        stream = stream[len(PREFACE) :]
    out: dict[int, bytearray] = defaultdict(bytearray)
    pos = 0
    while pos + 9 <= len(stream):
        length = int.from_bytes(stream[pos : pos + 3], "big")
        ftype, flags = stream[pos + 3], stream[pos + 4]
        stream_id = struct.unpack(">I", stream[pos + 5 : pos + 9])[0] & 0x7FFFFFFF
        payload = stream[pos + 9 : pos + 9 + length]
        if len(payload) < length:
            break  # the capture ended mid-frame
        if ftype == DATA_FRAME:
            if flags & FLAG_PADDED:
                pad = payload[0]
                payload = payload[1 : len(payload) - pad]
            out[stream_id] += payload
        pos += 9 + length
    return {k: bytes(v) for k, v in out.items()}


def grpc_messages(data: bytes) -> list[bytes]:
    """Split a gRPC body into its length-prefixed messages (compression must be off)."""
    messages = []
    pos = 0
    while pos + 5 <= len(data):
        compressed = data[pos]
        length = int.from_bytes(data[pos + 1 : pos + 5], "big")
        if compressed:
            raise ValueError("compressed gRPC message: the capture cannot read it")
        messages.append(data[pos + 5 : pos + 5 + length])
        pos += 5 + length
    return messages
