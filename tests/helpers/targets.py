"""Targets of active health checks on loopback: an HTTP server answering a chosen status,
a TCP listener (or one that accepts and never speaks), a port free on several addresses.
Every 127.0.0.0/8 address is loopback on Linux, so endpoints can have distinct addresses
on one host."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class HttpTarget:
    """An HTTP server answering every GET with `status`; stop() closes its port, start()
    opens the same port again."""

    def __init__(self, host: str, port: int = 0, status: int = 200) -> None:
        self.host, self.port, self.status = host, port, status
        self.paths: list[str] = []
        self.httpd: ThreadingHTTPServer | None = None
        self.start()

    def start(self) -> None:
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                target.paths.append(self.path)
                self.send_response(target.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            address_family = socket.AF_INET6 if ":" in target.host else socket.AF_INET
            daemon_threads = True

        self.httpd = Server((self.host, self.port), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                         daemon=True).start()

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None


class TcpTarget:
    """A TCP listener that accepts and closes; stop() closes its port, start() reopens it.
    With hold=True it accepts and keeps every connection open without a word, so an HTTP
    check waits for its timeout."""

    def __init__(self, host: str, port: int = 0, *, hold: bool = False) -> None:
        self.host, self.port, self.hold = host, port, hold
        self.sock: socket.socket | None = None
        self.held: list[socket.socket] = []
        self.start()

    def start(self) -> None:
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(128)
        sock.settimeout(0.02)
        self.port = sock.getsockname()[1]
        self.sock = sock
        threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        while self.sock is sock:
            try:
                conn, _ = sock.accept()
            except (TimeoutError, OSError):
                continue
            if self.hold:
                self.held.append(conn)
            else:
                conn.close()

    def stop(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            sock.close()
        for conn in self.held:
            conn.close()
        self.held.clear()


def shared_port(hosts: list[str]) -> int:
    """A TCP port free on every one of these addresses (a per-service check has one port)."""
    while True:
        with socket.socket() as probe:
            probe.bind((hosts[0], 0))
            port = probe.getsockname()[1]
        try:
            for host in hosts:
                with socket.socket() as s:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind((host, port))
        except OSError:
            continue
        return port
