"""rtnetlink link/address parsers against replies recorded from a real kernel.

data/rtnl/record.py built the recorded namespace: lo up with 3 UDP datagrams of
100 bytes sent over it, a bridge ssc-br0, and a veth pair ssc-veth0 (mtu 1400,
MAC 02:00:00:00:00:01, 198.51.100.1/24 and 2001:db8::1/64) / ssc-veth1 (a port
of ssc-br0), all three left down.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import asdict
from pathlib import Path

import pytest

from sockscope.inventory.interfaces import Interface, _interface, rates
from sockscope.netlink import rtnl
from sockscope.netlink.codec import DumpCollector, build_attr

DATA = Path(__file__).parent / "data" / "rtnl"


def replies(name: str) -> list[memoryview]:
    collector = DumpCollector(seq=1)
    msgs = collector.feed((DATA / name).read_bytes())
    assert collector.done
    return [m.payload for m in msgs]


@pytest.fixture(scope="module")
def links() -> dict[str, rtnl.Link]:
    parsed = [rtnl.parse_link(p) for p in replies("links.bin")]
    return {link.name: link for link in parsed}


@pytest.fixture(scope="module")
def addrs() -> list[rtnl.Addr]:
    return [rtnl.parse_addr(p) for p in replies("addrs.bin")]


def test_requests() -> None:
    assert rtnl.link_dump_request() == bytes(16)  # ifinfomsg, all zero: every link
    skip = rtnl.link_dump_request(rtnl.RTEXT_FILTER_SKIP_STATS)
    assert skip == bytes(16) + build_attr(rtnl.IFLA_EXT_MASK, struct.pack("=I", 8))
    assert rtnl.addr_dump_request(socket.AF_INET) == bytes([2]) + bytes(7)


def test_loopback_link(links: dict[str, rtnl.Link]) -> None:
    lo = links["lo"]
    assert (lo.index, lo.mtu, lo.type) == (1, 65536, 772)
    assert lo.flag_names == ["UP", "LOOPBACK", "RUNNING", "LOWER_UP"]
    assert lo.operstate_name == "UNKNOWN"  # loopback never reports carrier
    assert lo.address == "00:00:00:00:00:00"
    assert lo.kind is None and lo.master is None
    assert lo.qdisc == "noqueue" and lo.txqlen == 1000


def test_loopback_counters_follow_the_stats64_layout(links: dict[str, rtnl.Link]) -> None:
    lo_stats = links["lo"].stats
    assert lo_stats is not None
    stats = asdict(lo_stats)
    assert list(stats) == list(rtnl.STATS_FIELDS)
    # 3 datagrams of 20 + 8 + 100 bytes, each sent and received by lo.
    assert stats["tx_packets"] == stats["rx_packets"] == 3
    assert stats["tx_bytes"] == stats["rx_bytes"] == 384
    # This kernel (6.x) sends the whole struct, up to rx_otherhost_dropped.
    assert all(v == 0 for k, v in stats.items() if not k.endswith(("_packets", "_bytes")))


def test_veth_and_bridge(links: dict[str, rtnl.Link]) -> None:
    veth0, veth1, br = links["ssc-veth0"], links["ssc-veth1"], links["ssc-br0"]
    assert veth0.kind == veth1.kind == "veth" and br.kind == "bridge"
    assert veth0.mtu == 1400 and veth0.address == "02:00:00:00:00:01" and veth0.type == 1
    assert veth0.operstate_name == "DOWN" and "UP" not in veth0.flag_names
    assert veth1.master == br.index and veth0.master is None
    assert veth1.slave_kind == "bridge"
    assert (veth0.link, veth1.link) == (veth1.index, veth0.index)  # each names its peer


def test_addresses(addrs: list[rtnl.Addr], links: dict[str, rtnl.Link]) -> None:
    lo_addrs = [a for a in addrs if a.index == 1]
    assert [a.cidr for a in lo_addrs] == ["127.0.0.1/8", "::1/128"]
    assert lo_addrs[0].label == "lo" and lo_addrs[0].scope_name == "host"
    assert lo_addrs[1].local is None  # IPv6 sends only IFA_ADDRESS
    veth = [a for a in addrs if a.index == links["ssc-veth0"].index]
    assert [a.cidr for a in veth] == ["198.51.100.1/24", "2001:db8::1/64"]
    assert [a.family for a in veth] == [socket.AF_INET, socket.AF_INET6]
    assert veth[0].scope_name == "global"
    assert veth[1].flags == 0x80 | 0x02  # IFA_F_PERMANENT | IFA_F_NODAD, from IFA_FLAGS


def test_point_to_point_address_prefers_local() -> None:
    payload = (rtnl.IFADDRMSG.pack(family=socket.AF_INET, prefixlen=32, index=7)
               + build_attr(rtnl.IFA_ADDRESS, socket.inet_aton("198.51.100.9"))
               + build_attr(rtnl.IFA_LOCAL, socket.inet_aton("198.51.100.8")))
    addr = rtnl.parse_addr(payload)
    assert addr.address == "198.51.100.9" and addr.cidr == "198.51.100.8/32"


def test_short_and_32bit_stats() -> None:
    # A kernel before 4.6 stops after tx_compressed: the newer fields are None.
    base = list(range(1, rtnl.BASE_STATS + 1))
    head = rtnl.IFINFOMSG.pack(type=1, index=5)
    link = rtnl.parse_link(head + build_attr(rtnl.IFLA_STATS64, struct.pack(f"={len(base)}Q", *base)))
    assert link.stats is not None
    assert (link.stats.rx_packets, link.stats.tx_bytes, link.stats.tx_compressed) == (1, 4, 23)
    assert link.stats.rx_nohandler is None
    # Without IFLA_STATS64, the 32-bit struct with the same field order is used.
    old = rtnl.parse_link(head + build_attr(rtnl.IFLA_STATS, struct.pack(f"={len(base)}I", *base)))
    assert old.stats is not None and (old.stats.rx_packets, old.stats.rx_bytes) == (1, 3)
    with pytest.raises(ValueError):
        rtnl.parse_link(head + build_attr(rtnl.IFLA_STATS64, struct.pack("=3Q", 7, 8, 9)))
    bare = rtnl.parse_link(head)
    assert bare.name == "" and bare.mtu is None and bare.stats is None


def test_unknown_operstate_and_empty_address() -> None:
    head = rtnl.IFINFOMSG.pack(type=65534, index=9)
    link = rtnl.parse_link(head + build_attr(rtnl.IFLA_OPERSTATE, bytes([42]))
                           + build_attr(rtnl.IFLA_ADDRESS, b""))
    assert link.operstate_name == "state42" and link.address == ""


def test_link_to_interface(links: dict[str, rtnl.Link]) -> None:
    veth0 = _interface(links["ssc-veth0"], ["198.51.100.1/24"], "x")
    assert (veth0.name, veth0.kind, veth0.mtu, veth0.state, veth0.mac) == (
        "ssc-veth0", "veth", 1400, "DOWN", "02:00:00:00:00:01")
    assert veth0.flags == ["BROADCAST", "MULTICAST"] and veth0.netns == "x"
    lo = _interface(links["lo"], [], "x").to_dict()
    assert (lo["rx_packets"], lo["tx_bytes"], lo["stats"]["rx_otherhost_dropped"]) == (3, 384, 0)
    # A link without counters or hardware address (tun-like) reads as zeros and no MAC.
    bare = _interface(rtnl.parse_link(rtnl.IFINFOMSG.pack(type=65534, index=9)
                                      + build_attr(rtnl.IFLA_ADDRESS, b"")), [], "x")
    assert bare.rx_bytes == 0 and bare.mac is None and bare.stats["rx_nohandler"] is None


def _iface(index: int, name: str, rx_bytes: int = 0, tx_packets: int = 0, rx_dropped: int = 0) -> Interface:
    return Interface(name, index, None, 1500, "UP", [], None, [], "default",
                     rx_bytes=rx_bytes, tx_packets=tx_packets, rx_dropped=rx_dropped)


def test_rates_match_by_index_and_ignore_resets() -> None:
    before = [_iface(1, "a", rx_bytes=1000, tx_packets=10, rx_dropped=5), _iface(2, "gone")]
    after = [_iface(3, "new"), _iface(1, "a-renamed", rx_bytes=3000, tx_packets=30, rx_dropped=0)]
    (r,) = rates(before, after, 2.0)
    assert r.name == "a-renamed" and r.index == 1
    assert (r.rx_bytes, r.tx_packets, r.rx_drops, r.tx_bytes) == (1000.0, 10.0, 0.0, 0.0)
    with pytest.raises(ValueError):
        rates(before, after, 0)
