"""One line per packet in the style of ``tcpdump -n``: time, interface, direction,
then the summary from the shared decoder stack.

Timestamps (tcpdump's -t family): 0 "HH:MM:SS.ffffff" local time (the default),
1 none (-t), 2 seconds since the epoch (-tt), 3 delta since the previous packet
(-ttt), 4 date and time (-tttt), 5 delta since the first packet (-ttttt). The text of
the current second is built once per second, not per packet.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sockscope.packets.packet import Packet

DIRECTION_WORDS = {"in": "In", "out": "Out", "broadcast": "B", "multicast": "M", "otherhost": "P"}


class TimeFormat:
    """Formats (sec, nsec) per the -t count, with µs or ns digits."""

    def __init__(self, style: int = 0, nano: bool = False) -> None:
        self.style = style
        self.nano = nano
        self._sec = -1
        self._text = ""
        self._first: int | None = None
        self._prev: int | None = None
        self.format: Callable[[int, int], str] = {
            0: self._clock,
            1: self._none,
            2: self._epoch,
            3: self._delta_prev,
            4: self._clock,
            5: self._delta_first,
        }[min(style, 5)]

    def _frac(self, nsec: int) -> str:
        return f"{nsec:09d}" if self.nano else f"{nsec // 1000:06d}"

    def clock_text(self, sec: int) -> str:
        """The local time of second ``sec`` ("HH:MM:SS", with the date for -tttt)."""
        fmt = "%Y-%m-%d %H:%M:%S" if self.style == 4 else "%H:%M:%S"
        return time.strftime(fmt, time.localtime(sec))

    def _clock(self, sec: int, nsec: int) -> str:
        if sec != self._sec:
            self._sec = sec
            self._text = self.clock_text(sec)
        return f"{self._text}.{self._frac(nsec)} "

    def _none(self, sec: int, nsec: int) -> str:
        return ""

    def _epoch(self, sec: int, nsec: int) -> str:
        return f"{sec}.{self._frac(nsec)} "

    def _delta(self, base: int, now: int) -> str:
        sec, nsec = divmod(max(now - base, 0), 1_000_000_000)
        hours, rest = divmod(sec, 3600)
        return f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}.{self._frac(nsec)} "

    def _delta_prev(self, sec: int, nsec: int) -> str:
        now = sec * 1_000_000_000 + nsec
        prev, self._prev = self._prev, now
        return self._delta(now if prev is None else prev, now)

    def _delta_first(self, sec: int, nsec: int) -> str:
        now = sec * 1_000_000_000 + nsec
        if self._first is None:
            self._first = now
        return self._delta(self._first, now)


def link_prefix(pkt: Packet) -> str:
    """tcpdump -e: the link-layer addresses and type before the summary."""
    from sockscope.packets.ether import Ethernet
    from sockscope.packets.fields import mac_to_text
    from sockscope.packets.sll import SLL, SLL2

    layers = pkt.layers
    if not layers:
        return ""
    first = layers[0]
    if isinstance(first, Ethernet):
        src, dst = mac_to_text(first.src), mac_to_text(first.dst)
        return f"{src} > {dst}, ethertype 0x{first.type:04x}, length {pkt.wirelen}: "
    if isinstance(first, SLL | SLL2):
        return f"ethertype 0x{first.protocol:04x}, length {pkt.wirelen}: "
    return ""


def verbose_suffix(pkt: Packet) -> str:
    """tcpdump -v's IP header details, as one parenthesised group."""
    from sockscope.packets.ipv4 import IP_DF, IP_MF, IPv4
    from sockscope.packets.ipv6 import IPv6

    for layer in pkt.layers:
        if isinstance(layer, IPv4):
            flags = "+" if layer.flags_frag & IP_MF else ("DF" if layer.flags_frag & IP_DF else "none")
            offset = (layer.flags_frag & 0x1FFF) * 8
            return (
                f" (tos 0x{layer.tos:x}, ttl {layer.ttl}, id {layer.ident}, offset {offset}, "
                f"flags [{flags}], proto {layer.proto}, length {layer.total_len})"
            )
        if isinstance(layer, IPv6):
            return (
                f" (flowlabel 0x{layer.flow_label:05x}, hlim {layer.hop_limit}, "
                f"next-header {layer.next_header}, payload length {layer.payload_len})"
            )
    return ""
