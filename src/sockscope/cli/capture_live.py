"""The live loop of ``sockscope capture``: rings to a file or to the screen.

Whatever stops it (a signal, -c, --duration, -G with -W, an interface going down),
the file is closed complete and the counters go to stderr as tcpdump prints them.
"""

from __future__ import annotations

import argparse
import gc
import heapq
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from sockscope.capture.engine import Capture, CaptureStats
from sockscope.capture.packet_socket import RingConfig
from sockscope.capture.sink import FileSink, Rotation
from sockscope.capture.tpacket import Frame
from sockscope.errors import SockscopeError, UsageError
from sockscope.packets.sll import PACKET_OUTGOING
from sockscope.pcap.records import Interface, InterfaceStats

from .capture_print import Printer, pause_gc

if TYPE_CHECKING:
    from sockscope.capture.owners import OwnerIndex
    from sockscope.inventory.model import Owner


def _stats_text(stats: Sequence[CaptureStats]) -> str:
    def one(s: CaptureStats, label: str) -> str:
        # tcpdump's wording, line for line: scripts that parse tcpdump's counters work.
        return (
            f"{label}{s.captured} packets captured\n{label}{s.received} packets received by filter\n"
            f"{label}{s.dropped} packets dropped by kernel\n"
        )

    if len(stats) == 1:
        return one(stats[0], "")
    total = CaptureStats(
        "total", *(sum(getattr(s, f) for s in stats) for f in ("captured", "received", "dropped"))
    )
    return "".join(one(s, f"{s.interface}: ") for s in stats) + one(total, "total: ")


def _drop_privileges(user: str) -> None:
    import pwd

    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise UsageError(f"-Z: no such user: {user}") from None
    try:
        os.setgroups(os.getgrouplist(entry.pw_name, entry.pw_gid))
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)
    except PermissionError:
        raise SockscopeError(f"-Z {user}: cannot change user (not root?)") from None


def _fanout(text: str | None) -> tuple[int, str] | None:
    if text is None:
        return None
    group, _, mode = text.partition(":")
    if not group.isdigit() or int(group) > 0xFFFF:
        raise UsageError(f"--fanout: group must be a number 0..65535, not {group!r}")
    return int(group), mode or "hash"


def _ring(args: argparse.Namespace) -> RingConfig:
    if args.buffer_size is None:
        return RingConfig(block_timeout_ms=args.block_timeout)
    return RingConfig.for_buffer(args.buffer_size, args.block_timeout)


