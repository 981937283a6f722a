"""UDP (RFC 768).

    UDP.build(sport=40000, dport=53).pack(b"query", lower=ip_header)

``length`` and ``checksum`` are filled unless given; a computed checksum of zero is sent
as 0xFFFF, since zero on the wire means "no checksum" (allowed over IPv4 only).
"""

from __future__ import annotations

from sockscope.packets.fields import Header
from sockscope.packets.l4base import PseudoChecksummed

TYPE_CHECKING = False  # not `from typing import ...`: see sockscope/__init__.py (start-up time)
if TYPE_CHECKING:
    from typing import ClassVar


class UDP(PseudoChecksummed):
    __hdr__ = (("sport", "H", 0), ("dport", "H", 0), ("length", "H", 8), ("checksum", "H", 0))
    name = "UDP"
    IP_PROTO: ClassVar[int | None] = 17
    sport: int
    dport: int
    length: int

    def _check(self) -> str | None:
        return None if self.length >= 8 else f"UDP length {self.length} < 8"

    def _extent(self) -> int:
        return self.length

    def checksum_ok(self) -> bool | None:
        if self.checksum == 0 and self._ip_version() == 4:
            return True  # the sender chose not to checksum
        return super().checksum_ok()

    def _ip_version(self) -> int:
        node = self.prev_layer
        return 4 if node is not None and node.name == "IPv4" else 6

    def pack(self, payload: bytes = b"", lower: Header | None = None) -> bytes:
        if "length" not in self.given:
            self.length = 8 + len(payload)
        if "checksum" not in self.given:
            self.checksum = 0
        segment = self._fill_checksum(self.pack_header() + payload, lower, 6)
        if "checksum" not in self.given and self.checksum == 0:
            self.checksum = 0xFFFF
            segment = segment[:6] + b"\xff\xff" + segment[8:]
        return segment
