"""Ports for a server a test starts in another process: below the kernel's ephemeral
range, so no outgoing connection of the run (which takes its local port from that
range) can take the port between the test's choice and the server's bind."""

from __future__ import annotations

import random
import socket
from pathlib import Path


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(100):
        port = random.randrange(10_000, max(low, 10_001))
        with socket.socket(type=kind) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")
