"""IPv4 (RFC 791): options, fragments, header checksum.

Building (every field is optional; ``ver_ihl``, ``total_len``, ``checksum`` and ``proto``
are filled by ``pack`` unless given, options are zero-padded to a 4-byte multiple):

    ip = IPv4.build(src="192.0.2.1", dst="192.0.2.2", ttl=3, tos=0x10, ident=7,
                    flags_frag=IP_DF, proto=17, options=b"\\x94\\x04\\0\\0")
    wire = ip.pack(udp_bytes)

Decoded: ``src``/``dst`` are bytes (``src_ip``/``dst_ip`` text), ``df``/``mf``/
``frag_offset``/``is_fragment``, ``options`` (raw bytes), ``option_list``, ``checksum_ok()``.
"""

from __future__ import annotations

from sockscope.packets import registry
from sockscope.packets.checksum import internet_checksum, verify
from sockscope.packets.fields import Header, ip_to_text

TYPE_CHECKING = False  # not `from typing import ...`: see sockscope/__init__.py (start-up time)
if TYPE_CHECKING:
    from typing import ClassVar

IP_RF = 0x8000
IP_DF = 0x4000
IP_MF = 0x2000
IP_OFFMASK = 0x1FFF

IPOPT_EOL = 0
IPOPT_NOP = 1


class IPv4(Header):
    __hdr__ = (
        ("ver_ihl", "B", 0x45),
        ("tos", "B", 0),
        ("total_len", "H", 20),
        ("ident", "H", 0),
        ("flags_frag", "H", 0),
        ("ttl", "B", 64),
        ("proto", "B", 0),
        ("checksum", "H", 0),
        ("src", "4s", b"\0" * 4),
        ("dst", "4s", b"\0" * 4),
    )
    __extra__ = (("options", b""),)
    name = "IPv4"
    ETHERTYPE: ClassVar[int | None] = 0x0800
    IP_PROTO: ClassVar[int | None] = 4  # IP-in-IP
    ver_ihl: int
    tos: int
    total_len: int
    ident: int
    flags_frag: int
    ttl: int
    proto: int
    checksum: int
    src: bytes
    dst: bytes
    options: bytes

    @property
    def version(self) -> int:
        return self.ver_ihl >> 4

    @property
    def ihl(self) -> int:
        return self.ver_ihl & 0x0F

    @property
    def header_len(self) -> int:
        return (self.ver_ihl & 0x0F) * 4

    @property
    def df(self) -> bool:
        return bool(self.flags_frag & IP_DF)

    @property
    def mf(self) -> bool:
        return bool(self.flags_frag & IP_MF)

    @property
    def frag_offset(self) -> int:
        """Fragment offset in bytes (the field counts 8-byte units)."""
        return (self.flags_frag & IP_OFFMASK) * 8

    @property
    def is_fragment(self) -> bool:
        return bool(self.flags_frag & (IP_MF | IP_OFFMASK))

    @property
    def src_ip(self) -> str:
        return ip_to_text(self.src)

    @property
    def dst_ip(self) -> str:
        return ip_to_text(self.dst)

    def _decode_options(self) -> bytes:
        assert self._buf is not None
        start = self._off + 20
        return self._buf[start : min(self._off + self.header_len, self._end)]

    @property
    def option_list(self) -> list[tuple[int, bytes]]:
        """(type, data) per option; parsing stops at EOL or at a length that lies."""
        out: list[tuple[int, bytes]] = []
        opts, i = self.options, 0
        while i < len(opts):
            kind = opts[i]
            if kind == IPOPT_EOL:
                break
            if kind == IPOPT_NOP:
                out.append((kind, b""))
                i += 1
                continue
            if i + 1 >= len(opts) or opts[i + 1] < 2 or i + opts[i + 1] > len(opts):
                break
            out.append((kind, bytes(opts[i + 2 : i + opts[i + 1]])))
            i += opts[i + 1]
        return out

    def _check(self) -> str | None:
        vi = self.ver_ihl  # read once: this runs for every decoded IPv4 packet
        if vi >> 4 != 4:
            return f"IPv4 version field is {vi >> 4}"
        if vi & 0x0F < 5:
            return f"bad IPv4 IHL {vi & 0x0F}"
        if self.total_len < (vi & 0x0F) * 4:
            return f"IPv4 total length {self.total_len} < header length {(vi & 0x0F) * 4}"
        return None

    def _extent(self) -> int:
        return self.total_len

    def _next(self) -> type[Header] | None:
        # Only the first fragment carries the transport header.
        if self.flags_frag & IP_OFFMASK or self.proto in registry.IPV6_EXTENSIONS:
            return None
        return registry.IP_PROTOS.get(self.proto)

    def _starts_partial(self) -> bool:
        return bool(self.flags_frag & IP_MF)

    def checksum_ok(self) -> bool | None:
        """None when the header is not all there to check."""
        if self._buf is None or self._off + self.header_len > self._end:
            return None
        return verify(self._buf[self._off : self._off + self.header_len])

    def _bind(self, inner: Header) -> None:
        if "proto" not in self.given and inner.IP_PROTO is not None:
            self.proto = inner.IP_PROTO

    def _pack_extras(self) -> bytes:
        return self.options

    def pack(self, payload: bytes = b"", lower: Header | None = None) -> bytes:
        if len(self.options) > 40:
            raise ValueError(f"IPv4 options are at most 40 bytes, got {len(self.options)}")
        if len(self.options) % 4:
            self.options = self.options + b"\0" * (4 - len(self.options) % 4)
        if "ver_ihl" not in self.given:
            self.ver_ihl = 0x40 | (20 + len(self.options)) // 4
        if "total_len" not in self.given:
            self.total_len = 20 + len(self.options) + len(payload)
        if "checksum" not in self.given:
            self.checksum = 0
            self.checksum = internet_checksum(self.pack_header())
        return self.pack_header() + payload
