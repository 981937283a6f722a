"""The kernel runs our compiled programs: SO_ATTACH_FILTER on an AF_PACKET socket on lo."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from sockscope.capture.bpf import compile_filter, reject_all
from sockscope.packets import UDP, decode

ETH_P_ALL = 0x0003

pytestmark = pytest.mark.needs_root


def drain(sock: socket.socket) -> None:
    """Discard frames queued before the current filter was attached."""
    sock.setblocking(False)
    try:
        while True:
            sock.recv(65536)
    except BlockingIOError:
        pass
    finally:
        sock.setblocking(True)


def collect(sock: socket.socket, quiet: float = 0.3) -> list[bytes]:
    """Everything that arrives until the socket has been quiet for ``quiet`` seconds."""
    sock.settimeout(quiet)
    frames = []
    deadline = time.monotonic() + 5  # a hard cap in case lo is busy with matching traffic
    while time.monotonic() < deadline:
        try:
            frames.append(sock.recv(65536))
        except TimeoutError:
            break
    return frames


@pytest.fixture
def lo_sniffer() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        # libpcap's trick: block everything first, so nothing queued between socket()
        # and the real filter (from any interface) can leak through; drained per test.
        reject_all().attach(sock)
        sock.bind(("lo", 0))
        drain(sock)
        yield sock
    finally:
        sock.close()


@pytest.fixture
def receivers() -> Iterator[tuple[socket.socket, socket.socket]]:
    # Bound receivers: no ICMP port-unreachable noise, and ports no one else uses.
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        yield a, b
    finally:
        a.close()
        b.close()


def send(port: int, count: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        for i in range(count):
            tx.sendto(b"sockscope-bpf-%d" % i, ("127.0.0.1", port))


def test_kernel_filter_passes_only_the_chosen_port(
    lo_sniffer: socket.socket, receivers: tuple[socket.socket, socket.socket]
) -> None:
    port_n, port_m = (r.getsockname()[1] for r in receivers)
    prog = compile_filter(f"udp port {port_n}")
    prog.attach(lo_sniffer)
    drain(lo_sniffer)
    send(port_m, 3)
    send(port_n, 3)
    send(port_m, 3)
    frames = collect(lo_sniffer)
    assert frames, "no frame passed the filter"
    ports = {decode(f)[UDP].dport for f in frames}  # lo frames carry a zeroed Ethernet header
    assert ports == {port_n}
    # lo shows each datagram at least once (outgoing and incoming may both be seen).
    assert len(frames) >= 3
    # The user-space run of the same program agrees with the kernel.
    assert all(prog.matches(f) for f in frames)


def test_reject_all_blocks_everything(
    lo_sniffer: socket.socket, receivers: tuple[socket.socket, socket.socket]
) -> None:
    port_n = receivers[0].getsockname()[1]
    send(port_n, 3)
    assert receivers[0].recv(100) == b"sockscope-bpf-0"  # the traffic really flowed on lo
    assert collect(lo_sniffer) == []
    # Control: swapping in an accepting filter makes the next frames visible again.
    compile_filter(f"udp port {port_n}").attach(lo_sniffer)
    send(port_n, 1)
    assert len(collect(lo_sniffer)) >= 1
