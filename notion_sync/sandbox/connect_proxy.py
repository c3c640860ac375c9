"""An HTTPS proxy (HTTP CONNECT) that sends Salesforce's login hosts to the sandbox.

Password login has no instance URL to point at the sandbox: simple-salesforce always posts to
``https://<SALESFORCE_DOMAIN>.salesforce.com/services/Soap/u/<version>``. With ``HTTPS_PROXY`` set to
this proxy, that connection is tunnelled to the sandbox, whose certificate also names
``login.salesforce.com``, ``test.salesforce.com`` and ``*.my.salesforce.com``; the client still
verifies it against ``SALESFORCE_CA_BUNDLE``. Nothing else is proxied: other hosts get 403.
"""

from __future__ import annotations

import select
import socket
import socketserver
import threading
from collections.abc import Callable

TUNNELLED_SUFFIX = ".salesforce.com"
_BUFFER = 1 << 16


class ConnectProxy:
    """Tunnel ``CONNECT <host>:443`` for ``*.salesforce.com`` (and the sandbox itself) to ``target``."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.tunnels = 0
        self._server = _Server(("127.0.0.1", 0), _Handler, self._route)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> ConnectProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _route(self, authority: str) -> tuple[str, int] | None:
        host, _, port = authority.rpartition(":")
        sandbox = f"{self.target[0]}:{self.target[1]}"
        if (host.endswith(TUNNELLED_SUFFIX) and port == "443") or authority == sandbox:
            self.tunnels += 1
            return self.target
        return None


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(
        self, address: tuple[str, int], handler: type, route: Callable[[str], tuple[str, int] | None]
    ) -> None:
        super().__init__(address, handler)
        self.route = route


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        request_line = self.rfile.readline(8192).decode("latin-1").split()
        while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):
            pass  # headers: none matter here
        target = self.server.route(request_line[1]) if len(request_line) == 3 else None
        if request_line[:1] != ["CONNECT"] or target is None:
            self.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        with socket.create_connection(target, timeout=30) as upstream:
            self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            self.wfile.flush()
            _relay(self.connection, upstream)


def _relay(client: socket.socket, upstream: socket.socket) -> None:
    """Copy bytes both ways until either side closes."""
    sockets = [client, upstream]
    while True:
        readable, _, _ = select.select(sockets, [], [], 60)
        if not readable:
            return
        for source in readable:
            data = source.recv(_BUFFER)
            if not data:
                return
            (upstream if source is client else client).sendall(data)
