"""Transport-level constants both ends must agree on: the method path and keep-alive settings."""

from __future__ import annotations

from typing import Final

from protocols.v1 import federation_pb2 as _pb

_SERVICE = _pb.DESCRIPTOR.services_by_name["Federation"]
# Derived from the .proto, so a renamed service or method cannot drift from the code.
CONNECT_METHOD: Final[str] = f"/{_SERVICE.full_name}/{_SERVICE.methods_by_name['Connect'].name}"
SERVICE_NAME: Final[str] = _SERVICE.full_name

MAX_MESSAGE_BYTES: Final[int] = 16 * 1024 * 1024

# A node pings every 20 s when idle and gives the coordinator 10 s to answer, so a dead peer
# behind a NAT that silently dropped the connection is noticed within half a minute.
KEEPALIVE_OPTIONS: Final[tuple[tuple[str, int], ...]] = (
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
)

# The coordinator accepts pings as often as every 10 s and pings idle nodes itself.
SERVER_OPTIONS: Final[tuple[tuple[str, int], ...]] = (
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
)
