"""``sockscope capture -r``: lines as tcpdump -nr prints them, filters, -w from a file,
JSON, and damaged files (every packet before the damage, then one message)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sockscope.packets import ACK, PSH, SYN, TCP, UDP, Ethernet, IPv4, IPv6, stack, tcp_options
from sockscope.pcap import PcapngWriter, PcapWriter, Record, open_reader
from sockscope.pcap.records import Interface

SOCKSCOPE = str(Path(sys.executable).with_name("sockscope"))
T0 = 1_700_000_000_000_000_000


def sample_frames() -> list[bytes]:
    eth = Ethernet.build(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    out = []
    for i in range(40):
        if i % 4 == 0:
            out.append(
                stack(
                    eth,
                    IPv4.build(src="192.0.2.1", dst="192.0.2.2"),
                    UDP.build(sport=40000 + i, dport=9999),
                    payload=b"q" * i,
                )
            )
        elif i % 4 == 1:
            out.append(
                stack(
                    eth,
                    IPv4.build(src="192.0.2.1", dst="192.0.2.2"),
                    TCP.build(
                        sport=40000,
                        dport=22,
                        seq=1000 + i,
                        ack=5,
                        flags=SYN | ACK,
                        options=tcp_options(mss=1460, sack_ok=True, ts=(i, 0), wscale=7),
                    ),
                )
            )
        elif i % 4 == 2:
            out.append(
                stack(
                    eth,
                    IPv6.build(src="2001:db8::1", dst="2001:db8::2"),
                    TCP.build(sport=5001, dport=40000, seq=7, ack=1001, flags=PSH | ACK),
                    payload=b"x" * 9,
                )
            )
        else:
            out.append(stack(eth, IPv6.build(src="2001:db8::1", dst="2001:db8::2"),
                             UDP.build(sport=6001, dport=6002), payload=b"m"))  # fmt: skip
    return out


@pytest.fixture
def pcap_file(tmp_path: Path) -> Path:
    path = tmp_path / "in.pcap"
    with PcapWriter(path, 1, nanosecond=False) as w:
        for i, frame in enumerate(sample_frames()):
            w.write(Record(T0 + i * 1_000_000, frame, len(frame)))
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SOCKSCOPE, "capture", *args], capture_output=True, text=True, timeout=60,
                          env={"TZ": "UTC", "PATH": "/usr/bin:/bin"})  # fmt: skip


def test_lines_match_tcpdump(pcap_file: Path) -> None:
    ours = run("-r", str(pcap_file))
    # sockscope prints absolute TCP sequence numbers, as tcpdump -S does.
    theirs = subprocess.run(["tcpdump", "-nSr", str(pcap_file)], capture_output=True, text=True,
                            env={"TZ": "UTC"})  # fmt: skip
    assert ours.returncode == 0, ours.stderr
    assert len(ours.stdout.splitlines()) == 40
    for mine, tcpdumps in zip(ours.stdout.splitlines(), theirs.stdout.splitlines(), strict=True):
        # tcpdump names some ports' protocols after the summary (": domain", ": SSH"...).
        assert tcpdumps.startswith(mine), (mine, tcpdumps)


def test_filter_count_and_write(pcap_file: Path, tmp_path: Path) -> None:
    out = run("-r", str(pcap_file), "-c", "3", "udp", "and", "port", "9999")
    assert out.returncode == 0 and len(out.stdout.splitlines()) == 3
    assert all("> 192.0.2.2.9999: UDP" in line for line in out.stdout.splitlines())
    copy = tmp_path / "tcp.pcapng"
    res = run("-r", str(pcap_file), "-w", str(copy), "tcp")
    assert res.returncode == 0, res.stderr
    with open_reader(copy) as reader:
        assert len(list(reader)) == 20 and reader.format == "pcapng"


def test_json_output(pcap_file: Path) -> None:
    out = run("-r", str(pcap_file), "-c", "2", "--json")
    packets = json.loads(out.stdout)
    assert [p["layers"] for p in packets] == [["Ethernet", "IPv4", "UDP"], ["Ethernet", "IPv4", "TCP"]]
    assert packets[0]["timestamp_ns"] == T0 and packets[1]["length"] == packets[1]["captured"]


def test_pcapng_shows_interface_and_direction(tmp_path: Path) -> None:
    from sockscope.pcap.records import Direction

    path = tmp_path / "in.pcapng"
    frames = sample_frames()[:2]
    with PcapngWriter(path, [Interface(1, 262144, "eth7"), Interface(1, 262144, "eth8")]) as w:
        w.write(Record(T0, frames[0], len(frames[0]), 0, Direction.INBOUND))
        w.write(Record(T0 + 1, frames[1], len(frames[1]), 1, Direction.OUTBOUND))
    out = run("-r", str(path))
    lines = out.stdout.splitlines()
    assert lines[0].split()[1:3] == ["eth7", "In"] and lines[1].split()[1:3] == ["eth8", "Out"]


@pytest.mark.parametrize("cut", [10, 24 + 16 + 20, -7])
def test_truncated_file_gives_packets_then_one_message(pcap_file: Path, tmp_path: Path, cut: int) -> None:
    data = pcap_file.read_bytes()
    damaged = tmp_path / "cut.pcap"
    damaged.write_bytes(data[:cut])
    out = run("-r", str(damaged))
    assert out.returncode == 1
    expected = {10: 0, 60: 0, -7: 39}[cut]
    assert len(out.stdout.splitlines()) == expected
    assert out.stderr.count("\n") == 1 and "offset" in out.stderr and "Traceback" not in out.stderr


def test_corrupt_record_length(pcap_file: Path, tmp_path: Path) -> None:
    data = bytearray(pcap_file.read_bytes())
    first = 24 + 16 + len(sample_frames()[0])
    data[first + 8 : first + 12] = (10**9).to_bytes(4, "little")  # captured length of packet 2
    damaged = tmp_path / "corrupt.pcap"
    damaged.write_bytes(bytes(data))
    out = run("-r", str(damaged))
    assert out.returncode == 1 and len(out.stdout.splitlines()) == 1
    assert f"offset {first}" in out.stderr and "packet 2" in out.stderr


def test_not_a_capture_file(tmp_path: Path) -> None:
    bogus = tmp_path / "x.pcap"
    bogus.write_text("hello, world\n")
    out = run("-r", str(bogus))
    assert out.returncode == 1 and "not a pcap or pcapng file" in out.stderr
    missing = run("-r", str(tmp_path / "missing.pcap"))
    assert missing.returncode == 1 and "No such file" in missing.stderr


def test_write_to_stdout_pipes_into_tcpdump(pcap_file: Path) -> None:
    piped = subprocess.run(
        f"{SOCKSCOPE} capture -r {pcap_file} -w - tcp | tcpdump -nr -", shell=True, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert piped.returncode == 0, piped.stderr
    assert len(piped.stdout.splitlines()) == 20


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Over capture_read_two.MIN_SIZE, so -r takes the two-process path."""
    path = tmp_path_factory.mktemp("big") / "big.pcap"
    frames = sample_frames()
    with PcapWriter(path, 1, nanosecond=False) as w:
        for i in range(120_000):
            frame = frames[i % len(frames)]
            w.write(Record(T0 + i * 1_000, frame, len(frame)))
    assert path.stat().st_size > 8 << 20
    return path


