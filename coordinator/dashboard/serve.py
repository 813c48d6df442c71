"""``publiek-coordinator serve``: the dashboard on a local port, until stopped.

The socket is bound before the server starts, so that the address printed is one that already
accepts connections, also with ``--port 0`` (any free port; tests use it).
"""

from __future__ import annotations

import contextlib
import ipaddress
import signal
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import uvicorn

from coordinator.dashboard.app import create_app
from coordinator.store import ReleaseStore


class ServeError(OSError):
    """The dashboard cannot listen where asked (with the reason)."""


class _Server(uvicorn.Server):
    """Stops gracefully on Ctrl-C or SIGTERM and returns: that is how a dashboard ends, not a
    failure. (uvicorn re-raises the signal after its shutdown, so the process would die of it.)
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free one)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise ServeError(f"cannot listen on {host!r}: {err.strerror}") from err
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as err:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {err.strerror or err}") from err
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def serve(store_path: Path, host: str, port: int, *, say: Callable[[str], None] = print) -> int:
    """Serve the release store at ``store_path`` until interrupted (Ctrl-C, SIGTERM)."""
    with ReleaseStore(store_path, create=False) as store:
        app = create_app(store)
        sock = listen(host, port)
        try:
            n = len(store.list())
            say(
                f"publiek dashboard: {n} release{'s' if n != 1 else ''} from {store_path}\n"
                f"  {url_of(sock)}   (Ctrl-C stops it; API: {url_of(sock)}api)"
            )
            if not _is_loopback(host):
                say(
                    f"  note: listening on {host}, reachable from other machines. The dashboard"
                    " has no login and speaks plain HTTP: publish it through a TLS proxy."
                )
            config = uvicorn.Config(
                app,
                log_level="warning",
                access_log=False,
                lifespan="off",
                server_header=False,
            )
            _Server(config).run(sockets=[sock])
        finally:
            sock.close()
    say("publiek dashboard: stopped")
    return 0
