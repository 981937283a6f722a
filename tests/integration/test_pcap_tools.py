"""Files from sockscope.pcap open in tshark, tcpdump and capinfos; tshark's files open in ours.

The tools are required, not optional: a missing tool is installed (Debian packages
tshark and tcpdump; capinfos and editcap come with tshark) or the test fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import pytest

from sockscope.pcap import Interface, InterfaceStats, PcapngWriter, PcapWriter, Record, open_reader

TOOLS = ("tshark", "tcpdump", "capinfos", "editcap")
T0 = 1_700_000_000_123_456_789
LINKTYPE_ETHERNET = 1


@pytest.fixture(scope="session", autouse=True)
def tools() -> None:
    if all(shutil.which(t) for t in TOOLS):
        return
    if os.geteuid() != 0:
        pytest.fail(f"need {', '.join(TOOLS)}: apt-get install tshark tcpdump (as root)")
    # Preseeding keeps the tshark install from asking whether non-root users may capture.
    subprocess.run(
        ["debconf-set-selections"],
        input="wireshark-common wireshark-common/install-setuid boolean false\n",
        text=True,
        check=True,
    )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    done = subprocess.run(
        ["apt-get", "install", "-y", "tshark", "tcpdump"], env=env, capture_output=True, text=True
    )
    missing = [t for t in TOOLS if not shutil.which(t)]
    if missing:
        pytest.fail(f"could not install {missing}: apt-get said: {done.stderr.strip()[-500:]}")


def frame(i: int) -> bytes:
    """Ethernet/IPv4/UDP from 192.0.2.(i+1) to port 5000+i, with a valid IP header checksum."""
    payload = b"sockscope" + bytes([i])
    udp = struct.pack(">HHHH", 40000, 5000 + i, 8 + len(payload), 0) + payload
    ip = bytearray(struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i, 0, 64, 17, 0,
                               bytes([192, 0, 2, i + 1]), bytes([198, 51, 100, 1])))  # fmt: skip
    words = sum(struct.unpack(">10H", ip))
    words = (words & 0xFFFF) + (words >> 16)
    struct.pack_into(">H", ip, 10, ~words & 0xFFFF)
    return bytes(6 * [0xFF]) + bytes([2, 0, 0, 0, 0, i + 1]) + b"\x08\x00" + bytes(ip) + udp


def run(argv: Sequence[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    # Both tools warn on stderr when run as root; anything about the file is a failure.
    noise = [
        line
        for line in done.stderr.splitlines()
        if not line.startswith(("Running as user", "reading from file"))
    ]
    assert done.returncode == 0 and not noise, f"{argv}: rc={done.returncode} stderr={done.stderr}"
    return done.stdout


def tshark_fields(path: Path) -> list[list[str]]:
    fields = ["frame.time_epoch", "frame.interface_name", "ip.src", "udp.dstport"]
    out = run(["tshark", "-r", str(path), "-T", "fields", "-E", "separator=,", *(f"-e{f}" for f in fields)])
    return [line.split(",") for line in out.splitlines()]


def ns(epoch: str) -> int:
    return int(Decimal(epoch) * 10**9)


def tcpdump_times(path: Path, nano: bool) -> list[int]:
    precision = "nano" if nano else "micro"
    out = run(["tcpdump", "-tt", f"--time-stamp-precision={precision}", "-nr", str(path)])
    lines = out.splitlines()
    assert all(" IP 192.0.2." in line and ": UDP, length 10" in line for line in lines), out
    return [ns(line.split()[0]) for line in lines]


@pytest.mark.parametrize("nanosecond", [True, False])
def test_pcap_opens_in_tshark_and_tcpdump(tmp_path: Path, nanosecond: bool) -> None:
    path = tmp_path / "x.pcap"
    # Timestamps a nanosecond apart would collapse in a microsecond file: space them out.
    times = [T0 + i * 1_000_001_001 for i in range(5)]
    with PcapWriter(path, LINKTYPE_ETHERNET, 65535, nanosecond) as w:
        for i, t in enumerate(times):
            w.write(Record(t, frame(i), len(frame(i))))
    expect = times if nanosecond else [t // 1000 * 1000 for t in times]
    rows = tshark_fields(path)
    assert [ns(r[0]) for r in rows] == expect
    assert [(r[2], r[3]) for r in rows] == [(f"192.0.2.{i + 1}", str(5000 + i)) for i in range(5)]
    assert tcpdump_times(path, nanosecond) == expect
    info = run(["capinfos", str(path)])
    assert "Number of packets:   5" in info
    assert ("nanoseconds" if nanosecond else "microseconds") in info


def test_pcapng_interfaces_filter_and_statistics(tmp_path: Path) -> None:
    path = tmp_path / "x.pcapng"
    ifaces = [
        Interface(LINKTYPE_ETHERNET, 1514, "eth0", "udp port 5000"),
        Interface(LINKTYPE_ETHERNET, 65535, "veth1"),
    ]
    times = [T0 + i * 1_000_001 for i in range(6)]  # ns apart, yet a span io,stat shows
    with PcapngWriter(path, ifaces) as w:
        for i in range(6):
            w.write(Record(times[i], frame(i), len(frame(i)), i % 2))
        w.close([InterfaceStats(0, T0 + 10, T0 - 1, T0 + 10, ifrecv=9, ifdrop=1, osdrop=2)])
    rows = tshark_fields(path)
    assert [(ns(r[0]), r[1], r[3]) for r in rows] == [
        (times[i], ("eth0", "veth1")[i % 2], str(5000 + i)) for i in range(6)
    ]
    assert tcpdump_times(path, nano=True) == times
    io_stat = run(["tshark", "-r", str(path), "-q", "-z", "io,stat,0"])
    assert "|      6 |" in io_stat, io_stat
    info = run(["capinfos", str(path)])
    assert "Number of interfaces in file: 2" in info
    assert "Name = eth0" in info and "Name = veth1" in info
    assert "Filter string = udp port 5000" in info
    assert "Number of stat entries = 1" in info


def test_tshark_written_files_read_back(tmp_path: Path) -> None:
    ours = tmp_path / "ours.pcap"
    records = [Record(T0 + i * 1000, frame(i), len(frame(i))) for i in range(4)]
    with PcapWriter(ours, LINKTYPE_ETHERNET) as w:
        for r in records:
            w.write(r)
    theirs = tmp_path / "theirs.pcapng"
    run(["tshark", "-r", str(ours), "-F", "pcapng", "-w", str(theirs)])
    reader = open_reader(theirs)
    assert list(reader) == records
    assert reader.format == "pcapng" and [i.linktype for i in reader.interfaces] == [LINKTYPE_ETHERNET]
    # editcap to classic nanosecond pcap, and to big... whatever byte order it writes: ours reads it.
    back = tmp_path / "back.pcap"
    run(["editcap", "-F", "nsecpcap", str(theirs), str(back)])
    assert list(open_reader(back)) == records


# The pattern a capture must follow: the handlers only ask the loop to stop, and the
# loop closes the writer. (An exception raised inside write() or flush() could leave a
# chunk written but still buffered, and close() would then write it twice.)
WRITER_UNTIL_SIGNAL = r"""
import signal, sys
from sockscope.pcap import Interface, Record, writer_for
stop = False
def request_stop(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, request_stop)
signal.signal(signal.SIGINT, request_stop)
n = 0
with writer_for(sys.argv[1], [Interface(1, 65535, "eth0")]) as w:
    while not stop:
        w.write(Record(1_700_000_000_000_000_000 + n, bytes(60), 60))
        n += 1
        if n == 1000:
            print("ready", flush=True)
print(n, flush=True)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("name", ["sig.pcap", "sig.pcapng"])
def test_file_is_complete_after_a_signal(tmp_path: Path, sig: signal.Signals, name: str) -> None:
    path = tmp_path / name
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER_UNTIL_SIGNAL, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    assert child.stdout.readline() == "ready\n"
    time.sleep(0.2)  # let it write past a few buffer flushes
    child.send_signal(sig)
    written = int(child.stdout.readline())
    child.wait(timeout=10)
    assert written > 1000
    assert len(list(open_reader(path))) == written
    out = run(["tcpdump", "-nr", str(path)])
    assert len(out.splitlines()) == written
