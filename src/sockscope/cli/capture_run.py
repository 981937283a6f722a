"""The two loops behind ``sockscope capture``: a live capture and reading a file.

Both end the same way whatever stops them: the output file is closed complete,
then the counters go to stderr as tcpdump prints them.
"""

from __future__ import annotations

import argparse
import gc
import heapq
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence

from sockscope.capture.engine import Capture, CaptureStats
from sockscope.capture.packet import DIRECTION_NAMES, CapturedPacket
from sockscope.capture.packet_socket import RingConfig
from sockscope.capture.sink import FileSink, Rotation
from sockscope.capture.tpacket import Frame
from sockscope.errors import SockscopeError, UsageError
from sockscope.pcap.records import Direction, Interface, InterfaceStats, Record

from .packet_lines import DIRECTION_WORDS, PKTTYPE_WORDS, TimeFormat, link_prefix, verbose_suffix

_DIRECTIONS = {Direction.INBOUND: "in", Direction.OUTBOUND: "out"}


class Printer:
    """Turns packets into text lines or JSON on stdout."""

    def __init__(self, args: argparse.Namespace, show_interface: bool) -> None:
        self.times = TimeFormat(args.time_style, args.time_stamp_precision == "nano")
        self.link = args.link_header
        self.verbose = args.verbose
        self.json = args.json
        self.jsonl = args.jsonl
        self.show_interface = show_interface
        self._first_json = True
        self._quick: dict[int, Callable[[bytes, int], str]] = {}
        self.out = sys.stdout
        if self.json:
            self.out.write("[")

    def packets(self, pkts: Iterable[CapturedPacket]) -> None:
        if self.json or self.jsonl:
            self._json(pkts)
            return
        fmt = self.times.format
        lines = []
        for p in pkts:
            sec, nsec = divmod(p.timestamp_ns, 1_000_000_000)
            where = (
                f"{p.interface} {DIRECTION_WORDS.get(p.direction or '', '?'):<3} "
                if self.show_interface
                else ""
            )
            lines.append(self._line(fmt(sec, nsec) + where, p))
        self.out.write("".join(lines))
        self.out.flush()

    def records(self, records: Sequence[Record], interfaces: Sequence[Interface]) -> None:
        """Records read from a file; the common shapes take the quick summary path."""
        if self.json or self.jsonl or self.verbose or self.link:
            self.packets(
                CapturedPacket(
                    r.timestamp_ns,
                    r.data,
                    r.orig_len,
                    interfaces[r.interface_id].linktype,
                    interfaces[r.interface_id].name or "",
                    r.interface_id,
                    _DIRECTIONS.get(r.direction) if r.direction else None,
                )
                for r in records
            )
            return
        fmt = self.times.format
        quick = self._quick
        lines: list[str] = []
        append = lines.append
        if self.show_interface:
            for r in records:
                iface = interfaces[r.interface_id]
                summarize = quick.get(iface.linktype) or self._summarizer(iface.linktype)
                sec, nsec = divmod(r.timestamp_ns, 1_000_000_000)
                word = DIRECTION_WORDS.get(_DIRECTIONS.get(r.direction, "") if r.direction else "", "?")
                append(f"{fmt(sec, nsec)}{iface.name} {word:<3} {summarize(r.data, r.orig_len)}\n")
        elif len({i.linktype for i in interfaces}) == 1 and self.times.style == 0 and not self.times.nano:
            # The common case (a classic pcap file, default timestamps), inlined.
            summarize = quick.get(interfaces[0].linktype) or self._summarizer(interfaces[0].linktype)
            clock = self.times.clock_text
            last, stamp = -1, ""
            for r in records:
                sec, nsec = divmod(r.timestamp_ns, 1_000_000_000)
                if sec != last:
                    last, stamp = sec, clock(sec)
                append(f"{stamp}.{nsec // 1000:06d} {summarize(r.data, r.orig_len)}\n")
        else:
            for r in records:
                linktype = interfaces[r.interface_id].linktype
                summarize = quick.get(linktype) or self._summarizer(linktype)
                sec, nsec = divmod(r.timestamp_ns, 1_000_000_000)
                append(f"{fmt(sec, nsec)}{summarize(r.data, r.orig_len)}\n")
        self.out.write("".join(lines))

    def _summarizer(self, linktype: int) -> Callable[[bytes, int], str]:
        from sockscope.packets.quick import summarizer

        made = self._quick[linktype] = summarizer(linktype)
        return made

    def frames(self, frames: Sequence[Frame], linktype: int, ifname: Callable[[int], str]) -> None:
        """The live fast path: ring frames, no CapturedPacket unless JSON is wanted."""
        from sockscope.packets.packet import Packet

        if self.json or self.jsonl:
            self._json(
                CapturedPacket(
                    f.sec * 1_000_000_000 + f.nsec,
                    f.data,
                    f.wirelen,
                    linktype,
                    ifname(f.ifindex),
                    0,
                    DIRECTION_NAMES.get(f.pkttype),
                )
                for f in frames
            )
            return
        fmt = self.times.format
        lines = []
        if self.verbose or self.link:
            for f in frames:
                pkt = Packet(f.data, linktype, f.wirelen)
                head = f"{fmt(f.sec, f.nsec)}{ifname(f.ifindex)} {PKTTYPE_WORDS.get(f.pkttype, '?'):<3} "
                lines.append(self._line_of(head, pkt))
        else:
            summarize = self._quick.get(linktype) or self._summarizer(linktype)
            for f in frames:
                head = f"{fmt(f.sec, f.nsec)}{ifname(f.ifindex)} {PKTTYPE_WORDS.get(f.pkttype, '?'):<3} "
                lines.append(f"{head}{summarize(f.data, f.wirelen)}\n")
        self.out.write("".join(lines))
        self.out.flush()

    def _line(self, head: str, p: CapturedPacket) -> str:
        return self._line_of(head, p.packet)

    def _line_of(self, head: str, pkt: object) -> str:
        from sockscope.packets.packet import Packet

        assert isinstance(pkt, Packet)
        text = pkt.summary()
        if self.verbose and text.startswith(("IP ", "IP6 ")):
            proto, rest = text.split(" ", 1)
            text = f"{proto}{verbose_suffix(pkt)} {rest}"
        if self.link:
            text = link_prefix(pkt) + text
        return f"{head}{text}\n"

    def _json(self, pkts: Iterable[CapturedPacket]) -> None:
        verbose = self.verbose > 0
        out = self.out
        for p in pkts:
            text = json.dumps(p.to_dict(verbose), separators=(",", ":") if self.jsonl else (", ", ": "))
            if self.jsonl:
                out.write(text + "\n")
            else:
                out.write(("\n" if self._first_json else ",\n") + text)
                self._first_json = False
        out.flush()

    def close(self) -> None:
        if self.json:
            self.out.write("\n]\n" if not self._first_json else "]\n")
            self.out.flush()


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
        paused = _pause_gc()
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
        raw = self._raw_writer(sink) if sink is not None and remaining is None else None
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
            if sink is not None:
                sink.write_frames(frames, iid)
            elif printer is not None:
                iface = cap.interfaces[iid]
                ifname = cap.ifname if iface.index == 0 else (lambda _i, n=iface.name: n)
                printer.frames(frames, iface.linktype, ifname)
            if remaining == 0:
                cap.stop()
                break
        return remaining


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


