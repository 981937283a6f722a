"""Sans-IO sock_diag (NETLINK_SOCK_DIAG): requests and parsers for inet (TCP,
UDP, raw), unix, packet and netlink sockets, and SOCK_DESTROY.

Layouts follow include/uapi/linux/{inet_diag,unix_diag,packet_diag,netlink_diag}.h.
Each parser turns one message payload into a ``Socket``; optional attributes are
decoded only when the request asked for them (``want`` flags), so the plain
path parses one fixed header per socket and nothing else.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Iterable
from typing import Final

from sockscope.inventory.model import (
    STATE_NAMES,
    InetAddress,
    Memory,
    NetlinkAddress,
    PacketAddress,
    Socket,
    TcpInfo,
    UnixAddress,
)

from .codec import attr_str, attr_u32, parse_attrs

SOCK_DIAG_BY_FAMILY: Final = 20
SOCK_DESTROY: Final = 21

IPPROTO_TCP: Final = 6
IPPROTO_UDP: Final = 17
IPPROTO_RAW: Final = 255

# --- inet -------------------------------------------------------------------
# inet_diag_req_v2: family, protocol, ext, raw_protocol (pad), states, sockid
INET_REQ = struct.Struct("=BBBBI")
# inet_diag_sockid: sport/dport are big-endian; src/dst 16 bytes; if; cookie[2]
SOCKID = struct.Struct("!HH16s16s")
SOCKID_TAIL = struct.Struct("=III")
# inet_diag_msg: family state timer retrans | sockid | expires rqueue wqueue uid inode
INET_MSG = struct.Struct("=BBBB2s2s16s16sIIIIIIII")

INET_DIAG_MEMINFO: Final = 1
INET_DIAG_INFO: Final = 2
INET_DIAG_CONG: Final = 4
INET_DIAG_SKMEMINFO: Final = 7
INET_DIAG_SHUTDOWN: Final = 8
INET_DIAG_PROTOCOL: Final = 10
INET_DIAG_MARK: Final = 15
INET_DIAG_CGROUP_ID: Final = 21

EXT_INFO: Final = 1 << (INET_DIAG_INFO - 1)
EXT_CONG: Final = 1 << (INET_DIAG_CONG - 1)
EXT_SKMEMINFO: Final = 1 << (INET_DIAG_SKMEMINFO - 1)

TIMER_NAMES: Final = {1: "on", 2: "keepalive", 3: "timewait", 4: "persist"}
INET_PROTOS: Final = {"tcp": IPPROTO_TCP, "udp": IPPROTO_UDP, "raw": IPPROTO_RAW}
INET_TYPES: Final = {"tcp": "stream", "udp": "dgram", "raw": "raw"}


def inet_request(family: int, proto: str, states: int, ext: int = 0) -> bytes:
    """A dump request for one (family, protocol) with the given state mask."""
    # raw_diag reads the pad byte as the raw protocol to match; IPPROTO_RAW
    # there means "every raw socket", as ss asks.
    raw_protocol = IPPROTO_RAW if proto == "raw" else 0
    return INET_REQ.pack(family, INET_PROTOS[proto], ext, raw_protocol, states) + bytes(56 - 8)


def destroy_request(sock: Socket) -> bytes:
    """A SOCK_DESTROY request naming one TCP/UDP socket exactly (ports, addresses, cookie)."""
    if not isinstance(sock.local, InetAddress):
        raise ValueError("only inet sockets can be destroyed")
    family = socket.AF_INET if sock.family == "inet" else socket.AF_INET6
    remote = sock.remote if isinstance(sock.remote, InetAddress) else InetAddress("", 0)

    def packed(addr: str) -> bytes:
        if not addr:
            return bytes(16)
        return socket.inet_pton(family, addr).ljust(16, b"\0")

    cookie = sock.cookie if sock.cookie is not None else 0xFFFFFFFFFFFFFFFF
    sockid = SOCKID.pack(sock.local.port, remote.port, packed(sock.local.address), packed(remote.address))
    sockid += SOCKID_TAIL.pack(sock.bound_ifindex, cookie & 0xFFFFFFFF, cookie >> 32)
    return INET_REQ.pack(family, INET_PROTOS[sock.proto], 0, 0, 0xFFFFFFFF) + sockid


# The same header per family, with the address fields cut to their real size so
# that the hot loop never slices: IPv4 uses the first 4 of the 16 bytes.
_INET_MSG_BY_FAMILY: Final[dict[int, struct.Struct]] = {
    socket.AF_INET: struct.Struct("=BBBBHH4s12x4s12xIIIIIIII"),
    socket.AF_INET6: struct.Struct("=BBBBHH16s16sIIIIIIII"),
}


class InetParser:
    """Parses inet_diag_msg payloads of one (family, protocol) dump.

    ``ifname`` maps a bound-device index to its name in the dumped namespace.
    This is the inventory's hot loop (20,000 sockets per call), hence the
    local-variable style of ``parse_all``.
    """

    def __init__(self, netns: str, proto: str, want_info: bool, want_memory: bool,
                 ifname: Callable[[int], str | None], want_extended: bool = False) -> None:
        self.netns = netns
        self.proto = proto
        self.type = INET_TYPES[proto]
        self.want_info = want_info
        self.want_memory = want_memory
        self.ifname = ifname
        # The kernel always appends a few attributes (cgroup, sockopt, mark);
        # decoding them is a third of the parse time, so only when asked.
        self.want_attrs = want_info or want_memory or want_extended or proto == "raw"

    def parse(self, payload: memoryview) -> Socket:
        return self.parse_all([payload])[0]

    def parse_all(self, payloads: Iterable[memoryview]) -> list[Socket]:
        out: list[Socket] = []
        append = out.append
        names: dict[bytes, str] = {}
        netns, proto, stype = self.netns, self.proto, self.type
        states = STATE_NAMES
        ntop = socket.inet_ntop
        zero: dict[int, bytes] = {socket.AF_INET: bytes(4), socket.AF_INET6: bytes(16)}
        family_name: dict[int, str] = {socket.AF_INET: "inet", socket.AF_INET6: "inet6"}
        header_size = INET_MSG.size if self.want_attrs else 1 << 30
        for payload in payloads:
            family = payload[0]
            (_f, state, timer, _retrans, sport, dport, src, dst, ifindex, cookie_lo, cookie_hi,
             expires, rqueue, wqueue, uid, inode) = _INET_MSG_BY_FAMILY[family].unpack_from(payload)
            src_text = names.get(src)
            if src_text is None:
                src_text = names[src] = ntop(family, src)
            sport = ((sport & 0xFF) << 8) | (sport >> 8)  # network byte order
            if dport or dst != zero[family]:
                dst_text = names.get(dst)
                if dst_text is None:
                    dst_text = names[dst] = ntop(family, dst)
                remote: InetAddress | None = InetAddress(dst_text, ((dport & 0xFF) << 8) | (dport >> 8))
            else:
                remote = None  # unconnected (listener, unbound UDP): no peer
            sock = Socket(
                netns, family_name[family], proto, stype, states.get(state) or str(state),
                InetAddress(src_text, sport), remote, rqueue, wqueue, inode, uid,
                cookie_lo | (cookie_hi << 32),
            )
            if ifindex:
                sock.interface = self.ifname(ifindex)
                sock.bound_ifindex = ifindex
            if timer:
                sock.timer = TIMER_NAMES.get(timer, str(timer))
                sock.timer_expires_ms = expires
            if len(payload) > header_size:
                self._attrs(sock, parse_attrs(payload, header_size))
            if proto == "raw":
                # raw_diag reports the protocol as the local port; keep it where it
                # belongs (and as the /proc/net fallback does).
                if sock.protocol_number is None:
                    sock.protocol_number = sport
                sock.local = InetAddress(src_text, 0)
            append(sock)
        return out

    def _attrs(self, sock: Socket, attrs: dict[int, memoryview]) -> None:
        cg = attrs.get(INET_DIAG_CGROUP_ID)
        if cg is not None:
            sock.cgroup_id = int.from_bytes(cg[:8], "little" if _LITTLE else "big")
        mark = attrs.get(INET_DIAG_MARK)
        if mark is not None:
            sock.mark = attr_u32(mark)
        proto = attrs.get(INET_DIAG_PROTOCOL)
        if proto is not None and self.proto == "raw":
            sock.protocol_number = proto[0]
        if self.want_info:
            info = attrs.get(INET_DIAG_INFO)
            if info is not None and self.proto == "tcp":
                cong = attrs.get(INET_DIAG_CONG)
                sock.tcp_info = parse_tcp_info(info, attr_str(cong) if cong is not None else None)
        if self.want_memory:
            mem = attrs.get(INET_DIAG_SKMEMINFO)
            if mem is not None:
                sock.memory = parse_skmeminfo(mem)


_LITTLE = struct.pack("=H", 1) == b"\x01\x00"

# struct tcp_info (include/uapi/linux/tcp.h) as a table of (name, format). Kernels
# send as many bytes as they know; fields past the end read as absent.
TCP_INFO_FIELDS: Final = (
    ("state", "B"), ("ca_state", "B"), ("retransmits", "B"), ("probes", "B"),
    ("backoff", "B"), ("options", "B"), ("wscale", "B"), ("flags", "B"),
    ("rto", "I"), ("ato", "I"), ("snd_mss", "I"), ("rcv_mss", "I"),
    ("unacked", "I"), ("sacked", "I"), ("lost", "I"), ("retrans", "I"), ("fackets", "I"),
    ("last_data_sent", "I"), ("last_ack_sent", "I"), ("last_data_recv", "I"),
    ("last_ack_recv", "I"),
    ("pmtu", "I"), ("rcv_ssthresh", "I"), ("rtt", "I"), ("rttvar", "I"),
    ("snd_ssthresh", "I"), ("snd_cwnd", "I"), ("advmss", "I"), ("reordering", "I"),
    ("rcv_rtt", "I"), ("rcv_space", "I"), ("total_retrans", "I"),
    ("pacing_rate", "Q"), ("max_pacing_rate", "Q"), ("bytes_acked", "Q"),
    ("bytes_received", "Q"),
    ("segs_out", "I"), ("segs_in", "I"), ("notsent_bytes", "I"), ("min_rtt", "I"),
    ("data_segs_in", "I"), ("data_segs_out", "I"),
    ("delivery_rate", "Q"), ("busy_time", "Q"), ("rwnd_limited", "Q"), ("sndbuf_limited", "Q"),
    ("delivered", "I"), ("delivered_ce", "I"),
    ("bytes_sent", "Q"), ("bytes_retrans", "Q"),
)
_TCP_INFO_STRUCT = struct.Struct("=" + "".join(fmt for _, fmt in TCP_INFO_FIELDS))
_TCP_INFO_OFFSETS: Final = tuple(
    struct.calcsize("=" + "".join(fmt for _, fmt in TCP_INFO_FIELDS[: i + 1]))
    for i in range(len(TCP_INFO_FIELDS))
)


def tcp_info_field(name: str) -> tuple[int, str]:
    """(offset, struct format) of one tcp_info field, for readers that need a few
    counters of many sockets (traffic accounting) without decoding the whole struct."""
    for i, (field_name, fmt) in enumerate(TCP_INFO_FIELDS):
        if field_name == name:
            return _TCP_INFO_OFFSETS[i] - struct.calcsize("=" + fmt), fmt
    raise KeyError(name)


def decode_tcp_info(raw: bytes | memoryview) -> dict[str, int]:
    """All tcp_info fields present in ``raw`` by name (shorter kernels give fewer)."""
    data = bytes(raw[: _TCP_INFO_STRUCT.size]).ljust(_TCP_INFO_STRUCT.size, b"\0")
    values = _TCP_INFO_STRUCT.unpack(data)
    have = len(raw)
    return {name: values[i] for i, (name, _) in enumerate(TCP_INFO_FIELDS)
            if _TCP_INFO_OFFSETS[i] <= have}


def parse_tcp_info(raw: bytes | memoryview, congestion: str | None) -> TcpInfo:
    f = decode_tcp_info(raw)
    return TcpInfo(
        rtt_ms=f.get("rtt", 0) / 1000, rttvar_ms=f.get("rttvar", 0) / 1000,
        rto_ms=f.get("rto", 0) / 1000, snd_cwnd=f.get("snd_cwnd", 0),
        snd_ssthresh=f.get("snd_ssthresh", 0), snd_mss=f.get("snd_mss", 0),
        rcv_mss=f.get("rcv_mss", 0), retransmits=f.get("retransmits", 0),
        total_retrans=f.get("total_retrans", 0), lost=f.get("lost", 0),
        unacked=f.get("unacked", 0), bytes_acked=f.get("bytes_acked", 0),
        bytes_received=f.get("bytes_received", 0), bytes_sent=f.get("bytes_sent"),
        bytes_retrans=f.get("bytes_retrans"), segs_out=f.get("segs_out", 0),
        segs_in=f.get("segs_in", 0), delivery_rate=f.get("delivery_rate", 0),
        pacing_rate=f.get("pacing_rate", 0), min_rtt_ms=f.get("min_rtt", 0) / 1000,
        last_send_ms=f.get("last_data_sent", 0), last_recv_ms=f.get("last_data_recv", 0),
        congestion=congestion,
    )


def parse_skmeminfo(raw: bytes | memoryview) -> Memory:
    """sk_meminfo: u32[SK_MEMINFO_VARS] (rmem_alloc, rcvbuf, wmem_alloc, sndbuf, ...)."""
    count = min(len(raw) // 4, 9)
    vals = list(struct.unpack_from(f"={count}I", raw)) + [0] * (9 - count)
    return Memory(*vals)


# --- unix -------------------------------------------------------------------
UNIX_REQ = struct.Struct("=BBHIIIII")  # family, protocol, pad, states, ino, show, cookie[2]
UNIX_MSG = struct.Struct("=BBBBIII")  # family, type, state, pad, ino, cookie[2]
UDIAG_SHOW_NAME: Final = 0x01
UDIAG_SHOW_VFS: Final = 0x02
UDIAG_SHOW_PEER: Final = 0x04
UDIAG_SHOW_RQLEN: Final = 0x10
UDIAG_SHOW_MEMINFO: Final = 0x20
UDIAG_SHOW_UID: Final = 0x40
UNIX_DIAG_NAME: Final = 0
UNIX_DIAG_VFS: Final = 1
UNIX_DIAG_PEER: Final = 2
UNIX_DIAG_RQLEN: Final = 4
UNIX_DIAG_MEMINFO: Final = 5
UNIX_DIAG_UID: Final = 7
SOCK_TYPES: Final = {1: "stream", 2: "dgram", 3: "raw", 5: "seqpacket"}


def unix_request(states: int, want_vfs: bool, want_memory: bool) -> bytes:
    show = UDIAG_SHOW_NAME | UDIAG_SHOW_PEER | UDIAG_SHOW_RQLEN | UDIAG_SHOW_UID
    if want_vfs:
        show |= UDIAG_SHOW_VFS
    if want_memory:
        show |= UDIAG_SHOW_MEMINFO
    return UNIX_REQ.pack(socket.AF_UNIX, 0, 0, states, 0, show, 0xFFFFFFFF, 0xFFFFFFFF)


def unix_names_request() -> bytes:
    """A dump of every unix socket with its bound name and nothing else."""
    return UNIX_REQ.pack(socket.AF_UNIX, 0, 0, 0xFFFFFFFF, 0, UDIAG_SHOW_NAME, 0xFFFFFFFF, 0xFFFFFFFF)


def parse_unix(payload: memoryview, netns: str) -> Socket:
    _family, stype, state, _pad, inode, cookie_lo, cookie_hi = UNIX_MSG.unpack_from(payload)
    attrs = parse_attrs(payload, UNIX_MSG.size)
    local: UnixAddress | None = None
    name = attrs.get(UNIX_DIAG_NAME)
    if name is not None and len(name):
        raw = bytes(name)
        # Names are bytes: decoded as Python decodes file names (surrogateescape),
        # so os.fsencode gives the bytes back; output escapes them (model.escape_name).
        if raw[0] == 0:  # abstract: a leading NUL, and the rest is the name verbatim
            local = UnixAddress(raw[1:].decode("utf-8", "surrogateescape"), True)
        else:
            local = UnixAddress(raw.rstrip(b"\0").decode("utf-8", "surrogateescape"), False)
    recv_q = send_q = 0
    rq = attrs.get(UNIX_DIAG_RQLEN)
    if rq is not None:
        recv_q, send_q = struct.unpack_from("=II", rq)
    uid_attr = attrs.get(UNIX_DIAG_UID)
    peer = attrs.get(UNIX_DIAG_PEER)
    sock = Socket(
        netns, "unix", "unix", SOCK_TYPES.get(stype, str(stype)), STATE_NAMES.get(state, str(state)),
        local, None, recv_q, send_q, inode,
        attr_u32(uid_attr) if uid_attr is not None else None,
        cookie_lo | (cookie_hi << 32),
    )
    if peer is not None:
        sock.peer_inode = attr_u32(peer) or None
    vfs = attrs.get(UNIX_DIAG_VFS)
    if vfs is not None and local is not None:
        # Kept so that -x and --stale can tell a live socket file from a stale one.
        vfs_ino, vfs_dev = struct.unpack_from("=II", vfs)
        sock.vfs = (kernel_dev_to_user(vfs_dev), vfs_ino)
    mem = attrs.get(UNIX_DIAG_MEMINFO)
    if mem is not None:
        sock.memory = parse_skmeminfo(mem)
    return sock


def kernel_dev_to_user(kdev: int) -> int:
    """unix_diag reports the kernel's internal dev_t (major << 20 | minor); stat()
    gives the userspace encoding (new_encode_dev). Convert so they compare."""
    major, minor = kdev >> 20, kdev & 0xFFFFF
    return (minor & 0xFF) | (major << 8) | ((minor & ~0xFF) << 12)


# --- packet -----------------------------------------------------------------
PACKET_REQ = struct.Struct("=BBHIIII")  # family, protocol, pad, ino, show, cookie[2]
PACKET_MSG = struct.Struct("=BBHIII")  # family, type, num, ino, cookie[2]
PACKET_SHOW_INFO: Final = 0x01
PACKET_SHOW_MEMINFO: Final = 0x10
PACKET_DIAG_INFO: Final = 0
PACKET_DIAG_UID: Final = 5
PACKET_DIAG_MEMINFO: Final = 6
PACKET_INFO = struct.Struct("=IIIIII")  # index, version, reserve, copy_thresh, tstamp, flags


def packet_request() -> bytes:
    # Memory is always asked for: the queues (Recv-Q, Send-Q) come from it, as in ss.
    show = PACKET_SHOW_INFO | PACKET_SHOW_MEMINFO
    return PACKET_REQ.pack(socket.AF_PACKET, 0, 0, 0, show, 0xFFFFFFFF, 0xFFFFFFFF)


def parse_packet(payload: memoryview, netns: str, ifname: Callable[[int], str | None],
                 want_memory: bool = False) -> Socket:
    _family, stype, num, inode, cookie_lo, cookie_hi = PACKET_MSG.unpack_from(payload)
    attrs = parse_attrs(payload, PACKET_MSG.size)
    ifindex = 0
    info = attrs.get(PACKET_DIAG_INFO)
    if info is not None:
        ifindex = PACKET_INFO.unpack_from(info)[0]
    uid_attr = attrs.get(PACKET_DIAG_UID)
    sock = Socket(
        netns, "packet", "packet", SOCK_TYPES.get(stype, str(stype)), "UNCONN",
        PacketAddress(num, ifname(ifindex) if ifindex else None, ifindex), None,
        0, 0, inode, attr_u32(uid_attr) if uid_attr is not None else None,
        cookie_lo | (cookie_hi << 32),
    )
    _queues_from_memory(sock, attrs.get(PACKET_DIAG_MEMINFO), want_memory)
    return sock


def _queues_from_memory(sock: Socket, mem: memoryview | None, want_memory: bool) -> None:
    """Packet and netlink diag report no queues of their own: they are the
    memory allocated for reading and writing (what ss shows as Recv-Q/Send-Q)."""
    if mem is None:
        return
    memory = parse_skmeminfo(mem)
    sock.recv_q, sock.send_q = memory.rmem_alloc, memory.wmem_alloc
    if want_memory:
        sock.memory = memory


# --- netlink ----------------------------------------------------------------
NETLINK_REQ = struct.Struct("=BBHIIII")  # family, protocol, pad, ino, show, cookie[2]
# family type protocol state portid dst_portid dst_group ino cookie[2]
NETLINK_MSG = struct.Struct("=BBBBIIIIII")
NDIAG_PROTO_ALL: Final = 255
NDIAG_SHOW_MEMINFO: Final = 0x01
NDIAG_SHOW_GROUPS: Final = 0x02
NETLINK_DIAG_MEMINFO: Final = 0
NETLINK_DIAG_GROUPS: Final = 1
NETLINK_PROTOCOLS: Final = {
    0: "route", 2: "usersock", 4: "sock_diag", 5: "nflog", 6: "xfrm", 7: "selinux",
    8: "iscsi", 9: "audit", 10: "fib_lookup", 11: "connector", 12: "netfilter",
    13: "ip6_fw", 14: "dnrtmsg", 15: "kobject_uevent", 16: "generic",
    18: "scsitransport", 19: "ecryptfs", 20: "rdma", 21: "crypto", 22: "smc",
}


def netlink_request() -> bytes:
    show = NDIAG_SHOW_GROUPS | NDIAG_SHOW_MEMINFO  # memory holds the queues, as for packet
    return NETLINK_REQ.pack(socket.AF_NETLINK, NDIAG_PROTO_ALL, 0, 0, show, 0xFFFFFFFF, 0xFFFFFFFF)


def parse_netlink(payload: memoryview, netns: str, want_memory: bool = False) -> Socket:
    (_family, stype, proto, state, portid, dst_portid, dst_group, inode, cookie_lo,
     cookie_hi) = NETLINK_MSG.unpack_from(payload)
    attrs = parse_attrs(payload, NETLINK_MSG.size)
    groups = 0
    g = attrs.get(NETLINK_DIAG_GROUPS)
    if g is not None and len(g) >= 4:
        groups = attr_u32(g)  # the first 32 groups, as /proc/net/netlink shows them
    name = NETLINK_PROTOCOLS.get(proto, str(proto))
    remote = NetlinkAddress(name, dst_portid, dst_group) if (dst_portid or dst_group) else None
    sock = Socket(
        netns, "netlink", "netlink", SOCK_TYPES.get(stype, str(stype)),
        # netlink_diag reports 1 for connected and 0 or TCP_CLOSE (7) for unconnected.
        "ESTABLISHED" if state == 1 else "UNCONN", NetlinkAddress(name, portid, groups), remote,
        0, 0, inode, None, cookie_lo | (cookie_hi << 32),
    )
    _queues_from_memory(sock, attrs.get(NETLINK_DIAG_MEMINFO), want_memory)
    return sock
