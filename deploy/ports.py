"""Free TCP ports on the loopback interface for test and demo services."""

from __future__ import annotations

import socket

__all__ = ["free_port"]

_handed_out: set[int] = set()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free now and was not handed out before in this process.

    The port is found by binding to port 0 and closing again, so a race with another process is
    possible but rare; remembering handed-out ports prevents two services of one test session from
    getting the same one before either has bound it.
    """
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no free TCP port found on 127.0.0.1")
