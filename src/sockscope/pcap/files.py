"""The I/O edges: a file reader over Decoder, and buffered pcap/pcapng writers.

Writers collect records in memory and write them in chunks of FLUSH_AT bytes: a
capture writes up to a million packets a second, and one write() call each would
cost more than encoding them. The file header is written at once, so a file is
valid even before the first flush; a capture must call ``close()`` (or ``flush()``)
when it stops for whatever reason, or buffered packets are lost.

Signals: let SIGINT/SIGTERM handlers only ask the capture loop to stop, and close
the writer from the loop. An exception raised by a handler inside ``flush()`` can
land after the file write but before the buffer is emptied, and ``close()`` would
then write that chunk twice; no ordering of Python statements closes that window.
"""

from __future__ import annotations

import itertools
import os
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import TracebackType
from typing import IO, Any, Self

from sockscope.errors import UsageError
from sockscope.pcap.decoder import Decoder
from sockscope.pcap.pcapfile import RECORD_HEADER, pcap_header
from sockscope.pcap.pcapng import (
    EPB,
    EPB_DIRECTION_OPTIONS,
    epb_options,
    pcapng_epb,
    pcapng_idb,
    pcapng_isb,
    pcapng_shb,
)
from sockscope.pcap.records import NS_PER_S, Direction, Interface, InterfaceStats, PcapError, Record

FLUSH_AT = 1 << 20
READ_SIZE = 1 << 20

Source = str | os.PathLike[str] | IO[bytes]
# What Reader.frames() gives: seconds, nanoseconds, data, orig_len, interface_id,
# direction -- the leading fields in the order a live capture's frames have them.
Frame = tuple[int, int, bytes, int, int, Direction | None]


def _open(source: Source, mode: str) -> tuple[IO[bytes], str, bool]:
    """(file, name for messages, whether we opened it and so must close it)."""
    if isinstance(source, str | os.PathLike):
        name = os.fspath(source)
        try:
            return open(name, mode), name, True  # the Reader/Writer closes it
        except OSError as e:
            raise PcapError(f"{name}: {e.strerror}") from e
    return source, str(getattr(source, "name", "<stream>")), False


class Reader:
    """Iterate over the records of a pcap or pcapng file; ``interfaces`` is known once
    iteration has begun, ``statistics`` (pcapng ISBs, written last) once it has ended."""

    def __init__(self, source: Source) -> None:
        self._f, self.name, self._owned = _open(source, "rb")
        self._decoder = Decoder(self.name)
        self.interfaces = self._decoder.interfaces
        self.statistics = self._decoder.statistics

    @property
    def format(self) -> str | None:
        return self._decoder.format

    def __iter__(self) -> Iterator[Record]:
        for batch in self.batches():
            yield from batch

    def frames(self, share: tuple[int, int] | None = None) -> Iterator[list[Frame]]:
        """The records as plain ``(sec, nsec, data, orig_len, interface_id, direction)``
        tuples, a list per chunk: the cheapest form, for loops over millions of
        packets. Use either this or iteration/``batches()``, once.

        ``share=(k, n)``: only the chunks whose number is k modulo n, one list each
        (empty when no record ends in it), the others walked for their record
        boundaries only -- for n processes that read one file together.
        """
        decoder = self._decoder
        decoder.frames = True
        number = 0
        while chunk := self._f.read(READ_SIZE):
            mine = share is None or number % share[1] == share[0]
            decoder.skip = not mine
            batch = decoder.feed(chunk)
            if mine and (batch or share is not None):
                yield batch  # type: ignore[misc]
            number += 1
        decoder.close()

    def batches(self) -> Iterator[list[Record]]:
        """The records, a list per chunk read (fewer Python steps per record than
        iterating one by one); raises PcapError after the last good batch."""
        decoder = self._decoder
        while chunk := self._f.read(READ_SIZE):
            batch = decoder.feed(chunk)
            if batch:
                yield batch
        decoder.close()

    def close(self) -> None:
        if self._owned:
            self._f.close()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_reader(source: Source) -> Reader:
    """A Reader for a path or a binary file object; raises PcapError if the file cannot be opened."""
    return Reader(source)


