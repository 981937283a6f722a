"""ping through the probe namespaces: replies, ICMP errors, the unprivileged ICMP
datagram socket, foreign and malformed ICMP, bad input."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import probe_net
import pytest
from probe_child import in_netns

from topology import Topology

pytestmark = pytest.mark.needs_root


@pytest.fixture(scope="module")
def topo_net() -> Iterator[tuple[Topology, probe_net.ProbeNet]]:
    with Topology() as topo:
        yield topo, probe_net.build(topo)


@pytest.fixture
def net(topo_net: tuple[Topology, probe_net.ProbeNet]) -> probe_net.ProbeNet:
    return topo_net[1]


def cli(net: probe_net.ProbeNet, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", "netns", "exec", net.left, sys.executable, "-m", "sockscope", "ping", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_replies_and_summary(net: probe_net.ProbeNet, v6: bool) -> None:
    dest = net.dest(v6)
    proc = cli(net, "-c", "3", "-i", "0.05", dest)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    # iputils' first lines: IPv4 with the packet sizes, IPv6 with the data size only.
    first = f"PING {dest}({dest}) 56 data bytes" if v6 else f"PING {dest} ({dest}) 56(84) bytes of data."
    assert lines[0] == first
    for seq, line in enumerate(lines[1:4], 1):
        # Three routers on the way back: the reply's TTL of 64 arrives as 61.
        assert re.fullmatch(rf"64 bytes from {re.escape(dest)}: icmp_seq={seq} ttl=61 time=[\d.]+ ms", line)
    assert lines[5] == f"--- {dest} ping statistics ---"
    assert re.fullmatch(r"3 packets transmitted, 3 received, 0% packet loss, time \d+ms", lines[6])
    assert re.fullmatch(r"rtt min/avg/max/mdev = [\d.]+/[\d.]+/[\d.]+/[\d.]+ ms", lines[7])


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_json_shape(net: probe_net.ProbeNet, v6: bool) -> None:
    proc = cli(net, "-c", "2", "-i", "0.05", "-s", "100", "--json", net.dest(v6))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert {"destination", "address", "sent", "received", "loss", "rtt_ms", "replies"} <= result.keys()
    assert (result["sent"], result["received"], result["duplicates"], result["loss"]) == (2, 2, 0, 0)
    assert set(result["rtt_ms"]) == {"min", "avg", "max", "mdev"}
    assert result["rtt_ms"]["min"] <= result["rtt_ms"]["avg"] <= result["rtt_ms"]["max"]
    assert [(r["seq"], r["ttl"], r["from"], r["bytes"]) for r in result["replies"]] == [
        (1, 61, net.dest(v6), 108),
        (2, 61, net.dest(v6), 108),
    ]


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_unreachable_and_ttl_exceeded(net: probe_net.ProbeNet, v6: bool) -> None:
    proc = cli(net, "-c", "1", "-W", "1", net.unreach(v6))
    assert proc.returncode == 1
    r3 = net.hops(v6)[2]
    text = "Destination Host Unreachable" if not v6 else "Destination unreachable: Address unreachable"
    assert f"From {r3} icmp_seq=1 {text}" in proc.stdout
    assert "1 packets transmitted, 0 received, +1 errors, 100% packet loss" in proc.stdout
    proc = cli(net, "-c", "1", "-W", "1", "-t", "1", net.dest(v6))
    exceeded = "Time exceeded: Hop limit" if v6 else "Time to live exceeded"
    assert f"From {net.hops(v6)[0]} icmp_seq=1 {exceeded}" in proc.stdout


def _ping(host: str, **options: Any) -> dict[str, Any]:
    import sockscope

    result = sockscope.ping(host, **options)
    return {**result.to_dict(), "unprivileged": result.unprivileged}


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_unprivileged_ping_uses_icmp_datagram_sockets(
    topo_net: tuple[Topology, probe_net.ProbeNet], v6: bool
) -> None:
    topo, net = topo_net
    left = net.line.left
    topo.set_sysctl(left, "net.ipv4.ping_group_range", "0 2147483647")
    try:
        result = in_netns(net.left, lambda: _ping(net.dest(v6), count=2, interval=0.05), nobody=True)
        assert result["unprivileged"] is True
        assert (result["sent"], result["received"]) == (2, 2)
        assert {r["from"] for r in result["replies"]} == {net.dest(v6)}
        assert {r["ttl"] for r in result["replies"]} == {61}
        err = in_netns(net.left, lambda: _ping(net.dest(v6), count=1, ttl=1, timeout=1), nobody=True)
        errors = [(e["from"], e["error"]) for e in err["errors"]]
        assert errors == [(net.hops(v6)[0], "Time exceeded: Hop limit" if v6 else "Time to live exceeded")]
    finally:
        topo.set_sysctl(left, "net.ipv4.ping_group_range", "1 0")

    def refused() -> str:
        try:
            _ping(net.dest(v6), count=1)
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return "no error"

    msg = in_netns(net.left, refused, nobody=True)
    assert msg.startswith("PermissionNeeded: ") and "ping_group_range" in msg


@pytest.fixture
def duplicating_right(topo_net: tuple[Topology, probe_net.ProbeNet]) -> Iterator[None]:
    """While the test runs, nftables in right sends every echo reply a second time."""
    topo, net = topo_net
    topo.nft(net.line.right, _dup_replies(net))
    try:
        yield
    finally:
        topo.run(net.line.right, "nft", "delete table ip probe_dup; delete table ip6 probe_dup")


def _dup_replies(net: probe_net.ProbeNet) -> str:
    link = net.line.links[-1]  # r3 - right: the copy is handed to r3, which forwards it
    return f"""
