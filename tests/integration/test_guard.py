"""``sockscope guard``: a scan from an allowed namespace sees the port open, one
from a refused namespace sees silence; removal leaves other tables alone."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from topology import Netns, Topology

CLI = [sys.executable, "-m", "sockscope"]
pytestmark = pytest.mark.needs_root

POLICY = """\
echo : 10.62.2.0/24 EXCEPT 10.62.2.7 : deny
echo : 10.62.0.0/16 [fd62::]/16 : allow
echo : ALL : deny
"""

# A connect scan: SYN-ACK -> open, RST -> closed, nothing -> filtered.
SCAN = r"""
import socket, sys
for host in sys.argv[2:]:
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.settimeout(1.0)
    try:
        s.connect((host, int(sys.argv[1])))
        print("open")
    except ConnectionRefusedError:
        print("closed")
    except TimeoutError:
        print("filtered")
    s.close()
"""

UDP = r"""
import socket, sys
host = sys.argv[2]
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.5)
for _ in range(3):
    s.sendto(b"ping", (host, int(sys.argv[1])))
    try:
        print(s.recv(100).decode()); break
    except (TimeoutError, ConnectionRefusedError):
        continue
else:
    print("silence")
"""

OTHER = (
    "table inet other {\n\tchain c {\n\t\ttype filter hook input priority filter; policy accept;\n\t}\n}\n"
)


def _scan(topo: Topology, ns: Netns, port: int, *hosts: str) -> list[str]:
    return topo.run(ns, sys.executable, "-c", SCAN, str(port), *hosts).stdout.split()


def test_guard_filters_before_accept(topology: Topology, tmp_path: Path) -> None:
    srv, a, b = topology.add_netns("srv"), topology.add_netns("a"), topology.add_netns("b")
    topology.add_veth(srv, a, "10.62.1.1/24", "10.62.1.2/24", "fd62:1::1/64", "fd62:1::2/64")
    topology.add_veth(srv, b, "10.62.2.1/24", "10.62.2.2/24", "fd62:2::1/64", "fd62:2::2/64")
    topology.nft(srv, OTHER)
    policy = tmp_path / "guard.policy"
    policy.write_text(POLICY)
    for address in ("tcp::7010", "udp::7011"):
        proc = topology.spawn(srv, *CLI, "listen", "-v", "-k", "--exec", "tr a-z A-Z", address)
        assert "listening" in proc.stderr.readline()
    # before: everyone sees the port open
    assert _scan(topology, b, 7010, "10.62.2.1", "fd62:2::1") == ["open", "open"]
    topology.run(srv, *CLI, "guard", "--policy", str(policy), "--daemon", "echo",
                 "--port", "7010", "--port", "7011/udp", "--port", "7012")
    assert _scan(topology, a, 7010, "10.62.1.1", "fd62:1::1") == ["open", "open"]
    assert _scan(topology, a, 7012, "10.62.1.1") == ["closed"]  # allowed: the kernel's RST
    assert _scan(topology, b, 7010, "10.62.2.1", "fd62:2::1") == ["filtered", "open"]
    assert _scan(topology, b, 7012, "10.62.2.1") == ["filtered"]  # no RST either
    assert topology.run(a, sys.executable, "-c", UDP, "7011", "10.62.1.1").stdout.strip() == "PING"
    assert topology.run(b, sys.executable, "-c", UDP, "7011", "10.62.2.1").stdout.strip() == "silence"
    shown = topology.run(srv, *CLI, "guard", "--show").stdout
    assert "table inet sockscope_guard" in shown and "daemon echo" in shown
    # re-applying replaces the table in one go (the policy now lets b in)
    policy.write_text("echo : ALL : allow\n")
    topology.run(srv, *CLI, "guard", "--policy", str(policy), "--daemon", "echo", "--port", "7010")
    assert _scan(topology, b, 7010, "10.62.2.1") == ["open"]
    policy.write_text(POLICY)
    topology.run(srv, *CLI, "guard", "--policy", str(policy), "--daemon", "echo", "--port", "7010")
    assert _scan(topology, b, 7010, "10.62.2.1") == ["filtered"]
    topology.run(srv, *CLI, "guard", "--remove")
    assert _scan(topology, b, 7010, "10.62.2.1") == ["open"]
    ruleset = topology.run(srv, "nft", "list", "ruleset").stdout
    assert ruleset == OTHER
    gone = topology.run(srv, *CLI, "guard", "--show", check=False)
    assert gone.returncode == 1 and "no guard in force" in gone.stderr


def test_guard_bad_input_applies_nothing(topology: Topology, tmp_path: Path) -> None:
    srv = topology.add_netns("srv")
    policy = tmp_path / "names.policy"
    policy.write_text("echo : 10.0.0.0/8 : allow\necho : .example.com : allow\n")
    proc = topology.run(srv, *CLI, "guard", "--policy", str(policy), "--daemon", "echo", "--port", "7",
                        check=False)
    assert proc.returncode == 2 and "guard compiles addresses only" in proc.stderr
    assert f"{policy}:2" in proc.stderr
    policy.write_text("echo : 10.0.0.0/8 : allow\n")
    proc = topology.run(srv, *CLI, "guard", "--policy", str(policy), "--daemon", "echo", "--port", "7/sctp",
                        check=False)
    assert proc.returncode == 2 and "tcp or udp" in proc.stderr
    assert topology.run(srv, "nft", "list", "ruleset").stdout == ""


def test_guard_touches_only_tables_it_made(topology: Topology, tmp_path: Path) -> None:
    srv = topology.add_netns("srv")
    theirs = OTHER.replace("inet other", "inet theirs")
    topology.nft(srv, theirs)
    policy = tmp_path / "p.policy"
    policy.write_text("echo : 10.0.0.0/8 : allow\n")
    for argv in (("--policy", str(policy), "--daemon", "echo", "--port", "7"), ("--show",), ("--remove",)):
        proc = topology.run(srv, *CLI, "guard", "--table", "theirs", *argv, check=False)
        assert proc.returncode == 2, proc
        assert proc.stderr.startswith("sockscope guard: table inet theirs was not made by sockscope guard")
        assert len(proc.stderr.splitlines()) == 1 and proc.stdout == ""
        assert topology.run(srv, "nft", "list", "ruleset").stdout == theirs
    # a guard of its own under that name is another matter
    topology.run(srv, *CLI, "guard", "--table", "mine", "--policy", str(policy), "--daemon", "echo",
                 "--port", "ssh")
    assert "daemon echo" in topology.run(srv, *CLI, "guard", "--table", "mine", "--show").stdout
    topology.run(srv, *CLI, "guard", "--table", "mine", "--remove")
    assert topology.run(srv, "nft", "list", "ruleset").stdout == theirs


def test_guard_for_a_daemon_no_rule_names(topology: Topology, tmp_path: Path) -> None:
    srv = topology.add_netns("srv")
    policy = tmp_path / "p.policy"
    policy.write_text("sshd : 10.0.0.0/8 : allow\nALL : ALL : deny\n")
    args = ("guard", "--policy", str(policy), "--daemon", "shd", "--port", "22")
    proc = topology.run(srv, *CLI, *args, check=False)
    assert proc.returncode == 2 and "no rule names daemon 'shd' (the policy names sshd)" in proc.stderr
    assert "--force" in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert topology.run(srv, "nft", "list", "ruleset").stdout == ""
    topology.run(srv, *CLI, *args, "--force")
    assert "daemon shd" in topology.run(srv, *CLI, "guard", "--show").stdout
    topology.run(srv, *CLI, "guard", "--remove")
