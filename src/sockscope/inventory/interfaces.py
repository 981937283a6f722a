"""Network interfaces with their counters and addresses, from rtnetlink.

One RTM_GETLINK dump and one RTM_GETADDR dump per call, in the namespace asked
for; ``rates`` turns two such snapshots into per-second figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sockscope.errors import UsageError
from sockscope.netlink import rtnl
from sockscope.netlink.codec import NLM_F_DUMP_INTR
from sockscope.netlink.socket import NETLINK_ROUTE, NetlinkSocket
from sockscope.platform import linux

# A dump that raced with a link or address change is flagged by the kernel;
# such changes are rare and brief, so a few repeats always suffice in practice.
_DUMP_ATTEMPTS = 3


@dataclass(slots=True)
class Interface:
    name: str
    index: int
    kind: str | None  # "veth", "bridge"...; None for physical and loopback links
    mtu: int | None
    state: str  # operstate: "UP", "DOWN", "UNKNOWN"...
    flags: list[str]
    mac: str | None
    addresses: list[str]
    netns: str
    rx_bytes: int = 0
    rx_packets: int = 0
    rx_errors: int = 0
    rx_dropped: int = 0
    tx_bytes: int = 0
    tx_packets: int = 0
    tx_errors: int = 0
    tx_dropped: int = 0
    multicast: int = 0
    collisions: int = 0
    master: int | None = None
    # every rtnl_link_stats64 field; None for those this kernel does not report
    stats: dict[str, int | None] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class InterfaceRates:
    """Per-second change of an interface's counters between two snapshots."""

    name: str
    index: int
    netns: str
    seconds: float
    rx_bytes: float
    rx_packets: float
    rx_errors: float
    rx_drops: float
    tx_bytes: float
    tx_packets: float
    tx_errors: float
    tx_drops: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def interfaces(netns: str | None = None, names: Sequence[str] | None = None) -> list[Interface]:
    """Interfaces of one namespace (default: the caller's) in index order.

    ``names`` keeps only those interfaces; an unknown one raises UsageError.
    """
    ref = linux.resolve_netns(netns) if netns is not None else None
    ns_name = ref.name if ref is not None else linux.current_netns().name
    with linux.in_netns(ref):
        sock = NetlinkSocket(NETLINK_ROUTE)
    with sock:
        links, addrs = _snapshot(sock)
    by_index: dict[int, list[str]] = {}
    for addr in addrs:
        by_index.setdefault(addr.index, []).append(addr.cidr)
    if names:
        known = {link.name for link in links}
        for name in names:
            if name not in known:
                raise UsageError(f"unknown interface {name!r}")
        wanted = set(names)
        links = [link for link in links if link.name in wanted]
    return [_interface(link, by_index.get(link.index, []), ns_name) for link in links]


def _snapshot(sock: NetlinkSocket) -> tuple[list[rtnl.Link], list[rtnl.Addr]]:
    for attempt in range(_DUMP_ATTEMPTS):
        interrupted = False
        links: list[rtnl.Link] = []
        addrs: list[rtnl.Addr] = []
        for msg in sock.dump(rtnl.RTM_GETLINK, rtnl.link_dump_request()):
            interrupted |= bool(msg.flags & NLM_F_DUMP_INTR)
            if msg.type == rtnl.RTM_NEWLINK:
                links.append(rtnl.parse_link(msg.payload))
        for msg in sock.dump(rtnl.RTM_GETADDR, rtnl.addr_dump_request()):
            interrupted |= bool(msg.flags & NLM_F_DUMP_INTR)
            if msg.type == rtnl.RTM_NEWADDR:
                addrs.append(rtnl.parse_addr(msg.payload))
        # The last attempt's result is still consistent per message, only
        # possibly missing a link that came or went meanwhile: better than failing.
        if not interrupted or attempt == _DUMP_ATTEMPTS - 1:
            break
    links.sort(key=lambda link: link.index)
    return links, addrs


def _interface(link: rtnl.Link, addresses: list[str], netns: str) -> Interface:
    # Virtual links without counters (rare) report zeros rather than None, so
    # rates and sums need no special case.
    base = link.stats if link.stats is not None else rtnl.LinkStats(*(0,) * rtnl.BASE_STATS)
    s: dict[str, int | None] = asdict(base)
    return Interface(
        name=link.name, index=link.index, kind=link.kind, mtu=link.mtu, state=link.operstate_name,
        flags=link.flag_names, mac=link.address or None, addresses=addresses, netns=netns,
        rx_bytes=base.rx_bytes, rx_packets=base.rx_packets, rx_errors=base.rx_errors,
        rx_dropped=base.rx_dropped, tx_bytes=base.tx_bytes, tx_packets=base.tx_packets,
        tx_errors=base.tx_errors, tx_dropped=base.tx_dropped, multicast=base.multicast,
        collisions=base.collisions, master=link.master, stats=s,
    )


def rates(before: Sequence[Interface], after: Sequence[Interface], seconds: float) -> list[InterfaceRates]:
    """Counter changes per second for interfaces present in both snapshots (by index).

    A counter that went backwards (a driver reset its statistics) counts as no
    change rather than a huge negative rate.
    """
    if seconds <= 0:
        raise ValueError("seconds must be positive")
    old = {i.index: i for i in before}
    out: list[InterfaceRates] = []
    for new in after:
        prev = old.get(new.index)
        if prev is None:
            continue

        def per_s(old_value: int, new_value: int) -> float:
            return max(0, new_value - old_value) / seconds

        out.append(InterfaceRates(
            name=new.name, index=new.index, netns=new.netns, seconds=seconds,
            rx_bytes=per_s(prev.rx_bytes, new.rx_bytes), rx_packets=per_s(prev.rx_packets, new.rx_packets),
            rx_errors=per_s(prev.rx_errors, new.rx_errors), rx_drops=per_s(prev.rx_dropped, new.rx_dropped),
            tx_bytes=per_s(prev.tx_bytes, new.tx_bytes), tx_packets=per_s(prev.tx_packets, new.tx_packets),
            tx_errors=per_s(prev.tx_errors, new.tx_errors), tx_drops=per_s(prev.tx_dropped, new.tx_dropped),
        ))
    return out
