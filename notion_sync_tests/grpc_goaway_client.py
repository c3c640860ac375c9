"""Run as a script: a gRPC client whose server shuts down while it is connected, as Dagster's
processes' code server does when `notion-sync demo` stops, then a gRPC error (a port that cannot be
bound). The server is a raw HTTP/2 socket, so the GOAWAY (INTERNAL_ERROR, "Server shutdown") always
arrives while the connection is open; a PING after it tells when the client has read it."""

from __future__ import annotations

import socket
import struct
import tempfile
import threading
from collections.abc import Iterator
from concurrent import futures
from contextlib import suppress

import grpc

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS, PING, GOAWAY, ACK = 4, 6, 7, 1
INTERNAL_ERROR = 2


def frame(kind: int, flags: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", 0) + payload


def frames(conn: socket.socket) -> Iterator[tuple[int, int]]:
    """(type, flags) of the frames the client sends."""
    buffer = b""
    while chunk := conn.recv(4096):
        buffer += chunk
        buffer = buffer.removeprefix(PREFACE)
        while len(buffer) >= 9 and len(buffer) >= 9 + int.from_bytes(buffer[:3], "big"):
            yield buffer[3], buffer[4]
            buffer = buffer[9 + int.from_bytes(buffer[:3], "big") :]


def serve_goaway(listener: socket.socket, read: threading.Event) -> None:
    conn, _ = listener.accept()
    with conn:
        goaway = frame(GOAWAY, 0, struct.pack(">II", 0, INTERNAL_ERROR) + b"Server shutdown")
        conn.sendall(frame(SETTINGS, 0) + frame(SETTINGS, ACK) + goaway + frame(PING, 0, bytes(8)))
        for kind, flags in frames(conn):
            if (kind, flags) == (PING, ACK):  # frames are handled in order: the GOAWAY was read
                read.set()


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        run(f"{folder}/grpc.sock")


def run(path: str) -> None:
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen()
    read = threading.Event()
    threading.Thread(target=serve_goaway, args=(listener, read), daemon=True).start()
    with grpc.insecure_channel(f"unix:{path}") as channel:
        grpc.channel_ready_future(channel).result(timeout=60)
        assert read.wait(timeout=60), "the client never acknowledged the PING after the GOAWAY"
    with suppress(RuntimeError):  # gRPC logs the error (E… add_port.cc) and raises
        grpc.server(futures.ThreadPoolExecutor(1)).add_insecure_port("unix:/nonexistent-dir/grpc.sock")


if __name__ == "__main__":
    main()
