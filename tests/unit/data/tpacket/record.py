"""Re-record the TPACKET_V3 ring blocks used by tests/unit/test_capture_tpacket.py.

Run as root: ``.venv/bin/python tests/unit/data/tpacket/record.py``. It moves itself
into a new, private network namespace (gone when it exits), opens capture rings on
lo (Ethernet framing) and on every interface (cooked), sends DATAGRAMS UDP datagrams
from 127.0.0.1 to port PORT carrying b"sockscope-<n>", and writes each ring's first
block as the kernel filled it (lo.bin, any.bin). The test asserts these values.
"""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess
import time
from pathlib import Path

from sockscope.capture.bpf import compile_filter, for_cooked_socket, with_direction
from sockscope.capture.packet_socket import RingConfig, RingSocket
from sockscope.capture.tpacket import BLOCK_DESC, block_ready

HERE = Path(__file__).parent
CLONE_NEWNET = 0x40000000
DATAGRAMS = 3
PORT = 5999


def unshare_net() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def first_block(ring: RingSocket) -> bytes:
    deadline = time.monotonic() + 5
    while not block_ready(ring.view, 0):
        if time.monotonic() > deadline:
            raise RuntimeError("no block from the ring")
        time.sleep(0.01)
    length = BLOCK_DESC.unpack_from(ring.view, 0)[5]
    return bytes(ring.view[:length])


def main() -> None:
    unshare_net()
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    config = RingConfig(block_size=1 << 16, block_nr=2, block_timeout_ms=50)
    lo_prog = with_direction(compile_filter(f"udp port {PORT}", 1), True, False)
    cooked = for_cooked_socket(compile_filter(f"udp port {PORT}", 113))
    assert cooked is not None
    rings = {
        "lo": RingSocket(socket.if_nametoindex("lo"), False, config, lo_prog),
        "any": RingSocket(0, True, config, with_direction(cooked, True, True, socket.if_nametoindex("lo"))),
    }
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for n in range(DATAGRAMS):
            s.sendto(b"sockscope-%d" % n, ("127.0.0.1", PORT))
    for name, ring in rings.items():
        (HERE / f"{name}.bin").write_bytes(first_block(ring))
        ring.close()


if __name__ == "__main__":
    main()
