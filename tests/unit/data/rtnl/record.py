"""Re-record the rtnetlink replies used by tests/unit/test_rtnl.py.

Run as root: ``.venv/bin/python tests/unit/data/rtnl/record.py``. It moves
itself into a new, private network namespace (gone when it exits, so nothing
reaches the host's network), builds a known set of links there, sends a known
amount of traffic over loopback, and writes the raw RTM_GETLINK and
RTM_GETADDR dump replies (links.bin, addrs.bin). test_rtnl.py asserts the
values set up here, so keep the two in step.
"""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess
from pathlib import Path

from sockscope.netlink import rtnl
from sockscope.netlink.codec import NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, build_message, iter_messages
from sockscope.netlink.socket import NETLINK_ROUTE

HERE = Path(__file__).parent
CLONE_NEWNET = 0x40000000
DATAGRAMS = 3
PAYLOAD = 100  # lo counts 20 (IPv4) + 8 (UDP) + 100 = 128 bytes per datagram (no Ethernet header)


def unshare_net() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True)


def raw_dump(msg_type: int, payload: bytes) -> bytes:
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE) as s:
        s.send(build_message(msg_type, NLM_F_REQUEST | NLM_F_DUMP, 1, payload))
        chunks = []
        while True:
            buf = s.recv(1 << 16)
            chunks.append(buf)
            if any(m.type == NLMSG_DONE for m in iter_messages(buf)):
                return b"".join(chunks)


def main() -> None:
    unshare_net()  # children (ip) inherit the new namespace
    ip("link", "set", "lo", "up")
    ip("link", "add", "ssc-br0", "type", "bridge")
    ip("link", "add", "ssc-veth0", "mtu", "1400", "address", "02:00:00:00:00:01",
       "type", "veth", "peer", "name", "ssc-veth1")
    ip("link", "set", "ssc-veth1", "master", "ssc-br0")
    # Left down on purpose: an up veth or bridge sends IPv6 DAD/MLD packets of its own.
    ip("addr", "add", "198.51.100.1/24", "dev", "ssc-veth0")
    ip("addr", "add", "2001:db8::1/64", "dev", "ssc-veth0", "nodad")
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))  # a bound receiver, so no ICMP port-unreachable adds packets
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(DATAGRAMS):
        tx.sendto(b"x" * PAYLOAD, rx.getsockname())
        rx.recv(PAYLOAD)
    links = raw_dump(rtnl.RTM_GETLINK, rtnl.link_dump_request())
    # /sys/class/net shows the namespace sysfs was mounted in, not ours: check
    # the counters in the reply itself (lo is always the first link).
    lo = rtnl.parse_link(next(iter_messages(links)).payload)
    assert lo.stats is not None and lo.stats.tx_packets == DATAGRAMS, f"extra traffic on lo: {lo.stats}"
    (HERE / "links.bin").write_bytes(links)
    (HERE / "addrs.bin").write_bytes(raw_dump(rtnl.RTM_GETADDR, rtnl.addr_dump_request()))


if __name__ == "__main__":
    main()
