"""One-line, tcpdump -n style summaries of decoded packets.

Only the outermost network layer is described (as tcpdump does without -e); a packet
that is malformed gets ``[malformed: reason]`` appended, a truncated one ``[|proto]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sockscope.packets.arp import ARP, ARP_REPLY, ARP_REQUEST
from sockscope.packets.ether import Dot1Q, Ethernet
from sockscope.packets.fields import Header
from sockscope.packets.icmp import ICMP, ICMPBase
from sockscope.packets.icmpv6 import ICMPv6
from sockscope.packets.ipv4 import IPv4
from sockscope.packets.ipv6 import IPv6
from sockscope.packets.sll import SLL, SLL2
from sockscope.packets.tcp import (
    OPT_MSS,
    OPT_NOP,
    OPT_SACK,
    OPT_SACK_OK,
    OPT_TIMESTAMP,
    OPT_WSCALE,
    TCP,
    TCPOption,
)
from sockscope.packets.udp import UDP

if TYPE_CHECKING:
    from sockscope.packets.packet import Packet

_UNREACH = {
    0: "net {} unreachable",
    1: "host {} unreachable",
    9: "net {} unreachable - admin prohibited",
    10: "host {} unreachable - admin prohibited",
    13: "host {} unreachable - admin prohibited filter",
}
_ICMP6 = {
    1: "destination unreachable",
    3: "time exceeded in-transit",
    4: "parameter problem",
    133: "router solicitation",
    134: "router advertisement",
    137: "redirect",
    143: "multicast listener report v2",
}


def summarize(pkt: Packet) -> str:
    layers = pkt.layers
    text: str | None = None
    for i, layer in enumerate(layers):
        if isinstance(layer, IPv4 | IPv6):
            text = _ip(layer, layers[i + 1 :])
            break
        if isinstance(layer, ARP):
            text = _arp(layer)
            break
    if text is None:
        text = _link_only(pkt, layers)
    if pkt.malformed:
        text += f" [malformed: {pkt.malformed}]"
    elif pkt.truncated:
        text += f" [|{layers[-1].name.lower() if layers else 'packet'}]"
    return text


def _link_only(pkt: Packet, layers: list[Header]) -> str:
    for layer in reversed(layers):
        if isinstance(layer, SLL | SLL2):
            kind = layer.protocol
        elif isinstance(layer, Ethernet | Dot1Q):
            kind = layer.type
        else:
            continue
        return f"ethertype 0x{kind:04x}, length {len(pkt.data)}"
    return f"linktype {pkt.linktype}, length {len(pkt.data)}"


def _arp(arp: ARP) -> str:
    length = arp.header_len
    if arp.op == ARP_REQUEST:
        return f"ARP, Request who-has {arp.target_ip} tell {arp.sender_ip}, length {length}"
    if arp.op == ARP_REPLY:
        return f"ARP, Reply {arp.sender_ip} is-at {arp.sender_mac}, length {length}"
    return f"ARP, op {arp.op}, length {length}"


def _ip(ip: IPv4 | IPv6, rest: list[Header]) -> str:
    prefix = "IP" if isinstance(ip, IPv4) else "IP6"
    src, dst = ip.src_ip, ip.dst_ip
    for layer in rest:
        if isinstance(layer, TCP):
            return f"{prefix} {src}.{layer.sport} > {dst}.{layer.dport}: {_tcp(layer)}"
        if isinstance(layer, UDP):
            return f"{prefix} {src}.{layer.sport} > {dst}.{layer.dport}: UDP, length {layer.length - 8}"
        if isinstance(layer, ICMPv6):
            return f"{prefix} {src} > {dst}: ICMP6, {_icmp6(layer)}, length {_span(layer)}"
        if isinstance(layer, ICMP):
            return f"{prefix} {src} > {dst}: ICMP {_icmp(layer)}, length {_span(layer)}"
        if isinstance(layer, IPv4 | IPv6):
            break  # tunnelled: describe the outer header only
    last = rest[-1] if rest else ip
    # The number of what was not decoded: IPv4's proto, else the last next_header seen.
    proto = ip.proto if isinstance(ip, IPv4) else getattr(last, "next_header", 0)
    if isinstance(ip, IPv4) and ip.frag_offset:
        where = f"fragment offset {ip.frag_offset}, length {_span(ip)}"
        return f"{prefix} {src} > {dst}: ip-proto-{proto}, {where}"
    return f"{prefix} {src} > {dst}: ip-proto-{proto} {len(last.payload)}"


def _span(layer: Header) -> int:
    """Bytes of this layer present (bounded by what the enclosing IP header claims)."""
    return layer._end - layer._off


def _tcp(tcp: TCP) -> str:
    length = max(0, _span(tcp) - tcp.header_len)
    parts = [f"Flags [{tcp.flag_string}]"]
    parts.append(f"seq {tcp.seq}:{tcp.seq + length}" if length else f"seq {tcp.seq}")
    if tcp.flags & 0x10:
        parts.append(f"ack {tcp.ack}")
    parts.append(f"win {tcp.window}")
    if tcp.flags & 0x20:
        parts.append(f"urg {tcp.urgent}")
    if tcp.options:
        parts.append(f"options [{_tcp_options(tcp)}]")
    parts.append(f"length {length}")
    return ", ".join(parts)


def _tcp_options(tcp: TCP) -> str:
    return options_text(tcp.option_list)


def options_text(options: list[TCPOption]) -> str:
    """tcpdump's rendering of TCP options: "mss 1460,sackOK,TS val 1 ecr 0,nop,wscale 7"."""
    out = []
    for kind, data in options:
        if kind == OPT_NOP:
            out.append("nop")
        elif kind == OPT_MSS and len(data) == 2:
            out.append(f"mss {int.from_bytes(data, 'big')}")
        elif kind == OPT_WSCALE and len(data) == 1:
            out.append(f"wscale {data[0]}")
        elif kind == OPT_SACK_OK:
            out.append("sackOK")
        elif kind == OPT_TIMESTAMP and len(data) == 8:
            out.append(f"TS val {int.from_bytes(data[:4], 'big')} ecr {int.from_bytes(data[4:], 'big')}")
        elif kind == OPT_SACK and len(data) % 8 == 0:
            blocks = " ".join(
                f"{{{int.from_bytes(data[i : i + 4], 'big')}:{int.from_bytes(data[i + 4 : i + 8], 'big')}}}"
                for i in range(0, len(data), 8)
            )
            out.append(f"sack {len(data) // 8} {blocks}")
        else:
            out.append(f"unknown-{kind}")
    return ",".join(out)


