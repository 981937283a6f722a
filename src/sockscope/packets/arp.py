"""ARP (RFC 826). The fixed part is 8 bytes; the four addresses follow with the sizes the
header states, so non-Ethernet/IPv4 ARP decodes too. Build an Ethernet/IPv4 request with

    ARP.build(op=ARP_REQUEST, sha="02:..", spa="10.0.0.1", tpa="10.0.0.2").pack()
"""

from __future__ import annotations

from sockscope.packets.fields import Header, coerce, ip_to_text, mac_to_text

TYPE_CHECKING = False  # not `from typing import ...`: see sockscope/__init__.py (start-up time)
if TYPE_CHECKING:
    from typing import Any, ClassVar, Self

ARP_REQUEST = 1
ARP_REPLY = 2


class ARP(Header):
    __hdr__ = (
        ("htype", "H", 1),
        ("ptype", "H", 0x0800),
        ("hlen", "B", 6),
        ("plen", "B", 4),
        ("op", "H", ARP_REQUEST),
    )
    __extra__ = (("sha", b"\0" * 6), ("spa", b"\0" * 4), ("tha", b"\0" * 6), ("tpa", b"\0" * 4))
    name = "ARP"
    ETHERTYPE: ClassVar[int | None] = 0x0806
    htype: int
    ptype: int
    hlen: int
    plen: int
    op: int
    sha: bytes
    spa: bytes
    tha: bytes
    tpa: bytes

    @classmethod
    def build(cls, **values: Any) -> Self:
        for key, fmt in (("sha", "6s"), ("tha", "6s"), ("spa", "4s"), ("tpa", "4s")):
            if key in values:
                values[key] = coerce(fmt, values[key])
        return super().build(**values)

    @property
    def header_len(self) -> int:
        return 8 + 2 * (self.hlen + self.plen)

    def _extent(self) -> int:
        return self.header_len

    def _address(self, index: int) -> bytes:
        # Order on the wire: sha, spa, tha, tpa.
        sizes = (self.hlen, self.plen, self.hlen, self.plen)
        start = self._off + 8 + sum(sizes[:index])
        assert self._buf is not None
        return self._buf[start : start + sizes[index]]

    def _decode_sha(self) -> bytes:
        return self._address(0)

    def _decode_spa(self) -> bytes:
        return self._address(1)

    def _decode_tha(self) -> bytes:
        return self._address(2)

    def _decode_tpa(self) -> bytes:
        return self._address(3)

    def _pack_extras(self) -> bytes:
        return self.sha + self.spa + self.tha + self.tpa

    def pack(self, payload: bytes = b"", lower: Header | None = None) -> bytes:
        if "hlen" not in self.given:
            self.hlen = len(self.sha)
        if "plen" not in self.given:
            self.plen = len(self.spa)
        return self.pack_header() + payload

    @staticmethod
    def _text(raw: bytes) -> str:
        return ip_to_text(raw) if len(raw) in (4, 16) else raw.hex(":")

    @property
    def sender_ip(self) -> str:
        return self._text(self.spa)

    @property
    def target_ip(self) -> str:
        return self._text(self.tpa)

    @property
    def sender_mac(self) -> str:
        return mac_to_text(self.sha)

    @property
    def target_mac(self) -> str:
        return mac_to_text(self.tha)
