"""The /proc/net fallback: sans-IO parsers of the kernel's socket tables.

Used where a sock_diag handler is missing (this project's CI kernel has no
raw_diag, so raw sockets always come from here) or when asked (``--procfs``).
procfs gives less than sock_diag: no cookies, no unix queues or peers, no
tcp_info. Files are read from /proc/thread-self/net, which follows the
calling thread's network namespace (the inventory switches it with setns).
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Mapping

from .model import STATE_NAMES, InetAddress, NetlinkAddress, PacketAddress, Socket, UnixAddress

INET_KINDS = {
    "tcp": ("tcp", "inet"), "tcp6": ("tcp", "inet6"),
    "udp": ("udp", "inet"), "udp6": ("udp", "inet6"),
    "raw": ("raw", "inet"), "raw6": ("raw", "inet6"),
}
_TYPES = {"tcp": "stream", "udp": "dgram", "raw": "raw"}
_UNIX_TYPES = {1: "stream", 2: "dgram", 5: "seqpacket"}
_PACKET_TYPES = {2: "dgram", 3: "raw"}
_TIMERS = {1: "on", 2: "keepalive", 3: "timewait", 4: "persist"}
_SO_ACCEPTCON = 0x10000  # unix socket Flags bit of a listener
_NETLINK_NAMES = {
    0: "route", 2: "usersock", 4: "sock_diag", 5: "nflog", 6: "xfrm", 7: "selinux",
    8: "iscsi", 9: "audit", 10: "fib_lookup", 11: "connector", 12: "netfilter",
    13: "ip6_fw", 14: "dnrtmsg", 15: "kobject_uevent", 16: "generic",
    18: "scsitransport", 19: "ecryptfs", 20: "rdma", 21: "crypto", 22: "smc",
}
_LITTLE = sys.byteorder == "little"


def _addr_decoder(family: str) -> Callable[[str], str]:
    """Hex address text -> printable address. The kernel prints each 32-bit word
    of the address as a host-order integer, so on little-endian hosts every
    4-byte group comes out reversed."""
    cache: dict[str, str] = {}
    af = socket.AF_INET if family == "inet" else socket.AF_INET6

    def decode(text: str) -> str:
        out = cache.get(text)
        if out is None:
            raw = bytes.fromhex(text)
            if _LITTLE:
                raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            out = cache[text] = socket.inet_ntop(af, raw)
        return out

    return decode


def parse_inet(text: str, proto: str, family: str, netns: str) -> list[Socket]:
    """/proc/net/{tcp,udp,raw}[6]: one socket per line after the header."""
    decode = _addr_decoder(family)
    stype = _TYPES[proto]
    ticks = os.sysconf("SC_CLK_TCK")
    out: list[Socket] = []
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 10:
            continue
        local_hex, lport_hex = f[1].split(":")
        remote_hex, rport_hex = f[2].split(":")
        tx, rx = f[4].split(":")
        timer, when = f[5].split(":")
        lport, rport = int(lport_hex, 16), int(rport_hex, 16)
        state = int(f[3], 16)
        remote_addr = decode(remote_hex)
        remote = None
        if rport or remote_hex.strip("0"):
            remote = InetAddress(remote_addr, 0 if proto == "raw" else rport)
        sock = Socket(
            netns, family, proto, stype, STATE_NAMES.get(state, str(state)),
            InetAddress(decode(local_hex), 0 if proto == "raw" else lport), remote,
            int(rx, 16), int(tx, 16), int(f[9]), int(f[7]), source="procfs",
        )
        if proto == "raw":
            sock.protocol_number = lport  # the "port" column of a raw socket is its protocol
        timer_num = int(timer, 16)
        if timer_num and proto == "tcp":
            sock.timer = _TIMERS.get(timer_num, str(timer_num))
            sock.timer_expires_ms = int(when, 16) * 1000 // ticks
        out.append(sock)
    return out


def parse_unix(text: str, netns: str) -> list[Socket]:
    """/proc/net/unix: Num RefCount Protocol Flags Type St Inode [Path]."""
    out: list[Socket] = []
    for line in text.splitlines()[1:]:
        f = line.split(None, 7)
        if len(f) < 7:
            continue
        flags, stype, st, inode = int(f[3], 16), int(f[4], 16), int(f[5], 16), int(f[6])
        local = None
        if len(f) == 8 and f[7]:
            path = f[7]
            local = UnixAddress(path[1:], True) if path.startswith("@") else UnixAddress(path, False)
        if flags & _SO_ACCEPTCON:
            state = "LISTEN"
        else:
            state = {2: "SYN_SENT", 3: "ESTABLISHED"}.get(st, "UNCONN")
        out.append(Socket(netns, "unix", "unix", _UNIX_TYPES.get(stype, str(stype)), state, local,
                          None, 0, 0, inode, None, source="procfs"))
    return out


def parse_packet(text: str, netns: str, ifnames: Mapping[int, str | None]) -> list[Socket]:
    """/proc/net/packet: sk RefCnt Type Proto Iface R Rmem User Inode."""
    out: list[Socket] = []
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 9:
            continue
        stype, proto, ifindex = int(f[2]), int(f[3], 16), int(f[4])
        out.append(Socket(
            netns, "packet", "packet", _PACKET_TYPES.get(stype, str(stype)), "UNCONN",
            PacketAddress(proto, ifnames.get(ifindex) if ifindex else None, ifindex), None,
            int(f[6]), 0, int(f[8]), int(f[7]), source="procfs",
        ))
    return out


def parse_netlink(text: str, netns: str) -> list[Socket]:
    """/proc/net/netlink: sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode."""
    out: list[Socket] = []
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 10:
            continue
        proto = int(f[1])
        name = _NETLINK_NAMES.get(proto, str(proto))
        out.append(Socket(
            netns, "netlink", "netlink", "raw", "UNCONN",
            NetlinkAddress(name, int(f[2]), int(f[3], 16)), None,
            int(f[4]), int(f[5]), int(f[9]), None, source="procfs",
        ))
    return out


def read_table(name: str) -> str | None:
    """The text of /proc/thread-self/net/NAME, or None where the kernel has no such table."""
    try:
        with open(f"/proc/thread-self/net/{name}") as f:
            return f.read()
    except FileNotFoundError:
        return None


def read_sockets(kind: str, netns: str) -> list[Socket]:
    """Sockets of one table (tcp, tcp6, udp, udp6, raw, raw6, unix, packet, netlink)."""
    text = read_table(kind)
    if text is None:
        return []
    if kind in INET_KINDS:
        proto, family = INET_KINDS[kind]
        return parse_inet(text, proto, family, netns)
    if kind == "unix":
        return parse_unix(text, netns)
    if kind == "packet":
        socks = parse_packet(text, netns, {})
        for s in socks:
            addr = s.local
            if isinstance(addr, PacketAddress) and addr.ifindex:
                try:
                    addr.interface = socket.if_indextoname(addr.ifindex)
                except OSError:
                    addr.interface = None
        return socks
    if kind == "netlink":
        return parse_netlink(text, netns)
    raise ValueError(f"unknown /proc/net table {kind!r}")
