"""Run a function in a forked child that dropped to the unprivileged user nobody.

The child cannot read a Python installed under /root: import everything the
function needs before calling `as_nobody`.
"""

from __future__ import annotations

import os
from collections.abc import Callable

NOBODY = 65534


def as_nobody(func: Callable[[], int]) -> int:
    """Run func in a forked child that dropped to nobody; its return value is the exit status."""
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            code = func()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)
