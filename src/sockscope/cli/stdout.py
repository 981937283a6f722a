"""Writing to standard output when it may be closed (``>&-``) or full
(``> /dev/full``): one line, exit status 1, as iputils ping ("write error"),
instead of a traceback or an "Exception ignored" at exit."""

from __future__ import annotations

import os
import sys

from sockscope.errors import SockscopeError


class WriteError(SockscopeError):
    """Standard output cannot be written (closed, or the disk is full)."""


def write(text: str) -> None:
    """Write ``text`` and flush it, so a line is out before the next probe goes."""
    stream = sys.stdout
    if stream is None:  # the program was started with stdout closed
        raise WriteError("write error: standard output is closed")
    try:
        stream.write(text)
        stream.flush()
    except BrokenPipeError:
        raise  # `| head`: the command stops quietly (cli/main.py)
    except (OSError, ValueError) as exc:
        _discard(stream)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise WriteError(f"write error: {reason}") from None


def _discard(stream: object) -> None:
    """Point stdout at /dev/null, so the interpreter's last flush of what is still
    buffered succeeds instead of printing an error of its own."""
    try:
        fd = stream.fileno()  # type: ignore[attr-defined]
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass
