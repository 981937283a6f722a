"""An incremental decoder for pcap and pcapng: feed it bytes, get back records.

The decoder does no I/O, so the same code reads files, pipes and sockets. It keeps
the bytes of an incomplete record until more arrive; ``close()`` says whether the
stream ended cleanly. On damage it first hands back every packet before it, then
raises: a reader shows all it can before the one error message.
"""

from __future__ import annotations

import struct

from sockscope.pcap.pcapfile import MAGIC_NS, MAGIC_US, PcapParser
from sockscope.pcap.pcapng import SHB, PcapngParser
from sockscope.pcap.records import NS_PER_S, Interface, InterfaceStats, PcapError, Record

_PCAP_MAGICS = {m.to_bytes(4, order) for m in (MAGIC_US, MAGIC_NS) for order in ("little", "big")}


class Decoder:
    """Decodes a pcap or pcapng stream, telling them apart by the first four bytes.

    ``name`` prefixes error messages (normally the file name). ``interfaces`` and
    ``statistics`` fill in as their blocks arrive; record ``interface_id``s index
    ``interfaces``.
    """

    def __init__(self, name: str = "<stream>", frames: bool = False) -> None:
        self.name = name
        # frames=True: hand out plain (sec, nsec, data, orig_len, interface_id,
        # direction) tuples instead of Records -- a third cheaper to make, for loops
        # over millions of packets.
        self.frames = frames
        # skip=True: find the record boundaries but return nothing (a reader that
        # shares a file with another process walks the other's part).
        self.skip = False
        self.interfaces: list[Interface] = []
        self.statistics: list[InterfaceStats] = []
        self._buf = bytearray()
        self._base = 0  # file offset of _buf[0]
        self._parser: PcapParser | PcapngParser | None = None
        self._error: PcapError | None = None

    @property
    def format(self) -> str | None:
        """The format, "pcap" or "pcapng", once the first four bytes have arrived; else None."""
        return self._parser.format if self._parser else None

    def feed(self, data: bytes | bytearray | memoryview) -> list[Record]:
        """Add bytes; return the records they complete.

        Damage found in this call is raised by the next ``feed`` or ``close``, so
        the records before it are returned first.
        """
        if self._error:
            raise self._error
        buf = self._buf
        buf += data
        out: list[Record] = []
        try:
            if self._parser is None:
                if len(buf) < 4:
                    return out
                self._parser = self._choose(bytes(buf[:4]))
            # An immutable snapshot: slicing bytes copies once, slicing a bytearray
            # and then making bytes of it copies twice (per packet, that is most of
            # the cost of reading).
            if isinstance(self._parser, PcapParser):
                self._parser.skip = self.skip
            pos = self._parser.parse(bytes(buf), 0, self._base, out)
            if self.skip:
                out = []
            elif self.frames and isinstance(self._parser, PcapngParser):
                out = [
                    (*divmod(r.timestamp_ns, NS_PER_S), r.data, r.orig_len, r.interface_id, r.direction)  # type: ignore[misc]
                    for r in out
                ]
        except PcapError as e:
            self._error = e
            return out
        except struct.error as e:  # a parser bug must still not surface as a bare struct.error
            self._error = PcapError(f"{self.name}: cannot decode at offset about {self._base}: {e}")
            return out
        if pos:
            del buf[:pos]
            self._base += pos
        return out

    def close(self) -> None:
        """Raise PcapError unless the stream ended cleanly after a complete record."""
        if self._error:
            raise self._error
        if self._parser is None:
            raise PcapError(f"{self.name}: truncated file header at offset 0: {len(self._buf)} of 24 bytes")
        if self._buf:
            raise self._parser.truncated(self._buf, 0, self._base)

    def _choose(self, magic: bytes) -> PcapParser | PcapngParser:
        if magic in _PCAP_MAGICS:
            return PcapParser(self.name, self.interfaces, self.frames)
        if int.from_bytes(magic, "little") == SHB:
            return PcapngParser(self.name, self.interfaces, self.statistics)
        raise PcapError(f"{self.name}: not a pcap or pcapng file (starts with 0x{magic.hex()} at offset 0)")
