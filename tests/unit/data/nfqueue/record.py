"""Re-record the nfnetlink_queue messages used by tests/unit/test_nfqueue.py.

Run as root: ``.venv/bin/python tests/unit/data/nfqueue/record.py``. It moves itself
into a new, private network namespace (gone when it exits), steers UDP to port 5000
on loopback into queue 7 with iptables/ip6tables (mark 0x2a set in mangle first),
binds the queue with the codec's own config messages and writes what the kernel
sends back:

* ``bind_ack.bin``: the ACK to the bind + config request;
* ``busy.bin``: the error a second socket gets binding the same queue (EBUSY);
* ``packet4.bin`` / ``packet6.bin``: the queued datagram b"hello divert" from
  127.0.0.1 / ::1 (uid/gid flag on, whole packet copied);
* ``capped.bin``: the same IPv4 datagram with the copy range cut to 28 bytes;
* ``proc.txt``: /proc/net/netfilter/nfnetlink_queue while a packet is held.

test_nfqueue.py asserts the values set up here, so keep the two in step.
"""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess
from pathlib import Path

from sockscope.netlink import nfqueue as nfq
from sockscope.netlink.codec import NLM_F_ACK, NLM_F_REQUEST, build_message, iter_messages
from sockscope.netlink.socket import NETLINK_NETFILTER

HERE = Path(__file__).parent
CLONE_NEWNET = 0x40000000
QUEUE = 7
DATA = b"hello divert"


def unshare_net() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def firewall() -> None:
    for tool in ("iptables", "ip6tables"):
        subprocess.run(
            [
                tool,
                "-t",
                "mangle",
                "-A",
                "OUTPUT",
                "-p",
                "udp",
                "--dport",
                "5000",
                "-j",
                "MARK",
                "--set-mark",
                "0x2a",
            ],
            check=True,
        )
        subprocess.run(
            [
                tool,
                "-A",
                "OUTPUT",
                "-p",
                "udp",
                "--dport",
                "5000",
                "-j",
                "NFQUEUE",
                "--queue-num",
                str(QUEUE),
            ],
            check=True,
        )


def config(sock: socket.socket, payload: bytes, seq: int) -> bytes:
    sock.send(build_message(nfq.MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, seq, payload))
    return sock.recv(1 << 16)


def bind(copy_range: int) -> tuple[socket.socket, bytes]:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.bind((0, 0))
    ack = config(sock, nfq.bind_payload(QUEUE), 1)
    ack += config(
        sock,
        nfq.config_payload(
            QUEUE,
            copy_mode=nfq.NFQNL_COPY_PACKET,
            copy_range=copy_range,
            maxlen=64,
            set_flags=nfq.F_UID_GID,
            clear_flags=nfq.F_FAIL_OPEN | nfq.F_GSO,
        ),
        2,
    )
    return sock, ack


def send(family: int, host: str) -> None:
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.sendto(DATA, (host, 5000))


def receive_and_accept(sock: socket.socket) -> bytes:
    data = sock.recv(1 << 16)
    msg = next(iter_messages(data))
    info = nfq.parse_packet(msg.payload)
    sock.send(nfq.verdict_message(QUEUE, info.packet_id, nfq.NF_ACCEPT))
    return data


def main() -> None:
    unshare_net()
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    firewall()
    sock, ack = bind(0xFFFF)
    (HERE / "bind_ack.bin").write_bytes(ack)
    other = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    other.bind((0, 0))
    (HERE / "busy.bin").write_bytes(config(other, nfq.bind_payload(QUEUE), 9))
    other.close()
    send(socket.AF_INET, "127.0.0.1")
    data = sock.recv(1 << 16)
    (HERE / "proc.txt").write_text(Path("/proc/net/netfilter/nfnetlink_queue").read_text())
    info = nfq.parse_packet(next(iter_messages(data)).payload)
    sock.send(nfq.verdict_message(QUEUE, info.packet_id, nfq.NF_ACCEPT))
    (HERE / "packet4.bin").write_bytes(data)
    send(socket.AF_INET6, "::1")
    (HERE / "packet6.bin").write_bytes(receive_and_accept(sock))
    sock.close()
    sock, _ = bind(28)
    send(socket.AF_INET, "127.0.0.1")
    (HERE / "capped.bin").write_bytes(receive_and_accept(sock))
    sock.close()


if __name__ == "__main__":
    main()
