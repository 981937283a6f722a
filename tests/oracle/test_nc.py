"""``connect`` and ``listen`` against OpenBSD nc (Debian's netcat-openbsd), side by
side on generated cases (#14): every kind of standard input (a pipe, a regular
file, /dev/null, a closed descriptor), payloads of many sizes, with and without
``-N``, peers that answer, half-close early or wait; TCP and Unix stream sockets.
The same bytes must arrive both ways, the peer must see the same end of file, and
the exit statuses must agree.

Normalised, as docs/differences.md ("connect, listen and OpenBSD nc") lists: with
its standard input closed nc's socket takes descriptor 0 and nc reads its own
connection, so nc is given /dev/null where sockscope gets the closed descriptor.
The cases come from a seeded generator (SOCKSCOPE_ORACLE_SEED changes the seed); a
failure prints the case.
"""

from __future__ import annotations

import concurrent.futures
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import stdin_kinds
from ports import free_port

SEED = int(os.environ.get("SOCKSCOPE_ORACLE_SEED", "1101"))
CLI = [sys.executable, "-m", "sockscope"]
NC = shutil.which("nc")
STDIN_KINDS = stdin_kinds.KINDS
SIZES = (0, 1, 700, 16_384, 70_000, 300_000)
IDLE = 1.0  # how long a peer waits, with nothing arriving, before taking it as "no end of file"
SLOW = 15.0  # how long it waits for the data it knows is coming (a loaded machine is slow)

_OPENBSD = NC is not None and "OpenBSD" in subprocess.run([NC, "-h"], capture_output=True, text=True).stderr
pytestmark = pytest.mark.skipif(not _OPENBSD, reason="OpenBSD nc (netcat-openbsd) not installed")


@dataclass(frozen=True)
class Case:
    """One generated situation. ``client``: the tool connects (else it listens and
    the test connects to it). ``half_close``: the test's side shuts its write side
    down at once (as a client: after sending). ``shutdown``: -N."""

    number: int
    client: bool
    transport: str
    stdin: str
    shutdown: bool
    half_close: bool
    payload: bytes
    reply: bytes

    def __str__(self) -> str:
        role = "connect (nc HOST PORT)" if self.client else "listen (nc -l)"
        return (f"case {self.number} of seed {SEED}: {role} over {self.transport}, stdin {self.stdin} "
                f"holding {len(self.payload)} bytes, {'-N' if self.shutdown else 'no -N'}, the test's side "
                f"sends {len(self.reply)} bytes{' and half-closes at once' if self.half_close else ''}")


def generate(seed: int, count: int) -> list[Case]:
    rng = random.Random(seed)
    cases = []
    for number in range(count):
        client = number % 3 != 2
        kind = STDIN_KINDS[number % len(STDIN_KINDS)]
        half_close = rng.random() < 0.4
        # A client that half-closes at once gets from nc -l one buffer (16 KiB) of the
        # input at most, and all of it from listen (docs/differences.md): not compared.
        sizes = SIZES if client or not half_close else [s for s in SIZES if s <= 16_384]
        payload = rng.randbytes(rng.choice(sizes)) if kind in ("pipe", "file") else b""
        transport = rng.choice(("tcp", "tcp", "unix")) if client else "tcp"
        cases.append(Case(number, client, transport, kind, rng.random() < 0.5, half_close, payload,
                          rng.randbytes(rng.choice(SIZES))))
    return cases


@dataclass(frozen=True)
class Outcome:
    """What one run did: the bytes each side received, whether the test's side saw
    the tool's end of file before its own (``early_eof``; a client that half-closed
    first cannot tell, and records False), and the tool's exit status."""

    tool_out: bytes
    peer_got: bytes
    early_eof: bool
    status: int

    def __str__(self) -> str:
        return (f"tool wrote {len(self.tool_out)} bytes, peer got {len(self.peer_got)} bytes, "
                f"early end of file {self.early_eof}, exit status {self.status}")


def read_until(conn: socket.socket, idle: float, want: int | None = None) -> tuple[bytes, bool]:
    """(bytes, end of file seen) reading until the end of file, ``idle`` seconds with
    nothing arriving, or ``want`` bytes."""
    conn.settimeout(idle)
    got = bytearray()
    try:
        while want is None or len(got) < want:
            chunk = conn.recv(65536)
            if not chunk:
                return bytes(got), True
            got += chunk
    except TimeoutError:
        pass
    return bytes(got), False


