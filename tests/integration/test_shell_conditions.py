"""Every command under the conditions a real shell creates (#14).

Each subcommand runs, as a real process inside a namespace of its own, with:
stdin from /dev/null, from a regular file, and closed; stdout into a pipe the
reader closes after one line (``| head -1``) and into /dev/full; SIGINT and
SIGTERM mid-run; as the unprivileged user nobody; and, where it looks into
another namespace (``-N``), with that namespace deleted mid-run.

What every case must show: never a traceback; where something went wrong one
line on stderr and a meaningful exit status; the summary the tool prints on
Ctrl-C (as tcpdump and ping do); and nothing left behind in the namespace — no
process, no nftables change, no file in the working directory.

The table `CASES` is the one place that says how each command is run here; a new
command gets a row (its module in cli/main.py's COMMANDS is checked to have one).
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from privileges import drop_to_nobody
from sockscope.cli.main import COMMANDS
from topology import Netns, Topology

pytestmark = pytest.mark.needs_root

ADDR_A, ADDR_B = "198.51.100.1", "198.51.100.2"
LISTEN_PORT = 7701  # a TCP listener in ns a: what kill and ls find
GREETER_PORT = 7702  # says hello and closes: what connect talks to
SERVE_PORT = 7703  # where `listen` listens

# Processes the environment keeps running in namespace a (not the commands' doing).
_SERVERS = r"""
import os, socket, sys, threading, time
lis = socket.create_server(("127.0.0.1", int(sys.argv[1])))
greeter = socket.create_server(("127.0.0.1", int(sys.argv[2])))
def greet():
    while True:
        conn, _ = greeter.accept()
        conn.sendall(b"hello\n")
        conn.close()
threading.Thread(target=greet, daemon=True).start()
# Traffic for capture and watch to see: a short-lived UDP socket every 50 ms.
print("ready", flush=True)
while True:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"tick", ("127.0.0.1", 9))
    time.sleep(0.05)
