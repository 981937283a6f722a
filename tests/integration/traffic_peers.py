"""Traffic generators for tests/integration/test_top.py, run as separate processes.

    sink HOST PORT                       accept connections, read each to EOF, forever;
                                         prints "ready" once listening
    burst HOST PORT N SIZE               N connections one after another, SIZE bytes each
                                         (sent, then closed); prints "done"
    steps HOST PORT MODE SIZE            one connection, driven by lines on stdin:
                                         "send" sends SIZE bytes from whoever holds the
                                         socket now; "handoff" gives the socket away
                                         (MODE fdpass: to a child over SCM_RIGHTS, the
                                         sender's copy closed; MODE fork: to a forked
                                         child, both keeping it); prints the pid that sent
    udp-send HOST PORT RATE SECONDS SIZE RATE datagrams/s of SIZE bytes for SECONDS;
                                         prints the bytes sent
    udp-sink HOST PORT                   receive until 1.5 s of silence; prints "ready",
                                         then the bytes received
"""

from __future__ import annotations

import os
import socket
import sys
import time


def sink(host: str, port: int) -> None:
    srv = socket.create_server((host, port), backlog=512)
    print("ready", flush=True)
    while True:
        conn, _ = srv.accept()
        while conn.recv(1 << 16):
            pass
        conn.close()


def burst(host: str, port: int, n: int, size: int) -> None:
    payload = b"x" * size
    for _ in range(n):
        with socket.create_connection((host, port)) as s:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            s.recv(1)  # wait for the server's close, so every byte was received
    print("done", flush=True)


def steps(host: str, port: int, mode: str, size: int) -> None:
    conn = socket.create_connection((host, port))
    payload = b"y" * size
    child_pid = 0
    to_child: socket.socket | None = None
    for line in sys.stdin:
        command = line.strip()
        if command == "send" and child_pid == 0:
            conn.sendall(payload)
            print(os.getpid(), flush=True)
        elif command == "send" and to_child is not None:
            to_child.send(b"s")
            to_child.recv(1)
            print(child_pid, flush=True)
        elif command == "handoff":
            parent_end, child_end = socket.socketpair()
            child_pid = os.fork()
            if child_pid == 0:
                parent_end.close()
                held = conn
                if mode == "fdpass":
                    conn.close()
                    _, fds, _, _ = socket.recv_fds(child_end, 1, 1)
                    held = socket.socket(fileno=fds[0])
                while child_end.recv(1):
                    held.sendall(payload)
                    child_end.send(b"k")
                os._exit(0)
            child_end.close()
            to_child = parent_end
            if mode == "fdpass":
                socket.send_fds(parent_end, [b"f"], [conn.fileno()], 1)
                conn.close()
            print(child_pid, flush=True)
    if to_child is not None:
        to_child.close()
        os.waitpid(child_pid, 0)


def udp_send(host: str, port: int, rate: int, seconds: float, size: int) -> None:
    """``rate`` datagrams a second of ``size`` bytes for ``seconds``, paced in steps of
    10 ms; prints the bytes the send calls accepted (the generator's own count)."""
    payload = b"u" * size
    sent = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((host, port))
        start = time.monotonic()
        due = 0
        while (elapsed := time.monotonic() - start) < seconds:
            target = int(elapsed * rate)
            while due < target:
                sent += s.send(payload)
                due += 1
            time.sleep(0.01)
    print(sent, flush=True)


def udp_sink(host: str, port: int) -> None:
    """Receive datagrams until 1.5 s pass without one (after the first); prints
    "ready" once bound, then the bytes received."""
    received = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        s.bind((host, port))
        print("ready", flush=True)
        received += len(s.recv(1 << 16))
        s.settimeout(1.5)
        try:
            while True:
                received += len(s.recv(1 << 16))
        except TimeoutError:
            pass
    print(received, flush=True)


if __name__ == "__main__":
    what = sys.argv[1]
    if what == "sink":
        sink(sys.argv[2], int(sys.argv[3]))
    elif what == "burst":
        burst(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    elif what == "steps":
        steps(sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]))
    elif what == "udp-send":
        udp_send(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6]))
    elif what == "udp-sink":
        udp_sink(sys.argv[2], int(sys.argv[3]))
