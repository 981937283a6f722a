"""traffic/: the counters read from recorded sock_diag messages (data/traffic,
re-recorded by its record.py), and containers named from cgroup paths."""

from __future__ import annotations

import json
from pathlib import Path

from sockscope.netlink.codec import iter_messages
from sockscope.traffic.cgroups import cgroup_path, container_of
from sockscope.traffic.tcp import TcpReading, parse_reading

DATA = Path(__file__).parent / "data" / "traffic"
EXPECTED = json.loads((DATA / "expected.json").read_text())


def _readings(name: str) -> list[TcpReading]:
    return [r for r in (parse_reading(m.payload) for m in iter_messages((DATA / name).read_bytes())
                        if m.type == 20) if r is not None]


def test_dump_gives_each_end_its_counters_and_the_listener() -> None:
    by_port = {r.local_port: r for r in _readings("tcp_dump.bin")}
    client = by_port[EXPECTED["client_port"]]
    listener = [r for r in _readings("tcp_dump.bin") if r.state == "LISTEN"]
    assert [r.local_port for r in listener] == [EXPECTED["listen_port"]]
    assert (client.tx, client.rx, client.state) == (EXPECTED["sent"], EXPECTED["answered"], "ESTABLISHED")
    assert (client.local, client.remote, client.remote_port) == ("127.0.0.1", "127.0.0.1",
                                                               EXPECTED["listen_port"])
    server = next(r for r in _readings("tcp_dump.bin")
                  if r.remote_port == EXPECTED["client_port"])
    assert (server.tx, server.rx) == (EXPECTED["answered"], EXPECTED["sent"])
    assert client.cookie and server.cookie and client.cookie != server.cookie and client.inode


def test_destroy_message_carries_the_final_counters() -> None:
    # bytes_received counts the peer's FIN too (it takes one sequence number): one
    # byte more per connection closed by its peer, a known difference of tcp_info.
    closed = _readings("tcp_destroy.bin")
    assert closed
    for r in closed:
        if r.local_port == EXPECTED["client_port"]:
            assert (r.tx, r.rx) == (EXPECTED["sent"], EXPECTED["answered"] + 1)
        else:
            assert (r.local_port, r.tx, r.rx) == (EXPECTED["listen_port"], EXPECTED["answered"],
                                                  EXPECTED["sent"] + 1)
        assert r.inode == 0  # the file is gone: the owner must come from an earlier sample


def test_truncated_or_foreign_payloads_read_as_nothing() -> None:
    payload = next(iter_messages((DATA / "tcp_dump.bin").read_bytes())).payload
    assert parse_reading(payload[:40]) is None
    assert parse_reading(b"\x01" + bytes(payload[1:])) is None  # not AF_INET/AF_INET6


def test_cgroup_paths_name_their_container() -> None:
    docker = "0::/system.slice/docker-" + "ab" * 32 + ".scope\n"
    assert cgroup_path(docker) == "/system.slice/docker-" + "ab" * 32 + ".scope"
    assert container_of(cgroup_path(docker)) == "docker:" + "ab" * 6
    v1 = "12:pids:/docker/" + "cd" * 32 + "\n11:memory:/docker/" + "cd" * 32 + "\n0::/\n"
    assert container_of(cgroup_path(v1)) == "docker:" + "cd" * 6
    cases = {
        "/machine.slice/libpod-" + "12" * 32 + ".scope/container": "podman:" + "12" * 6,
        "/kubepods/besteffort/pod1/cri-containerd-" + "3f" * 32 + ".scope": "containerd:" + "3f" * 6,
        "/kubepods.slice/crio-" + "9a" * 32 + ".scope": "crio:" + "9a" * 6,
        "/lxc.payload.web/init.scope": "lxc:web",
        "/machine.slice/machine-debian.scope": "machine:debian",
        "/system.slice/run-u42.scope": "scope:run-u42",
        "/user.slice/user-1000.slice/session-3.scope": None,
        "/system.slice/ssh.service": None,
        "/process_api/5f9649723d3981d3ed0a69f28a9993d1": None,
    }
    for path, container in cases.items():
        assert container_of(path) == container, path
    assert cgroup_path("0::/\n1:cpu:/\n") is None
