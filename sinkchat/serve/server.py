"""Binding and running the API server (uvicorn), in the foreground or, for tests, on a thread."""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from dataclasses import dataclass, field

from sinkchat.errors import SinkchatError
from sinkchat.serve.app import ServeConfig, create_app
from sinkchat.serve.pool import ConversationPool

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, or one clear line on why not (port in use, unknown address, no permission)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise SinkchatError(f"cannot listen on {host}: {exc.strerror or exc}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        why = "the port is in use (another server runs there?)" if exc.errno == 98 else exc.strerror or str(exc)
        raise SinkchatError(f"cannot listen on {host}:{port}: {why}") from None
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def _server(pool: ConversationPool, config: ServeConfig):  # -> uvicorn.Server
    import uvicorn

    app = create_app(pool, config)
    settings = uvicorn.Config(
        app, log_level="warning", lifespan="off", timeout_graceful_shutdown=5, access_log=False, server_header=False
    )
    return uvicorn.Server(settings)


def run(pool: ConversationPool, config: ServeConfig, sock: socket.socket) -> None:
    """Serve until Ctrl-C or SIGTERM; the pool is closed afterwards (snapshots written)."""
    server = _server(pool, config)
    try:
        server.run(sockets=[sock])
    finally:
        pool.close()
        sock.close()


@dataclass
class BackgroundServer:
    """The server on a thread of this process (tests, embedding): ``url`` is ready when ``start`` returns."""

    pool: ConversationPool
    config: ServeConfig
    host: str = "127.0.0.1"
    port: int = 0
    url: str = ""
    _thread: threading.Thread | None = field(default=None, repr=False)
    _server: object = field(default=None, repr=False)

    def start(self) -> BackgroundServer:
        sock = bind(self.host, self.port)
        self.url = url_of(sock)
        server = _server(self.pool, self.config)
        self._server = server
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        while not server.started and self._thread.is_alive():
            threading.Event().wait(0.02)
        self._sock = sock
        return self

    def stop(self, *, close_pool: bool = True) -> None:
        server = self._server
        if server is not None:
            server.should_exit = True  # type: ignore[attr-defined]
        if self._thread is not None:
            self._thread.join(15)
        self._sock.close()
        if close_pool:
            self.pool.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