class LiveRun:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.capture = Capture(
            args.interface or "any",
            args.filter_text,
            snaplen=args.snaplen,
            ring=_ring(args),
            promisc=args.promisc,
            direction=args.direction,
            netns=args.netns,
            fanout=_fanout(args.fanout),
        )
        self._stats_wanted = False
        self._start_ns = time.time_ns()
        # Packets written or printed per interface: what "captured" means to a user of
        # -c (the ring may have handed over more than were used).
        self.handled = [0] * len(self.capture.interfaces)
        self.owner_index: OwnerIndex | None = None
        self._keyers: dict[int, Callable[[bytes], bytes | None]] = {}
        if args.owners:
            if args.write and not (args.pcapng or args.write.endswith(".pcapng")):
                raise UsageError(
                    "--owners with -w needs a pcapng file (the owner goes in each packet's comment)"
                )
            from sockscope.capture.owners import OwnerIndex

            self.owner_index = OwnerIndex(args.netns)

    def statistics(self) -> list[CaptureStats]:
        stats = self.capture.statistics()
        for s, n in zip(stats, self.handled, strict=True):
            s.captured = n
        return stats

    def request_stop(self) -> None:
        self.capture.stop()

    def request_stats(self) -> None:
        self._stats_wanted = True
        self.capture.wake()

    def _file_stats(self) -> list[InterfaceStats]:
        now = time.time_ns()
        return [
            InterfaceStats(
                i,
                now,
                starttime_ns=self._start_ns,
                endtime_ns=now,
                ifrecv=s.received,
                ifdrop=s.dropped,
                filteraccept=s.received,
                osdrop=s.dropped,
                usrdeliv=s.captured,
            )
            for i, s in enumerate(self.statistics())
        ]

    def run(self) -> int:
        args, cap = self.args, self.capture
        sink: FileSink | None = None
        printer: Printer | None = None
        try:
            if args.relinquish_privileges:
                _drop_privileges(args.relinquish_privileges)
            if args.write:
                sink = self._open_sink()
            else:
                printer = Printer(args, show_interface=True)
            if not args.quiet:
                sys.stderr.write(self._listening())
                sys.stderr.flush()
            self._loop(sink, printer)
        finally:
            if sink is not None:
                sink.close()
            if printer is not None:
                printer.close()
            stats = self.statistics()
            cap.close()
            if not args.quiet:
                sys.stderr.write(_stats_text(stats))
        if cap.error is not None:
            raise cap.error
        return 0

    def _listening(self) -> str:
        cap = self.capture
        names = ", ".join(i.name for i in cap.interfaces)
        kind = {1: "EN10MB (Ethernet)", 113: "LINUX_SLL (Linux cooked v1)"}.get(
            cap.linktype, str(cap.linktype)
        )
        return f"listening on {names}, link-type {kind}, snapshot length {cap.snaplen} bytes\n"

    def _open_sink(self) -> FileSink:
        args, cap = self.args, self.capture
        ifaces = [Interface(i.linktype, i.snaplen, i.name, i.filter or None) for i in cap.interfaces]
        pcapng = args.pcapng or args.write.endswith(".pcapng")
        rotation = Rotation(
            int(args.file_size * 1_000_000) if args.file_size else None, args.rotate_seconds, args.file_count
        )
        sink = FileSink(args.write, ifaces, pcapng, args.time_stamp_precision == "nano", rotation)
        sink.stats_from(self._file_stats)
        return sink

    def _loop(self, sink: FileSink | None, printer: Printer | None) -> None:
        paused = pause_gc()
        try:
            self._loop_body(sink, printer)
        finally:
            if paused:
                gc.enable()

    def _loop_body(self, sink: FileSink | None, printer: Printer | None) -> None:
        args, cap = self.args, self.capture
        remaining = args.count
        deadline = None if args.duration is None else time.monotonic() + args.duration
        # Whole blocks go from the ring into the file unless -c must cut a block short.
        whole_blocks = sink is not None and remaining is None and self.owner_index is None
        raw = self._raw_writer(sink) if whole_blocks and sink is not None else None
        while not cap.stopped:
            timeout = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
            batches = cap.poll(max(timeout, 0), raw) if timeout > 0 else []
            remaining = self._deliver(batches, remaining, sink, printer)
            if self._stats_wanted:
                self._stats_wanted = False
                sys.stderr.write(_stats_text(self.statistics()))
            if deadline is not None and time.monotonic() >= deadline:
                cap.stop()
            if sink is not None and sink.finished:
                cap.stop()
        if remaining != 0 and cap.error is None and not (sink is not None and sink.finished):
            # Stopped by a signal or the duration: what arrived before it still counts.
            self._deliver(cap.drain(raw), remaining, sink, printer)

    def _owners(self, frames: Sequence[Frame], linktype: int) -> list[tuple[Owner, ...]]:
        from sockscope.packets.quick import flow_keyer

        index = self.owner_index
        assert index is not None
        key = self._keyers.get(linktype) or self._keyers.setdefault(linktype, flow_keyer(linktype))
        return [index.owners_of(key(f.data), f.pkttype == PACKET_OUTGOING) for f in frames]

    def _raw_writer(self, sink: FileSink) -> Callable[[int, memoryview, int], int] | None:
        write_block = sink.block_writer()
        if write_block is None:
            return None
        handled = self.handled

        def raw(iid: int, view: memoryview, offset: int) -> int:
            n = write_block(iid, view, offset)
            handled[iid] += n
            return n

        return raw

    def _deliver(
        self,
        batches: list[tuple[int, list[Frame]]],
        remaining: int | None,
        sink: FileSink | None,
        printer: Printer | None,
    ) -> int | None:
        """Write or print the batches; returns how many packets -c still wants."""
        cap = self.capture
        if len(cap.interfaces) > 1 and len(batches) > 1:
            batches = _interleave(batches)
        for iid, frames in batches:
            if remaining is not None:
                frames = frames[:remaining]
                remaining -= len(frames)
            self.handled[iid] += len(frames)
            iface = cap.interfaces[iid]
            owners = self._owners(frames, iface.linktype) if self.owner_index is not None else None
            if sink is not None:
                comments = None if owners is None else [_owner_comment(o) for o in owners]
                sink.write_frames(frames, iid, comments)
            elif printer is not None:
                ifname = cap.ifname if iface.index == 0 else (lambda _i, n=iface.name: n)
                printer.frames(frames, iface.linktype, ifname, owners)
            if remaining == 0:
                cap.stop()
                break
        return remaining


def _owner_comment(owners: tuple[Owner, ...]) -> str | None:
    if not owners:
        return None
    return "; ".join(
        f"pid {o.pid} {o.command}" + (f" uid {o.uid}" if o.uid is not None else "") for o in owners
    )


def _interleave(batches: list[tuple[int, list[Frame]]]) -> list[tuple[int, list[Frame]]]:
    """Blocks from several rings in time order, as runs of frames from one ring."""
    streams = ([(f.sec, f.nsec, iid, f) for f in frames] for iid, frames in batches)
    out: list[tuple[int, list[Frame]]] = []
    for _sec, _nsec, iid, frame in heapq.merge(*streams, key=lambda item: (item[0], item[1])):
        if out and out[-1][0] == iid:
            out[-1][1].append(frame)
        else:
            out.append((iid, [frame]))
    return out
