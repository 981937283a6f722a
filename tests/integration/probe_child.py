"""Run probe API calls in a forked child inside a test namespace, optionally as
nobody, and get their results back as JSON (the parent stays in its namespace)."""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

from privileges import drop_to_nobody


def preload() -> None:
    """What the child needs, imported while the stdlib is still readable (it lives
    under /root, which nobody cannot read)."""
    import asyncio  # noqa: F401
    import ctypes  # noqa: F401
    import encodings.idna  # noqa: F401
    import locale  # noqa: F401

    import sockscope.cli.main
    import sockscope.cli.ping
    import sockscope.cli.scan
    import sockscope.cli.trace
    import sockscope.probe.ping
    import sockscope.probe.scan
    import sockscope.probe.trace
    import sockscope.probe.unpriv  # noqa: F401


def in_netns(netns: str, fn: Callable[[], Any], nobody: bool = False, timeout: float = 60) -> Any:
    """fn() run in a child that entered ``netns`` (and dropped to nobody if asked);
    returns its JSON-able result or raises RuntimeError with the child's error."""
    from sockscope.platform.linux import in_netns as enter
    from sockscope.platform.linux import resolve_netns

    preload()
    ref = resolve_netns(netns)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        out = os.fdopen(write_fd, "w")
        try:
            sys.stdout = open(os.devnull, "w")
            # Kept referenced and never exited: the child ends inside the namespace.
            # (A dropped context manager would be closed, switching back at once.)
            inside = enter(ref)
            inside.__enter__()
            if os.stat("/proc/thread-self/ns/net").st_ino != ref.inode:
                raise RuntimeError(f"not inside {netns}: refusing to send anything")
            if nobody:
                drop_to_nobody()
            value = fn()
            out.write(json.dumps({"ok": value}))
        except BaseException as exc:
            out.write(json.dumps({"error": f"{type(exc).__name__}: {exc}", "tb": traceback.format_exc()}))
        out.flush()
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as f:
        text = f.read()
    os.waitpid(pid, 0)
    got = json.loads(text)
    if "error" in got:
        raise RuntimeError(got["error"] + "\n" + got["tb"])
    return got["ok"]
