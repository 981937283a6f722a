"""pcapng files: block encoders that return bytes and an incremental parser.

Every block is ``type, total length, body, total length`` with the body padded to
4 bytes; options are ``code, length, value`` padded to 4 and ended by code 0. The
Section Header Block's byte-order magic sets the byte order of its section, and
interface ids restart in each section. Writers here always emit little-endian.
"""

from __future__ import annotations

import struct

from sockscope.pcap.records import NS_PER_S, Direction, Interface, InterfaceStats, PcapError, Record

SHB, IDB, OPB, SPB, ISB, EPB = 0x0A0D0D0A, 1, 2, 3, 5, 6
BLOCK_NAMES = {
    SHB: "section header block",
    IDB: "interface description block",
    OPB: "packet block",
    SPB: "simple packet block",
    ISB: "interface statistics block",
    EPB: "enhanced packet block",
}
PACKET_BLOCKS = (EPB, SPB, OPB)
BOM = 0x1A2B3C4D
# Same reasoning as pcapfile.MAX_RECORD: a longer block is a garbage length field.
MAX_BLOCK = 64 * 1024 * 1024

OPT_NAME, OPT_TSRESOL, OPT_FILTER, OPT_TSOFFSET = 2, 9, 11, 14
OPT_COMMENT = 1
OPT_EPB_FLAGS = 2
OPT_SHB_USERAPPL = 4
# ISB option codes, in the order of the InterfaceStats fields they fill.
ISB_COUNTERS = {4: "ifrecv", 5: "ifdrop", 6: "filteraccept", 7: "osdrop", 8: "usrdeliv"}
ISB_STARTTIME, ISB_ENDTIME = 2, 3


def _pad(n: int) -> int:
    return -n % 4


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + bytes(_pad(len(value)))


