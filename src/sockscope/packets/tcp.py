"""TCP (RFC 9293): flags, options (MSS, window scale, SACK-permitted, SACK, timestamps).

    opts = tcp_options(mss=1460, sack_ok=True, ts=(1, 0), wscale=7)
    seg = TCP.build(sport=40000, dport=80, seq=1, flags=SYN, options=opts)
    wire = seg.pack(b"", lower=ip_header)     # lower supplies the pseudo-header addresses

``off_flags`` (data offset) and ``checksum`` are filled unless given.
"""

from __future__ import annotations

import struct

from sockscope.packets.fields import Header
from sockscope.packets.l4base import PseudoChecksummed
from sockscope.record import Record

TYPE_CHECKING = False  # not `from typing import ...`: see sockscope/__init__.py (start-up time)
if TYPE_CHECKING:
    from typing import ClassVar, Self

FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = (1 << i for i in range(8))
# tcpdump's letters, in its order (so SYN+ACK prints "S.").
FLAG_LETTERS = (
    (FIN, "F"),
    (SYN, "S"),
    (RST, "R"),
    (PSH, "P"),
    (ACK, "."),
    (URG, "U"),
    (ECE, "E"),
    (CWR, "W"),
)

OPT_EOL, OPT_NOP, OPT_MSS, OPT_WSCALE, OPT_SACK_OK, OPT_SACK, OPT_TIMESTAMP = 0, 1, 2, 3, 4, 5, 8


class TCPOption(Record):
    _fields = ("kind", "data")
    __slots__ = _fields

    def __init__(self, kind: int, data: bytes) -> None:
        self.kind, self.data = kind, data


def tcp_options(
    *,
    mss: int | None = None,
    sack_ok: bool = False,
    ts: tuple[int, int] | None = None,
    wscale: int | None = None,
    sack: list[tuple[int, int]] | None = None,
) -> bytes:
    """Options in the order Linux sends them, NOP-padded to a 4-byte multiple."""
    out = b""
    if mss is not None:
        out += struct.pack("!BBH", OPT_MSS, 4, mss)
    if sack_ok:
        out += bytes((OPT_SACK_OK, 2))
    if ts is not None:
        out += struct.pack("!BBII", OPT_TIMESTAMP, 10, *ts)
    if wscale is not None:
        out += bytes((OPT_NOP, OPT_WSCALE, 3, wscale))
    if sack:
        out += bytes((OPT_NOP, OPT_NOP, OPT_SACK, 2 + 8 * len(sack)))
        out += b"".join(struct.pack("!II", a, b) for a, b in sack)
    return out + bytes((OPT_NOP,)) * (-len(out) % 4)


def parse_options(opts: bytes) -> list[TCPOption]:
    """The options in ``opts``; stops at EOL or at the first length that lies."""
    out: list[TCPOption] = []
    i = 0
    while i < len(opts):
        kind = opts[i]
        if kind == OPT_EOL:
            break
        if kind == OPT_NOP:
            out.append(TCPOption(kind, b""))
            i += 1
            continue
        if i + 1 >= len(opts) or opts[i + 1] < 2 or i + opts[i + 1] > len(opts):
            break
        out.append(TCPOption(kind, bytes(opts[i + 2 : i + opts[i + 1]])))
        i += opts[i + 1]
    return out


def flag_text(off_flags: int) -> str:
    """tcpdump's flag letters ("S.", "P.", "none") for the data offset/flags word."""
    return "".join(letter for bit, letter in FLAG_LETTERS if off_flags & bit) or "none"


class TCP(PseudoChecksummed):
    __hdr__ = (
        ("sport", "H", 0),
        ("dport", "H", 0),
        ("seq", "I", 0),
        ("ack", "I", 0),
        ("off_flags", "H", 5 << 12),
        ("window", "H", 65535),
        ("checksum", "H", 0),
        ("urgent", "H", 0),
    )
    __extra__ = (("options", b""),)
    name = "TCP"
    IP_PROTO: ClassVar[int | None] = 6
    sport: int
    dport: int
    seq: int
    ack: int
    off_flags: int
    window: int
    urgent: int
    options: bytes

    @classmethod
    def build(cls, *, flags: int = 0, **values: object) -> Self:
        """As ``Header.build`` plus ``flags=SYN | ACK`` (sets the low bits of ``off_flags``)."""
        hdr = super().build(**values)
        if flags:
            hdr.off_flags = (hdr.off_flags & 0xF000) | flags
        return hdr

    @property
    def data_offset(self) -> int:
        return self.off_flags >> 12

    @property
    def header_len(self) -> int:
        return (self.off_flags >> 12) * 4

    @property
    def flags(self) -> int:
        return self.off_flags & 0xFF

    @property
    def flag_string(self) -> str:
        return flag_text(self.off_flags)

    def _check(self) -> str | None:
        return None if self.data_offset >= 5 else f"bad TCP data offset {self.data_offset}"

    def _decode_options(self) -> bytes:
        assert self._buf is not None
        return self._buf[self._off + 20 : min(self._off + self.header_len, self._end)]

    @property
    def option_list(self) -> list[TCPOption]:
        """Parsed options; stops at EOL or at the first length that lies."""
        return parse_options(self.options)

    def _option(self, kind: int, size: int) -> bytes | None:
        for opt in self.option_list:
            if opt.kind == kind and len(opt.data) == size:
                return opt.data
        return None

    @property
    def mss(self) -> int | None:
        data = self._option(OPT_MSS, 2)
        return None if data is None else int.from_bytes(data, "big")

    @property
    def wscale(self) -> int | None:
        data = self._option(OPT_WSCALE, 1)
        return None if data is None else data[0]

    @property
    def sack_permitted(self) -> bool:
        return self._option(OPT_SACK_OK, 0) is not None

    @property
    def timestamps(self) -> tuple[int, int] | None:
        """(TSval, TSecr)."""
        data = self._option(OPT_TIMESTAMP, 8)
        return None if data is None else (int.from_bytes(data[:4], "big"), int.from_bytes(data[4:], "big"))

    @property
    def sack_blocks(self) -> list[tuple[int, int]]:
        for opt in self.option_list:
            if opt.kind == OPT_SACK and len(opt.data) % 8 == 0:
                d = opt.data
                return [struct.unpack_from("!II", d, i) for i in range(0, len(d), 8)]
        return []

    def _pack_extras(self) -> bytes:
        return self.options

    def pack(self, payload: bytes = b"", lower: Header | None = None) -> bytes:
        if len(self.options) % 4:
            self.options = self.options + b"\0" * (-len(self.options) % 4)
        if "off_flags" not in self.given:
            self.off_flags = ((20 + len(self.options)) // 4) << 12 | (self.off_flags & 0xFFF)
        if "checksum" not in self.given:
            self.checksum = 0
        return self._fill_checksum(self.pack_header() + payload, lower, 16)