table ip probe_dup {{
    chain output_dup {{
        type filter hook output priority 0; policy accept;
        icmp type echo-reply dup to {link.addr_a} device "{link.veth.name_b}"
    }}
}}
table ip6 probe_dup {{
    chain output_dup {{
        type filter hook output priority 0; policy accept;
        icmpv6 type echo-reply dup to {link.addr6_a} device "{link.veth.name_b}"
    }}
}}
"""


@pytest.mark.usefixtures("duplicating_right")
@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_duplicate_replies_are_marked_and_counted_apart(net: probe_net.ProbeNet, v6: bool) -> None:
    proc = cli(net, "-c", "3", "-i", "0.2", net.dest(v6))
    as_json = json.loads(cli(net, "-c", "2", "-i", "0.2", "--json", net.dest(v6)).stdout)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    replies = [line for line in lines if " bytes from " in line]
    dest = re.escape(net.dest(v6))
    for seq in (1, 2, 3):
        mine = [line for line in replies if f" icmp_seq={seq} " in line]
        assert len(mine) == 2, replies
        assert re.fullmatch(rf"64 bytes from {dest}: icmp_seq={seq} ttl=61 time=[\d.]+ ms", mine[0])
        assert re.fullmatch(rf"64 bytes from {dest}: icmp_seq={seq} ttl=61 time=[\d.]+ ms \(DUP!\)", mine[1])
    assert re.search(
        r"^3 packets transmitted, 3 received, \+3 duplicates, 0% packet loss, time \d+ms$", proc.stdout, re.M
    )
    assert (as_json["sent"], as_json["received"], as_json["duplicates"], as_json["loss"]) == (2, 2, 2, 0)
    assert [r["seq"] for r in as_json["replies"]] == [1, 2]


_INJECT = r"""
import socket, struct, sys, time
dst = sys.argv[1]
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b)); s = (s >> 16) + (s & 0xFFFF); s += s >> 16
    return ~s & 0xFFFF
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
# A time exceeded quoting a UDP packet to some other host: well formed, not ours.
quote = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 1, 0, 1, 17, 0, socket.inet_aton(dst),
                    socket.inet_aton("192.0.2.9")) + struct.pack("!HHHH", 1, 2, 8, 0)