def _block(btype: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack("<II", btype, total) + body + struct.pack("<I", total)


def _options(opts: list[bytes]) -> bytes:
    return b"".join(opts) + bytes(4) if opts else b""


def epb_options(direction: int = 0, comment: str | None = None) -> bytes:
    """An Enhanced Packet Block's options: opt_comment, epb_flags with the direction
    (a ``Direction`` value, 0 for none), the end of options; empty when there are none."""
    opts = [] if comment is None else [_option(OPT_COMMENT, comment.encode("utf-8"))]
    if direction:
        opts.append(_option(OPT_EPB_FLAGS, struct.pack("<I", direction)))
    return _options(opts)


def _units(timestamp_ns: int, tsresol: int) -> int:
    """Nanoseconds to a decimal if_tsresol's units (what the writer's IDBs declare)."""
    if tsresol == 9:
        return timestamp_ns
    return timestamp_ns * int(10**tsresol) // NS_PER_S  # int(): mypy types int ** int as Any


def _ts(units: int) -> bytes:
    # pcapng timestamps are two 32-bit words, high first, each in the section's byte order.
    return struct.pack("<II", units >> 32, units & 0xFFFFFFFF)


def pcapng_shb(application: str | None = "sockscope") -> bytes:
    """A Section Header Block, version 1.0, section length unknown (-1) as a streaming writer must."""
    opts = [_option(OPT_SHB_USERAPPL, application.encode())] if application else []
    return _block(SHB, struct.pack("<IHHq", BOM, 1, 0, -1) + _options(opts))


def pcapng_idb(
    linktype: int, snaplen: int = 262144, name: str | None = None, filter: str | None = None, tsresol: int = 9
) -> bytes:
    """An Interface Description Block; timestamps of its packets count 10**-tsresol seconds."""
    if not 0 <= tsresol <= 0x7F:
        raise PcapError(f"if_tsresol {tsresol}: the writer supports decimal resolutions 0-127 only")
    opts = []
    if name is not None:
        opts.append(_option(OPT_NAME, name.encode()))
    if filter is not None:
        opts.append(_option(OPT_FILTER, b"\x00" + filter.encode()))  # filter type 0: libpcap syntax
    if tsresol != 6:  # 6 (microseconds) is the default a reader assumes without the option
        opts.append(_option(OPT_TSRESOL, bytes([tsresol])))
    return _block(IDB, struct.pack("<HHI", linktype, 0, snaplen) + _options(opts))


def pcapng_epb(
    interface_id: int,
    timestamp_ns: int,
    data: bytes,
    orig_len: int | None = None,
    direction: Direction | None = None,
    tsresol: int = 9,
) -> bytes:
    """An Enhanced Packet Block; ``direction`` becomes the epb_flags option."""
    units = _units(timestamp_ns, tsresol)
    if not 0 <= units < 1 << 64:
        raise PcapError(f"timestamp {timestamp_ns} ns does not fit a pcapng block")
    head = struct.pack("<I", interface_id) + _ts(units)
    head += struct.pack("<II", len(data), len(data) if orig_len is None else orig_len)
    return _block(EPB, head + data + bytes(_pad(len(data))) + epb_options(int(direction or 0)))


# Built once: writers of live captures append these per packet.
EPB_DIRECTION_OPTIONS = {d: epb_options(d) for d in (0, 1, 2)}


def pcapng_isb(stats: InterfaceStats, tsresol: int = 9) -> bytes:
    """An Interface Statistics Block with the counters of ``stats`` that are not None."""
    opts = []
    for code, when in ((ISB_STARTTIME, stats.starttime_ns), (ISB_ENDTIME, stats.endtime_ns)):
        if when is not None:
            opts.append(_option(code, _ts(_units(when, tsresol))))
    for code, field in ISB_COUNTERS.items():
        value = getattr(stats, field)
        if value is not None:
            opts.append(_option(code, struct.pack("<Q", value)))
    body = struct.pack("<I", stats.interface_id) + _ts(_units(stats.timestamp_ns, tsresol)) + _options(opts)
    return _block(ISB, body)


class _Clock:
    """Converts one interface's timestamp units to nanoseconds: units * mul // div + offset."""

    __slots__ = ("div", "mul", "offset")

    def __init__(self, tsresol: int, tsoffset_s: int) -> None:
        per_s = int(2 ** (tsresol & 0x7F) if tsresol & 0x80 else 10**tsresol)
        # Keep mul and div small integers so the common 10**9 and 10**6 cases are exact and cheap.
        if per_s <= NS_PER_S and NS_PER_S % per_s == 0:
            self.mul, self.div = NS_PER_S // per_s, 1
        else:
            self.mul, self.div = NS_PER_S, per_s
        self.offset = tsoffset_s * NS_PER_S

    def ns(self, units: int) -> int:
        return units * self.mul // self.div + self.offset


class PcapngParser:
    """Parses a pcapng stream from a buffer the Decoder owns; holds no bytes itself."""

    format = "pcapng"

    def __init__(self, name: str, interfaces: list[Interface], statistics: list[InterfaceStats]) -> None:
        self._name = name
        self._interfaces = interfaces
        self._statistics = statistics
        self._e = "<"  # byte order of the current section; the first SHB sets it
        self._head = struct.Struct("<II")
        self._u32 = struct.Struct("<I")
        self._epb_fields = struct.Struct("<IIIII")  # interface, ts high, ts low, caplen, orig len
        self._clocks: list[_Clock] = []  # per interface of the current section
        self._first = 0  # index in `interfaces` of the current section's interface 0
        self.packets = 0

    def parse(self, buf: bytes | bytearray, pos: int, base: int, out: list[Record]) -> int:
        """Append the packets of every complete block in ``buf[pos:]`` to ``out``; return where it stopped.

        ``base`` is the file offset of ``buf[0]``, for messages.
        """
        n = len(buf)
        head, u32, epb_fields = self._head.unpack_from, self._u32.unpack_from, self._epb_fields.unpack_from
        first = self._first
        while n - pos >= 12:
            btype, blen = head(buf, pos)
            if btype == SHB:
                self._section_byte_order(buf, pos, base)
                head, u32, epb_fields = (
                    self._head.unpack_from,
                    self._u32.unpack_from,
                    self._epb_fields.unpack_from,
                )
                btype, blen = head(buf, pos)
            if blen < 12 or blen % 4 or blen > MAX_BLOCK:
                raise self._corrupt(btype, base + pos, f"block length {blen}")
            end = pos + blen
            if end > n:
                break
            (trailer,) = u32(buf, end - 4)
            if trailer != blen:
                raise self._corrupt(btype, base + pos, f"length {blen} at the start but {trailer} at the end")
            if btype == EPB and blen >= 32:
                # The fast path, inlined because a method call per packet halves throughput:
                # an EPB without options for a known interface.
                local_id, high, low, caplen, orig = epb_fields(buf, pos + 8)
                if pos + 32 + caplen + (-caplen % 4) == end and local_id < len(self._clocks):
                    clock = self._clocks[local_id]
                    self.packets += 1
                    ts = ((high << 32) | low) * clock.mul // clock.div + clock.offset
                    out.append(Record(ts, bytes(buf[pos + 28 : pos + 28 + caplen]), orig, first + local_id))
                else:
                    self._epb(buf, pos, end, base, out)
            elif btype == EPB:
                self._epb(buf, pos, end, base, out)  # too short: reports the damage
            elif btype == SHB:
                self._shb(buf, pos, end, base)
                first = self._first
            elif btype == IDB:
                self._idb(buf, pos, end, base)
            elif btype == ISB:
                self._isb(buf, pos, end, base)
            elif btype == SPB:
                self._spb(buf, pos, end, base, out)
            elif btype == OPB:
                self._opb(buf, pos, end, base, out)
            # Any other block type (name resolution, decryption secrets, custom...) is skipped.
            pos = end
        return pos

    def truncated(self, buf: bytes | bytearray, pos: int, base: int) -> PcapError:
        """The error for a stream that ended with ``buf[pos:]`` unparsed."""
        have = len(buf) - pos
        kind, need = "block", 12
        if have >= 8:
            btype, need = self._head.unpack_from(buf, pos)
            kind = BLOCK_NAMES.get(btype, f"block of type 0x{btype:x}")
            if btype == SHB and have < 12:
                need = 12  # the length's byte order is only known from the magic after it
            elif btype in PACKET_BLOCKS:
                kind += f" (packet {self.packets + 1})"
        return PcapError(f"{self._name}: truncated {kind} at offset {base + pos}: {have} of {need} bytes")

    def _corrupt(self, btype: int, offset: int, what: str) -> PcapError:
        kind = BLOCK_NAMES.get(btype, f"block of type 0x{btype:x}")
        if btype in PACKET_BLOCKS:
            kind += f" (packet {self.packets + 1})"
        return PcapError(f"{self._name}: corrupt {kind} at offset {offset}: {what}")

    def _section_byte_order(self, buf: bytes | bytearray, pos: int, base: int) -> None:
        bom = bytes(buf[pos + 8 : pos + 12])
        if bom == b"\x4d\x3c\x2b\x1a":
            self._e = "<"
        elif bom == b"\x1a\x2b\x3c\x4d":
            self._e = ">"
        else:
            raise self._corrupt(SHB, base + pos, f"byte-order magic {bom.hex()}")
        self._head = struct.Struct(self._e + "II")
        self._u32 = struct.Struct(self._e + "I")
        self._epb_fields = struct.Struct(self._e + "IIIII")

    def _need(self, btype: int, pos: int, end: int, base: int, fixed: int) -> None:
        if end - pos - 12 < fixed:
            raise self._corrupt(btype, base + pos, f"body of {end - pos - 12} bytes, needs {fixed}")

    def _options(
        self, btype: int, buf: bytes | bytearray, start: int, end: int, pos: int, base: int
    ) -> dict[int, bytes]:
        """The options in ``buf[start:end]``; a repeated code keeps its first value."""
        found: dict[int, bytes] = {}
        head = struct.Struct(self._e + "HH")
        while end - start >= 4:
            code, length = head.unpack_from(buf, start)
            if code == 0:
                break
            if start + 4 + length > end:
                raise self._corrupt(btype, base + pos, f"option {code} at offset {base + start} overruns")
            found.setdefault(code, bytes(buf[start + 4 : start + 4 + length]))
            start += 4 + length + _pad(length)
        return found

    def _shb(self, buf: bytes | bytearray, pos: int, end: int, base: int) -> None:
        self._need(SHB, pos, end, base, 16)
        major, minor = struct.unpack_from(self._e + "HH", buf, pos + 12)
        if major != 1:
            raise self._corrupt(SHB, base + pos, f"unsupported version {major}.{minor}")
        self._first = len(self._interfaces)
        self._clocks = []

    def _idb(self, buf: bytes | bytearray, pos: int, end: int, base: int) -> None:
        self._need(IDB, pos, end, base, 8)
        linktype, _, snaplen = struct.unpack_from(self._e + "HHI", buf, pos + 8)
        opts = self._options(IDB, buf, pos + 16, end - 4, pos, base)
        name = opts[OPT_NAME].rstrip(b"\0").decode(errors="replace") if OPT_NAME in opts else None
        raw_filter = opts.get(OPT_FILTER, b"")
        # Only filter type 0 (a libpcap filter string) is text; BPF programs are left out.
        filt = raw_filter[1:].rstrip(b"\0").decode(errors="replace") if raw_filter[:1] == b"\0" else None
        tsresol = opts[OPT_TSRESOL][0] if opts.get(OPT_TSRESOL) else 6
        raw_offset = opts.get(OPT_TSOFFSET, b"")
        tsoffset = struct.unpack(self._e + "q", raw_offset)[0] if len(raw_offset) == 8 else 0
        self._interfaces.append(Interface(linktype, snaplen, name, filt, tsresol))
        self._clocks.append(_Clock(tsresol, tsoffset))

    def _clock(self, btype: int, local_id: int, pos: int, base: int) -> _Clock:
        if local_id >= len(self._clocks):
            raise self._corrupt(
                btype, base + pos, f"interface {local_id} but the section describes {len(self._clocks)}"
            )
        return self._clocks[local_id]

    def _epb(self, buf: bytes | bytearray, pos: int, end: int, base: int, out: list[Record]) -> None:
        self._need(EPB, pos, end, base, 20)
        local_id, high, low, caplen, orig = struct.unpack_from(self._e + "IIIII", buf, pos + 8)
        data_end = pos + 28 + caplen
        if data_end > end - 4:
            raise self._corrupt(EPB, base + pos, f"captured length {caplen} overruns the block")
        clock = self._clock(EPB, local_id, pos, base)
        direction = None
        opts_start = data_end + _pad(caplen)
        if opts_start < end - 4:  # options are rare in the fast path; only look when present
            flags = self._options(EPB, buf, opts_start, end - 4, pos, base).get(OPT_EPB_FLAGS, b"")
            if len(flags) == 4:
                bits = struct.unpack(self._e + "I", flags)[0] & 3
                direction = Direction(bits) if bits in (1, 2) else None
        self.packets += 1
        ts = ((high << 32) | low) * clock.mul // clock.div + clock.offset
        out.append(Record(ts, bytes(buf[pos + 28 : data_end]), orig, self._first + local_id, direction))

    def _spb(self, buf: bytes | bytearray, pos: int, end: int, base: int, out: list[Record]) -> None:
        # A Simple Packet Block belongs to interface 0, has no timestamp (recorded as 0)
        # and no captured length: it is the original length cut to the snaplen.
        self._need(SPB, pos, end, base, 4)
        self._clock(SPB, 0, pos, base)
        (orig,) = struct.unpack_from(self._e + "I", buf, pos + 8)
        snaplen = self._interfaces[self._first].snaplen or orig
        caplen = min(orig, snaplen, end - pos - 16)
        self.packets += 1
        out.append(Record(0, bytes(buf[pos + 12 : pos + 12 + caplen]), orig, self._first))

    def _opb(self, buf: bytes | bytearray, pos: int, end: int, base: int, out: list[Record]) -> None:
        # The obsolete Packet Block: an EPB with a 16-bit interface id and a drops count.
        self._need(OPB, pos, end, base, 20)
        local_id, _, high, low, caplen, orig = struct.unpack_from(self._e + "HHIIII", buf, pos + 8)
        if pos + 28 + caplen > end - 4:
            raise self._corrupt(OPB, base + pos, f"captured length {caplen} overruns the block")
        clock = self._clock(OPB, local_id, pos, base)
        self.packets += 1
        out.append(
            Record(
                clock.ns((high << 32) | low),
                bytes(buf[pos + 28 : pos + 28 + caplen]),
                orig,
                self._first + local_id,
            )
        )

    def _isb(self, buf: bytes | bytearray, pos: int, end: int, base: int) -> None:
        self._need(ISB, pos, end, base, 12)
        local_id, high, low = struct.unpack_from(self._e + "III", buf, pos + 8)
        clock = self._clock(ISB, local_id, pos, base)
        stats = InterfaceStats(self._first + local_id, clock.ns((high << 32) | low))
        for code, value in self._options(ISB, buf, pos + 20, end - 4, pos, base).items():
            if len(value) != 8:
                continue  # a malformed counter is dropped rather than failing the whole file
            if code in (ISB_STARTTIME, ISB_ENDTIME):
                hi, lo = struct.unpack(self._e + "II", value)
                field = "starttime_ns" if code == ISB_STARTTIME else "endtime_ns"
                setattr(stats, field, clock.ns((hi << 32) | lo))
            elif code in ISB_COUNTERS:
                setattr(stats, ISB_COUNTERS[code], struct.unpack(self._e + "Q", value)[0])
        self._statistics.append(stats)
