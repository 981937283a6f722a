"""Unix socket files: path limits, stale files, modes, bad directories."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from privileges import NOBODY, as_nobody
from sockscope.errors import SockscopeError, UsageError
from sockscope.services import Server, connect_endpoint, parse_endpoint

CLI = [sys.executable, "-m", "sockscope"]
pytestmark = pytest.mark.needs_root  # clients dropped to nobody, owners set with chown


def test_path_length_at_and_over_the_limit(shared_dir: Path) -> None:
    room = 107 - len(str(shared_dir)) - 1
    at_limit = str(shared_dir / ("a" * room))
    over = str(shared_dir / ("b" * (room + 1)))
    assert len(at_limit) == 107
    with Server(f"unix:{at_limit}") as server:
        client = connect_endpoint(parse_endpoint(f"unix:{at_limit}"))
        conn, _ = server.accept()
        conn.close()
        client.close()
    for action in (lambda: Server(f"unix:{over}"), lambda: connect_endpoint(parse_endpoint(f"unix:{over}"))):
        with pytest.raises(UsageError, match="108 bytes, the limit is 107"):
            action()
    assert not os.path.exists(over)


def test_stale_file_replaced_live_one_kept(shared_dir: Path) -> None:
    path = str(shared_dir / "s.sock")
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(path)
    dead.close()  # the file stays behind, nothing listens
    with Server(f"unix:{path}") as live:
        with pytest.raises(SockscopeError, match="address in use"):
            Server(f"unix:{path}")
        with pytest.raises(SockscopeError, match="address in use"):
            Server(f"unix-dgram:{path}")
        c = connect_endpoint(parse_endpoint(f"unix:{path}"))  # still the first server's
        conn, _ = live.accept()
        conn.close()
        c.close()
    assert not os.path.exists(path)  # removed at close
    # a datagram socket counts as live too
    dgram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dgram.bind(path)
    with pytest.raises(SockscopeError, match="address in use"):
        Server(f"unix:{path}")
    dgram.close()
    os.unlink(path)
    Path(path).write_text("data")
    with pytest.raises(SockscopeError, match="not a socket"):
        Server(f"unix:{path}")
    assert Path(path).read_text() == "data"


def test_concurrent_starts_one_wins(shared_dir: Path) -> None:
    # Two processes race to replace the same stale file: exactly one listens.
    path = str(shared_dir / "race.sock")
    for _ in range(5):
        dead = socket.socket(socket.AF_UNIX)
        dead.bind(path)
        dead.close()
        code = ("import sys,time\nfrom sockscope.services import Server\n"
                "try:\n s=Server('unix:'+sys.argv[1])\n"
                "except Exception as e:\n print('lost',e); sys.exit(3)\n"
                "print('won', flush=True); time.sleep(1.5); s.close()\n")
        procs = [subprocess.Popen([sys.executable, "-c", code, path], stdout=subprocess.PIPE, text=True)
                 for _ in range(2)]
        outs = [p.communicate(timeout=20)[0] for p in procs]
        assert sorted(o.split()[0] for o in outs) == ["lost", "won"], outs
        assert not os.path.exists(path)


def test_mode_set_at_bind(shared_dir: Path) -> None:
    path = str(shared_dir / "m.sock")
    old = os.umask(0o022)
    try:
        with Server(f"unix:{path}", mode=0o660, owner=(0, NOBODY)):
            st = os.lstat(path)
            assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == NOBODY
            assert os.umask(0o022) == 0o022  # restored
        with Server(f"unix:{path}", mode=0o606):  # wider than the umask allows
            assert stat.S_IMODE(os.lstat(path).st_mode) == 0o606
    finally:
        os.umask(old)


def test_missing_and_unwritable_directories(shared_dir: Path) -> None:
    with pytest.raises(SockscopeError, match="does not exist"):
        Server(f"unix:{shared_dir}/no/such/dir/x.sock")
    path = f"unix:{shared_dir}/x.sock"
    shared_dir.chmod(0o555)
    try:
        def try_bind() -> int:
            try:
                Server(path)
            except SockscopeError as exc:
                return 0 if "no permission to write in directory" in str(exc) else 1
            return 2

        assert as_nobody(try_bind) == 0
    finally:
        shared_dir.chmod(0o755)