def read_expected(conn: socket.socket, want: int) -> tuple[bytes, bool]:
    """The ``want`` bytes the tool is known to send (however slowly they come), then
    whatever follows until its end of file or IDLE seconds of nothing."""
    got, eof = read_until(conn, SLOW, want) if want else (b"", False)
    if not eof:
        more, eof = read_until(conn, IDLE)
        got += more
    return got, eof


def as_server(listener: socket.socket, case: Case) -> tuple[bytes, bool]:
    """The test's side when the tool connects: answer, maybe half-close, read."""
    listener.settimeout(15)
    conn, _ = listener.accept()
    with conn:
        conn.sendall(case.reply)
        if case.half_close:
            conn.shutdown(socket.SHUT_WR)
        return read_expected(conn, len(case.payload))


def as_client(address: object, family: int, case: Case) -> tuple[bytes, bool]:
    """The test's side when the tool listens: send, maybe half-close at once; read
    what the tool sends; half-close (if not yet), read to the end."""
    deadline = time.monotonic() + 15
    while True:
        conn = socket.socket(family)
        try:
            conn.connect(address)  # type: ignore[arg-type]
            break
        except (ConnectionRefusedError, FileNotFoundError):
            conn.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    with conn:
        conn.sendall(case.reply)
        early = False
        if case.half_close:
            conn.shutdown(socket.SHUT_WR)
        got, eof = read_expected(conn, len(case.payload))
        early = eof and not case.half_close
        if not eof:
            if not case.half_close:
                conn.shutdown(socket.SHUT_WR)
            more, _ = read_until(conn, 5.0)
            got += more
        return got, early


def run(case: Case, tool: str, work: Path) -> Outcome:
    stdin_kind = case.stdin
    if tool == "nc" and stdin_kind == "closed":
        stdin_kind = "devnull"  # nc's socket would become its own standard input: docs/differences.md
    tag = f"{tool}-{case.number}"
    if case.transport == "unix":
        address: object = str(work / f"{tag}.sock")
        family = socket.AF_UNIX
    else:
        port = free_port()
        address, family = ("127.0.0.1", port), socket.AF_INET
    flags = ["-N"] if case.shutdown else []
    if tool == "nc":
        where = ["-U", str(address)] if case.transport == "unix" else ["127.0.0.1", str(port)]
        argv = [str(NC), *flags, *(["-l"] if not case.client else []), *where]
    else:
        target = f"unix:{address}" if case.transport == "unix" else f"tcp:127.0.0.1:{port}"
        argv = [*CLI, "connect" if case.client else "listen", *flags, target]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        listener = None
        if case.client:
            listener = socket.socket(family)
            listener.bind(address)  # type: ignore[arg-type]
            listener.listen(1)
            peer = pool.submit(as_server, listener, case)
        try:
            proc = start(argv, stdin_kind, case.payload, work / f"{tag}.in")
            if not case.client:
                peer = pool.submit(as_client, address, family, case)
            out, _err = proc.communicate(timeout=30)
            got, early = peer.result(timeout=30)
        finally:
            if listener is not None:
                listener.close()
            if case.transport == "unix":
                Path(str(address)).unlink(missing_ok=True)
    return Outcome(out, got, early, proc.returncode)


def start(argv: list[str], kind: str, payload: bytes, path: Path) -> subprocess.Popen[bytes]:
    return stdin_kinds.popen(argv, kind, payload, path, stderr=subprocess.DEVNULL)


@pytest.mark.parametrize("case", generate(SEED, 24), ids=str)
def test_connect_and_listen_move_the_bytes_nc_moves(case: Case) -> None:
    with tempfile.TemporaryDirectory(prefix="ssc-nc-") as tmp:
        with concurrent.futures.ThreadPoolExecutor(2) as both:
            theirs_f = both.submit(run, case, "nc", Path(tmp))
            ours_f = both.submit(run, case, "sockscope", Path(tmp))
            theirs, ours = theirs_f.result(), ours_f.result()
    assert ours == theirs, f"{case}\n  nc:        {theirs}\n  sockscope: {ours}"
    # and the bytes are the case's own, not just equal to each other
    assert ours.peer_got == case.payload and ours.tool_out == case.reply, str(case)


