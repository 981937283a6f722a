"""Sans-IO rtnetlink (NETLINK_ROUTE): link and address dump requests and parsers.

Layouts follow include/uapi/linux/{rtnetlink,if_link,if_addr,if_arp,if}.h. Fixed
headers are declared as tables of (field, struct code) and unpacked by name, so a
layout reads like the C struct it mirrors. ``parse_link`` and ``parse_addr`` turn
one message payload into a plain record with kernel numbers kept as numbers; the
name tables here translate them for display. Nothing here opens a socket.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import Final

from .codec import attr_str, attr_u32, build_attr, parse_attrs

RTM_NEWLINK: Final = 16
RTM_DELLINK: Final = 17
RTM_GETLINK: Final = 18
RTM_NEWADDR: Final = 20
RTM_DELADDR: Final = 21
RTM_GETADDR: Final = 22


class Layout:
    """A C struct given as (field name, struct code) pairs; an empty name is padding."""

    __slots__ = ("names", "size", "struct")

    def __init__(self, *fields: tuple[str, str]) -> None:
        self.names = tuple(name for name, _ in fields if name)
        self.struct = struct.Struct("=" + "".join(code for _, code in fields))
        self.size = self.struct.size

    def unpack(self, buf: bytes | memoryview) -> dict[str, int]:
        if len(buf) < self.size:
            raise ValueError(f"need {self.size} bytes for the header, got {len(buf)}")
        return dict(zip(self.names, self.struct.unpack_from(buf), strict=True))

    def pack(self, **values: int) -> bytes:
        """Fields not given are zero."""
        unknown = set(values) - set(self.names)
        if unknown:
            raise TypeError(f"no such field: {', '.join(sorted(unknown))}")
        return self.struct.pack(*(values.get(name, 0) for name in self.names))


IFINFOMSG: Final = Layout(
    ("family", "B"), ("", "x"), ("type", "H"), ("index", "i"), ("flags", "I"), ("change", "I"),
)
IFADDRMSG: Final = Layout(
    ("family", "B"), ("prefixlen", "B"), ("flags", "B"), ("scope", "B"), ("index", "I"),
)

# --- link attributes (if_link.h) ---------------------------------------------
IFLA_ADDRESS: Final = 1
IFLA_IFNAME: Final = 3
IFLA_MTU: Final = 4
IFLA_LINK: Final = 5
IFLA_QDISC: Final = 6
IFLA_STATS: Final = 7
IFLA_MASTER: Final = 10
IFLA_TXQLEN: Final = 13
IFLA_OPERSTATE: Final = 16
IFLA_LINKINFO: Final = 18
IFLA_STATS64: Final = 23
IFLA_EXT_MASK: Final = 29
IFLA_LINK_NETNSID: Final = 37

IFLA_INFO_KIND: Final = 1
IFLA_INFO_SLAVE_KIND: Final = 4

# IFLA_EXT_MASK bits. Skipping stats makes a dump that only needs names and
# indexes (namespace listings) cheaper for the kernel to build and for us to read.
RTEXT_FILTER_VF: Final = 1 << 0
RTEXT_FILTER_SKIP_STATS: Final = 1 << 3

# struct rtnl_link_stats64, in order. IFLA_STATS (struct rtnl_link_stats) has the
# same fields as 32-bit counters. The kernel has only ever appended fields, so a
# payload holds a prefix of this table; the first BASE_STATS fields are present on
# every kernel that has IFLA_STATS64 (2.6.35+), later ones are None when absent.
STATS_FIELDS: Final = (
    "rx_packets", "tx_packets", "rx_bytes", "tx_bytes",
    "rx_errors", "tx_errors", "rx_dropped", "tx_dropped",
    "multicast", "collisions",
    # detailed rx_errors
    "rx_length_errors", "rx_over_errors", "rx_crc_errors", "rx_frame_errors",
    "rx_fifo_errors", "rx_missed_errors",
    # detailed tx_errors
    "tx_aborted_errors", "tx_carrier_errors", "tx_fifo_errors", "tx_heartbeat_errors",
    "tx_window_errors",
    "rx_compressed", "tx_compressed",
    "rx_nohandler",  # Linux 4.6
    "rx_otherhost_dropped",  # Linux 5.19
)
BASE_STATS: Final = 23

# --- address attributes (if_addr.h) ------------------------------------------
IFA_ADDRESS: Final = 1
IFA_LOCAL: Final = 2
IFA_LABEL: Final = 3
IFA_FLAGS: Final = 8

# --- name tables -----------------------------------------------------------------
# net_device_flags (if.h), in bit order: the order `ip link` prints them in.
IFF_NAMES: Final = (
    (0x1, "UP"), (0x2, "BROADCAST"), (0x4, "DEBUG"), (0x8, "LOOPBACK"),
    (0x10, "POINTOPOINT"), (0x20, "NOTRAILERS"), (0x40, "RUNNING"), (0x80, "NOARP"),
    (0x100, "PROMISC"), (0x200, "ALLMULTI"), (0x400, "MASTER"), (0x800, "SLAVE"),
    (0x1000, "MULTICAST"), (0x2000, "PORTSEL"), (0x4000, "AUTOMEDIA"), (0x8000, "DYNAMIC"),
    (0x10000, "LOWER_UP"), (0x20000, "DORMANT"), (0x40000, "ECHO"),
)
IFF_UP: Final = 0x1

# RFC 2863 operational states (IF_OPER_*), as `ip link` prints them.
OPERSTATE_NAMES: Final = {
    0: "UNKNOWN", 1: "NOTPRESENT", 2: "DOWN", 3: "LOWERLAYERDOWN",
    4: "TESTING", 5: "DORMANT", 6: "UP",
}

# Link-layer types (if_arp.h) for devices without a driver kind in IFLA_LINKINFO
# (loopback, physical NICs, some tunnels).
ARPHRD_NAMES: Final = {
    1: "ether", 32: "infiniband", 280: "can", 512: "ppp", 519: "rawip", 768: "ipip",
    769: "ip6tnl", 772: "loopback", 776: "sit", 778: "gre", 801: "ieee802.11",
    823: "ip6gre", 0xFFFE: "none", 0xFFFF: "void",
}

# rt_scope_t (rtnetlink.h)
SCOPE_NAMES: Final = {0: "global", 200: "site", 253: "link", 254: "host", 255: "nowhere"}


@dataclass(slots=True)
class LinkStats:
    """Interface counters (struct rtnl_link_stats64)."""

    rx_packets: int
    tx_packets: int
    rx_bytes: int
    tx_bytes: int
    rx_errors: int
    tx_errors: int
    rx_dropped: int
    tx_dropped: int
    multicast: int
    collisions: int
    rx_length_errors: int
    rx_over_errors: int
    rx_crc_errors: int
    rx_frame_errors: int
    rx_fifo_errors: int
    rx_missed_errors: int
    tx_aborted_errors: int
    tx_carrier_errors: int
    tx_fifo_errors: int
    tx_heartbeat_errors: int
    tx_window_errors: int
    rx_compressed: int
    tx_compressed: int
    rx_nohandler: int | None = None
    rx_otherhost_dropped: int | None = None


@dataclass(slots=True)
class Link:
    """One RTM_NEWLINK message. Optional attributes the kernel left out are None."""

    index: int
    name: str
    family: int
    type: int  # ARPHRD_*
    flags: int  # IFF_*
    change: int
    mtu: int | None = None
    operstate: int | None = None  # IF_OPER_*
    address: str | None = None  # link-layer address, "aa:bb:cc:dd:ee:ff"
    link: int | None = None  # ifindex of the lower device or veth peer
    link_netnsid: int | None = None  # set when ``link`` lives in another namespace
    master: int | None = None  # ifindex of the bridge/bond this device is enslaved to
    qdisc: str | None = None
    txqlen: int | None = None
    kind: str | None = None  # driver kind: "veth", "bridge", ...
    slave_kind: str | None = None  # kind of the master, as seen by its port
    stats: LinkStats | None = None

    @property
    def flag_names(self) -> list[str]:
        return flag_names(self.flags)

    @property
    def operstate_name(self) -> str:
        return OPERSTATE_NAMES.get(self.operstate or 0, f"state{self.operstate}")


@dataclass(slots=True)
class Addr:
    """One RTM_NEWADDR message."""

    index: int
    family: int
    prefixlen: int
    flags: int  # IFA_F_*; the 32-bit IFA_FLAGS attribute when present
    scope: int
    address: str | None = None  # on point-to-point links, the peer's address
    local: str | None = None  # the address of this end (IPv4 only)
    label: str | None = None  # IPv4 only: "eth0", or an alias such as "eth0:1"

    @property
    def cidr(self) -> str:
        """"198.51.100.1/24": the local address where the two differ (point-to-point)."""
        return f"{self.local or self.address}/{self.prefixlen}"

    @property
    def scope_name(self) -> str:
        return SCOPE_NAMES.get(self.scope, str(self.scope))


def flag_names(flags: int) -> list[str]:
    return [name for bit, name in IFF_NAMES if flags & bit]


# --- requests ----------------------------------------------------------------


def link_dump_request(ext_mask: int = 0) -> bytes:
    """The payload of an RTM_GETLINK dump of every link (RTEXT_FILTER_* in ``ext_mask``)."""
    payload = IFINFOMSG.pack(family=socket.AF_UNSPEC)
    if ext_mask:
        payload += build_attr(IFLA_EXT_MASK, struct.pack("=I", ext_mask))
    return payload


def addr_dump_request(family: int = socket.AF_UNSPEC) -> bytes:
    """The payload of an RTM_GETADDR dump of every address of ``family`` (default: all)."""
    return IFADDRMSG.pack(family=family)


# --- parsers -----------------------------------------------------------------


def parse_stats(value: bytes | memoryview, width: int = 8) -> LinkStats:
    """IFLA_STATS64 (``width`` 8) or the 32-bit IFLA_STATS (``width`` 4)."""
    count = min(len(value) // width, len(STATS_FIELDS))
    if count < BASE_STATS:
        raise ValueError(f"link stats of {len(value)} bytes are shorter than the base struct")
    values = struct.unpack_from(f"={count}{'Q' if width == 8 else 'I'}", value)
    return LinkStats(**dict(zip(STATS_FIELDS, values, strict=False)))


def parse_link(payload: bytes | memoryview) -> Link:
    """An RTM_NEWLINK payload: ifinfomsg and the attributes we use."""
    hdr = IFINFOMSG.unpack(payload)
    attrs = parse_attrs(payload, IFINFOMSG.size)
    link = Link(hdr["index"], "", hdr["family"], hdr["type"], hdr["flags"], hdr["change"])
    if (v := attrs.get(IFLA_IFNAME)) is not None:
        link.name = attr_str(v)
    if (v := attrs.get(IFLA_MTU)) is not None:
        link.mtu = attr_u32(v)
    if (v := attrs.get(IFLA_OPERSTATE)) is not None:
        link.operstate = v[0]
    if (v := attrs.get(IFLA_ADDRESS)) is not None:
        link.address = format_lladdr(v)
    if (v := attrs.get(IFLA_LINK)) is not None:
        link.link = attr_u32(v)
    if (v := attrs.get(IFLA_LINK_NETNSID)) is not None:
        link.link_netnsid = int(struct.unpack_from("=i", v)[0])  # signed: -1 means none
    if (v := attrs.get(IFLA_MASTER)) is not None:
        link.master = attr_u32(v)
    if (v := attrs.get(IFLA_QDISC)) is not None:
        link.qdisc = attr_str(v)
    if (v := attrs.get(IFLA_TXQLEN)) is not None:
        link.txqlen = attr_u32(v)
    if (v := attrs.get(IFLA_LINKINFO)) is not None:
        info = parse_attrs(v)
        if (kind := info.get(IFLA_INFO_KIND)) is not None:
            link.kind = attr_str(kind)
        if (kind := info.get(IFLA_INFO_SLAVE_KIND)) is not None:
            link.slave_kind = attr_str(kind)
    if (v := attrs.get(IFLA_STATS64)) is not None:
        link.stats = parse_stats(v, 8)
    elif (v := attrs.get(IFLA_STATS)) is not None:  # kernels before 2.6.35
        link.stats = parse_stats(v, 4)
    return link


def parse_addr(payload: bytes | memoryview) -> Addr:
    """An RTM_NEWADDR payload: ifaddrmsg and its address attributes."""
    hdr = IFADDRMSG.unpack(payload)
    attrs = parse_attrs(payload, IFADDRMSG.size)
    family = hdr["family"]
    addr = Addr(hdr["index"], family, hdr["prefixlen"], hdr["flags"], hdr["scope"])
    if (v := attrs.get(IFA_ADDRESS)) is not None:
        addr.address = format_ip(family, v)
    if (v := attrs.get(IFA_LOCAL)) is not None:
        addr.local = format_ip(family, v)
    if (v := attrs.get(IFA_LABEL)) is not None:
        addr.label = attr_str(v)
    if (v := attrs.get(IFA_FLAGS)) is not None:
        # The header byte cannot hold flags from 0x100 up (e.g. NOPREFIXROUTE).
        addr.flags = attr_u32(v)
    return addr


def format_lladdr(value: bytes | memoryview) -> str:
    return ":".join(f"{b:02x}" for b in bytes(value))


def format_ip(family: int, value: bytes | memoryview) -> str:
    raw = bytes(value)
    if (family, len(raw)) in ((socket.AF_INET, 4), (socket.AF_INET6, 16)):
        return socket.inet_ntop(family, raw)
    return format_lladdr(raw)  # another family (e.g. DECnet, MCTP): show the bytes
