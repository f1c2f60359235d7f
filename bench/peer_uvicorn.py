"""Start the HealthChain peer's uvicorn with TCP_NODELAY on every connection, as `uvicorn`.

Run with the peer's own Python (`<peer venv>/bin/python bench/peer_uvicorn.py <uvicorn args>`).
uvicorn 0.54 with `--workers N` (N > 1) binds the listening socket itself with `proto` 0, and
asyncio turns on TCP_NODELAY only for sockets whose `proto` is IPPROTO_TCP: every keep-alive
request after the first then waits ~40 ms for the client's delayed ACK (Nagle), so the peer's
workers sit idle (uvicorn issue #3149, open). With one worker asyncio binds the socket from
getaddrinfo (proto 6) and the bug does not show. Here the bound socket is rebuilt with its
protocol read back from the kernel, so the peer is measured at its own speed with any worker
count. Nothing else of uvicorn is changed.
"""

from __future__ import annotations

import socket

import uvicorn
from uvicorn.config import Config

_bind_socket = Config.bind_socket


def _bind_socket_tcp(self: Config) -> socket.socket:
    sock = _bind_socket(self)
    if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.proto == 0:
        sock = socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, fileno=sock.detach())
    return sock


if __name__ == "__main__":  # spawned workers import this file again as __mp_main__
    Config.bind_socket = _bind_socket_tcp  # type: ignore[method-assign]
    uvicorn.main()