def _quoted_target(icmp: ICMPBase) -> tuple[str, str]:
    """(destination of the quoted packet, description of its transport port) for errors."""
    quoted = icmp.quoted
    if not isinstance(quoted, IPv4 | IPv6):
        return "?", ""
    nxt = quoted.next_layer
    if isinstance(nxt, UDP | TCP):
        return quoted.dst_ip, f"{nxt.name.lower()} port {nxt.dport}"
    return quoted.dst_ip, ""


def _icmp(icmp: ICMP) -> str:
    t, code = icmp.type, icmp.code
    if t in (0, 8):
        return f"echo {'request' if t == 8 else 'reply'}, id {icmp.ident}, seq {icmp.seq}"
    if t == 11:
        return "time exceeded in-transit" if code == 0 else "ip reassembly time exceeded"
    if t == 3:
        dst, port = _quoted_target(icmp)
        if code == 3 and port:
            return f"{dst} {port} unreachable"
        if code == 2:
            proto = icmp.quoted.proto if isinstance(icmp.quoted, IPv4) else "?"
            return f"{dst} protocol {proto} unreachable"
        if code == 4:
            return f"{dst} unreachable - need to frag (mtu {icmp.mtu})"
        return _UNREACH.get(code, "{} unreachable - code " + str(code)).format(dst)
    if t == 5:
        return f"redirect {_quoted_target(icmp)[0]}"
    if t == 12:
        return "parameter problem"
    return f"type-#{t}"


def _icmp6(icmp: ICMPv6) -> str:
    t = icmp.type
    if t in (128, 129):
        return f"echo {'request' if t == 128 else 'reply'}, id {icmp.ident}, seq {icmp.seq}"
    if t == 2:
        return f"packet too big, mtu {icmp.mtu}"
    if t == 135:
        return f"neighbor solicitation, who has {icmp.target}"
    if t == 136:
        return f"neighbor advertisement, tgt is {icmp.target}"
    return _ICMP6.get(t, f"type-#{t}")
