"""Probing with raw sockets: ping, trace, scan, over one engine (``engine.py``).

Sync: ``ping()``, ``trace()``, ``scan()``; asyncio: ``aping()``, ``atrace()``,
``ascan()``; ``send_packets()`` sends packets built with ``sockscope.packets``
through a raw socket (IP_HDRINCL). Imported lazily so ``import sockscope.probe`` stays cheap.
"""

from __future__ import annotations

from sockscope import lazy_dir, lazy_exports

TYPE_CHECKING = False  # not `from typing import ...`: see sockscope/__init__.py (start-up time)

_EXPORTS = {
    "ping": "sockscope.probe.ping",
    "aping": "sockscope.probe.ping",
    "trace": "sockscope.probe.trace",
    "atrace": "sockscope.probe.trace",
    "send_packets": "sockscope.probe.craft",
    "scan": "sockscope.probe.scan",
    "ascan": "sockscope.probe.scan",
    "parse_ports": "sockscope.probe.ports",
    "ScanResult": "sockscope.probe.model",
    "PortResult": "sockscope.probe.model",
    "PingResult": "sockscope.probe.model",
    "PingReply": "sockscope.probe.model",
    "PingError": "sockscope.probe.model",
    "TraceResult": "sockscope.probe.model",
    "TraceHop": "sockscope.probe.model",
    "TraceProbe": "sockscope.probe.model",
}

__all__ = [
    "PingError",
    "PingReply",
    "PingResult",
    "PortResult",
    "ScanResult",
    "TraceHop",
    "TraceProbe",
    "TraceResult",
    "aping",
    "ascan",
    "atrace",
    "parse_ports",
    "ping",
    "scan",
    "send_packets",
    "trace",
]

if TYPE_CHECKING:
    from sockscope.probe.craft import send_packets
    from sockscope.probe.model import (
        PingError,
        PingReply,
        PingResult,
        PortResult,
        ScanResult,
        TraceHop,
        TraceProbe,
        TraceResult,
    )
    from sockscope.probe.ping import aping, ping
    from sockscope.probe.ports import parse_ports
    from sockscope.probe.scan import ascan, scan
    from sockscope.probe.trace import atrace, trace


__getattr__ = lazy_exports(__name__, _EXPORTS)
__dir__ = lazy_dir(__name__, _EXPORTS)
