"""The /proc/net fallback: sans-IO parsers of the kernel's socket tables.

sock_diag is the inventory's source of truth; these tables are read where a
diag handler is missing (kernels without raw_diag list raw sockets only here)
or when asked (``--procfs``). procfs tells less than sock_diag: no cookies, no
unix queues, peers or uids, no netlink socket type, no tcp_info. The parsers
take the file text so they can be tested on recorded files; ``read_sockets``
does the reading, from /proc/thread-self/net, which follows the calling
thread's network namespace (the inventory switches it with setns) where
/proc/net would follow the whole process's.

Formats are those of the kernel's seq_show functions: tcp4_seq_show,
udp4_format_sock, raw_sock_seq_show (and their IPv6 twins), unix_seq_show,
packet_seq_show, netlink_seq_show.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from collections.abc import Iterator, Mapping

from sockscope.errors import SockscopeError
from sockscope.netlink.sockdiag import NETLINK_PROTOCOLS

from .model import STATE_NAMES, InetAddress, NetlinkAddress, PacketAddress, Socket, UnixAddress

# /proc/net table name -> (proto, family)
INET_TABLES: dict[str, tuple[str, str]] = {
    "tcp": ("tcp", "inet"), "tcp6": ("tcp", "inet6"),
    "udp": ("udp", "inet"), "udp6": ("udp", "inet6"),
    "raw": ("raw", "inet"), "raw6": ("raw", "inet6"),
    # ICMP datagram ("ping") sockets: no sock_diag handler exists for them, so this
    # is their only listing (ss and netstat show none).
    "icmp": ("icmp", "inet"), "icmp6": ("icmp", "inet6"),
}
TABLES = frozenset([*INET_TABLES, "unix", "packet", "netlink"])

_INET_TYPES = {"tcp": "stream", "udp": "dgram", "raw": "raw", "icmp": "dgram"}
_ADDRESS_WIDTH = {"inet": 8, "inet6": 32}  # hex digits of the address before ":port"
# The st column is the kernel state number as %02X; looking the text up skips an int().
_STATE_BY_HEX = {f"{num:02X}": name for num, name in STATE_NAMES.items()}
_TCP_TIMERS = {1: "on", 2: "keepalive", 3: "timewait", 4: "persist"}
_EMPTY_QUEUES = "00000000:00000000"  # tx:rx of an idle socket, the common case

_UNIX_TYPES = {1: "stream", 2: "dgram", 5: "seqpacket"}
_SO_ACCEPTCON = 0x10000  # the Flags bit unix_seq_show sets on listeners
# The St column is a socket_state derived from sk_state: SS_CONNECTED (3) for an
# established socket. The other values matter only on lines we skip (see
# parse_unix): 2 is printed for an established socket without a struct socket
# (ss's procfs path calls that SYN_SENT, though unix sockets have no such state).
_UNIX_CONNECTED = "03"

_PACKET_TYPES = {2: "dgram", 3: "raw"}


def decode_address(hex_text: str, family: str) -> str:
    """An address as /proc/net prints it -> its usual text form.

    The kernel prints each 32-bit word of the (network order) address with %08X,
    i.e. as a host-order integer, so on a little-endian host every 4-byte group
    comes out byte-reversed. inet_ntop is what sock_diag's parser uses too, so
    both sources spell an address the same way ("::ffff:1.2.3.4" stays mapped).
    """
    raw = bytes.fromhex(hex_text)
    if sys.byteorder == "little":
        raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return socket.inet_ntop(socket.AF_INET if family == "inet" else socket.AF_INET6, raw)


def _rows(text: str, min_fields: int, table: str, maxsplit: int = -1) -> Iterator[list[str]]:
    """The whitespace-split lines after the header, blank lines skipped.

    Splits on "\\n" only: str.splitlines would also break on \\x1c, \\x85 and the
    like, which may occur inside a unix socket path. A generator, so that only
    one line's fields are alive at a time (a list of them all costs a third of
    the parse time in allocation and GC on a big table).
    """
    for line in text.split("\n")[1:]:
        fields = line.split(None, maxsplit)
        if not fields:
            continue
        if len(fields) < min_fields:
            raise ValueError(f"/proc/net/{table}: unexpected line {line!r}")
        yield fields


def parse_inet(text: str, proto: str, family: str, netns: str) -> list[Socket]:
    """/proc/net/{tcp,udp,raw,icmp}[6]. Columns: sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...

    For raw sockets the kernel prints the IP protocol where the local port would
    be (and 0 as the remote port); it becomes ``protocol_number`` and both ports
    are 0. An ICMP socket's local port is its echo identifier. A listener's
    rx_queue is its accept queue and its tx_queue is 0 (sock_diag gives the
    backlog limit there).

    This is the hot path on big hosts (20,000 lines), hence the local-variable
    style and the memo of decoded addresses (a host has few).
    """
    if proto not in _INET_TYPES or family not in _ADDRESS_WIDTH:
        raise ValueError(f"not an inet table: {proto!r}/{family!r}")
    table = proto + ("6" if family == "inet6" else "")
    stype = _INET_TYPES[proto]
    width = _ADDRESS_WIDTH[family]
    unspecified = "0" * width
    is_raw, is_tcp = proto == "raw", proto == "tcp"
    ticks = os.sysconf("SC_CLK_TCK")  # the tm->when column is in clock ticks (USER_HZ)
    names: dict[str, str] = {}
    states = _STATE_BY_HEX
    out: list[Socket] = []
    append = out.append
    # maxsplit: the columns after inode (refcount, pointer, drops...) go unused.
    for f in _rows(text, 10, table, 10):
        local_field, remote_field, tx_rx = f[1], f[2], f[4]
        local_hex, remote_hex = local_field[:width], remote_field[:width]
        local_text = names.get(local_hex)
        if local_text is None:
            local_text = names[local_hex] = decode_address(local_hex, family)
        lport = int(local_field[width + 1 :], 16)
        rport = int(remote_field[width + 1 :], 16)
        remote: InetAddress | None = None
        if rport or remote_hex != unspecified:  # an all-zero peer: not connected
            remote_text = names.get(remote_hex)
            if remote_text is None:
                remote_text = names[remote_hex] = decode_address(remote_hex, family)
            remote = InetAddress(remote_text, rport)
        if tx_rx == _EMPTY_QUEUES:
            tx = rx = 0
        else:
            tx, rx = int(tx_rx[:8], 16), int(tx_rx[9:], 16)
        sock = Socket(
            netns, family, proto, stype, states.get(f[3]) or str(int(f[3], 16)),
            InetAddress(local_text, 0 if is_raw else lport), remote, rx, tx,
            int(f[9]), int(f[7]), source="procfs",
        )
        if is_raw:
            sock.protocol_number = lport
        elif is_tcp and not f[5].startswith("00:"):
            timer = int(f[5][:2], 16)
            sock.timer = _TCP_TIMERS.get(timer, str(timer))
            sock.timer_expires_ms = int(f[5][3:], 16) * 1000 // ticks
        append(sock)
    return out


# One record of /proc/net/unix as unix_seq_show prints it: "%pK: %08X %08X %08X %04X
# %02X %5lu" then, for a bound socket, a space and the name. Captured: flags,
# type, st, inode, name.
_UNIX_RECORD = re.compile(
    r"[0-9a-f]{8,16}: [0-9A-F]{8} [0-9A-F]{8} ([0-9A-F]{8}) ([0-9A-F]{4}) ([0-9A-F]{2}) +([0-9]+)(?: (.*))?",
    re.DOTALL)


def parse_unix(text: str, netns: str) -> list[Socket]:
    """/proc/net/unix. Columns: Num RefCount Protocol Flags Type St Inode [Path].

    Listeners carry __SO_ACCEPTCON in Flags; queues, peers and uids are not in
    the table (0, 0, None, None).

    A path may contain newlines (any user can bind such a name), which the
    kernel prints as they are: a line that is not a record continues the path
    of the record before it. (A path crafted to contain a whole record line
    still reads as two sockets; sock_diag, the usual source, has no such
    ambiguity.)
    """
    out: list[Socket] = []
    records: list[list[str]] = []  # [flags, type, st, inode, path]
    lines = text.split("\n")
    for line in lines[1:-1] if lines[-1] == "" else lines[1:]:
        m = _UNIX_RECORD.fullmatch(line)
        if m is not None:
            records.append([m[1], m[2], m[3], m[4], m[5] if m[5] is not None else ""])
        elif records and records[-1][4]:
            records[-1][4] += "\n" + line
        elif line.strip():
            raise ValueError(f"/proc/net/unix: unexpected line {line!r}")
    for flags, type_hex, st, inode_text, path in records:
        inode = int(inode_text)
        if not inode:
            # No struct socket: the server end of a connection not yet accept()ed,
            # or a socket whose last fd is gone (e.g. still in flight in an
            # SCM_RIGHTS message). No process holds it, and sock_diag leaves
            # such sockets out, so the fallback does too.
            continue
        local: UnixAddress | None = None
        if path.startswith("@"):
            # Abstract: the kernel prints the leading NUL (and any NUL inside) as '@'.
            local = UnixAddress(path[1:], True)
        elif path:
            local = UnixAddress(path, False)
        if int(flags, 16) & _SO_ACCEPTCON:
            state = "LISTEN"
        else:
            state = "ESTABLISHED" if st == _UNIX_CONNECTED else "UNCONN"
        stype = int(type_hex, 16)
        out.append(Socket(
            netns, "unix", "unix", _UNIX_TYPES.get(stype, str(stype)), state, local, None,
            0, 0, inode, None, source="procfs",
        ))
    return out


def parse_packet(text: str, netns: str, ifnames: Mapping[int, str]) -> list[Socket]:
    """/proc/net/packet. Columns: sk RefCnt Type Proto Iface R Rmem User Inode.

    ``ifnames`` maps interface indexes of that namespace to names; an index not
    in it gets interface None. Rmem (bytes queued for reading) becomes recv_q,
    as sock_diag's parser does with its meminfo; there is no send queue column.
    """
    out: list[Socket] = []
    for f in _rows(text, 9, "packet"):
        stype, ifindex = int(f[2]), int(f[4])
        out.append(Socket(
            netns, "packet", "packet", _PACKET_TYPES.get(stype, str(stype)), "UNCONN",
            PacketAddress(int(f[3], 16), ifnames.get(ifindex) if ifindex else None, ifindex), None,
            int(f[6]), 0, int(f[8]), int(f[7]), source="procfs",
        ))
    return out


def parse_netlink(text: str, netns: str) -> list[Socket]:
    """/proc/net/netlink. Columns: sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode.

    The table does not say whether a socket is SOCK_RAW or SOCK_DGRAM (the kernel
    treats them alike); we print "raw", by far the common one. Nor does it show a
    connected peer, so remote is None and the state UNCONN.
    """
    out: list[Socket] = []
    for f in _rows(text, 10, "netlink"):
        proto = int(f[1])
        out.append(Socket(
            netns, "netlink", "netlink", "raw", "UNCONN",
            NetlinkAddress(NETLINK_PROTOCOLS.get(proto, str(proto)), int(f[2]), int(f[3], 16)), None,
            int(f[4]), int(f[5]), int(f[9]), None, source="procfs",
        ))
    return out


def read_table(name: str) -> str | None:
    """The text of /proc/thread-self/net/NAME, or None where the kernel has no such table
    (e.g. tcp6 with IPv6 disabled)."""
    if "/" in name or name.startswith("."):
        raise ValueError(f"not a /proc/net table name: {name!r}")
    try:
        # surrogateescape: unix socket paths are bytes, not necessarily UTF-8.
        with open(f"/proc/thread-self/net/{name}", encoding="utf-8", errors="surrogateescape") as f:
            return f.read()
    except FileNotFoundError:
        return None


def read_sockets(kind: str, netns: str) -> list[Socket]:
    """The sockets of one table of the calling thread's namespace, labelled ``netns``.

    ``kind``: tcp, tcp6, udp, udp6, raw, raw6, icmp, icmp6, unix, packet or netlink.
    """
    if kind not in TABLES:
        raise ValueError(f"unknown /proc/net table {kind!r}")
    text = read_table(kind)
    if text is None:
        return []
    try:
        return _parse(kind, text, netns)
    except ValueError as exc:  # a format this parser does not know: say so, no traceback
        raise SockscopeError(str(exc)) from None


def _parse(kind: str, text: str, netns: str) -> list[Socket]:
    if kind in INET_TABLES:
        proto, family = INET_TABLES[kind]
        return parse_inet(text, proto, family, netns)
    if kind == "unix":
        return parse_unix(text, netns)
    if kind == "netlink":
        return parse_netlink(text, netns)
    return parse_packet(text, netns, _interface_names(text))


def _interface_names(packet_text: str) -> dict[int, str]:
    """Names of the interfaces the packet sockets in ``packet_text`` are bound to,
    resolved now, in the calling thread's namespace (where the indexes belong)."""
    names: dict[int, str] = {}
    for f in _rows(packet_text, 9, "packet"):
        index = int(f[4])
        if index and index not in names:
            try:
                names[index] = socket.if_indextoname(index)
            except OSError:
                pass  # the interface went away since the table was read: no name
    return names