class _Writer:
    """Buffering and file ownership shared by both writers."""

    def __init__(self, f: IO[bytes], name: str, owned: bool) -> None:
        self._f, self.name, self._owned = f, name, owned
        self._buf = bytearray()
        # How much of _buf is whole records. A KeyboardInterrupt can land halfway through a
        # write(); what lies past _done is then half a record, which flush() leaves out so
        # that closing in a `finally` still gives a readable file.
        self._done = 0
        self._flushed = 0
        self.closed = False

    @property
    def size(self) -> int:
        """Bytes written so far, buffered ones included (for size-based rotation)."""
        return self._flushed + self._done

    def _append(self, data: bytes) -> None:
        self._buf += data
        self._done = len(self._buf)

    def flush(self) -> None:
        """Write the buffered records to the file and flush it."""
        try:
            with memoryview(self._buf) as done:
                self._f.write(done[: self._done])
            self._f.flush()
        except OSError as e:
            raise PcapError(f"{self.name}: cannot write: {e.strerror}") from e
        del self._buf[: self._done]
        self._flushed += self._done
        self._done = 0

    def extend_with(self, encode: Callable[[bytearray], int]) -> int:
        """Let ``encode`` append whole, already encoded records to the buffer (a live
        capture encodes straight from its ring); return what ``encode`` returns."""
        self._check_open()
        try:
            n = encode(self._buf)
        except BaseException:
            del self._buf[self._done :]  # never keep half a record
            raise
        self._done = len(self._buf)
        if self._done >= FLUSH_AT:
            self.flush()
        return n

    def _encode_batch(self, encode: Callable[[bytearray], int]) -> None:
        """``extend_with`` for the writers' own batch encoders: a value that does not
        fit its field is a PcapError naming the file, and the batch is not kept."""
        try:
            self.extend_with(encode)
        except struct.error as e:
            raise PcapError(f"{self.name}: cannot write record: {e}") from e

    def _finish(self, trailer: bytes) -> None:
        del self._buf[self._done :]
        self._append(trailer)
        self.closed = True
        try:
            self.flush()
        finally:
            if self._owned:
                self._f.close()

    def _check_open(self) -> None:
        if self.closed:
            raise PcapError(f"{self.name}: write after close")

    def _trailer(self, stats: Sequence[InterfaceStats]) -> bytes:
        """What the format writes at the end; classic pcap has no place for statistics."""
        return b""

    def close(self, stats: Sequence[InterfaceStats] = ()) -> None:
        """Write the end of the file (pcapng: one statistics block per ``stats`` entry), flush, close."""
        if not self.closed:
            self._finish(self._trailer(stats))

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class PcapWriter(_Writer):
    """Classic pcap, little-endian; nanosecond timestamps unless ``nanosecond=False``."""

    def __init__(self, f: Source, linktype: int, snaplen: int = 262144, nanosecond: bool = True) -> None:
        super().__init__(*_open(f, "wb"))
        self.frac_div = self._frac_div = 1 if nanosecond else 1000
        self._append(pcap_header(linktype, snaplen, nanosecond))
        self.flush()

    def write(self, record: Record) -> None:
        """Buffer one record (its interface id and direction have no place in pcap)."""
        self._check_open()
        sec, frac = divmod(record.timestamp_ns, NS_PER_S)
        data = record.data
        try:
            head = RECORD_HEADER.pack(sec, frac // self._frac_div, len(data), record.orig_len)
        except struct.error as e:
            raise PcapError(f"{self.name}: cannot write record at {record.timestamp_ns} ns: {e}") from e
        buf = self._buf
        buf += head
        buf += data
        self._done = n = len(buf)
        if n >= FLUSH_AT:
            self.flush()

    def write_frames(self, frames: Iterable[Sequence[Any]], interface_id: int = 0) -> None:
        """Buffer a batch of ``(sec, nsec, data, wirelen, ...)`` tuples, as a live capture
        delivers them: the hot path of ``capture -w``, with no Record per packet."""
        pack = RECORD_HEADER.pack
        div = self._frac_div

        def encode(buf: bytearray) -> int:
            for sec, nsec, data, wirelen, *_ in frames:
                buf += pack(sec, nsec // div, len(data), wirelen)
                buf += data
            return 0

        self._encode_batch(encode)


class PcapngWriter(_Writer):
    """pcapng, little-endian, one section; every interface gets nanosecond timestamps.

    libpcap (so tcpdump) refuses a file whose interfaces differ in link type or
    snapshot length, and cuts packets to the snapshot length it declares. So when the
    given interfaces' snaplens differ, every IDB says 0 (no limit) instead; an
    interface added later keeps the file's value unless its own is larger.
    """

    def __init__(self, f: Source, interfaces: Sequence[Interface]) -> None:
        super().__init__(*_open(f, "wb"))
        self.interfaces: list[Interface] = []
        self._epb_head = struct.Struct("<IIIIIII")
        snaplens = {i.snaplen for i in interfaces}
        self._snaplen = snaplens.pop() if len(snaplens) == 1 else 0
        self._append(pcapng_shb())
        for iface in interfaces:
            self.add_interface(iface)
        self.flush()

    def add_interface(self, iface: Interface) -> int:
        """Describe one more interface (pcapng allows it mid-file); return its interface id."""
        self._check_open()
        snaplen = self._snaplen if self._snaplen == 0 or iface.snaplen <= self._snaplen else iface.snaplen
        # The writer converts timestamps to 10**-9 s itself, whatever tsresol the caller set.
        described = Interface(iface.linktype, snaplen, iface.name, iface.filter, 9)
        self.interfaces.append(described)
        self._append(pcapng_idb(described.linktype, snaplen, described.name, described.filter, 9))
        return len(self.interfaces) - 1

    def write(self, record: Record) -> None:
        """Buffer one record as an Enhanced Packet Block."""
        self._check_open()
        if not 0 <= record.interface_id < len(self.interfaces):
            raise PcapError(
                f"{self.name}: record for interface {record.interface_id}, "
                f"but {len(self.interfaces)} are described"
            )
        data = record.data
        buf = self._buf
        if record.direction:
            buf += pcapng_epb(
                record.interface_id, record.timestamp_ns, data, record.orig_len, record.direction
            )
        else:
            # The common case, inlined: packing the block header here is ~2x faster than pcapng_epb.
            caplen = len(data)
            pad = -caplen % 4
            total = 32 + caplen + pad
            ts = record.timestamp_ns
            try:
                head = self._epb_head.pack(
                    EPB, total, record.interface_id, ts >> 32, ts & 0xFFFFFFFF, caplen, record.orig_len
                )
            except struct.error as e:
                raise PcapError(f"{self.name}: cannot write record at {ts} ns: {e}") from e
            buf += head
            buf += data
            buf += b"\0\0\0"[:pad] + total.to_bytes(4, "little")
        self._done = n = len(buf)
        if n >= FLUSH_AT:
            self.flush()

    def write_frames(
        self,
        frames: Iterable[Sequence[Any]],
        interface_id: int = 0,
        comments: Sequence[str | None] | None = None,
    ) -> None:
        """Buffer a batch of ``(sec, nsec, data, wirelen, ifindex, pkttype, direction)``
        tuples from a live capture as Enhanced Packet Blocks carrying the direction
        (``Direction`` value, 0 for unknown) in epb_flags and, where ``comments`` has
        one for the frame, an opt_comment (Wireshark shows it as the packet comment)."""
        self._check_open()
        if not 0 <= interface_id < len(self.interfaces):
            described = len(self.interfaces)
            raise PcapError(f"{self.name}: frames for interface {interface_id}, {described} described")
        pack = self._epb_head.pack
        flags = EPB_DIRECTION_OPTIONS
        notes = comments if comments is not None else itertools.repeat(None)

        def encode(buf: bytearray) -> int:
            # strict=False: without comments, notes is an endless run of None.
            for frame, note in zip(frames, notes, strict=False):
                sec, nsec, data, wirelen, _ifindex, _pkttype, direction = frame
                caplen = len(data)
                pad = -caplen % 4
                opts = flags[direction] if note is None else epb_options(direction, note)
                total = 32 + caplen + pad + len(opts)
                ts = sec * NS_PER_S + nsec
                buf += pack(EPB, total, interface_id, ts >> 32, ts & 0xFFFFFFFF, caplen, wirelen)
                buf += data
                buf += b"\0\0\0"[:pad]
                buf += opts
                buf += total.to_bytes(4, "little")
            return 0

        self._encode_batch(encode)

    def _trailer(self, stats: Sequence[InterfaceStats]) -> bytes:
        return b"".join(pcapng_isb(s) for s in stats)


def writer_for(
    path: str | os.PathLike[str], interfaces: Sequence[Interface], nanosecond: bool = True
) -> PcapWriter | PcapngWriter:
    """A writer for ``path``: pcapng if the name ends in .pcapng, else classic pcap.

    Classic pcap has one link type for the whole file, so interfaces of different
    link types need pcapng.
    """
    if os.fspath(path).endswith(".pcapng"):
        return PcapngWriter(path, interfaces)
    if not interfaces:
        raise UsageError(f"{os.fspath(path)}: no interface to describe")
    linktypes = {i.linktype for i in interfaces}
    if len(linktypes) > 1:
        raise UsageError(f"{os.fspath(path)}: interfaces of different link types need a .pcapng file")
    return PcapWriter(path, interfaces[0].linktype, max(i.snaplen for i in interfaces), nanosecond)
