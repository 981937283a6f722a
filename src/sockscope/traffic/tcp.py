"""TCP byte counters from the kernel: tcp_info through sock_diag, per socket cookie.

Two netlink sockets per network namespace: one dumps every TCP socket with
INET_DIAG_INFO (bytes sent, retransmitted, received; retransmitted segments),
the other has joined the sock_diag destroy groups, whose message for each TCP
socket the kernel frees carries the same tcp_info, final. So a connection that
opens and closes between two samples is still counted, to the byte, and one
that closes mid-interval is counted up to its end.

``parse_reading`` is sans-IO (a payload in, a ``TcpReading`` out) and reads only
the header fields and the few tcp_info counters accounting needs.
"""

from __future__ import annotations

import errno
import socket
import struct
from dataclasses import dataclass
from typing import Final

from sockscope.errors import PermissionNeeded, SockscopeError
from sockscope.inventory.model import ALL_STATES_MASK, STATE_NAMES, STATE_NUMBERS
from sockscope.netlink import sockdiag
from sockscope.netlink.codec import NLA_TYPE_MASK, NetlinkError, iter_messages
from sockscope.netlink.socket import NETLINK_SOCK_DIAG, NetlinkSocket
from sockscope.platform import linux

# inet_diag_msg: family state (timer retrans) sport dport src dst (if) cookie[2]
# (expires rqueue wqueue) uid inode
_HEAD: Final = struct.Struct("=BBxx2s2s16s16s4xII12xII")
_LISTEN: Final = 10
# Every state but CLOSE (sockets never connected, or reset and not yet closed by
# their process: no bytes to come), TIME_WAIT and the request sockets (no tcp_info).
_DUMP_STATES: Final = ALL_STATES_MASK & ~sum(
    1 << STATE_NUMBERS[name] for name in ("UNCONN", "TIME_WAIT", "SYN_RECV", "NEW_SYN_RECV"))
_STATES: Final = STATE_NAMES
_FAMILY_NAMES: Final = {socket.AF_INET: "inet", socket.AF_INET6: "inet6"}
_ADDRESS_SIZE: Final = {socket.AF_INET: 4, socket.AF_INET6: 16}
# sknetlink_groups: SKNLGRP_INET_TCP_DESTROY, SKNLGRP_INET6_TCP_DESTROY
_TCP_DESTROY_GROUPS: Final = (1, 3)
_SOL_NETLINK: Final = 270
_NETLINK_ADD_MEMBERSHIP: Final = 1


def _counter(name: str) -> tuple[int, struct.Struct]:
    offset, fmt = sockdiag.tcp_info_field(name)
    return offset, struct.Struct("=" + fmt)


_BYTES_ACKED: Final = _counter("bytes_acked")
_BYTES_RECEIVED: Final = _counter("bytes_received")
_TOTAL_RETRANS: Final = _counter("total_retrans")
_BYTES_SENT: Final = _counter("bytes_sent")
_BYTES_RETRANS: Final = _counter("bytes_retrans")
# bytes_sent and bytes_retrans came with Linux 4.19; before, bytes_acked is the best.
_HAS_SENT: Final = _BYTES_RETRANS[0] + _BYTES_RETRANS[1].size


def _one_struct(*counters: tuple[int, struct.Struct]) -> struct.Struct:
    """One struct reading these counters (in offset order) from the start of tcp_info."""
    fmt, at = "=", 0
    for offset, field in sorted(counters, key=lambda c: c[0]):
        fmt += f"{offset - at}x{field.format[-1]}"
        at = offset + field.size
    return struct.Struct(fmt)


# total_retrans, bytes_received, bytes_sent, bytes_retrans, in one unpack.
_ALL_COUNTERS: Final = _one_struct(_TOTAL_RETRANS, _BYTES_RECEIVED, _BYTES_SENT, _BYTES_RETRANS)
_ALL_COUNTERS_END: Final = _ALL_COUNTERS.size
_NLA: Final = struct.Struct("=HH")


@dataclass(slots=True)
class TcpReading:
    """One TCP socket's counters at one moment.

    ``tx``: payload bytes sent once (bytes_sent - bytes_retrans; bytes_acked on
    kernels before 4.19); ``rx``: bytes_received; ``retrans``: total_retrans
    (segments). ``inode`` is 0 for a socket no file holds any more.
    """

    cookie: int
    family: str
    state: str
    local: str
    local_port: int
    remote: str
    remote_port: int
    uid: int
    inode: int
    tx: int
    rx: int
    retrans: int


