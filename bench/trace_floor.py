"""Reference for bench/probe.py, not part of sockscope: the least a Python
traceroute can do. IPv4 UDP probes packed with struct (no package, no decoder, no
options), traceroute's 16 probes in flight and its waits (5 s, 10x the RTT of a
later hop plus 1 ms), RTTs from kernel receive timestamps, replies read between
sends, no interpreter teardown. Its time shows how close to traceroute CPython
itself can get; what sockscope adds to it is the cost of its imports and layers.

    python bench/trace_floor.py ADDRESS      (as root, in a namespace the bench made)
"""

import _socket as S
import os
import select
import struct
import sys
import time

SO_TIMESTAMPNS = 35
PORT = 33434


def arrival(ancdata: list[tuple[int, int, bytes]]) -> float:
    now = time.monotonic()
    for level, kind, data in ancdata:
        if level == S.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            sec, nsec = struct.unpack("qq", data[:16])
            return min(now, now - (time.time() - (sec + nsec / 1e9)))
    return now


def main() -> int:
    dst = sys.argv[1]
    rx = S.socket(S.AF_INET, S.SOCK_RAW, S.IPPROTO_ICMP)
    rx.setsockopt(S.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    rx.setblocking(False)
    tx = S.socket(S.AF_INET, S.SOCK_RAW, S.IPPROTO_RAW)
    sent = [0.0] * 16
    rtt: list[float | None] = [None] * 16
    who: list[str | None] = [None] * 16
    end = 16

    def read() -> None:
        nonlocal end
        while True:
            try:
                data, anc, _flags, addr = rx.recvmsg(2048, 256)
            except BlockingIOError:
                return
            ihl = (data[0] & 15) * 4
            quoted = data[ihl + 8 :]
            if len(quoted) < 28:
                continue
            i = struct.unpack_from("!H", quoted, (quoted[0] & 15) * 4 + 2)[0] - PORT
            if 0 <= i < 16 and rtt[i] is None:
                rtt[i], who[i] = arrival(anc) - sent[i], addr[0]
                if data[ihl] == 3:  # unreachable: the destination (or a router refusing)
                    end = min(end, (i // 3 + 1) * 3)

    for i in range(16):
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 60, i, 0, i // 3 + 1, 17, 0, bytes(4), S.inet_aton(dst))
        udp = struct.pack("!HHHH", 40000, PORT + i, 40, 0) + b"@" * 32
        sent[i] = time.monotonic()
        tx.sendto(ip + udp, (dst, 0))
        read()

    def timeout(i: int) -> float:
        later = next((r for r in rtt[i + 1 :] if r is not None), None)
        return 5.0 if later is None else min(5.0, (later + 0.001) * 10)

    while True:
        waiting = [i for i in range(end) if rtt[i] is None and sent[i] + timeout(i) > time.monotonic()]
        if not waiting:
            break
        deadline = min(sent[i] + timeout(i) for i in waiting)
        select.select([rx], [], [], max(0.0, deadline - time.monotonic()))
        read()
    lines = []
    for hop in range(end // 3):
        cells = [
            f"{who[i]} {rtt[i] * 1000:.3f} ms" if rtt[i] is not None else "*"
            for i in range(hop * 3, hop * 3 + 3)
        ]
        lines.append(f"{hop + 1:2d}  " + "  ".join(cells))
    sys.stdout.write(f"traceroute to {dst}\n" + "\n".join(lines) + "\n")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
