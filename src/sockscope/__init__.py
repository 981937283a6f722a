"""sockscope: see and control the sockets of a Linux host.

The public API is re-exported here lazily, so ``import sockscope`` stays cheap:

    sockets(...)      the socket inventory (sock_diag), with owners
    iter_sockets(...) the same, one socket at a time (memory flat however many)
    interfaces()      interface counters and addresses (rtnetlink)
    kill_sockets(...) destroy sockets (SOCK_DESTROY)
    watch(...)        socket events: new, state change, closed
    capture(...)      live packet capture (AF_PACKET, TPACKET_V3), iterable and async
    send_frame(...)   send a link-layer frame; replay(...) a capture file
    pcap              pcap/pcapng readers and writers (``sockscope.pcap``)
    Policy            access policies (hosts_access rules, Unix peer rules)
    Server, peer_credentials, send_fds, recv_fds   services (sockscope.services)
    ping(...)         ICMP echo (async: sockscope.probe.aping)
    scan(...)         port scan: TCP connect, SYN, UDP (async: sockscope.probe.ascan)
    trace(...)        traceroute, UDP / ICMP / TCP probes (async: sockscope.probe.atrace)
    divert(rule=...)  packets taken out of the firewall path (NFQUEUE), to accept/drop/change
    traffic(...)      traffic per process, connection and remote host, sampled (``sockscope.traffic``)
"""

from __future__ import annotations

import sys

# Not `from typing import ...`: typing costs a few milliseconds to import, and every
# command pays for this module. Type checkers read any TYPE_CHECKING name as True.
TYPE_CHECKING = False

__version__ = "0.1.0"

_EXPORTS = {
    "sockets": "sockscope.inventory.query",
    "iter_sockets": "sockscope.inventory.query",
    "SocketList": "sockscope.inventory.query",
    "InventoryWarning": "sockscope.inventory.model",
    "Socket": "sockscope.inventory.model",
    "Owner": "sockscope.inventory.model",
    "InetAddress": "sockscope.inventory.model",
    "UnixAddress": "sockscope.inventory.model",
    "PacketAddress": "sockscope.inventory.model",
    "NetlinkAddress": "sockscope.inventory.model",
    "TcpInfo": "sockscope.inventory.model",
    "Memory": "sockscope.inventory.model",
    "interfaces": "sockscope.inventory.interfaces",
    "Interface": "sockscope.inventory.interfaces",
    "kill_sockets": "sockscope.inventory.kill",
    "watch": "sockscope.inventory.watch",
    "SocketEvent": "sockscope.inventory.watch",
    "parse_filter": "sockscope.inventory.filter",
    "send_frame": "sockscope.capture.inject",
    "replay": "sockscope.capture.inject",
    "CapturedPacket": "sockscope.capture.packet",
    "ping": "sockscope.probe.ping",
    "trace": "sockscope.probe.trace",
    "scan": "sockscope.probe.scan",
    "ScanResult": "sockscope.probe.model",
    "PingResult": "sockscope.probe.model",
    "TraceResult": "sockscope.probe.model",
    "divert": "sockscope.divert",
    "Divert": "sockscope.divert",
    "DivertPacket": "sockscope.divert",
    "Verdict": "sockscope.divert",
    "SockscopeError": "sockscope.errors",
    "UsageError": "sockscope.errors",
    "PermissionNeeded": "sockscope.errors",
    "Policy": "sockscope.policy",
    "peer_credentials": "sockscope.services",
    "PeerCredentials": "sockscope.services",
    "send_fds": "sockscope.services",
    "recv_fds": "sockscope.services",
    "Server": "sockscope.services",
}

__all__ = [
    "CapturedPacket",
    "Divert",
    "DivertPacket",
    "InetAddress",
    "Interface",
    "InventoryWarning",
    "Memory",
    "NetlinkAddress",
    "Owner",
    "PacketAddress",
    "PeerCredentials",
    "PermissionNeeded",
    "PingResult",
    "Policy",
    "ScanResult",
    "Server",
    "Socket",
    "SocketEvent",
    "SocketList",
    "SockscopeError",
    "TcpInfo",
    "TraceResult",
    "UnixAddress",
    "UsageError",
    "Verdict",
    "__version__",
    "capture",
    "divert",
    "interfaces",
    "iter_sockets",
    "kill_sockets",
    "parse_filter",
    "peer_credentials",
    "ping",
    "recv_fds",
    "replay",
    "scan",
    "send_fds",
    "send_frame",
    "sockets",
    "trace",
    "traffic",
    "watch",
]

if TYPE_CHECKING:
    from collections.abc import Callable

    from sockscope.capture.inject import replay, send_frame
    from sockscope.capture.packet import CapturedPacket
    from sockscope.divert import Divert, DivertPacket, Verdict, divert
    from sockscope.errors import PermissionNeeded, SockscopeError, UsageError
    from sockscope.inventory.filter import parse_filter
    from sockscope.inventory.interfaces import Interface, interfaces
    from sockscope.inventory.kill import kill_sockets
    from sockscope.inventory.model import (
        InetAddress,
        InventoryWarning,
        Memory,
        NetlinkAddress,
        Owner,
        PacketAddress,
        Socket,
        TcpInfo,
        UnixAddress,
    )
    from sockscope.inventory.query import SocketList, iter_sockets, sockets
    from sockscope.inventory.watch import SocketEvent, watch
    from sockscope.policy import Policy
    from sockscope.probe.model import PingResult, ScanResult, TraceResult
    from sockscope.probe.ping import ping
    from sockscope.probe.scan import scan
    from sockscope.probe.trace import trace
    from sockscope.services import PeerCredentials, Server, peer_credentials, recv_fds, send_fds


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], object]:
    """A package's ``__getattr__`` (PEP 562) that imports ``exports[name]``'s module
    when ``name`` is first used and keeps the value in the package. Used by this
    package, ``sockscope.probe`` and ``sockscope.packets``: each command imports
    only what it uses."""

    def __getattr__(name: str) -> object:
        module_name = exports.get(name)
        if module_name is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        __import__(module_name)
        value = getattr(sys.modules[module_name], name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__


def lazy_dir(package: str, exports: dict[str, str]) -> Callable[[], list[str]]:
    """A package's ``__dir__`` (PEP 562) that lists the lazy exports too, so
    ``dir()``, ``help()`` and editors' completion see the whole API before any of
    it has been imported."""

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *exports})

    return __dir__


_exported = lazy_exports(__name__, _EXPORTS)


def __getattr__(name: str) -> object:
    if name in ("capture", "pcap", "packets", "traffic"):
        # Subpackages; ``capture`` and ``traffic`` are also callable:
        # sockscope.capture(...) opens a capture, sockscope.traffic(...) starts sampling.
        __import__(f"sockscope.{name}")
        return sys.modules[f"sockscope.{name}"]
    return _exported(name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, "pcap", "packets"})
