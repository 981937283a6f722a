"""netcat's core: copy between a socket and a pair of descriptors until done.

Stream sockets: input EOF half-closes the socket (shutdown SHUT_WR) and the
relay ends when the socket reaches EOF. Datagram sockets: each read from the
input is one datagram, each datagram received is written out whole.
"""

from __future__ import annotations

import os
import selectors
import socket
from collections.abc import Callable

CHUNK = 65536


def relay(sock: socket.socket, in_fd: int | None, out_fd: int, *, stream: bool = True,
          reply_to: Callable[[], object] | None = None,
          recv: Callable[[], tuple[bytes, object] | None] | None = None, linger: float = 0.0) -> bool:
    """Copy in_fd -> sock and sock -> out_fd; True if the input is still open.

    For an unconnected datagram server, ``recv`` returns the next allowed datagram
    (None for a refused one) and ``reply_to`` the address to send input to. A
    datagram client keeps reading replies for ``linger`` seconds of quiet after its
    input ends (there is no EOF to wait for).
    """
    input_open = in_fd is not None
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)
    if in_fd is not None:
        sel.register(in_fd, selectors.EVENT_READ)
    try:
        # A datagram client with no input at all only waits for replies.
        timeout = linger if in_fd is None and not stream and reply_to is None and linger > 0 else None
        while True:
            events = sel.select(timeout)
            if not events and timeout is not None:
                return input_open  # quiet for `linger` seconds after the input ended
            for key, _ in events:
                if key.fileobj is sock:
                    if not _from_socket(sock, out_fd, stream, recv):
                        return input_open
                else:
                    data = os.read(in_fd, CHUNK) if in_fd is not None else b""
                    if not data:
                        sel.unregister(key.fileobj)
                        input_open = False
                        if stream:
                            try:
                                sock.shutdown(socket.SHUT_WR)
                            except OSError:
                                return False
                        elif reply_to is None:
                            if linger <= 0:
                                return False
                            timeout = linger  # datagram client: wait for late replies
                        continue
                    if not _to_socket(sock, data, stream, reply_to):
                        return input_open  # the peer is gone
    finally:
        sel.close()


def _from_socket(sock: socket.socket, out_fd: int, stream: bool,
                 recv: Callable[[], tuple[bytes, object] | None] | None) -> bool:
    try:
        if recv is not None:
            got = recv()
            if got is None:
                return True  # a refused datagram: dropped
            data = got[0]
        else:
            data = sock.recv(CHUNK)
    except (ConnectionResetError, ConnectionRefusedError):
        return not stream
    if not data and stream:
        return False
    _write_all(out_fd, data)
    return True


def _to_socket(sock: socket.socket, data: bytes, stream: bool, reply_to: Callable[[], object] | None) -> bool:
    """Send; False if a stream peer has gone (a datagram peer's absence is not fatal)."""
    try:
        if stream:
            sock.sendall(data)
        elif reply_to is None:
            sock.send(data)
        else:
            target = reply_to()
            if target is not None:
                sock.sendto(data, target)  # type: ignore[call-overload]
    except (BrokenPipeError, ConnectionResetError):
        return not stream
    except (ConnectionRefusedError, FileNotFoundError):
        pass  # a datagram peer that went away: its replies are lost
    return True


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
