"""Writing a capture to files, with tcpdump's rotation rules (-C, -G, -W).

- ``-C MB``: start a new file when the current one has reached MB million bytes; the
  files are FILE, FILE1, FILE2... or, with ``-W N``, a ring FILE0..FILE(N-1) that is
  overwritten in turn.
- ``-G SECONDS``: start a new file every SECONDS; FILE is a strftime template
  ("cap-%H%M%S.pcap"), expanded when each file opens. With ``-W N`` the capture ends
  after N files. With ``-C`` too, a count is appended to each name.

Every file is complete on its own: pcapng files each get the section header and the
interface descriptions, and, on closing, the interface statistics so far.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from sockscope.capture.tpacket import Frame
from sockscope.errors import UsageError
from sockscope.pcap.files import PcapngWriter, PcapWriter
from sockscope.pcap.records import Interface, InterfaceStats, Record

# Bytes a record costs beyond its data (pcapng: EPB with a direction option).
_OVERHEAD = {False: 16, True: 48}


@dataclass(frozen=True, slots=True)
class Rotation:
    size_bytes: int | None = None
    seconds: int | None = None
    max_files: int | None = None

    def __post_init__(self) -> None:
        if self.max_files is not None and self.size_bytes is None and self.seconds is None:
            raise UsageError("-W needs -C or -G")
        for value, flag in ((self.size_bytes, "-C"), (self.seconds, "-G"), (self.max_files, "-W")):
            if value is not None and value <= 0:
                raise UsageError(f"{flag} must be positive")


class FileSink:
    """Frames in, pcap or pcapng files out; ``finished`` turns True when ``-G`` with
    ``-W`` has made its last file (the capture should then stop)."""

    def __init__(
        self,
        template: str,
        interfaces: Sequence[Interface],
        pcapng: bool = False,
        nanosecond: bool = False,
        rotation: Rotation | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not pcapng and len({i.linktype for i in interfaces}) > 1:
            raise UsageError("interfaces of different link types need a pcapng file (--pcapng)")
        self.template = template
        self.interfaces = list(interfaces)
        self.pcapng = pcapng
        self.nanosecond = nanosecond
        self.rotation = rotation or Rotation()
        self.clock = clock
        self.files: list[str] = []
        self.finished = False
        self._size_count = 0  # files started by -C within the current -G period
        self._period_end = 0.0
        self._stats: Callable[[], Sequence[InterfaceStats]] = lambda: ()
        self._writer = self._open(self._next_name(new_period=True))

    def stats_from(self, source: Callable[[], Sequence[InterfaceStats]]) -> None:
        """Where the statistics written at the end of each pcapng file come from."""
        self._stats = source

    # -- names -------------------------------------------------------------------------
    def _next_name(self, new_period: bool) -> str:
        rot = self.rotation
        base = self.template
        if rot.seconds is not None:
            now = self.clock()
            if new_period:
                self._period_end = now + rot.seconds
                self._size_count = 0
            base = time.strftime(self.template, time.localtime(now))
        if rot.size_bytes is None:
            return base
        n = self._size_count
        self._size_count += 1
        if rot.seconds is not None:  # a count within the period: NAME, NAME.1, NAME.2...
            return f"{base}.{n}" if n else base
        if rot.max_files is not None:  # a ring: NAME0..NAME(N-1), padded
            width = len(str(rot.max_files - 1))
            return f"{base}{n % rot.max_files:0{width}d}"
        return f"{base}{n}" if n else base  # NAME, NAME1, NAME2...

    def _open(self, name: str) -> PcapWriter | PcapngWriter:
        writer: PcapWriter | PcapngWriter
        # "-" is standard output (tcpdump -w -), for piping into another tool.
        target: str | BinaryIO = sys.stdout.buffer if name == "-" else name
        if self.pcapng:
            writer = PcapngWriter(target, self.interfaces)
        else:
            snaplen = max(i.snaplen for i in self.interfaces)
            writer = PcapWriter(target, self.interfaces[0].linktype, snaplen, self.nanosecond)
        self.files.append(name)
        self._in_file = 0  # frames in the current file
        return writer

    def _rotate(self, new_period: bool) -> bool:
        """Close the current file and open the next; False when -G -W says stop."""
        self._close_current()
        if new_period and self.rotation.max_files is not None and self.rotation.seconds is not None:
            if len(self.files) >= self.rotation.max_files:
                self.finished = True
                return False
        self._writer = self._open(self._next_name(new_period))
        return True

    def _in_period(self) -> bool:
        """Start the next -G file if this one's period is over; False once -W says stop."""
        if self.rotation.seconds is not None and self.clock() >= self._period_end:
            return self._rotate(new_period=True)
        return True

    def _close_current(self) -> None:
        stats = self._stats() if self.pcapng else ()
        self._writer.close(stats)

    # -- writing ------------------------------------------------------------------------
    def write_frames(
        self, frames: Sequence[Frame], interface_id: int = 0, comments: Sequence[str | None] | None = None
    ) -> None:
        """Write frames; ``comments`` (pcapng only) gives each frame a packet comment."""
        if self.finished or not frames:
            return
        if not self._in_period():
            return
        rot = self.rotation
        if rot.size_bytes is None:
            self._write(frames, interface_id, comments)
            self._in_file += len(frames)
            return
        # Check the size before each frame, as tcpdump does, but write in runs.
        limit, overhead = rot.size_bytes, _OVERHEAD[self.pcapng]
        start, size = 0, self._writer.size
        for i, frame in enumerate(frames):
            if size >= limit and (i > start or self._in_file):
                self._write(frames[start:i], interface_id, comments[start:i] if comments else None)
                self._rotate(new_period=False)
                start, size = i, self._writer.size
            size += len(frame.data) + overhead
        self._write(frames[start:], interface_id, comments[start:] if comments else None)
        self._in_file += len(frames) - start

    def _write(
        self, frames: Sequence[Frame], interface_id: int, comments: Sequence[str | None] | None
    ) -> None:
        writer = self._writer
        if comments is not None and isinstance(writer, PcapngWriter):
            writer.write_frames(frames, interface_id, comments)
        else:
            writer.write_frames(frames, interface_id)

    def block_writer(self) -> Callable[[int, memoryview, int], int] | None:
        """A handler for ``Capture.poll(raw=...)`` that encodes ring blocks straight
        into the file; None when the size rotation needs a check per packet."""
        if self.rotation.size_bytes is not None:
            return None
        from sockscope.capture.fastpath import block_to_pcap, block_to_pcapng

        def write_block(interface_id: int, view: memoryview, offset: int) -> int:
            if self.finished:
                return 0
            if not self._in_period():
                return 0
            writer = self._writer
            if isinstance(writer, PcapngWriter):
                n = writer.extend_with(lambda buf: block_to_pcapng(view, offset, buf, interface_id))
            else:
                div = writer.frac_div
                n = writer.extend_with(lambda buf: block_to_pcap(view, offset, buf, div))
            self._in_file += n
            return n

        return write_block

    def write_record(self, record: Record) -> None:
        """One record read from a file (``-r IN -w OUT``)."""
        self.write_frames([_frame_of(record)], record.interface_id if self.pcapng else 0)

    def close(self) -> None:
        if not self._writer.closed:
            self._close_current()


def _frame_of(record: Record) -> Frame:
    sec, nsec = divmod(record.timestamp_ns, 1_000_000_000)
    direction = int(record.direction) if record.direction else 0
    return Frame(sec, nsec, record.data, record.orig_len, 0, 0, direction)