"""


@dataclass(frozen=True)
class Case:
    """How one command is run here.

    ``long``: runs until a signal ends it. ``output``: writes to stdout in a normal
    run (so /dev/full must be an error). ``summary``: what it prints when Ctrl-C
    ends it. ``netns``: the argv takes ``-N`` and looks into namespace b.
    ``privileged``: needs root; as nobody it must say so in one line, exit 1.
    """

    name: str
    argv: tuple[str, ...]
    long: bool = False
    output: bool = True
    summary: str | None = None
    netns: bool = False
    privileged: bool = False
    # The exit statuses of an ordinary run (brief commands) other than 0.
    also: frozenset[int] = frozenset()
    # Whether SIGTERM, too, ends it with the summary (tcpdump: yes; iputils ping: no).
    summary_on_term: bool = False
    # Extra stderr lines that are not errors (tcpdump-style counters), as regexes.
    chatter: tuple[str, ...] = field(default=())


COUNTERS = (r"^\d+ packets? (captured|received by filter|dropped by kernel)$", r"^listening on ")

CASES = [
    Case("ls", ("ls",)),
    Case("ls-netns", ("ls", "-N", "{ns_b}"), netns=False),
    Case("ifaces", ("ifaces",)),
    Case("ifaces-interval", ("ifaces", "--interval", "0.2", "-N", "{ns_b}"), long=True, netns=True),
    Case("kill", ("kill", "--dry-run", "sport", "=", f":{LISTEN_PORT}")),
    Case("watch", ("watch", "--interval", "0.1"), long=True),
    Case("watch-netns", ("watch", "--interval", "0.1", "-N", "{ns_b}"), long=True, output=False, netns=True),
    Case("capture", ("capture", "-i", "lo"), long=True, privileged=True,
         summary=r"^\d+ packets captured$", summary_on_term=True, chatter=COUNTERS),
    Case("capture-netns", ("capture", "-N", "{ns_b}", "-i", "lo"), long=True, output=False, netns=True,
         privileged=True, summary=r"^\d+ packets captured$", summary_on_term=True, chatter=COUNTERS),
    Case("capture-read", ("capture", "-r", "{pcap}"), chatter=COUNTERS),
    Case("send", ("send", "-i", "{veth_a}", "--topspeed", "{pcap}"), privileged=True),
    Case("listen", ("listen", f"tcp:127.0.0.1:{SERVE_PORT}"), long=True, output=False),
    Case("connect", ("connect", f"tcp:127.0.0.1:{GREETER_PORT}")),
    Case("guard-dry-run", ("guard", "--policy", "{policy}", "--daemon", "web", "--port", "8080",
                           "--dry-run")),
    Case("guard-show", ("guard", "--show"), output=False, privileged=True, also=frozenset({1})),
    Case("check", ("check", "--policy", "{policy}", "web", "10.1.2.3")),
    Case("ping", ("ping", "-c", "2", "-i", "0.2", ADDR_B)),
    Case("ping-until-interrupted", ("ping", "-i", "0.2", ADDR_B), long=True,
         summary=r"^\d+ packets transmitted, \d+ received"),
    Case("trace", ("trace", "-m", "3", ADDR_B)),
    Case("scan", ("scan", "-p", "1-50", ADDR_B), privileged=False),
    Case("divert", ("divert", "--rule", "udp and dst port 5999"), long=True, output=False, privileged=True),
    # -N: top reads one namespace, not every one on the host (other loads on a
    # shared machine must not delay its first sample past the harness's settle time).
    Case("top", ("top", "--jsonl", "--interval", "0.1", "-N", "{ns_b}"), long=True, privileged=True,
         netns=True),
    Case("exporter", ("exporter", "--listen", "127.0.0.1:0"), long=True, output=False, privileged=True,
         chatter=(r"^sockscope exporter: listening on ",)),
    Case("exporter-netns", ("exporter", "--listen", "127.0.0.1:0", "-N", "{ns_b}"), long=True, output=False,
         netns=True, privileged=True, chatter=(r"^sockscope exporter: listening on ",)),
]

# Cases known to fail today, each with the defect it shows. strict: once fixed, the
# case passes, the xfail turns into a failure and its line here must go.
_NETNS_GONE = "#12: a namespace that vanishes mid-run exits 2 (a usage error's status), not 1"
KNOWN: dict[tuple[str, str], str] = {
    ("ifaces-interval", "netns-vanishes"): _NETNS_GONE,
}

CONDITIONS = ["stdin-devnull", "stdin-file", "stdin-closed", "stdout-head", "stdout-full",
              "sigint", "sigterm", "nobody", "netns-vanishes"]


def _applies(case: Case, condition: str) -> bool:
    if condition in ("sigint", "sigterm"):
        return case.long
    if condition == "netns-vanishes":
        return case.netns
    return True


def _params() -> Iterator[Any]:
    for case in CASES:
        for condition in CONDITIONS:
            if not _applies(case, condition):
                continue
            marks = []
            why = KNOWN.get((case.name, condition))
            if why:
                marks.append(pytest.mark.xfail(reason=why, strict=True))
            yield pytest.param(case, condition, id=f"{case.name}-{condition}", marks=marks)


@dataclass
class Env:
    topo: Topology
    ns_a: Netns
    ns_b: Netns
    veth_a: str
    workdir: Path
    values: dict[str, str]
    baseline_pids: set[int]

    def argv(self, case: Case) -> list[str]:
        return [part.format(**self.values) for part in case.argv]

    def ruleset(self, ns: Netns) -> str:
        return self.topo.run(ns, "nft", "list", "ruleset").stdout


def _write_pcap(path: Path) -> None:
    """20 Ethernet/IPv4/UDP frames in a classic pcap file, built with struct only (the
    sweep must not depend on the API of what it tests)."""
    import socket
    import struct

    def checksum(header: bytes) -> int:
        total = sum(struct.unpack(f"!{len(header) // 2}H", header))
        total = (total >> 16) + (total & 0xFFFF)
        return ~(total + (total >> 16)) & 0xFFFF

    records = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for i in range(20):
        payload = b"x" * 18
        udp = struct.pack("!HHHH", 40000 + i, 9, 8 + len(payload), 0) + payload
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i, 0, 64, 17, 0,
                         socket.inet_aton(ADDR_A), socket.inet_aton(ADDR_B))
        ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
        frame = bytes.fromhex("020000000002" "020000000001" "0800") + ip + udp
        records.append(struct.pack("<IIII", 1_700_000_000 + i, i * 1000, len(frame), len(frame)) + frame)
    path.write_bytes(b"".join(records))


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    with Topology() as topo, tempfile.TemporaryDirectory(prefix="ssc-sweep-") as tmp:
        ns_a, ns_b = topo.add_netns("a"), topo.add_netns("b")
        veth = topo.add_veth(ns_a, ns_b, f"{ADDR_A}/24", f"{ADDR_B}/24")
        workdir = Path(tmp)
        workdir.chmod(0o755)  # nobody runs commands here too
        pcap = workdir / "frames.pcap"
        _write_pcap(pcap)
        policy = workdir / "web.policy"
        policy.write_text("web : 10.0.0.0/8 : allow\nweb : ALL : deny\n")
        (workdir / "input.txt").write_text("line one\nline two\n")
        for p in workdir.iterdir():
            p.chmod(0o644)
        servers = topo.spawn(ns_a, sys.executable, "-c", _SERVERS, str(LISTEN_PORT), str(GREETER_PORT),
                             stdout=subprocess.PIPE)
        assert servers.stdout is not None
        ready, _, _ = select.select([servers.stdout], [], [], 10)
        assert ready and servers.stdout.readline().strip() == "ready"
        values = {"ns_b": ns_b.name, "veth_a": veth.name_a, "pcap": str(pcap), "policy": str(policy)}
        baseline = _pids(ns_a)
        yield Env(topo, ns_a, ns_b, veth.name_a, workdir, values, baseline)
        assert servers.stdout is not None
        servers.stdout.close()


def _pids(ns: Netns) -> set[int]:
    out = subprocess.run(["ip", "netns", "pids", ns.name], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


@dataclass
class Run:
    status: int
    stdout: str
    stderr: str


def _spawn(env: Env, case: Case, *, stdin: Any, stdout: Any, close_stdin: bool = False,
           ns: Netns | None = None) -> subprocess.Popen[bytes]:
    argv = ["ip", "netns", "exec", (ns or env.ns_a).name, sys.executable, "-m", "sockscope",
            *env.argv(case)]

    def child_setup() -> None:
        if close_stdin:
            os.close(0)

    return subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, cwd=env.workdir,
                            preexec_fn=child_setup, start_new_session=True)


def _finish(proc: subprocess.Popen[bytes], case: Case, sig: int = signal.SIGINT,
            settle: float = 1.2) -> Run:
    """Wait for a brief command; signal a long-running one once it has settled."""
    if case.long:
        try:
            proc.wait(timeout=settle)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, sig)  # as a terminal's Ctrl-C reaches the process group
    try:
        out, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"did not end within 15 s of {signal.Signals(sig).name}: {err!r}") from None
    return Run(proc.returncode, (out or b"").decode(errors="replace"), err.decode(errors="replace"))


def _problem_lines(run: Run, case: Case) -> list[str]:
    """stderr lines that are not the command's ordinary chatter (counters, banners)."""
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    return [line for line in lines if not any(re.search(p, line) for p in case.chatter)]


