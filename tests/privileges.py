"""Running the CLI as an unprivileged user from a root test run.

The interpreter and its standard library live under /root (pyenv), which ``nobody``
cannot read, so the child is forked after importing what the command needs, then
drops to nobody and calls the CLI's ``main`` directly.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

NOBODY = 65534


def run_as_nobody(argv: list[str], preload: Sequence[str] = ()) -> tuple[int, str]:
    """Run ``sockscope argv`` in a forked child that dropped to nobody; (exit status, stderr).

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
    pid = os.fork()
    if pid == 0:
        try:
            # pytest has replaced sys.stdout/err with capture objects: point them at fds.
            sys.stderr = os.fdopen(write_fd, "w")
            sys.stdout = open(os.devnull, "w")
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            code = main(argv)
            sys.stderr.flush()
        except BaseException as exc:
            sys.stderr.write(f"child failed: {exc!r}\n")
            sys.stderr.flush()
            code = 99
        os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd) as f:
        err = f.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), err
