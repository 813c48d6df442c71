"""A loopback port for a server a test starts later, or restarts on the same address.

Binding port 0 and closing the socket hands back a port from the kernel's ephemeral range, and
the kernel may give that same port to any outgoing connection before the server binds it (the
suite opens thousands: every gRPC channel, every node). A port below the ephemeral range is
never handed out that way: only an explicit bind can take it, and this suite binds no fixed
port. Ports given out here are not given out again in the same test session.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path
from typing import Final

_LOW: Final[int] = 20_000
_DEFAULT_EPHEMERAL_LOW: Final[int] = 32_768
_given: set[int] = set()


def _ephemeral_low() -> int:
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return _DEFAULT_EPHEMERAL_LOW


def unused_port() -> int:
    """A port nothing listens on now and the kernel will not pick for a connection."""
    high = _ephemeral_low() - 1
    low = _LOW if high > _LOW + 1_000 else 1_024
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randint(low, high)
        if port in _given:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _given.add(port)
        return port
    raise RuntimeError(f"no free loopback port in {low}..{high} after 200 tries")
