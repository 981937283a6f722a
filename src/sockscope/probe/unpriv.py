"""trace without CAP_NET_RAW: probes through sockets any user may open, the ICMP
errors read from their error queues (IP_RECVERR / IPV6_RECVERR), the TTL set per
probe (IP_TTL / IPV6_UNICAST_HOPS):

* UDP (tracepath's way): one ordinary UDP socket, the probe number in the payload;
* ICMP echo (-I): one ICMP datagram ("ping") socket, where net.ipv4.ping_group_range
  allows it. The kernel owns the identifier (the socket's port); the sequence is
  the probe number, and the payload keeps the checksum fixed as with raw sockets;
* TCP (-T): Linux traceroute's ``-M tcpconn``: a non-blocking connect() per probe.
  A connect that completes (SYN-ACK) or is refused (RST) comes from the destination.
  The kernel picks each socket's source port, so the flow identifier changes from
  probe to probe (no Paris traceroute).

When the ICMP datagram socket is refused, UDP probes are sent instead and
``fallback`` says why. Imported only on this path (trace's start-up stays lean).
"""

from __future__ import annotations

# `socket`'s C core, as in the other probe modules (start-up time).
import _socket as socket
import os
import struct

from sockscope.errors import PermissionNeeded
from sockscope.probe import flows, rawio
from sockscope.probe.common import queued_seq, sockaddr
from sockscope.probe.engine import Kind, Probe, Received
from sockscope.probe.matching import TraceMatcher

TYPE_CHECKING = False  # not `from typing import ...`: see sockscope/__init__.py (start-up time)
if TYPE_CHECKING:
    from collections.abc import Hashable

    from sockscope.probe.trace import _Tracer

UDP_PORT = 33434
HOW = {
    "udp": "UDP probes through an ordinary socket, ICMP errors from its error queue (no CAP_NET_RAW)",
    "icmp": "ICMP echo through an ICMP datagram socket, ICMP errors from its error queue (no CAP_NET_RAW)",
    "tcp": "TCP connect() per probe, ICMP errors from the error queue (no CAP_NET_RAW, as traceroute"
    " -M tcpconn); the kernel picks each probe's source port, so the flow identifier is not kept"
    " (no Paris traceroute)",
}
_LINGER_RESET = struct.pack("ii", 1, 0)  # close with a RST: no TIME_WAIT per probe


class DatagramMatcher(TraceMatcher):
    """`TraceMatcher`, plus the error queue of an ICMP datagram socket, whose entries
    quote the echo request (sequence at bytes 6-7) rather than a UDP payload."""

    def __call__(self, got: Received) -> Hashable | None:
        q = got.queued
        if q is None or self.method != "icmp":
            return super().__call__(got)
        if q.destination[0].split("%")[0] != self.address:
            return None
        return queued_seq(q)


class Unprivileged:
    """Opens the sockets of an unprivileged trace on the tracer's engine and sends
    its probes. ``method`` is what is really used; ``fallback`` why, if it is not
    the method asked for."""

    def __init__(self, t: _Tracer) -> None:
        self.t = t
        self.family, self.address = t.family, t.address
        self.method = t.method
        self.port = t.port
        self.fallback: str | None = None
        self._matcher(t.method, t.port or 0)
        if self.method == "icmp":
            try:
                sock = rawio.icmp_datagram(self.family)
            except PermissionNeeded:
                self.port = self.port or UDP_PORT
                self.method = "udp"
                self.fallback = (
                    "ICMP probes need CAP_NET_RAW, or net.ipv4.ping_group_range covering group"
                    f" {os.getgid()} for an ICMP datagram socket: using UDP probes"
                    f" (port {self.port}) instead"
                )
                self._matcher("udp", self.port)
            else:
                self._open_icmp(sock)
        if self.method == "udp":
            self._open_udp()
        self.how = HOW[self.method]

    def _matcher(self, method: str, port: int) -> None:
        t = self.t
        t.matcher = DatagramMatcher(
            self.family, self.address, method, t.sport, port, t.ident, t.seq_base, t.tos
        )

    def _open_udp(self) -> None:
        t = self.t
        self.sock = t.engine.listen(rawio.udp_with_errors(self.family), Kind.DATAGRAM, socket.IPPROTO_UDP)
        t.how.apply(self.sock, self.family)
        if t.how.source is None:
            self.sock.bind(_any(self.family))
        t.matcher.sport = self.sock.getsockname()[1]

    def _open_icmp(self, sock: socket.socket) -> None:
        t = self.t
        proto = socket.IPPROTO_ICMP if self.family == socket.AF_INET else socket.IPPROTO_ICMPV6
        self.sock = t.engine.listen(sock, Kind.DATAGRAM, proto)
        t.how.apply(sock, self.family)
        if t.how.source is None:
            sock.bind(_any(self.family))
        t.matcher.ident = sock.getsockname()[1]  # the kernel's identifier for our requests

    def send(self, probe: Probe, key: int, ttl: int) -> None:
        t = self.t
        if self.method == "tcp":
            sock = socket.socket(self.family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            rawio.enable_errors(sock, self.family)
            rawio.set_ttl(sock, self.family, ttl)
            t.how.apply(sock, self.family)
            t.engine.connect(sock, probe, sockaddr(self.family, self.address, self.port or 0))
            return
        rawio.set_ttl(self.sock, self.family, ttl)
        if self.method == "icmp":
            # Built around the source the kernel will use, so its ICMPv6 checksum is the one we fix.
            ip = flows.ip_header(self.family, t.source, self.address, ttl, key, t.tos, t.flow)
            wire = flows.icmp_probe(ip, t.matcher.ident, key, t.matcher.icmp_checksum, t.payload)
            data = wire[-(flows.ICMP_HEADER + t.payload) :]  # the kernel adds the IP header
            t.engine.send(self.sock, probe, data, sockaddr(self.family, self.address, 0))
            return
        data = key.to_bytes(2, "big") + b"@" * (t.payload - 2)
        t.engine.send(self.sock, probe, data, sockaddr(self.family, self.address, self.port or 0))


def _any(family: int) -> tuple[str, int]:
    return ("0.0.0.0", 0) if family == socket.AF_INET else ("::", 0)
