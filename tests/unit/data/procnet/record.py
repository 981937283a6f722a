"""Re-record the /proc/net tables used by tests/unit/test_procnet.py.

Run as root (raw and packet sockets need it):
``.venv/bin/python tests/unit/data/procnet/record.py``. It opens known sockets
(loopback only), copies the tables while they exist, and writes what the test
should find in them to expected.json. Lines of other sockets on the host are
kept: the parsers must cope with whatever else a table holds.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
TABLES = ("tcp", "tcp6", "udp", "udp6", "raw", "raw6", "unix", "packet", "netlink")
NETLINK_SOCK_DIAG = 4
NETLINK_GENERIC = 16
ETH_P_LLDP = 0x88CC


def ino(s: socket.socket) -> int:
    return os.fstat(s.fileno()).st_ino


def main() -> None:
    keep: list[socket.socket] = []  # every socket stays open until the tables are copied

    def new(*args: Any) -> socket.socket:
        s = socket.socket(*args)
        keep.append(s)
        return s

    exp: dict[str, Any] = {}
    # TCP over IPv4: listener with one connection left unaccepted, a client with keepalive due in an
    # hour, the accepted end with 300 unread bytes, and a TIME_WAIT left behind.
    lst = new(socket.AF_INET, socket.SOCK_STREAM)
    lst.bind(("127.0.0.1", 0))
    lst.listen(8)
    port = lst.getsockname()[1]
    cli = new(socket.AF_INET, socket.SOCK_STREAM)
    cli.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    cli.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 3600)
    cli.connect(("127.0.0.1", port))
    srv, _ = lst.accept()
    keep.append(srv)
    cli.sendall(b"x" * 300)
    gone = socket.create_connection(("127.0.0.1", port))
    gone_port = gone.getsockname()[1]
    gone_srv, _ = lst.accept()
    gone.close()  # the side closing first goes to TIME_WAIT
    gone_srv.close()
    keep.append(socket.create_connection(("127.0.0.1", port)))  # left in the accept queue
    exp["tcp"] = {"port": port, "listener": ino(lst), "client": ino(cli),
                  "client_port": cli.getsockname()[1], "server": ino(srv), "timewait_port": gone_port}

    # TCP over IPv6, plus an IPv6 socket talking IPv4 through a mapped address.
    lst6 = new(socket.AF_INET6, socket.SOCK_STREAM)
    lst6.bind(("::1", 0))
    lst6.listen(4)
    cli6 = new(socket.AF_INET6, socket.SOCK_STREAM)
    cli6.connect(lst6.getsockname()[:2])
    srv6, _ = lst6.accept()
    keep.append(srv6)
    mapped = new(socket.AF_INET6, socket.SOCK_STREAM)
    mapped.connect(("::ffff:127.0.0.1", port))
    exp["tcp6"] = {"port": lst6.getsockname()[1], "listener": ino(lst6), "client": ino(cli6),
                   "client_port": cli6.getsockname()[1], "mapped": ino(mapped),
                   "mapped_port": mapped.getsockname()[1]}

    # UDP: an unconnected IPv4 socket holding one unread datagram; a connected IPv6 pair.
    udp = new(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    new(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"ping", udp.getsockname())
    u6a, u6b = new(socket.AF_INET6, socket.SOCK_DGRAM), new(socket.AF_INET6, socket.SOCK_DGRAM)
    u6a.bind(("::1", 0))
    u6b.bind(("::1", 0))
    u6a.connect(u6b.getsockname()[:2])
    exp["udp"] = {"inode": ino(udp), "port": udp.getsockname()[1]}
    exp["udp6"] = {"inode": ino(u6a), "port": u6a.getsockname()[1], "peer_port": u6b.getsockname()[1]}

    # Raw: ICMP unbound, IPPROTO_RAW connected to loopback, ICMPv6 bound to ::1.
    icmp = new(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    rawc = new(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    rawc.connect(("127.0.0.2", 0))
    icmp6 = new(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    icmp6.bind(("::1", 0))
    exp["raw"] = {"icmp": ino(icmp), "connected": ino(rawc)}
    exp["raw6"] = {"icmp6": ino(icmp6)}

    # Unix: a listener whose path has a space, a connection accepted and one not
    # yet accepted, an abstract dgram name, a path with a \x1c and a non-UTF-8 byte,
    # an abstract name with a non-UTF-8 byte, an unnamed seqpacket socket.
    tmp = tempfile.mkdtemp(prefix="ssc-procnet-")
    upath = os.path.join(tmp, "listen sock")
    ulst = new(socket.AF_UNIX, socket.SOCK_STREAM)
    ulst.bind(upath)
    ulst.listen(4)
    ucli = new(socket.AF_UNIX, socket.SOCK_STREAM)
    ucli.connect(upath)
    usrv, _ = ulst.accept()
    keep.append(usrv)
    pending = new(socket.AF_UNIX, socket.SOCK_STREAM)
    pending.connect(upath)  # never accepted: its server end is an embryo
    abst = new(socket.AF_UNIX, socket.SOCK_DGRAM)
    abst.bind("\0ssc-procnet")
    odd_path = os.fsencode(tmp) + b"/odd\x1c\xff"
    odd = new(socket.AF_UNIX, socket.SOCK_DGRAM)
    odd.bind(odd_path)
    odd_abst = new(socket.AF_UNIX, socket.SOCK_DGRAM)
    odd_abst.bind(b"\0ssc-\xff")
    seq = new(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    exp["unix"] = {"path": upath, "listener": ino(ulst), "client": ino(ucli), "server": ino(usrv),
                   "pending": ino(pending), "abstract": ino(abst), "odd": ino(odd),
                   "odd_path": os.fsdecode(odd_path), "odd_abstract": ino(odd_abst),
                   "seqpacket": ino(seq)}

    # Packet: LLDP on lo (nothing sends it, so nothing queues), and an unbound
    # SOCK_DGRAM socket with protocol 0, which receives nothing at all.
    lo = socket.if_nametoindex("lo")
    pkt = new(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_LLDP))
    pkt.bind(("lo", ETH_P_LLDP))
    pdg = new(socket.AF_PACKET, socket.SOCK_DGRAM, 0)
    exp["packet"] = {"bound": ino(pkt), "ifindex": lo, "protocol": ETH_P_LLDP, "unbound": ino(pdg)}

    # Netlink: route with the RTMGRP_LINK group (bit 0), sock_diag, generic.
    route = new(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    route.bind((0, 1))
    diag = new(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
    diag.bind((0, 0))
    gen = new(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_GENERIC)
    gen.bind((0, 0))
    exp["netlink"] = {name: {"inode": ino(s), "portid": s.getsockname()[0]}
                      for name, s in (("route", route), ("sock_diag", diag), ("generic", gen))}

    # The tables print addresses in the recording host's byte order.
    exp["byteorder"] = sys.byteorder
    for name in TABLES:
        with open(f"/proc/thread-self/net/{name}", "rb") as f:
            (HERE / name).write_bytes(f.read())
    (HERE / "expected.json").write_text(json.dumps(exp, indent=1) + "\n")
    for s in keep:
        s.close()
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
