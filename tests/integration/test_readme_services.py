"""The README's services examples, run as written (paths moved into a directory of
the test's own), so they stay true: the command lines and the output they show, the
Python examples and what their comments say they print (#13)."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from privileges import as_nobody

pytestmark = pytest.mark.needs_root  # a client dropped to nobody, a socket file owned root:adm

README = Path(__file__).resolve().parents[2] / "README.md"
BIN = Path(sys.executable).parent  # where the venv's `sockscope` is


def section() -> str:
    text = README.read_text()
    return text[text.index("### Services — "):text.index("### `sockscope ping`")]


def blocks(lang: str = "") -> list[str]:
    return [body for kind, body in re.findall(r"```(\w*)\n(.*?)```", section(), re.S) if kind == lang]


def block_with(marker: str, lang: str = "") -> str:
    (found,) = [b for b in blocks(lang) if marker in b]
    return found


def sessions(block: str) -> list[tuple[str, list[str]]]:
    """(command, expected output lines) for each `$ ` line of a shell block."""
    out: list[tuple[str, list[str]]] = []
    lines = block.replace("\\\n", " ").splitlines()
    for line in lines:
        if line.startswith("$ "):
            out.append((line[2:], []))
        else:
            out[-1][1].append(line)
    return out


@pytest.fixture
def workdir(shared_dir: Path) -> Path:
    # the block's first line names the file
    (shared_dir / "api.policy").write_text(block_with("# api.policy").split("\n", 1)[1])
    (shared_dir / "secret.txt").write_text("a secret\n")
    return shared_dir


def shell(command: str, cwd: Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}")
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=30, **kwargs)  # type: ignore[call-overload]


def test_check_examples_print_what_the_readme_shows(workdir: Path) -> None:
    for command, expected in sessions(block_with("$ sockscope check")):
        proc = shell(command, workdir)
        assert proc.stdout.splitlines() == expected, (command, proc.stderr)


def test_listen_and_connect_example(workdir: Path) -> None:
    (listen, logged), *clients = sessions(block_with("$ sockscope listen"))
    path = str(workdir / "api.sock")
    argv = shlex.split(listen.replace("/run/api.sock", path))
    assert argv[:2] == ["sockscope", "listen"]
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}")
    server = subprocess.Popen(argv, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
    try:
        assert server.stderr is not None
        lines = [server.stderr.readline()]
        for command, expected in clients:
            proc = shell(command.replace("/run/api.sock", path), workdir)
            assert proc.stdout.splitlines() == expected and proc.returncode == 0, (command, proc)
            lines.append(server.stderr.readline())

        def refused() -> int:
            with socket.socket(socket.AF_UNIX) as client:
                client.connect(path)
                client.settimeout(5)
                try:
                    return len(client.recv(10))
                except ConnectionResetError:
                    return 0

        assert as_nobody(refused) == 0
        lines.append(server.stderr.readline())
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert not os.path.exists(path)
    # the README's log, numbers (pids) aside: listening, a connection, ..., the refusal
    patterns = [re.escape(line.replace("/run/api.sock", path)).replace(r"\d", "") for line in logged]
    patterns = [re.sub(r"\d+", r"\\d+", p) for p in patterns]
    assert re.fullmatch(patterns[0], lines[0].rstrip("\n"))
    assert re.fullmatch(patterns[1], lines[1].rstrip("\n"))
    assert re.fullmatch(patterns[2], lines[-1].rstrip("\n")), lines


def _expected_prints(code: str) -> list[str]:
    return [line.split("# ", 1)[1].strip() for line in code.splitlines()
            if line.lstrip().startswith("print(")]


CLIENT = r"""
import socket, sys, time
path = sys.argv[1]
for _ in range(200):
    try:
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        break
    except (FileNotFoundError, ConnectionRefusedError):
        s.close()
        time.sleep(0.02)
with open("/etc/hostname", "rb") as f:
    socket.send_fds(s, [b"here"], [f.fileno()])
data, fds, _, _ = socket.recv_fds(s, 100, 4)
print(data.decode(), len(fds))
"""


def test_python_examples_run_and_print_what_their_comments_say(workdir: Path) -> None:
    sync_code = block_with("with Server(", "python")
    async_code = block_with("aio.start_server", "python")
    path = str(workdir / "api.sock")
    name = f"@ssc-readme-{os.getpid()}"
    sync_code = sync_code.replace("/run/api.sock", path)
    sync_code = sync_code.replace('"api.policy"', repr(str(workdir / "api.policy")))
    async_code = async_code.replace("@api", name)
    # the executable the example prints is the client's: Debian's python3, as in the README
    client = subprocess.Popen(["/usr/bin/python3", "-c", CLIENT, path], stdout=subprocess.PIPE, text=True)
    printed = io.StringIO()
    namespace: dict[str, object] = {}
    try:
        with contextlib.redirect_stdout(printed):
            exec(compile(sync_code, "README.md (services, sync)", "exec"), namespace)
            exec(compile(async_code, "README.md (services, asyncio)", "exec"), namespace)
        assert client.communicate(timeout=30)[0] == "back 1\n"
    finally:
        client.kill()
        client.wait()
    assert printed.getvalue().splitlines() == _expected_prints(sync_code) + _expected_prints(async_code)
    assert not os.path.exists(path)
    time.sleep(0)  # nothing else: the resource fixture counts what the examples left open
