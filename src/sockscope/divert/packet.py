"""A diverted packet: what the kernel queued, its lazily decoded layers, its verdict.

The engine builds one `DivertPacket` per queued packet and parses nothing but the
packet id; the rest (`info`, `layers`, `summary()`) is decoded on first use through
the shared decoders (`sockscope.packets.decode(payload, LINKTYPE_RAW)`).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from sockscope.errors import SockscopeError
from sockscope.netlink.nfqueue import NF_ACCEPT, NF_DROP, NF_REPEAT, QueuedPacket, parse_packet

if TYPE_CHECKING:
    from sockscope.packets import Header, Packet

H = TypeVar("H", bound="Header")

HOOK_NAMES = {0: "prerouting", 1: "input", 2: "forward", 3: "output", 4: "postrouting"}

_ifname: Callable[[int], str | None] | None = None


def interface_name(index: int) -> str | None:
    """The name of interface ``index`` in this process's namespace (cached; None if gone)."""
    global _ifname
    if _ifname is None:
        from sockscope.platform.linux import ifname_lookup

        _ifname = ifname_lookup()
    return _ifname(index)


class Verdict(enum.IntEnum):
    """What happens to a packet: the kernel's own numbers."""

    DROP = NF_DROP
    ACCEPT = NF_ACCEPT
    REPEAT = NF_REPEAT  # run the hook again from the start (change the mark, or it loops)


_ACCEPT = Verdict.ACCEPT


class InvalidPayload(SockscopeError, ValueError):
    """A replacement payload that is not a whole, valid IP packet."""


def fix_packet(data: bytes) -> bytes:
    """``data`` with IPv4 total length, IPv6 payload length, UDP length and the IPv4,
    TCP, UDP, ICMP and ICMPv6 checksums recomputed; raises InvalidPayload if it is
    not a valid IP packet.

    Checksums are the shared helpers of `sockscope.packets.checksum`.
    """
    from sockscope.packets import ICMP, LINKTYPE_RAW, TCP, UDP, ICMPv6, IPv4, IPv6, decode
    from sockscope.packets.checksum import internet_checksum, transport_checksum

    check_version(data)
    buf = bytearray(data)
    if buf[0] >> 4 == 4:
        struct.pack_into("!H", buf, 2, len(buf))
    else:
        struct.pack_into("!H", buf, 4, len(buf) - 40)
    pkt = decode(bytes(buf), LINKTYPE_RAW)
    if pkt.malformed:
        raise InvalidPayload(f"replacement payload is not a valid IP packet: {pkt.malformed}")
    ip = pkt.layers[0]
    if isinstance(ip, IPv4):
        hlen = ip.header_len
        buf[10:12] = b"\0\0"
        struct.pack_into("!H", buf, 10, internet_checksum(bytes(buf[:hlen])))
    assert isinstance(ip, IPv4 | IPv6)
    if pkt.truncated or (isinstance(ip, IPv4) and ip.is_fragment):
        return bytes(buf)  # a fragment: its transport checksum covers bytes we do not have
    for layer in pkt.layers[1:]:
        # Offsets of the layer within buf: the decoder records where each layer starts.
        off: int = layer._off
        if isinstance(layer, UDP):
            struct.pack_into("!H", buf, off + 4, len(buf) - off)
        if isinstance(layer, TCP | UDP | ICMPv6):
            at = off + (16 if isinstance(layer, TCP) else 6 if isinstance(layer, UDP) else 2)
            buf[at : at + 2] = b"\0\0"
            value = transport_checksum(ip.src, ip.dst, type(layer).IP_PROTO or 0, bytes(buf[off:]))
            if isinstance(layer, UDP) and value == 0:
                value = 0xFFFF  # zero on the wire means "no checksum"
            struct.pack_into("!H", buf, at, value)
            break
        if isinstance(layer, ICMP):
            buf[off + 2 : off + 4] = b"\0\0"
            struct.pack_into("!H", buf, off + 2, internet_checksum(bytes(buf[off:])))
            break
    return bytes(buf)


def check_version(data: bytes) -> None:
    if len(data) < 20 or data[0] >> 4 not in (4, 6) or (data[0] >> 4 == 6 and len(data) < 40):
        raise InvalidPayload(
            f"replacement payload is not an IP packet ({len(data)} bytes, "
            f"version {data[0] >> 4 if data else '-'})"
        )


def validate_packet(data: bytes) -> None:
    """Raise InvalidPayload unless ``data`` is a whole IPv4/IPv6 packet whose lengths agree."""
    from sockscope.packets import LINKTYPE_RAW, decode

    check_version(data)
    claimed = (
        struct.unpack_from("!H", data, 2)[0]
        if data[0] >> 4 == 4
        else 40 + struct.unpack_from("!H", data, 4)[0]
    )
    if claimed != len(data):
        raise InvalidPayload(f"replacement payload is {len(data)} bytes but its IP header says {claimed}")
    malformed = decode(data, LINKTYPE_RAW).malformed
    if malformed:
        raise InvalidPayload(f"replacement payload is not a valid IP packet: {malformed}")