def test_connection_refused_exits_1_as_nc() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: refused
        theirs = subprocess.run([str(NC), "127.0.0.1", str(port)], stdin=subprocess.DEVNULL,
                                capture_output=True, timeout=30)
        ours = subprocess.run([*CLI, "connect", f"tcp:127.0.0.1:{port}"], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=30)
    assert (ours.returncode, theirs.returncode) == (1, 1)
    assert ours.stderr == f"sockscope connect: tcp:127.0.0.1:{port}: Connection refused\n"


@pytest.mark.parametrize("kind", STDIN_KINDS)
def test_udp_client_as_nc_u_q(kind: str) -> None:
    """A datagram per read of the input, the replies that come while the input is
    open written out, exit status 0. nc -u -q S closes its socket at the input's end
    and then only waits S seconds, while sockscope's -q S goes on reading replies for
    S seconds of quiet (docs/differences.md): so a pipe is held open past the reply
    here, and a file or /dev/null, which end at once, run with -q 0."""
    payload = b"one datagram\n" if kind in ("pipe", "file") else b""
    quiet = "1" if kind == "pipe" else "0"

    def one(tool: str, work: Path) -> tuple[bytes, bytes, int]:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as echo:
            echo.bind(("127.0.0.1", 0))
            echo.settimeout(3)
            port = echo.getsockname()[1]
            stdin_kind = "devnull" if tool == "nc" and kind == "closed" else kind
            argv = ([str(NC), "-u", "-q", quiet, "127.0.0.1", str(port)] if tool == "nc"
                    else [*CLI, "connect", "-q", quiet, f"udp:127.0.0.1:{port}"])
            if kind == "pipe":
                proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL)
                assert proc.stdin is not None
                proc.stdin.write(payload)
                proc.stdin.flush()
            else:
                proc = start(argv, stdin_kind, payload, work / f"{tool}.in")
            got = b""
            try:
                got, sender = echo.recvfrom(65536)
                if kind != "pipe":
                    time.sleep(0.3)  # the reply comes after the input's end, which -q 0 does not wait for
                echo.sendto(got.upper(), sender)
            except TimeoutError:
                pass
            if proc.stdin is not None:
                time.sleep(1.0)  # the reply is in before the input ends
                proc.stdin.close()
                proc.stdin = None
            out, _ = proc.communicate(timeout=15)
            return got, out, proc.returncode

    with tempfile.TemporaryDirectory(prefix="ssc-nc-") as tmp:
        pool = concurrent.futures.ThreadPoolExecutor(2)
        theirs_f, ours_f = pool.submit(one, "nc", Path(tmp)), pool.submit(one, "sockscope", Path(tmp))
        pool.shutdown()
        theirs, ours = theirs_f.result(), ours_f.result()
    expected = (payload, payload.upper() if kind == "pipe" else b"", 0)
    assert ours == theirs == expected, f"stdin {kind}: nc {theirs}, sockscope {ours}"


@pytest.mark.parametrize("shutdown", [True, False])
def test_a_terminal_as_stdin_as_nc(shutdown: bool) -> None:
    """Typed lines and Ctrl-D at a terminal: the same bytes arrive, the end of file is
    passed on with -N only, and the peer's answer is shown after it."""
    import pty

    def one(tool: str) -> tuple[bytes, bool, bytes, int]:
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            port = listener.getsockname()[1]
            flags = ["-N"] if shutdown else []
            argv = ([str(NC), *flags, "127.0.0.1", str(port)] if tool == "nc"
                    else [*CLI, "connect", *flags, f"tcp:127.0.0.1:{port}"])
            master, slave = pty.openpty()
            try:
                proc = subprocess.Popen(argv, stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
                os.close(slave)
                listener.settimeout(15)
                conn, _ = listener.accept()
                with conn:
                    os.write(master, b"typed line\n")
                    got, _ = read_until(conn, SLOW, len(b"typed line\n"))
                    os.write(master, b"\x04")
                    more, eof = read_until(conn, IDLE)
                    conn.sendall(b"answer\n")
                out, _ = proc.communicate(timeout=15)
            finally:
                os.close(master)
            return got + more, eof, out, proc.returncode

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        theirs_f, ours_f = pool.submit(one, "nc"), pool.submit(one, "sockscope")
        theirs, ours = theirs_f.result(), ours_f.result()
    assert ours == theirs == (b"typed line\n", shutdown, b"answer\n", 0), f"nc {theirs}, sockscope {ours}"
