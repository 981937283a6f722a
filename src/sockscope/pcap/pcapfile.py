"""Classic libpcap files: encoders that return bytes and an incremental parser.

Layout: a 24-byte file header (magic, version 2.4, thiszone, sigfigs, snaplen,
linktype) then records of a 16-byte header (seconds, fraction, captured length,
original length) and the captured bytes. The magic says the byte order and whether
the fraction counts microseconds (0xa1b2c3d4) or nanoseconds (0xa1b23c4d).
"""

from __future__ import annotations

import struct

from sockscope.pcap.records import NS_PER_S, Interface, PcapError, Record

MAGIC_US = 0xA1B2C3D4
MAGIC_NS = 0xA1B23C4D
HEADER_LEN = 24
RECORD_HEADER_LEN = 16
# Larger than any real frame (libpcap's limit is 256 KiB); a bigger captured length
# means the length field is garbage, and waiting for that many bytes would hide it.
MAX_RECORD = 64 * 1024 * 1024

_HEADER = struct.Struct("<IHHiIII")
RECORD_HEADER = struct.Struct("<IIII")


def pcap_header(linktype: int, snaplen: int = 262144, nanosecond: bool = True) -> bytes:
    """The 24-byte file header, little-endian."""
    return _HEADER.pack(MAGIC_NS if nanosecond else MAGIC_US, 2, 4, 0, 0, snaplen, linktype)


def pcap_record(
    timestamp_ns: int, data: bytes, orig_len: int | None = None, nanosecond: bool = True
) -> bytes:
    """One record: header and captured bytes. ``orig_len`` defaults to ``len(data)``."""
    sec, frac = divmod(timestamp_ns, NS_PER_S)
    if not 0 <= sec <= 0xFFFFFFFF:
        raise PcapError(f"timestamp {timestamp_ns} ns does not fit a pcap record (1970 to 2106)")
    if not nanosecond:
        frac //= 1000
    return RECORD_HEADER.pack(sec, frac, len(data), len(data) if orig_len is None else orig_len) + data


class PcapParser:
    """Parses a classic pcap stream from a buffer the Decoder owns; holds no bytes itself."""

    format = "pcap"

    def __init__(self, name: str, interfaces: list[Interface], frames: bool = False) -> None:
        self._name = name
        self._frames = frames  # tuples instead of Records (see Decoder)
        self.skip = False  # walk the records without handing them out (see Decoder.skip)
        self._interfaces = interfaces
        self._record: struct.Struct | None = None  # set once the header says the byte order
        self._frac_ns = 1
        self.packets = 0

    def parse(self, buf: bytes | bytearray, pos: int, base: int, out: list[Record]) -> int:
        """Append every complete record from ``buf[pos:]`` to ``out``; return where parsing stopped.

        ``base`` is the file offset of ``buf[0]``, for messages.
        """
        n = len(buf)
        if self._record is None:
            if n - pos < HEADER_LEN:
                return pos
            self._read_header(buf, pos)
            pos += HEADER_LEN
        unpack = self._record.unpack_from  # type: ignore[union-attr]
        frac_ns = self._frac_ns
        packets = self.packets
        frames = self._frames
        skip = self.skip
        try:
            while n - pos >= RECORD_HEADER_LEN:
                sec, frac, caplen, orig = unpack(buf, pos)
                end = pos + RECORD_HEADER_LEN + caplen
                if end > n:
                    if caplen > MAX_RECORD:
                        raise PcapError(
                            f"{self._name}: corrupt record at offset {base + pos} (packet {packets + 1}): "
                            f"captured length {caplen} is over {MAX_RECORD}"
                        )
                    break
                packets += 1
                if skip:
                    pass
                elif frames:
                    out.append((sec, frac * frac_ns, buf[pos + 16 : end], orig, 0, None))  # type: ignore[arg-type]
                else:
                    out.append(Record(sec * NS_PER_S + frac * frac_ns, bytes(buf[pos + 16 : end]), orig))
                pos = end
        finally:
            self.packets = packets
        return pos

    def _read_header(self, buf: bytes | bytearray, pos: int) -> None:
        # The magic, read little-endian, tells both the byte order and the resolution.
        (magic,) = struct.unpack_from("<I", buf, pos)
        swapped = int.from_bytes(buf[pos : pos + 4], "big")
        if magic in (MAGIC_US, MAGIC_NS):
            endian = "<"
        elif swapped in (MAGIC_US, MAGIC_NS):
            endian, magic = ">", swapped
        else:
            raise PcapError(f"{self._name}: not a pcap file (magic 0x{magic:08x} at offset 0)")
        _, _, _, _, _, snaplen, linktype = struct.unpack_from(endian + "IHHiIII", buf, pos)
        self._record = struct.Struct(endian + "IIII")
        nanosecond = magic == MAGIC_NS
        self._frac_ns = 1 if nanosecond else 1000
        # The upper bits of the linktype field carry FCS information, not the link type.
        self._interfaces.append(Interface(linktype & 0xFFFF, snaplen, tsresol=9 if nanosecond else 6))

    def truncated(self, buf: bytes | bytearray, pos: int, base: int) -> PcapError:
        """The error for a stream that ended with ``buf[pos:]`` unparsed."""
        have = len(buf) - pos
        if self._record is None:
            return PcapError(
                f"{self._name}: truncated file header at offset {base + pos}: {have} of {HEADER_LEN} bytes"
            )
        need = RECORD_HEADER_LEN
        if have >= RECORD_HEADER_LEN:
            need += self._record.unpack_from(buf, pos)[2]
        return PcapError(
            f"{self._name}: truncated record at offset {base + pos} (packet {self.packets + 1}): "
            f"{have} of {need} bytes"
        )
