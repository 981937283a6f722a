"""Live packet capture and injection.

``sockscope.capture(...)`` opens a capture: the package itself is callable, so the
API reads as the command does. It returns a ``Capture``, which is an iterator and an
async iterator of ``CapturedPacket`` and a context manager:

    with sockscope.capture("eth0", "tcp port 443", count=10) as cap:
        for pkt in cap:
            print(pkt.timestamp_ns, pkt.interface, pkt.summary())
        print(cap.statistics())

Modules: ``engine`` (Capture), ``packet_socket`` (AF_PACKET + TPACKET_V3 ring),
``tpacket`` (the ring layout, sans-IO), ``fastpath`` (ring blocks straight into file
records), ``bpf`` (tcpdump filters compiled by libpcap), ``sink`` (files with
rotation), ``inject`` (send frames, replay files). Nothing here is imported until
used.
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sockscope.capture.engine import Capture

_EXPORTS = {
    "Capture": "sockscope.capture.engine",
    "CaptureError": "sockscope.capture.engine",
    "CaptureInterface": "sockscope.capture.engine",
    "CaptureStats": "sockscope.capture.engine",
    "CapturedPacket": "sockscope.capture.packet",
    "RingConfig": "sockscope.capture.packet_socket",
    "ReplayResult": "sockscope.capture.inject",
    "replay": "sockscope.capture.inject",
    "send_frame": "sockscope.capture.inject",
    "send_frames": "sockscope.capture.inject",
    "compile_filter": "sockscope.capture.bpf",
}


def open_capture(*args: Any, **kwargs: Any) -> Capture:
    """``Capture(*args, **kwargs)``; see ``sockscope.capture.engine.Capture``."""
    from sockscope.capture.engine import Capture

    return Capture(*args, **kwargs)


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'sockscope.capture' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


class _CallableModule(types.ModuleType):
    """Lets ``sockscope.capture(...)`` open a capture while ``sockscope.capture`` stays
    the package that holds the capture modules."""

    def __call__(self, *args: Any, **kwargs: Any) -> Capture:
        return open_capture(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
