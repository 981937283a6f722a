"""Running code and the CLI as the unprivileged user nobody from a root test run.

The interpreter and its standard library live under /root (pyenv), which nobody
cannot read: the child is forked after importing everything it needs, then drops
to nobody (no supplementary groups) and runs.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Sequence

NOBODY = 65534


def drop_to_nobody() -> None:
    """Become nobody, with no supplementary groups (no way back)."""
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def as_nobody(func: Callable[[], int]) -> int:
    """Run func in a forked child that dropped to nobody; its return value is the exit status."""
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            drop_to_nobody()
            code = func()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def run_as_nobody(argv: list[str], preload: Sequence[str] = ()) -> tuple[int, str]:
    """Run ``sockscope argv`` as nobody; (exit status, stderr).

    ``preload``: modules the command imports, imported here first (the CLI module of
    the command is always preloaded).
    """
    import ctypes  # noqa: F401 - setns on Python 3.11
    import locale  # noqa: F401 - argparse's gettext needs it
    import pwd  # noqa: F401

    from sockscope.cli.main import COMMANDS, main

    for name in (COMMANDS[argv[0]][0], *preload):
        importlib.import_module(name)
    read_fd, write_fd = os.pipe()

    def child() -> int:
        os.close(read_fd)
        # pytest has replaced sys.stdout/err with capture objects: point them at fds.
        sys.stderr = os.fdopen(write_fd, "w")
        sys.stdout = open(os.devnull, "w")
        try:
            code = main(argv)
        except BaseException as exc:
            sys.stderr.write(f"child failed: {exc!r}\n")
            code = 99
        sys.stderr.flush()
        return code

    pid_status = as_nobody(child)
    os.close(write_fd)
    with os.fdopen(read_fd) as f:
        err = f.read()
    return pid_status, err