class DivertPacket:
    """One packet taken out of the firewall path; give it a verdict exactly once.

    ``accept()``, ``drop()``, ``repeat()``; ``set_payload(new)`` and ``mark = n``
    change what is put back. Decoded layers: ``pkt[UDP].dport``, ``pkt.get(TCP)``,
    ``pkt.layers``, ``pkt.summary()``. Undecided packets get the session's default
    verdict after its timeout.
    """

    __slots__ = (
        "_info",
        "_msg",
        "_new_mark",
        "_new_payload",
        "_packet",
        "_unseen",
        "id",
        "queue",
        "received",
        "verdict",
    )

    def __init__(self, queue: int, packet_id: int, msg: bytes, received: float) -> None:
        self.queue = queue
        self.id = packet_id
        self._msg = msg  # the whole netlink message, parsed on demand
        self.received = received
        self.verdict: Verdict | None = None
        self._info: QueuedPacket | None = None
        self._packet: Packet | None = None
        self._new_payload: bytes | None = None
        self._new_mark: int | None = None
        self._unseen = False  # accepted by the user-space filter, never handed out

    # -- what the kernel said ------------------------------------------------------
    @property
    def info(self) -> QueuedPacket:
        """What the kernel said: hook, interfaces (``indev``/``outdev`` indexes and
        ``in_interface``/``out_interface`` names), mark, uid/gid, cap length..."""
        if self._info is None:
            self._info = parse_packet(memoryview(self._msg)[16:], interface_name)
        return self._info

    @property
    def payload(self) -> bytes:
        """The IP packet as it will be put back (the replacement, if one was set)."""
        return self._new_payload if self._new_payload is not None else self.info.payload

    @property
    def original_payload(self) -> bytes:
        return self.info.payload

    @property
    def hook(self) -> str:
        return HOOK_NAMES.get(self.info.hook, str(self.info.hook))

    @property
    def mark(self) -> int:
        return self._new_mark if self._new_mark is not None else self.info.mark

    @mark.setter
    def mark(self, value: int) -> None:
        if not 0 <= value <= 0xFFFFFFFF:
            raise ValueError(f"mark {value} is not a 32-bit unsigned number")
        self._new_mark = value

    # -- decoded layers ---------------------------------------------------------
    @property
    def packet(self) -> Packet:
        if self._packet is None:
            from sockscope.packets import LINKTYPE_RAW, decode

            info = self.info
            self._packet = decode(
                self.payload, LINKTYPE_RAW, info.wire_len if self._new_payload is None else None
            )
        return self._packet

    @property
    def layers(self) -> list[Header]:
        return self.packet.layers

    def get(self, cls: type[H]) -> H | None:
        return self.packet.get(cls)

    def __getitem__(self, cls: type[H]) -> H:
        return self.packet[cls]

    def __contains__(self, cls: type[Header]) -> bool:
        return cls in self.packet

    def summary(self) -> str:
        return self.packet.summary()

    # -- verdicts -----------------------------------------------------------------
    def set_payload(self, data: bytes, checksums: bool = True) -> None:
        """Replace the packet. With ``checksums`` lengths and checksums are recomputed;
        without, the bytes must already be a consistent IP packet. InvalidPayload if not
        an IP packet. The verdict still has to be given (``accept()``)."""
        if self.info.cap_len is not None:
            raise InvalidPayload(
                f"packet {self.id} was cut at the copy range ({len(self.info.payload)} of "
                f"{self.info.cap_len} bytes): its payload cannot be replaced"
            )
        data = bytes(data)
        fixed = fix_packet(data) if checksums else data
        validate_packet(fixed)
        self._new_payload = fixed
        self._packet = None

    def set_transport_payload(self, data: bytes) -> None:
        """Replace the data of the UDP datagram or TCP segment, leaving every header
        byte as it is (lengths and checksums recomputed). The verdict still has to be
        given. InvalidPayload for a packet without TCP/UDP, a fragment, a TCP segment
        that carries no data, or new TCP data of another length: that would shift
        every later sequence number of the connection, which sockscope does not track.
        """
        self.set_payload(self.with_transport_payload(self.payload, bytes(data)))

    def with_transport_payload(self, packet: bytes, data: bytes) -> bytes:
        """``packet`` (this packet's bytes, headers possibly changed in place) with its
        transport data replaced by ``data``; see `set_transport_payload`."""
        from sockscope.packets import TCP, UDP, IPv4

        transport = self.get(TCP) or self.get(UDP)
        if transport is None:
            raise InvalidPayload(f"packet {self.id} has no TCP or UDP layer whose data could be replaced")
        ip = self.layers[0]
        if isinstance(ip, IPv4) and ip.is_fragment:
            raise InvalidPayload(f"packet {self.id} is a fragment: its data cannot be replaced alone")
        start = transport._off + transport.header_len
        if isinstance(transport, TCP):
            old = len(transport.payload)
            if old == 0:
                raise InvalidPayload(f"packet {self.id} is a TCP segment without data: nothing to replace")
            if len(data) != old:
                raise InvalidPayload(
                    f"TCP data of {old} bytes cannot become {len(data)}: a segment that changes "
                    "length shifts the connection's sequence numbers, which sockscope does not track"
                )
            return packet[:start] + data
        out = bytearray(packet[:start] + data)
        struct.pack_into("!H", out, transport._off + 4, 8 + len(data))  # UDP length, for the decoder
        return bytes(out)

    # The engine sends verdicts at its next flush. accept() is the hot path: inlined.
    def accept(self) -> None:
        if self.verdict is not None:
            self._twice()
        self.verdict = _ACCEPT

    def drop(self) -> None:
        self._decide(Verdict.DROP)

    def repeat(self) -> None:
        self._decide(Verdict.REPEAT)

    def _decide(self, verdict: Verdict) -> None:
        if self.verdict is not None:
            self._twice()
        self.verdict = verdict

    def _twice(self) -> None:
        assert self.verdict is not None
        raise SockscopeError(f"packet {self.id} already has a verdict ({self.verdict.name.lower()})")

    def __repr__(self) -> str:
        state = self.verdict.name.lower() if self.verdict is not None else "pending"
        return f"<DivertPacket queue={self.queue} id={self.id} {state}>"