body = struct.pack("!BBHI", 11, 0, 0, 0) + quote
foreign = body[:2] + struct.pack("!H", csum(body)) + body[4:]
bad_sum = struct.pack("!BBHHH", 0, 0, 0xDEAD, 1, 1) + b"x" * 8   # an echo reply, wrong checksum
short = b"\x0b\x00"                                                # not even an ICMP header
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    for msg in (foreign, bad_sum, short):
        s.sendto(msg, (dst, 0))
    time.sleep(0.02)
"""


def test_foreign_and_malformed_icmp_are_ignored_and_counted(
    topo_net: tuple[Topology, probe_net.ProbeNet],
) -> None:
    topo, net = topo_net
    left_addr = net.line.left_addr
    injector = topo.spawn(net.line.routers[0], sys.executable, "-c", _INJECT, left_addr, "1.5")
    try:
        proc = cli(net, "-c", "4", "-i", "0.2", "-v", "--json", net.dest(False))
    finally:
        injector.communicate(timeout=10)  # reaps it and closes its pipes
    result = json.loads(proc.stdout)
    assert (result["sent"], result["received"]) == (4, 4)
    assert result["ignored"] >= 3 and result["malformed"] >= 6, result
    proc = cli(net, "-c", "1", "-v", net.dest(False))
    assert re.search(r"^ignored \d+ ICMP messages for others, \d+ malformed$", proc.stdout, re.M)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["no-such-host.invalid"], "unknown host"),
        (["-6", "198.51.100.26"], "IPv4 address"),
        (["-t", "0", "198.51.100.26"], "TTL 0 out of range"),
        (["-t", "256", "198.51.100.26"], "TTL 256 out of range"),
        (["-s", "70000", "2001:db8:4::2"], "too large"),
        (["-c", "0", "198.51.100.26"], "count 0 out of range 1-2147483647"),
        (["-i", "0", "198.51.100.26"], "interval must be positive"),
        (["-c", "two", "198.51.100.26"], "invalid int value"),
    ],
)
def test_bad_input_is_one_line_and_status_2(net: probe_net.ProbeNet, args: list[str], words: str) -> None:
    proc = cli(net, *args)
    assert proc.returncode == 2
    assert words in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stdout == ""


def test_without_count_ping_runs_until_ctrl_c_then_summarises(net: probe_net.ProbeNet) -> None:
    import signal
    import time

    cmd = ["ip", "netns", "exec", net.left, sys.executable, "-m", "sockscope", "ping", "-i", "0.1"]
    cmd.append(net.dest(True))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.6)
        proc.send_signal(signal.SIGINT)  # ip netns exec passes it on to sockscope
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    sent = int(re.search(r"^(\d+) packets transmitted, (\d+) received", out, re.M).group(1))  # type: ignore[union-attr]
    assert 3 <= sent <= 10 and f"{sent} received" in out
    assert out.splitlines()[-1].startswith("rtt min/avg/max/mdev = ")


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_crafted_packets_go_out_as_built(net: probe_net.ProbeNet, v6: bool) -> None:
    # A UDP datagram built field by field reaches right's service, which answers the
    # socket bound to the source port we chose; one with TTL 1 gets r1's time exceeded.
    def exchange() -> list[Any]:
        import socket

        from sockscope.packets import UDP, IPv4, IPv6, stack
        from sockscope.probe import send_packets
        from sockscope.probe.resolve import source_address

        fam = socket.AF_INET6 if v6 else socket.AF_INET
        src = source_address(fam, net.dest(v6))
        sock = socket.socket(fam, socket.SOCK_DGRAM)
        sock.bind((src, 0))
        sock.settimeout(2)
        sport = sock.getsockname()[1]

        def ip(ttl: int) -> IPv4 | IPv6:
            if v6:
                return IPv6.build(src=src, dst=net.dest(v6), hop_limit=ttl, ver_tc_flow=6 << 28 | 0x20 << 20)
            return IPv4.build(src=src, dst=net.dest(v6), ttl=ttl, tos=0x20, ident=4242)

        wire = stack(ip(9), UDP.build(sport=sport, dport=probe_net.UDP_OPEN), payload=b"crafted")
        assert send_packets([wire]) == 1
        data, peer = sock.recvfrom(100)
        with pytest.raises(Exception, match="not an IP packet"):
            send_packets([wire, b"\x00" * 20])
        return [data.decode(), peer[0]]

    assert in_netns(net.left, exchange) == ["hello", net.dest(v6)]


def test_exit_status_two_when_nothing_can_be_sent(topology: Topology) -> None:
    # A namespace with loopback only: no route anywhere, as iputils says "connect:
    # Network is unreachable" and exits 2; 1 is for "sent, but no reply".
    lonely = topology.add_netns("lonely")
    cmd = ["ip", "netns", "exec", lonely.name, sys.executable, "-m", "sockscope", "ping", "-c", "1"]
    proc = subprocess.run([*cmd, "198.51.100.26"], capture_output=True, text=True, timeout=30)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == "sockscope ping: connect: Network is unreachable\n"


def test_exit_status_one_without_reply_and_with_a_short_deadline(net: probe_net.ProbeNet) -> None:
    silent = cli(net, "-c", "2", "-i", "0.1", "-W", "0.3", net.unreach(False))
    assert silent.returncode == 1
    dropped = cli(net, "-c", "1", "-W", "0.3", "-t", "2", net.dest(False))  # r2 is silent
    assert dropped.returncode == 1 and "1 packets transmitted, 0 received" in dropped.stdout
    # -w: the deadline ends it, whatever -c says; fewer replies than -c is status 1.
    short = cli(net, "-w", "0.5", "-c", "100", "-i", "0.1", net.dest(False))
    sent = int(re.search(r"^(\d+) packets transmitted", short.stdout, re.M).group(1))  # type: ignore[union-attr]
    assert short.returncode == 1 and 3 <= sent <= 7
    enough = cli(net, "-w", "5", "-c", "2", "-i", "0.1", "-q", net.dest(False))
    assert enough.returncode == 0 and "2 packets transmitted, 2 received" in enough.stdout
    assert " bytes from " not in enough.stdout  # -q: the summary only


def test_sigint_ends_it_even_when_the_shell_ignored_it(net: probe_net.ProbeNet) -> None:
    # What a script's background job (`ping ... &`) inherits: SIGINT ignored.
    import signal
    import time

    script = f'trap "" INT; exec {sys.executable} -m sockscope ping -i 0.1 {net.dest(False)}'
    cmd = ["ip", "netns", "exec", net.left, "sh", "-c", script]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.8)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, err
    assert re.search(r"^\d+ packets transmitted, \d+ received", out, re.M)


@pytest.mark.parametrize("command", ["ping -c 2 -i 0.1", "trace -q 1", "scan --syn -p 8080-8081"])
@pytest.mark.parametrize("redirect", [">&-", ">/dev/full"])
def test_stdout_closed_or_full_is_one_line_and_status_1(
    net: probe_net.ProbeNet, command: str, redirect: str
) -> None:
    script = f"exec {sys.executable} -m sockscope {command} {net.dest(False)} {redirect}"
    proc = subprocess.run(
        ["ip", "netns", "exec", net.left, "sh", "-c", script], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 1, proc.stderr
    name = command.split()[0]
    reason = "standard output is closed" if redirect == ">&-" else "No space left on device"
    assert proc.stderr == f"sockscope {name}: write error: {reason}\n"


def test_a_family_the_name_lacks_is_said_so(net: probe_net.ProbeNet, tmp_path: Any) -> None:
    # A name with only an IPv6 address, in a hosts file of this test's own mount namespace.
    hosts = tmp_path / "hosts"
    hosts.write_text(f"{net.dest(True)} v6only.test\n")
    script = f"mount --bind {hosts} /etc/hosts && exec {sys.executable} -m sockscope ping -4 -c 1 v6only.test"
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=30)
    assert (proc.returncode, proc.stderr) == (2, "sockscope ping: v6only.test has no IPv4 address\n")