def test_two_processes_print_what_one_prints(big_file: Path) -> None:
    two = run("-r", str(big_file))
    one = run("-r", str(big_file), "-c", "1000000")  # -c keeps it in one process
    assert two.returncode == one.returncode == 0, two.stderr
    assert len(two.stdout.splitlines()) == 120_000
    assert two.stdout == one.stdout
    filtered_two = run("-r", str(big_file), "udp")
    filtered_one = run("-r", str(big_file), "-c", "1000000", "udp")
    assert filtered_two.stdout == filtered_one.stdout and len(filtered_two.stdout.splitlines()) == 60_000


@pytest.mark.parametrize("where", ["end", "middle"])
def test_two_processes_on_a_damaged_file(big_file: Path, tmp_path: Path, where: str) -> None:
    data = bytearray(big_file.read_bytes())
    if where == "end":
        data = data[:-7]
    else:  # a captured length that lies, about 5 MB in
        pos = 24
        while pos < 5_000_000:
            pos += 16 + int.from_bytes(data[pos + 8 : pos + 12], "little")
        data[pos + 8 : pos + 12] = (10**9).to_bytes(4, "little")
    damaged = tmp_path / "damaged.pcap"
    damaged.write_bytes(bytes(data))
    two = run("-r", str(damaged))
    one = run("-r", str(damaged), "-c", "1000000")
    assert two.returncode == one.returncode == 1
    assert two.stdout == one.stdout and two.stdout
    assert two.stderr == one.stderr and two.stderr.count("\n") == 1 and "offset" in two.stderr


def test_two_processes_stop_quietly_when_output_closes(big_file: Path) -> None:
    piped = subprocess.run(f"{SOCKSCOPE} capture -r {big_file} | head -3", shell=True, capture_output=True,
                           text=True, timeout=60)  # fmt: skip
    assert piped.returncode == 0 and len(piped.stdout.splitlines()) == 3
    assert "Traceback" not in piped.stderr


def test_flows_of_a_file(pcap_file: Path, big_file: Path) -> None:
    from sockscope.capture.flows import count_flows

    out = run("-r", str(pcap_file), "--flows")
    assert out.returncode == 0, out.stderr
    rows = [line.split(None, 1) for line in out.stdout.splitlines()]
    assert sum(int(n) for n, _ in rows) == 40
    assert ["10", "udp 192.0.2.1.40000 > 192.0.2.2.9999"] not in rows  # each UDP probe has its own port
    assert ["10", "tcp 192.0.2.1.40000 > 192.0.2.2.22"] in rows
    assert ["10", "udp 2001:db8::1.6001 > 2001:db8::2.6002"] in rows
    two, one = count_flows(str(big_file)), count_flows(str(big_file), processes=1)
    assert two == one and sum(two.values()) == 120_000


def test_flows_of_a_damaged_file(big_file: Path, tmp_path: Path) -> None:
    damaged = tmp_path / "cut.pcap"
    damaged.write_bytes(big_file.read_bytes()[:-5])
    out = run("-r", str(damaged), "--flows")
    assert out.returncode == 1 and out.stderr.count("\n") == 1 and "truncated record" in out.stderr
