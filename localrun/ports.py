"""Free loopback ports for the local servers (SeaweedFS, TorchServe and its side listeners)."""

from __future__ import annotations

import socket
from collections.abc import Collection


def free_port(exclude: Collection[int] = ()) -> int:
    """A free TCP port, not in `exclude`, whose gRPC companion (port + 10000) is free too, as SeaweedFS needs."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port + 10000 < 65536 and not {port, port + 10000} & set(exclude):
            with socket.socket() as grpc:
                try:
                    grpc.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port pair found")


def free_ports(count: int) -> list[int]:
    """`count` different free TCP ports on loopback (each held until all are chosen, so none repeats)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