def parse_reading(payload: memoryview | bytes, names: dict[bytes, str] | None = None) -> TcpReading | None:
    """A reading from one inet_diag_msg; None for a socket without tcp_info
    (time-wait and request sockets) unless it listens."""
    view = memoryview(payload)
    if len(view) < _HEAD.size:
        return None
    (family, state, sport, dport, src, dst, cookie_lo, cookie_hi, uid,
     inode) = _HEAD.unpack_from(view)
    size = _ADDRESS_SIZE.get(family)
    if size is None:
        return None
    # INET_DIAG_INFO among the attributes (a plain loop: this runs for every socket).
    end = len(view)
    at = _HEAD.size
    info_at = info_len = -1
    while at + 4 <= end:
        length, atype = _NLA.unpack_from(view, at)
        if length < 4 or at + length > end:
            break
        if atype & NLA_TYPE_MASK == sockdiag.INET_DIAG_INFO:
            info_at, info_len = at + 4, length - 4
            break
        at += (length + 3) & ~3
    tx = rx = retrans = 0
    if info_len >= _ALL_COUNTERS_END:  # Linux 4.19 and later: every counter, one unpack
        retrans, rx, sent, sent_again = _ALL_COUNTERS.unpack_from(view, info_at)
        tx = sent - sent_again
    elif info_len >= 0:
        info = view[info_at:info_at + info_len]
        rx = _read(info, info_len, _BYTES_RECEIVED)
        retrans = _read(info, info_len, _TOTAL_RETRANS)
        if info_len >= _HAS_SENT:
            tx = _read(info, info_len, _BYTES_SENT) - _read(info, info_len, _BYTES_RETRANS)
        else:
            tx = _read(info, info_len, _BYTES_ACKED)
    elif state != _LISTEN:
        return None
    cache = {} if names is None else names
    src_text = cache.get(src)
    if src_text is None:
        src_text = cache[src] = socket.inet_ntop(family, src[:size])
    dst_text = cache.get(dst)
    if dst_text is None:
        dst_text = cache[dst] = socket.inet_ntop(family, dst[:size])
    return TcpReading(
        cookie_lo | (cookie_hi << 32), _FAMILY_NAMES[family], _STATES.get(state, str(state)),
        src_text, int.from_bytes(sport, "big"), dst_text, int.from_bytes(dport, "big"),
        uid, inode, tx, rx, retrans,
    )


def _read(info: memoryview, have: int, counter: tuple[int, struct.Struct]) -> int:
    offset, fmt = counter
    if offset + fmt.size > have:
        return 0
    return int(fmt.unpack_from(info, offset)[0])


class NamespaceTcp:
    """The TCP counters of one network namespace: a dump socket and a socket
    that hears the kernel's destroy messages, both opened inside it."""

    def __init__(self, ref: linux.NetnsRef) -> None:
        self.ref = ref
        self.lost_closes = False  # the kernel's queue of destroy messages overflowed
        with linux.in_netns(ref):
            self._closes = NetlinkSocket(NETLINK_SOCK_DIAG, rcvbuf=1 << 22)
            try:
                for group in _TCP_DESTROY_GROUPS:
                    self._closes.sock.setsockopt(_SOL_NETLINK, _NETLINK_ADD_MEMBERSHIP, group)
                self._closes.sock.setblocking(False)
                self._dumper = NetlinkSocket(NETLINK_SOCK_DIAG)
            except OSError as exc:
                self._closes.close()
                if exc.errno in (errno.EPERM, errno.EACCES):
                    raise PermissionNeeded(
                        "traffic accounting needs root (CAP_NET_ADMIN to hear the kernel's "
                        "socket-close messages)") from None
                raise SockscopeError(
                    f"this kernel does not announce socket closes ({exc.strerror})") from None

    def close(self) -> None:
        self._closes.close()
        self._dumper.close()

    def dump(self) -> list[TcpReading]:
        """Every TCP socket of the namespace with tcp_info, plus its listeners."""
        out: list[TcpReading] = []
        names: dict[bytes, str] = {}
        for family in (socket.AF_INET, socket.AF_INET6):
            req = sockdiag.inet_request(family, "tcp", _DUMP_STATES, sockdiag.EXT_INFO)
            try:
                for batch in self._dumper.dump_payloads(sockdiag.SOCK_DIAG_BY_FAMILY, req):
                    for payload in batch:
                        reading = parse_reading(payload, names)
                        if reading is not None:
                            out.append(reading)
            except NetlinkError as exc:
                raise SockscopeError(f"sock_diag dump of tcp sockets failed: {exc.strerror}") from None
        return out

    def udp_sockets(self) -> list[tuple[int, bytes, int, bytes, int, int]]:
        """(family, local address, port, remote address, port, inode) of every UDP
        socket of the namespace (for the capture source's matching)."""
        out: list[tuple[int, bytes, int, bytes, int, int]] = []
        for family in (socket.AF_INET, socket.AF_INET6):
            size = _ADDRESS_SIZE[family]
            req = sockdiag.inet_request(family, "udp", ALL_STATES_MASK)
            try:
                for batch in self._dumper.dump_payloads(sockdiag.SOCK_DIAG_BY_FAMILY, req):
                    for payload in batch:
                        if len(payload) < _HEAD.size:
                            continue
                        _f, _s, sport, dport, src, dst, _c1, _c2, _uid, inode = _HEAD.unpack_from(payload)
                        out.append((family, bytes(src[:size]), int.from_bytes(sport, "big"),
                                    bytes(dst[:size]), int.from_bytes(dport, "big"), inode))
            except NetlinkError as exc:
                raise SockscopeError(f"sock_diag dump of udp sockets failed: {exc.strerror}") from None
        return out

    def closed(self) -> list[TcpReading]:
        """Final readings of the TCP sockets freed since the last call."""
        out: list[TcpReading] = []
        names: dict[bytes, str] = {}
        while True:
            try:
                buf = self._closes.recv_messages()
            except BlockingIOError:
                return out
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                self.lost_closes = True
                continue
            for msg in iter_messages(buf):
                if msg.type == sockdiag.SOCK_DIAG_BY_FAMILY:
                    reading = parse_reading(msg.payload, names)
                    if reading is not None and reading.state != "LISTEN":
                        out.append(reading)
