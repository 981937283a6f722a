"""A process started with its standard input of a given kind, as a shell makes it:
a pipe, a regular file, /dev/null, or a closed descriptor. Shared by the netcat tests
and the nc oracle."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

KINDS = ("pipe", "file", "devnull", "closed")


def popen(argv: list[str], kind: str, data: bytes, path: Path, **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start argv with stdin of ``kind`` holding ``data`` (a pipe is written and
    closed before this returns; a file is written at ``path``; /dev/null and a
    closed descriptor hold nothing). stdout and stderr default to pipes."""
    preexec = None
    stdin: Any
    if kind == "pipe":
        stdin = subprocess.PIPE
    elif kind == "file":
        path.write_bytes(data)
        stdin = path.open("rb")
    elif kind == "devnull":
        stdin = subprocess.DEVNULL
    else:
        stdin, preexec = subprocess.DEVNULL, lambda: os.close(0)
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    proc = subprocess.Popen(argv, stdin=stdin, preexec_fn=preexec, **kwargs)
    if kind == "file":
        stdin.close()
    if kind == "pipe":
        assert proc.stdin is not None
        with proc.stdin:
            proc.stdin.write(data)  # all of it ready before the process needs it
        proc.stdin = None  # for communicate()
    return proc
