"""IPv6 (RFC 8200) and its extension headers, each decoded as a layer of its own.

    IPv6.build(src="2001:db8::1", dst="2001:db8::2", hop_limit=3).pack(payload)

``payload_len`` and ``next_header`` are filled by ``pack``/``stack`` unless given. The
extension headers (hop-by-hop, routing, fragment, destination options, AH) are skipped
over by their stated lengths; a non-first fragment stops the decode (what follows is the
middle of some upper-layer packet).
"""

from __future__ import annotations

from sockscope.packets import registry
from sockscope.packets.fields import Header, ip_to_text

TYPE_CHECKING = False  # not `from typing import ...`: see sockscope/__init__.py (start-up time)
if TYPE_CHECKING:
    from typing import ClassVar

IPPROTO_HOPOPTS = 0
IPPROTO_ROUTING = 43
IPPROTO_FRAGMENT = 44
IPPROTO_AH = 51
IPPROTO_DSTOPTS = 60


class _NextHeader(Header):
    """Anything with a ``next_header`` protocol number naming what follows."""

    next_header: int

    def _next(self) -> type[Header] | None:
        return registry.IP_PROTOS.get(self.next_header)

    def _bind(self, inner: Header) -> None:
        if "next_header" not in self.given and inner.IP_PROTO is not None:
            self.next_header = inner.IP_PROTO


class IPv6(_NextHeader):
    __hdr__ = (
        ("ver_tc_flow", "I", 6 << 28),
        ("payload_len", "H", 0),
        ("next_header", "B", 59),
        ("hop_limit", "B", 64),
        ("src", "16s", b"\0" * 16),
        ("dst", "16s", b"\0" * 16),
    )
    name = "IPv6"
    ETHERTYPE: ClassVar[int | None] = 0x86DD
    IP_PROTO: ClassVar[int | None] = 41  # IPv6-in-IP
    ver_tc_flow: int
    payload_len: int
    hop_limit: int
    src: bytes
    dst: bytes

    @property
    def version(self) -> int:
        return self.ver_tc_flow >> 28

    @property
    def traffic_class(self) -> int:
        return (self.ver_tc_flow >> 20) & 0xFF

    @property
    def flow_label(self) -> int:
        return self.ver_tc_flow & 0xFFFFF

    @property
    def src_ip(self) -> str:
        return ip_to_text(self.src)

    @property
    def dst_ip(self) -> str:
        return ip_to_text(self.dst)

    def _check(self) -> str | None:
        return None if self.version == 6 else f"IPv6 version field is {self.version}"

    def _extent(self) -> int | None:
        # A zero payload length means a jumbogram (RFC 2675): trust the capture length.
        if self.payload_len == 0 and self.next_header == IPPROTO_HOPOPTS:
            return None
        return 40 + self.payload_len

    def pack(self, payload: bytes = b"", lower: Header | None = None) -> bytes:
        if "payload_len" not in self.given:
            self.payload_len = len(payload)
        return self.pack_header() + payload


class IPv6Extension(_NextHeader):
    """Hop-by-hop, routing and destination options: length in 8-octet units past the first.

    ``data`` holds the bytes after the two-byte prefix (options, routing data); ``pack``
    pads it so the header is a multiple of 8 bytes."""

    __hdr__ = (("next_header", "B", 59), ("hdr_ext_len", "B", 0))
    __extra__ = (("data", b"\0" * 6),)
    hdr_ext_len: int
    data: bytes

    @property
    def header_len(self) -> int:
        return (self.hdr_ext_len + 1) * 8

    def _decode_data(self) -> bytes:
        assert self._buf is not None
        return self._buf[self._off + 2 : min(self._off + self.header_len, self._end)]

    def _pack_extras(self) -> bytes:
        return self.data

    def pack(self, payload: bytes = b"", lower: Header | None = None) -> bytes:
        pad = -(len(self.data) + 2) % 8
        self.data = self.data + b"\0" * pad
        if "hdr_ext_len" not in self.given:
            self.hdr_ext_len = (len(self.data) + 2) // 8 - 1
        return self.pack_header() + payload


class HopByHop(IPv6Extension):
    name = "IPv6 hop-by-hop"
    IP_PROTO = IPPROTO_HOPOPTS


class Routing(IPv6Extension):
    name = "IPv6 routing"
    IP_PROTO = IPPROTO_ROUTING

    @property
    def routing_type(self) -> int:
        return self.data[0] if self.data else 0

    @property
    def segments_left(self) -> int:
        return self.data[1] if len(self.data) > 1 else 0


class DestOptions(IPv6Extension):
    name = "IPv6 destination options"
    IP_PROTO = IPPROTO_DSTOPTS


class Fragment(_NextHeader):
    __hdr__ = (("next_header", "B", 59), ("reserved", "B", 0), ("offset_flags", "H", 0), ("ident", "I", 0))
    name = "IPv6 fragment"
    IP_PROTO = IPPROTO_FRAGMENT
    reserved: int
    offset_flags: int
    ident: int

    @property
    def frag_offset(self) -> int:
        """Offset in bytes (the field counts 8-byte units in its top 13 bits)."""
        return self.offset_flags & 0xFFF8

    @property
    def mf(self) -> bool:
        return bool(self.offset_flags & 1)

    def _next(self) -> type[Header] | None:
        return None if self.frag_offset else super()._next()

    def _starts_partial(self) -> bool:
        return self.mf


class AH(_NextHeader):
    """IPsec authentication header (RFC 4302): length in 4-octet units minus 2."""

    __hdr__ = (
        ("next_header", "B", 59),
        ("payload_len", "B", 1),
        ("reserved", "H", 0),
        ("spi", "I", 0),
        ("seq", "I", 0),
    )
    __extra__ = (("icv", b""),)
    name = "AH"
    IP_PROTO = IPPROTO_AH
    payload_len: int
    reserved: int
    spi: int
    seq: int
    icv: bytes

    @property
    def header_len(self) -> int:
        return (self.payload_len + 2) * 4

    def _check(self) -> str | None:
        return None if self.header_len >= 12 else f"AH length {self.header_len} < 12"

    def _decode_icv(self) -> bytes:
        assert self._buf is not None
        return self._buf[self._off + 12 : min(self._off + self.header_len, self._end)]

    def _pack_extras(self) -> bytes:
        return self.icv

    def pack(self, payload: bytes = b"", lower: Header | None = None) -> bytes:
        if "payload_len" not in self.given:
            self.payload_len = (12 + len(self.icv)) // 4 - 2
        return self.pack_header() + payload


EXTENSION_CLASSES = (HopByHop, Routing, Fragment, DestOptions, AH)
