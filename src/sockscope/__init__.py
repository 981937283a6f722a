"""sockscope: see and control the sockets of a Linux host.

The public API is re-exported here lazily, so ``import sockscope`` stays cheap:

    sockets(...)      the socket inventory (sock_diag), with owners
    interfaces()      interface counters and addresses (rtnetlink)
    kill_sockets(...) destroy sockets (SOCK_DESTROY)
    watch(...)        socket events: new, state change, closed
    divert(rule=...)  packets taken out of the firewall path (NFQUEUE), to accept/drop/change
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "sockets": "sockscope.inventory.query",
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
    "divert": "sockscope.divert",
    "Divert": "sockscope.divert",
    "DivertPacket": "sockscope.divert",
    "Verdict": "sockscope.divert",
    "SockscopeError": "sockscope.errors",
    "UsageError": "sockscope.errors",
}

__all__ = [
    "Divert",
    "DivertPacket",
    "InetAddress",
    "Interface",
    "Memory",
    "NetlinkAddress",
    "Owner",
    "PacketAddress",
    "Socket",
    "SocketEvent",
    "SockscopeError",
    "TcpInfo",
    "UnixAddress",
    "UsageError",
    "Verdict",
    "__version__",
    "divert",
    "interfaces",
    "kill_sockets",
    "parse_filter",
    "sockets",
    "watch",
]

if TYPE_CHECKING:
    from sockscope.divert import Divert, DivertPacket, Verdict, divert
    from sockscope.errors import SockscopeError, UsageError
    from sockscope.inventory.filter import parse_filter
    from sockscope.inventory.interfaces import Interface, interfaces
    from sockscope.inventory.kill import kill_sockets
    from sockscope.inventory.model import (
        InetAddress,
        Memory,
        NetlinkAddress,
        Owner,
        PacketAddress,
        Socket,
        TcpInfo,
        UnixAddress,
    )
    from sockscope.inventory.query import sockets
    from sockscope.inventory.watch import SocketEvent, watch


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'sockscope' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value
