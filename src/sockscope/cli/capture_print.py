"""Packets as text or JSON on stdout, for ``sockscope capture`` live and from files:
tcpdump -n style lines through the quick summary path where it applies."""

from __future__ import annotations

import argparse
import gc
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from sockscope.capture.owners import owner_text
from sockscope.capture.packet import DIRECTION_NAMES, CapturedPacket
from sockscope.capture.tpacket import Frame
from sockscope.packets.packet import Packet
from sockscope.packets.sll import PACKET_TYPE_NAMES  # by sll_pkttype, for ring frames
from sockscope.pcap.files import Frame as FileFrame
from sockscope.pcap.records import Direction, Interface

from .packet_lines import DIRECTION_WORDS, TimeFormat, link_prefix, verbose_suffix

if TYPE_CHECKING:
    from sockscope.inventory.model import Owner

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
            lines.append(self._line(fmt(sec, nsec) + where, p.packet))
        self.out.write("".join(lines))
        self.out.flush()

    def file_frames(self, frames: Sequence[FileFrame], interfaces: Sequence[Interface]) -> None:
        """Packets read from a file, as ``Reader.frames()`` gives them; the common
        shapes take the quick summary path."""
        if self.json or self.jsonl or self.verbose or self.link:
            self.packets(
                CapturedPacket(
                    sec * 1_000_000_000 + nsec,
                    data,
                    orig,
                    interfaces[iid].linktype,
                    interfaces[iid].name or "",
                    iid,
                    _DIRECTIONS.get(direction) if direction else None,
                )
                for sec, nsec, data, orig, iid, direction in frames
            )
            return
        self.out.write(self.file_lines(frames, interfaces))

    def file_lines(self, frames: Sequence[FileFrame], interfaces: Sequence[Interface]) -> str:
        """The text lines of ``file_frames`` (not JSON, -v or -e), as one string."""
        fmt = self.times.format
        quick = self._quick
        lines: list[str] = []
        append = lines.append
        if self.show_interface:
            for sec, nsec, data, orig, iid, direction in frames:
                iface = interfaces[iid]
                summarize = quick.get(iface.linktype) or self._summarizer(iface.linktype)
                word = DIRECTION_WORDS.get(_DIRECTIONS.get(direction, "") if direction else "", "?")
                append(f"{fmt(sec, nsec)}{iface.name} {word:<3} {summarize(data, orig)}\n")
        elif len({i.linktype for i in interfaces}) == 1 and self.times.style == 0 and not self.times.nano:
            # The common case (a classic pcap file, default timestamps), inlined; %-formatting
            # is measurably cheaper than an f-string with a format spec here.
            summarize = quick.get(interfaces[0].linktype) or self._summarizer(interfaces[0].linktype)
            clock = self.times.clock_text
            last, stamp = -1, ""
            for sec, nsec, data, orig, _iid, _direction in frames:
                if sec != last:
                    last, stamp = sec, clock(sec)
                append("%s.%06d %s\n" % (stamp, nsec // 1000, summarize(data, orig)))  # noqa: UP031
        else:
            for sec, nsec, data, orig, iid, _direction in frames:
                linktype = interfaces[iid].linktype
                summarize = quick.get(linktype) or self._summarizer(linktype)
                append(f"{fmt(sec, nsec)}{summarize(data, orig)}\n")
        return "".join(lines)

    def _summarizer(self, linktype: int) -> Callable[[bytes, int], str]:
        from sockscope.packets.quick import summarizer

        made = self._quick[linktype] = summarizer(linktype)
        return made

    def frames(
        self,
        frames: Sequence[Frame],
        linktype: int,
        ifname: Callable[[int], str],
        owners: Sequence[tuple[Owner, ...]] | None = None,
    ) -> None:
        """The live fast path: ring frames, no CapturedPacket unless JSON is wanted.
        ``owners`` (``--owners``): the processes at the local end of each frame."""
        if self.json or self.jsonl:
            pkts = []
            for i, f in enumerate(frames):
                pkt = CapturedPacket(f.sec * 1_000_000_000 + f.nsec, f.data, f.wirelen, linktype,
                                     ifname(f.ifindex), 0, DIRECTION_NAMES.get(f.pkttype))  # fmt: skip
                if owners is not None:
                    pkt.owners = owners[i]
                pkts.append(pkt)
            self._json(pkts)
            return
        fmt = self.times.format
        lines = []
        summarize = self._quick.get(linktype) or self._summarizer(linktype)
        for i, f in enumerate(frames):
            head = f"{fmt(f.sec, f.nsec)}{ifname(f.ifindex)} {PACKET_TYPE_NAMES.get(f.pkttype, '?'):<3} "
            if self.verbose or self.link:
                line = self._line(head, Packet(f.data, linktype, f.wirelen))
            else:
                line = f"{head}{summarize(f.data, f.wirelen)}\n"
            if owners is not None and owners[i]:
                line = f"{line[:-1]} [{owner_text(owners[i])}]\n"
            lines.append(line)
        self.out.write("".join(lines))
        self.out.flush()

    def _line(self, head: str, pkt: Packet) -> str:
        """One line through the full decoder (-v, -e, or a shape the quick path skips)."""
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


def pause_gc() -> bool:
    """Turn the cycle collector off for a packet loop; True if it was on.

    Packets, records and lines form no reference cycles, so the collector finds
    nothing, but with a million short-lived objects its passes cost about a third of
    the loop's time.
    """
    was_on = gc.isenabled()
    gc.disable()
    return was_on
