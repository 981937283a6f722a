"""Re-record the sock_diag messages used by tests/unit/test_traffic.py.

Run as root in a namespace of its own:
``unshare -n sh -c 'ip link set lo up; .venv/bin/python tests/unit/data/traffic/record.py'``.
It moves known byte counts over a loopback connection, then writes one dump
(TCP with INET_DIAG_INFO) and the destroy message of the connection's client end
(heard on the sock_diag destroy group), with what the test should find
(expected.json).
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

from sockscope.netlink import sockdiag
from sockscope.netlink.codec import NLM_F_DUMP, NLM_F_REQUEST, build_message
from sockscope.netlink.socket import NETLINK_SOCK_DIAG

HERE = Path(__file__).parent
SENT, ANSWERED = 123_457, 4_321


def main() -> None:
    closes = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
    closes.bind((0, 0))
    closes.setsockopt(270, 1, 1)  # NETLINK_ADD_MEMBERSHIP, SKNLGRP_INET_TCP_DESTROY
    lst = socket.create_server(("127.0.0.1", 0))
    cli = socket.create_connection(lst.getsockname())
    srv, _ = lst.accept()
    cli.sendall(b"a" * SENT)
    got = 0
    while got < SENT:
        got += len(srv.recv(1 << 16))
    srv.sendall(b"b" * ANSWERED)
    got = 0
    while got < ANSWERED:
        got += len(cli.recv(1 << 16))
    time.sleep(0.2)  # the last ACKs
    dump = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
    req = sockdiag.inet_request(socket.AF_INET, "tcp", 0xFFFFFFFF, sockdiag.EXT_INFO)
    dump.send(build_message(sockdiag.SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, 1, req))
    (HERE / "tcp_dump.bin").write_bytes(dump.recv(1 << 16))
    client_port = cli.getsockname()[1]
    cli.close()
    srv.close()
    time.sleep(0.3)
    (HERE / "tcp_destroy.bin").write_bytes(closes.recv(1 << 16))
    expected = {"listen_port": lst.getsockname()[1], "client_port": client_port,
                "sent": SENT, "answered": ANSWERED}
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")


if __name__ == "__main__":
    main()
