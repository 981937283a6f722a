"""Traffic accounting per process, per connection and per remote host.

``traffic(...)`` yields ``TrafficSample``s, one per interval, sync or async;
``Sampler`` is the long-running form (one collection shared by several
consumers, monotonic totals) that ``traffic`` and the exporter are built on.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from .iterate import Traffic, traffic
from .model import (
    ConnectionTraffic,
    ProcessTraffic,
    ProtoBytes,
    RemoteTraffic,
    TrafficSample,
    TrafficTotals,
)
from .sampler import Sampler

__all__ = [
    "ConnectionTraffic",
    "ProcessTraffic",
    "ProtoBytes",
    "RemoteTraffic",
    "Sampler",
    "Traffic",
    "TrafficSample",
    "TrafficTotals",
    "traffic",
]


class _CallableModule(types.ModuleType):
    """Lets ``sockscope.traffic(...)`` start sampling while ``sockscope.traffic``
    stays the package (as ``sockscope.capture`` does)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Traffic:
        return traffic(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
