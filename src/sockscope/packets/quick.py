"""Summaries of the common packet shapes without building layers: the hot path of
``capture -r`` and of printing a live capture.

``summarizer(linktype)`` gives ``f(data, wirelen) -> str``. It answers itself for
well-formed TCP and UDP over IPv4 (no options, not a fragment) and IPv6 (no extension
headers), on Ethernet or Linux cooked frames, with one ``struct`` unpack and a cache of
the address/port text per flow; anything else, and anything whose lengths do not add
up, goes to the full decoder, ``decode(...).summary()``. The two give the same text
for every packet: the tests compare them over generated and fuzzed frames.

Written as a closure over its structs and caches because a packet costs about a
microsecond here, and each attribute lookup or method call avoided is a tenth of it.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable

from sockscope.packets.packet import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, Packet
from sockscope.packets.summary import options_text
from sockscope.packets.tcp import ACK, URG, flag_text, parse_options

_MAX_FLOWS = 65536  # cached flow prefixes before the cache starts over

Summarizer = Callable[[bytes, int], str]


def summarizer(linktype: int) -> Summarizer:
    """``f(data, wirelen) -> summary`` for frames of ``linktype``."""
    l3 = {LINKTYPE_ETHERNET: 14, LINKTYPE_LINUX_SLL: 16}.get(linktype)

    def slow(data: bytes, wirelen: int) -> str:
        return Packet(data, linktype, wirelen).summary()

    if l3 is None:
        return slow
    lead = l3 - 2  # the EtherType / protocol field sits just before the network header
    # IPv4: type, ver_ihl, total_len, flags_frag, proto, (addresses, ports), then the
    # word after the ports: UDP's length and checksum, or TCP's sequence number.
    v4 = struct.Struct(f"!{lead}xHBxH2xHxB2x12xI").unpack_from
    # IPv6: type, version/class byte, payload_len, next_header, (addresses, ports), the word.
    v6 = struct.Struct(f"!{lead}xHB3xHBx36xI").unpack_from
    tcp_rest = struct.Struct("!IHH2xH").unpack_from  # ack, offset/flags, window, urgent
    v4_need, v6_need = l3 + 28, l3 + 48
    ipv4_key, ipv6_key = slice(l3 + 12, l3 + 24), slice(l3 + 8, l3 + 44)
    # Addresses, ports and UDP length: everything a UDP summary says.
    udp4_key, udp6_key = slice(l3 + 12, l3 + 26), slice(l3 + 8, l3 + 46)
    prefixes4: dict[bytes, str] = {}
    prefixes6: dict[bytes, str] = {}
    udp_texts: dict[bytes, str] = {}
    flag_words: dict[int, str] = {}

    def remember(cache: dict[bytes, str], key: bytes, proto: str, family: int, size: int) -> str:
        if len(cache) >= _MAX_FLOWS:
            cache.clear()
        src, dst = socket.inet_ntop(family, key[:size]), socket.inet_ntop(family, key[size : 2 * size])
        sport, dport = key[2 * size] << 8 | key[2 * size + 1], key[2 * size + 2] << 8 | key[2 * size + 3]
        prefix = cache[key] = f"{proto} {src}.{sport} > {dst}.{dport}: "
        return prefix

    def prefix4(key: bytes) -> str:
        return prefixes4.get(key) or remember(prefixes4, key, "IP", socket.AF_INET, 4)

    def prefix6(key: bytes) -> str:
        return prefixes6.get(key) or remember(prefixes6, key, "IP6", socket.AF_INET6, 16)

    def udp(prefix: str, key: bytes, ulen: int) -> str:
        if len(udp_texts) >= _MAX_FLOWS:
            udp_texts.clear()
        text = udp_texts[key] = f"{prefix}UDP, length {ulen - 8}"
        return text

    def tcp(data: bytes, l4: int, room: int, prefix: str, seq: int) -> str | None:
        if room < 20 or len(data) < l4 + 20:
            return None
        ack, off_flags, win, urp = tcp_rest(data, l4 + 8)
        hlen = (off_flags >> 12) * 4
        if hlen < 20 or hlen > room:
            return None
        length = room - hlen
        flags = flag_words.get(off_flags & 0x1FF)
        if flags is None:
            flags = flag_words[off_flags & 0x1FF] = flag_text(off_flags)
        span = f"{seq}:{seq + length}" if length else seq
        acked = f", ack {ack}" if off_flags & ACK else ""
        urgent = f", urg {urp}" if off_flags & URG else ""
        options = ""
        if hlen > 20:  # as the decoder: option bytes present, even if none parses
            options = f", options [{options_text(parse_options(data[l4 + 20 : l4 + hlen]))}]"
        return f"{prefix}Flags [{flags}], seq {span}{acked}, win {win}{urgent}{options}, length {length}"

    def summarize(data: bytes, wirelen: int) -> str:
        n = len(data)
        if n < v4_need:
            return slow(data, wirelen)
        ethertype, vi, total, frag, proto, word = v4(data)
        # The family's checks, then what the transport part needs of it: the room the IP
        # header leaves, where the transport starts, and the flow's cache slices.
        if ethertype == 0x0800:
            if vi != 0x45 or frag & 0x3FFF or l3 + total > n:
                return slow(data, wirelen)
            room = total - 20
            l4 = l3 + 20
            key_at = ipv4_key
            udp_key_at = udp4_key
            prefix_of = prefix4
        elif ethertype == 0x86DD and n >= v6_need:
            _t, vtc, room, proto, word = v6(data)
            if vtc >> 4 != 6 or l3 + 40 + room > n:
                return slow(data, wirelen)
            l4 = l3 + 40
            key_at = ipv6_key
            udp_key_at = udp6_key
            prefix_of = prefix6
        else:
            return slow(data, wirelen)
        if proto == 17:
            ulen = word >> 16
            if 8 <= ulen <= room:
                ukey = data[udp_key_at]
                text = udp_texts.get(ukey)
                if text is None:
                    text = udp(prefix_of(data[key_at]), ukey, ulen)
                return text
        elif proto == 6:
            text = tcp(data, l4, room, prefix_of(data[key_at]), word)
            if text is not None:
                return text
        return slow(data, wirelen)

    return summarize


FlowKey = bytes


def decoded_flow_key(data: bytes, linktype: int) -> FlowKey | None:
    """The flow key of a frame through the full decoder: the outermost IP header and
    the first TCP or UDP header after it, when the decoder reaches them."""
    from sockscope.packets.ipv4 import IPv4
    from sockscope.packets.ipv6 import IPv6
    from sockscope.packets.tcp import TCP
    from sockscope.packets.udp import UDP

    layers = Packet(data, linktype).layers
    ip = next((layer for layer in layers if isinstance(layer, IPv4 | IPv6)), None)
    if ip is None:
        return None
    l4 = next((layer for layer in layers[layers.index(ip) + 1 :] if isinstance(layer, TCP | UDP)), None)
    if l4 is None:
        return None
    version = 4 if isinstance(ip, IPv4) else 6
    proto = 6 if isinstance(l4, TCP) else 17
    return bytes((version, proto)) + ip.src + ip.dst + struct.pack("!HH", l4.sport, l4.dport)


def flow_keyer(linktype: int) -> Callable[[bytes], FlowKey | None]:
    """``f(data) -> key`` naming the TCP/UDP flow of a frame (None for other packets).

    The key is bytes: IP version (4 or 6), protocol, source and destination address,
    source and destination port; ``flow_text`` renders it. Common, well-formed shapes
    are read in place; the rest go through the decoder (``decoded_flow_key``), and the
    two agree on every frame (the tests compare them).
    """
    l3 = {LINKTYPE_ETHERNET: 14, LINKTYPE_LINUX_SLL: 16}.get(linktype)

    def slow(data: bytes) -> FlowKey | None:
        return decoded_flow_key(data, linktype)

    if l3 is None:
        return slow
    lead = l3 - 2
    v4 = struct.Struct(f"!{lead}xHBxH2xHxB").unpack_from  # type, ver_ihl, total_len, flags_frag, proto
    v6 = struct.Struct(f"!{lead}xHB3xHB").unpack_from  # type, version/class, payload_len, next header
    v4_addresses, v6_addresses = slice(l3 + 12, l3 + 24), slice(l3 + 8, l3 + 44)
    heads = {(4, 6): b"\x04\x06", (4, 17): b"\x04\x11", (6, 6): b"\x06\x06", (6, 17): b"\x06\x11"}
    l4_len = {6: 20, 17: 8}

    def key(data: bytes) -> FlowKey | None:
        n = len(data)
        if n >= l3 + 28:
            ethertype, first, length, frag, proto = v4(data)
            if ethertype == 0x0800:
                need = l4_len.get(proto)
                # IHL 5, not a fragment, the whole transport header present and claimed.
                if first == 0x45 and need and not frag & 0x3FFF and 20 + need <= length <= n - l3:
                    return heads[4, proto] + data[v4_addresses]
            elif ethertype == 0x86DD and n >= l3 + 48:
                _t, first, length, proto = v6(data)
                need = l4_len.get(proto)
                if first >> 4 == 6 and need and need <= length <= n - l3 - 40:
                    return heads[6, proto] + data[v6_addresses]
        return slow(data)

    return key


def flow_text(key: FlowKey) -> str:
    """ "tcp 192.0.2.1.40000 > 192.0.2.2.80" for a key from ``flow_keyer``."""
    family, size = (socket.AF_INET, 4) if key[0] == 4 else (socket.AF_INET6, 16)
    src = socket.inet_ntop(family, key[2 : 2 + size])
    dst = socket.inet_ntop(family, key[2 + size : 2 + 2 * size])
    sport, dport = struct.unpack_from("!HH", key, 2 + 2 * size)
    return f"{'tcp' if key[1] == 6 else 'udp'} {src}.{sport} > {dst}.{dport}"
