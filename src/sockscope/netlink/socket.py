"""The one netlink socket wrapper: open, send a request, collect the dump or ACK.

Everything protocol-specific is built and parsed by the sans-IO modules; this
is the only place that does netlink I/O.
"""

from __future__ import annotations

import itertools
import socket
from collections.abc import Iterator
from typing import Self

from .codec import (
    NLM_F_ACK,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    DumpCollector,
    Message,
    build_message,
)

NETLINK_ROUTE = 0
NETLINK_SOCK_DIAG = 4
NETLINK_NETFILTER = 12

_RECV_SIZE = 1 << 16  # a dump skb is at most 32 KiB on current kernels
_RCVBUF = 1 << 20
SO_RCVBUFFORCE = 33


class NetlinkSocket:
    """A bound netlink socket of one protocol; usable as a context manager.

    The socket lives in the network namespace of the thread that created it,
    which is how inventory reaches other namespaces (see platform.linux.in_netns).
    """

    def __init__(self, protocol: int, groups: int = 0, rcvbuf: int = _RCVBUF) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, protocol)
        try:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
            except OSError:  # not CAP_NET_ADMIN: the plain option, capped by rmem_max
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.bind((0, groups))
        except BaseException:
            self.sock.close()
            raise
        self._seq = itertools.count(1)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def fileno(self) -> int:
        return self.sock.fileno()

    def next_seq(self) -> int:
        return next(self._seq)

    def dump(self, msg_type: int, payload: bytes, flags: int = NLM_F_DUMP) -> Iterator[Message]:
        """Send a dump request and yield each reply message as it arrives.

        Messages are views into a receive buffer that stays alive while
        referenced, so callers may keep them.
        """
        seq = self.next_seq()
        self.sock.send(build_message(msg_type, NLM_F_REQUEST | flags, seq, payload))
        collector = DumpCollector(seq)
        recv = self.sock.recv
        while not collector.done:
            yield from collector.feed(recv(_RECV_SIZE))

    def dump_payloads(self, msg_type: int, payload: bytes,
                      flags: int = NLM_F_DUMP) -> Iterator[list[memoryview]]:
        """Like :meth:`dump`, one list of payloads per receive: the fast path."""
        seq = self.next_seq()
        self.sock.send(build_message(msg_type, NLM_F_REQUEST | flags, seq, payload))
        collector = DumpCollector(seq)
        recv = self.sock.recv
        while not collector.done:
            yield collector.feed_payloads(recv(_RECV_SIZE))

    def request(self, msg_type: int, payload: bytes, flags: int = 0) -> list[Message]:
        """Send a request that ends in an ACK (or error) and return any replies."""
        return list(self.dump(msg_type, payload, flags | NLM_F_ACK))

    def recv_messages(self) -> bytes:
        """One raw receive, for multicast listeners that parse on their own."""
        return self.sock.recv(_RECV_SIZE)