def read_file(args: argparse.Namespace) -> int:
    """``capture -r FILE [FILTER]``: print (or ``-w``) the packets that match.

    Works a batch of records (one read chunk) at a time; a damaged file raises
    PcapError only after every packet before the damage is out.
    """
    from sockscope.capture.bpf import BpfProgram, compile_filter
    from sockscope.pcap.files import open_reader

    reader = open_reader(sys.stdin.buffer if args.read == "-" else args.read)
    paused = _pause_gc()
    programs: dict[int, BpfProgram | None] = {}
    sink: FileSink | None = None
    printer: Printer | None = None
    remaining = args.count
    try:
        with reader:
            for batch in reader.batches():
                interfaces = reader.interfaces
                if args.filter_text:
                    for linktype in {i.linktype for i in interfaces} - programs.keys():
                        programs[linktype] = compile_filter(args.filter_text, linktype)
                    batch = [
                        r
                        for r in batch
                        if programs[interfaces[r.interface_id].linktype].matches(r.data, r.orig_len)  # type: ignore[union-attr]
                    ]
                if remaining is not None:
                    batch = batch[:remaining]
                    remaining -= len(batch)
                if args.write:
                    if sink is None:
                        sink = _file_sink_for(args, reader.format == "pcapng", list(interfaces))
                    for record in batch:
                        sink.write_record(record)
                else:
                    if printer is None:
                        printer = Printer(args, show_interface=any(i.name for i in interfaces))
                    printer.records(batch, interfaces)
                if remaining == 0:
                    break
    finally:
        if paused:
            gc.enable()
        if sink is not None:
            sink.close()
        if printer is not None:
            printer.close()
        elif args.json:
            sys.stdout.write("[]\n")
    return 0


def _pause_gc() -> bool:
    """Turn the cycle collector off for a packet loop; True if it was on.

    Packets, records and lines form no reference cycles, so the collector finds
    nothing, but with a million short-lived objects its passes cost about a third of
    the loop's time.
    """
    was_on = gc.isenabled()
    gc.disable()
    return was_on


def _file_sink_for(args: argparse.Namespace, source_pcapng: bool, interfaces: list[Interface]) -> FileSink:
    pcapng = args.pcapng or args.write.endswith(".pcapng") or source_pcapng
    size = int(args.file_size * 1_000_000) if args.file_size else None
    rotation = Rotation(size, args.rotate_seconds, args.file_count)
    return FileSink(args.write, interfaces, pcapng, args.time_stamp_precision == "nano", rotation)
