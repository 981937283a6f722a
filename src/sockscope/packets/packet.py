"""The decoder stack: ``decode(data, linktype)`` -> ``Packet``.

``decode`` only records the bytes: the layer list is built on the first access to
``layers``/``malformed``/``[...]``/``summary()``, and each layer parses its own fields
on first read (see ``fields``). So capture-to-file, which never asks, pays nothing.

Lies and shortfalls never raise. Decoding goes as far as the headers are true, then:

* ``malformed`` -- a reason string when a header is impossible (bad IHL, TCP data offset
  below 5, UDP length below 8...) or claims bytes the buffer does not have;
* ``truncated`` -- True instead of ``malformed`` when missing bytes are expected: the
  capture was cut by snaplen (``wirelen`` > ``len(data)``), the packet is an ICMP quote,
  or it is a first fragment whose upper layer continues in the next fragment.

    pkt = decode(frame, LINKTYPE_ETHERNET)
    pkt[IPv4].ttl, pkt.get(TCP), TCP in pkt, pkt.summary()
"""

from __future__ import annotations

from sockscope.packets import registry
from sockscope.packets.fields import Header
from sockscope.packets.icmp import ICMP
from sockscope.packets.icmpv6 import ICMPv6
from sockscope.packets.ipv4 import IPv4
from sockscope.packets.ipv6 import (
    EXTENSION_CLASSES,
    IPPROTO_DSTOPTS,
    IPPROTO_FRAGMENT,
    IPPROTO_HOPOPTS,
    IPPROTO_ROUTING,
    IPv6,
)
from sockscope.packets.tcp import TCP
from sockscope.packets.udp import UDP

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101  # IPv4 or IPv6, told apart by the version nibble
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

registry.register(IPv4, IPv6, TCP, UDP, ICMP, ICMPv6, *EXTENSION_CLASSES)
# AH is valid under IPv4 too; the others only exist in IPv6.
registry.IPV6_EXTENSIONS.update((IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_FRAGMENT, IPPROTO_DSTOPTS))

_FIRST_LAYER: dict[int, type[Header]] = {LINKTYPE_IPV4: IPv4, LINKTYPE_IPV6: IPv6}
_LINK_LAYER_TYPES = (LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2)


def _load_link_layers() -> None:
    """Ethernet, SLL and what only they carry (ARP, VLAN tags), loaded with the first
    frame that needs them: probing reads IP packets only, and every module is time
    off a traceroute's start-up."""
    from sockscope.packets.ether import Ethernet
    from sockscope.packets.sll import SLL, SLL2

    _FIRST_LAYER.update({LINKTYPE_ETHERNET: Ethernet, LINKTYPE_LINUX_SLL: SLL, LINKTYPE_LINUX_SLL2: SLL2})

TYPE_CHECKING = False  # not `from typing import ...`: see sockscope/__init__.py (start-up time)
if TYPE_CHECKING:
    from typing import TypeVar

    H = TypeVar("H", bound=Header)


class Packet:
    """One frame and its (lazily decoded) layers."""

    __slots__ = ("_layers", "_malformed", "_truncated", "data", "linktype", "partial", "wirelen")

    def __init__(self, data: bytes, linktype: int, wirelen: int | None = None, *, quoted: bool = False):
        self.data = data
        self.linktype = linktype
        self.wirelen = len(data) if wirelen is None else wirelen
        # Whether a shortfall is expected rather than a lie (see module docstring).
        self.partial = quoted or self.wirelen > len(data)
        self._layers: list[Header] | None = None
        self._malformed: str | None = None
        self._truncated = False

    @property
    def layers(self) -> list[Header]:
        if self._layers is None:
            self._layers = []
            self._decode()
        return self._layers

    @property
    def malformed(self) -> str | None:
        self.layers  # noqa: B018 -- decoding is what sets the flag
        return self._malformed

    @property
    def truncated(self) -> bool:
        self.layers  # noqa: B018
        return self._truncated

    def _short(self, reason: str) -> None:
        if self.partial:
            self._truncated = True
        elif self._malformed is None:
            self._malformed = reason

    def _first_class(self) -> type[Header] | None:
        if self.linktype == LINKTYPE_RAW:
            version = self.data[0] >> 4 if self.data else 0
            return IPv6 if version == 6 else IPv4
        cls = _FIRST_LAYER.get(self.linktype)
        if cls is None and self.linktype in _LINK_LAYER_TYPES:
            _load_link_layers()
            cls = _FIRST_LAYER[self.linktype]
        return cls

    def _decode(self) -> None:
        layers = self._layers
        assert layers is not None
        data = self.data
        off, end = 0, len(data)
        cls = self._first_class()
        if cls is None:
            self._malformed = f"unsupported linktype {self.linktype}"
            return
        while cls is not None:
            if end - off < cls.hdr_len:
                self._short(f"truncated {cls.name} header ({end - off} of {cls.hdr_len} bytes)")
                return
            layer = cls._walked(data, off, end, self, len(layers))
            layers.append(layer)
            bad = layer._check()
            if bad is not None:
                self._malformed = bad
                return
            extent = layer._extent()
            if extent is not None:
                if off + extent > end:
                    self._short(f"{cls.name} claims {extent} bytes, {end - off} present")
                else:
                    end = off + extent  # anything past it is link padding, not payload
                    layer.__dict__["_end"] = end  # bypass Header.__setattr__ (hot path)
            hlen = layer.header_len
            if off + hlen > end:
                self._short(f"{cls.name} header length {hlen} past the end ({end - off} bytes)")
                return
            if layer._starts_partial():
                self.partial = True
            off += hlen
            cls = layer._next()

    def get(self, cls: type[H]) -> H | None:
        """The first layer that is a ``cls``, or None."""
        for layer in self.layers:
            if isinstance(layer, cls):
                return layer
        return None

    def __getitem__(self, cls: type[H]) -> H:
        layer = self.get(cls)
        if layer is None:
            raise KeyError(cls.__name__)
        return layer

    def __contains__(self, cls: type[Header]) -> bool:
        return self.get(cls) is not None

    @property
    def payload(self) -> bytes:
        """What follows the last decoded header (application data, or undecoded rest)."""
        layers = self.layers
        return layers[-1].payload if layers else self.data

    def summary(self) -> str:
        from sockscope.packets.summary import summarize

        return summarize(self)

    def __repr__(self) -> str:
        return f"<Packet {len(self.data)} bytes: {' / '.join(layer.name for layer in self.layers)}>"


def decode(data: bytes, linktype: int = LINKTYPE_ETHERNET, wirelen: int | None = None) -> Packet:
    """Wrap ``data`` (a frame of ``linktype``; ``wirelen`` its length on the wire)."""
    return Packet(data, linktype, wirelen)
