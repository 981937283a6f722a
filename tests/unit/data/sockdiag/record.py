"""Re-record the sock_diag replies used by tests/unit/test_sockdiag.py.

Run as root: ``.venv/bin/python tests/unit/data/sockdiag/record.py``. It opens
known loopback sockets, dumps them, and writes the raw reply bytes plus what
the test should find in them (expected.json).
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from pathlib import Path

from sockscope.netlink import sockdiag
from sockscope.netlink.codec import NLM_F_DUMP, NLM_F_REQUEST, build_message
from sockscope.netlink.socket import NETLINK_SOCK_DIAG

HERE = Path(__file__).parent


def raw_dump(payload: bytes) -> bytes:
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
    s.send(build_message(sockdiag.SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, 1, payload))
    chunks = []
    while True:
        buf = s.recv(1 << 16)
        chunks.append(buf)
        if int.from_bytes(buf[-20 + 4 : -20 + 6], "little") == 3 or b"" == buf:
            break
    s.close()
    return b"".join(chunks)


def main() -> None:
    lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lst.bind(("127.0.0.1", 0))
    lst.listen(8)
    cli = socket.create_connection(lst.getsockname())
    srv, _ = lst.accept()
    cli.sendall(b"x" * 1000)
    srv.recv(100)  # leave 900 bytes queued: recv_q must read 900
    lst6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    lst6.bind(("::1", 0))
    lst6.listen(4)
    tmp = tempfile.mkdtemp()
    upath = os.path.join(tmp, "rec.sock")
    ulst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ulst.bind(upath)
    ulst.listen(3)
    ucli = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ucli.connect(upath)
    usrv, _ = ulst.accept()
    abst = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    abst.bind("\0ssc-recorded")
    pkt = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
    pkt.bind(("lo", 0x0806))
    ino = lambda s: os.fstat(s.fileno()).st_ino  # noqa: E731

    ext = sockdiag.EXT_INFO | sockdiag.EXT_CONG | sockdiag.EXT_SKMEMINFO
    files = {
        "tcp4.bin": raw_dump(sockdiag.inet_request(socket.AF_INET, "tcp", 0xFFFFFFFF, ext)),
        "tcp6.bin": raw_dump(sockdiag.inet_request(socket.AF_INET6, "tcp", 0xFFFFFFFF, 0)),
        "unix.bin": raw_dump(sockdiag.unix_request(0xFFFFFFFF, True, True)),
        "packet.bin": raw_dump(sockdiag.packet_request()),
        "netlink.bin": raw_dump(sockdiag.netlink_request()),
    }
    for name, data in files.items():
        (HERE / name).write_bytes(data)
    st = os.stat(upath)
    expected = {
        "listener": {"port": lst.getsockname()[1], "inode": ino(lst)},
        "client": {"port": cli.getsockname()[1], "inode": ino(cli)},
        "server": {"inode": ino(srv), "recv_q": 900},
        "listener6": {"port": lst6.getsockname()[1], "inode": ino(lst6)},
        "unix_listener": {"path": upath, "inode": ino(ulst), "vfs": [st.st_dev, st.st_ino]},
        "unix_client": {"inode": ino(ucli), "peer": ino(usrv)},
        "unix_abstract": {"name": "ssc-recorded", "inode": ino(abst)},
        "packet": {"inode": ino(pkt), "protocol": 0x0806, "ifindex": socket.if_nametoindex("lo")},
    }
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    for s in (lst, cli, srv, lst6, ulst, ucli, usrv, abst, pkt):
        s.close()
    os.unlink(upath)
    os.rmdir(tmp)


if __name__ == "__main__":
    main()
