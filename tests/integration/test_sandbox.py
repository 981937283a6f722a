"""The suite cannot send a packet off the host (#14).

The README's test command (and a plain ``pytest``, see tests/conftest.py) runs the
whole suite inside a network namespace made for the run, holding only loopback and
the topologies tests build. A test that forgets to enter its own namespace finds no
route and fails at once instead of sending to a real network.
"""

from __future__ import annotations

import errno
import os
import socket
import time

import pytest

pytestmark = pytest.mark.needs_root

SANDBOX_ENV = "SOCKSCOPE_SANDBOX_NETNS"  # set by scripts/sandbox-netns.sh

DOCUMENTATION_ADDRESSES = [
    (socket.AF_INET, "192.0.2.1"),  # TEST-NET-1 (RFC 5737)
    (socket.AF_INET, "198.51.100.26"),  # the address an earlier stray probe test hit
    (socket.AF_INET6, "2001:db8::1"),  # RFC 3849
]


def test_the_suite_runs_in_a_namespace_made_for_it() -> None:
    name = os.environ.get(SANDBOX_ENV)
    assert name, "pytest is not running inside scripts/sandbox-netns.sh"
    assert os.stat("/proc/self/ns/net").st_ino == os.stat(f"/run/netns/{name}").st_ino


@pytest.mark.parametrize(("family", "address"), DOCUMENTATION_ADDRESSES)
def test_a_send_off_the_host_fails_at_once(family: socket.AddressFamily, address: str) -> None:
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        started = time.monotonic()
        with pytest.raises(OSError) as raised:
            sock.sendto(b"must not leave the host", (address, 33434))
        assert raised.value.errno == errno.ENETUNREACH, raised.value
        assert time.monotonic() - started < 0.5


def test_no_interface_but_loopback_and_test_veths() -> None:
    # Host-side ends of topology veths (tests/topology.py) are named ssc<pid>h<n>.
    others = [n for n in os.listdir("/sys/class/net") if n != "lo" and not n.startswith("ssc")]
    assert others == []