def _assert_clean(run: Run, case: Case, allowed: set[int]) -> None:
    assert "Traceback" not in run.stderr, run.stderr
    assert not re.search(r"^\w+(Error|Exception): ", run.stderr, re.M), run.stderr
    assert run.status in allowed, f"exit status {run.status}, expected {sorted(allowed)}: {run.stderr!r}"
    if run.status not in (0, 130, 143, 141, -signal.SIGINT, -signal.SIGTERM, -signal.SIGPIPE):
        problems = _problem_lines(run, case)
        assert len(problems) == 1, f"want one line saying what went wrong, got {problems!r}"


def _assert_nothing_left(env: Env, before_rules: str, before_files: set[str]) -> None:
    deadline = time.monotonic() + 3
    while (extra := _pids(env.ns_a) - env.baseline_pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not extra, f"processes left in the namespace: {extra}"
    after_rules = env.ruleset(env.ns_a)
    if after_rules != before_rules:
        # Put the namespace back as it was, so one case's leftovers do not fail the next.
        env.topo.run(env.ns_a, "nft", "-f", "-", input="flush ruleset\n" + before_rules)
        raise AssertionError(f"the nftables ruleset changed:\n{after_rules}")
    assert {p.name for p in env.workdir.iterdir()} == before_files, "files left in the working directory"


def _normal_status(case: Case) -> set[int]:
    return {0, 130, -signal.SIGINT} if case.long else {0, *case.also}


@pytest.mark.parametrize(("case", "condition"), list(_params()))
def test_command_under_shell_condition(env: Env, case: Case, condition: str) -> None:
    rules = env.ruleset(env.ns_a)
    files = {p.name for p in env.workdir.iterdir()}
    if condition == "nobody":
        run = _as_nobody(env, case)
        allowed = {1} if case.privileged else _normal_status(case) | {1}
        _assert_clean(run, case, allowed)
        if case.privileged:
            assert re.search(r"root|CAP_NET_\w+|capabilit|permission", run.stderr, re.I), run.stderr
    elif condition.startswith("stdin-"):
        if condition == "stdin-file":
            with open(env.workdir / "input.txt", "rb") as f:
                run = _finish(_spawn(env, case, stdin=f, stdout=subprocess.PIPE), case)
        elif condition == "stdin-devnull":
            run = _finish(_spawn(env, case, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE), case)
        else:
            run = _finish(_spawn(env, case, stdin=None, stdout=subprocess.PIPE, close_stdin=True), case)
        _assert_clean(run, case, _normal_status(case))
    elif condition == "stdout-head":
        run = _head_one(env, case)
        _assert_clean(run, case, _normal_status(case) | {1, 141, -signal.SIGPIPE})
    elif condition == "stdout-full":
        with open("/dev/full", "wb") as full:
            run = _finish(_spawn(env, case, stdin=subprocess.DEVNULL, stdout=full), case)
        if case.output:
            _assert_clean(run, case, {1})
            assert re.search(r"write|space", run.stderr, re.I), run.stderr
        else:
            _assert_clean(run, case, _normal_status(case) | {1})
    elif condition in ("sigint", "sigterm"):
        sig = signal.SIGINT if condition == "sigint" else signal.SIGTERM
        proc = _spawn(env, case, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        run = _finish(proc, case, sig=sig)
        # 128 + the signal, or death by the signal itself: a shell shows both alike.
        _assert_clean(run, case, {0, 128 + sig, -sig})
        if case.summary and (sig == signal.SIGINT or case.summary_on_term):
            both = run.stdout + run.stderr
            assert re.search(case.summary, both, re.M), f"no summary after {sig.name}: {both!r}"
    elif condition == "netns-vanishes":
        run = _netns_vanishes(env, case)
        _assert_clean(run, case, {0, 1, 130})
    _assert_nothing_left(env, rules, files)


def _head_one(env: Env, case: Case) -> Run:
    """``sockscope ... | head -1``: the reader takes one line, then goes away."""
    proc = _spawn(env, case, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 3)
    if ready:
        proc.stdout.readline()
    proc.stdout.close()
    proc.stdout = None  # communicate() must not read the closed pipe
    return _finish(proc, case)


def _netns_vanishes(env: Env, case: Case) -> Run:
    """Run against a namespace that is deleted under the command's feet."""
    doomed = env.topo.add_netns(f"doomed{int(time.monotonic() * 1000) % 100000}")
    env.topo.run(doomed, "ip", "link", "set", "lo", "up")
    values = dict(env.values, ns_b=doomed.name)
    argv = ["ip", "netns", "exec", env.ns_a.name, sys.executable, "-m", "sockscope",
            *[part.format(**values) for part in case.argv]]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=env.workdir, start_new_session=True)
    time.sleep(0.8)
    subprocess.run(["ip", "netns", "delete", doomed.name], check=True)
    return _finish(proc, case, settle=0.8)


def _as_nobody(env: Env, case: Case) -> Run:
    """The command as nobody: a forked child enters namespace a, drops to nobody and
    runs the CLI in process (the interpreter under /root is not nobody's to exec)."""
    import ctypes  # noqa: F401 - loaded before the drop (setns on Python 3.11)
    import locale  # noqa: F401 - argparse's gettext

    import sockscope.cli.main as cli_main

    _preload_everything()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 99
        try:
            os.chdir(env.workdir)
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            sys.stdin = os.fdopen(0, "r", closefd=False)  # not pytest's pseudo-file
            sys.stdout = os.fdopen(1, "w", closefd=False)
            sys.stderr = os.fdopen(2, "w", closefd=False)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            _enter_for_good(env.ns_a)
            drop_to_nobody()
            try:
                code = cli_main.main(env.argv(case))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException as exc:  # a traceback is what this test looks for
            import traceback

            traceback.print_exception(exc, file=sys.stderr)
            sys.stderr.flush()
        finally:
            os._exit(code)
    os.close(out_w)
    os.close(err_w)
    drained: dict[int, bytes] = {}

    def drain(fd: int) -> None:  # a chatty child must not block on a full pipe
        with os.fdopen(fd, "rb") as f:
            drained[fd] = f.read()

    readers = [threading.Thread(target=drain, args=(fd,)) for fd in (out_r, err_r)]
    for reader in readers:
        reader.start()
    deadline = time.monotonic() + (1.2 if case.long else 15)
    status = None
    while status is None and time.monotonic() < deadline:
        done, raw = os.waitpid(pid, os.WNOHANG)
        if done:
            status = os.waitstatus_to_exitcode(raw)
        else:
            time.sleep(0.05)
    if status is None:
        os.kill(pid, signal.SIGINT)
        try:
            _, raw = _waitpid_timeout(pid, 10)
        except TimeoutError:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError("as nobody, it did not end within 10 s of SIGINT") from None
        status = os.waitstatus_to_exitcode(raw)
    for reader in readers:
        reader.join(timeout=10)
    return Run(status, drained.get(out_r, b"").decode(errors="replace"),
               drained.get(err_r, b"").decode(errors="replace"))


def _preload_everything() -> None:
    """Import every module sockscope may import, at any depth, before the drop: the
    standard library lives under /root, where nobody cannot read."""
    import ast
    import importlib

    src = Path(sockscope_cli_main_file()).resolve().parents[1]
    # Codecs the interpreter loads on demand (host names go through idna).
    names = {"sockscope", "encodings.idna", "encodings.ascii", "encodings.latin_1", "stringprep"}
    for path in src.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
        relative = path.relative_to(src.parent).with_suffix("")
        names.add(".".join(p for p in relative.parts if p != "__init__"))
    for name in sorted(names):
        if name.endswith("__main__"):  # running the program is not importing it
            continue
        try:
            importlib.import_module(name)
        except ImportError:  # a name imported from a module, not a module itself
            continue


def sockscope_cli_main_file() -> str:
    import sockscope.cli.main

    return sockscope.cli.main.__file__ or ""


def _enter_for_good(ns: Netns) -> None:
    """setns(2) into ns with no way back (the forked child never returns)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(ns.path, os.O_RDONLY)
    if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
        raise OSError(ctypes.get_errno(), "setns")
    os.close(fd)


def _waitpid_timeout(pid: int, timeout: float) -> tuple[int, int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, raw = os.waitpid(pid, os.WNOHANG)
        if done:
            return done, raw
        time.sleep(0.05)
    raise TimeoutError


def test_every_command_has_a_row() -> None:
    assert {case.argv[0] for case in CASES} >= set(COMMANDS), "a command is missing from CASES"
