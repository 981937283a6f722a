"""netcat's core: copy between a socket and the local input and output until done,
as OpenBSD nc does.

Stream sockets: each direction ends on its own end of file. The input's end is
passed on as a shutdown of the socket's write side only when asked (nc ``-N``);
either way the relay goes on reading the socket until the peer has finished. A
peer that finishes first does not end a client's relay: the rest of the input
is still sent (nc keeps uploading to a half-closed server). A listener's
connection (nc ``-l``) ends when its client has finished sending, once what the
input already has ready is sent too.

Any kind of input works: a pipe, a terminal, a regular file or /dev/null (which
epoll refuses; poll reports them always readable), or none at all. The input is
an `Input` that outlives one connection, so for ``listen -k`` what was read but
never delivered waits for the next client.

Datagram sockets: each read from the input is one datagram, each datagram
received is written out whole.
"""

from __future__ import annotations

import errno
import os
import select
import socket
from collections.abc import Callable
from dataclasses import dataclass

from sockscope.errors import SockscopeError

CHUNK = 65536
_IN = select.POLLIN | select.POLLPRI
_GONE = select.POLLHUP | select.POLLERR | select.POLLNVAL


@dataclass
class RelayOptions:
    """What nc's flags choose. ``shutdown``: at the input's end, shut down the
    socket's write side (-N). ``idle``: end after this many seconds with nothing
    moving in either direction (-w). ``listener``: a served connection, which
    ends when its client has finished sending. ``crlf``: send line ends as CRLF
    (-C). ``linger``: a datagram client waits this long for late replies after its
    input ended."""

    shutdown: bool = False
    idle: float | None = None
    listener: bool = False
    crlf: bool = False
    linger: float = 0.0


class Input:
    """The local input and what was read from it but not yet sent. ``fd`` None: an
    input that is empty from the start (a closed standard input); ``detached``: no
    input at all and so never an end of file to pass on (nc ``-d``)."""

    def __init__(self, fd: int | None, *, crlf: bool = False, detached: bool = False) -> None:
        self.fd = None if detached else fd
        self.detached = detached
        self.open = self.fd is not None
        self.pending = b""
        self.crlf = crlf
        self._last = b""  # the byte before `pending`, for CRLF conversion across reads

    def read(self) -> None:
        """Read what is there into `pending`; at end of file (or a terminal hung up)
        the input is closed."""
        assert self.fd is not None
        try:
            data = os.read(self.fd, CHUNK)
        except BlockingIOError:
            return  # a non-blocking descriptor shared with another process
        except OSError as exc:
            if exc.errno != errno.EIO:
                raise SockscopeError(f"standard input: {exc.strerror}") from None
            data = b""  # EIO: the terminal went away
        if not data:
            self.open = False
            return
        if self.crlf:
            data = _to_crlf(data, self._last)
        self._last = data[-1:]
        self.pending += data

    def ready_now(self) -> bool:
        """Whether a read would not wait (a regular file or /dev/null always is)."""
        if not self.open or self.fd is None:
            return False
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        return bool(poller.poll(0))


def _to_crlf(data: bytes, last: bytes) -> bytes:
    """LF -> CRLF where not already preceded by CR, as nc -C does."""
    out = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if out.startswith(b"\r\n") and last == b"\r":
        out = out[1:]  # the CR came with the previous read
    return out


class Output:
    """The local output: writes whole, waits on a non-blocking descriptor, and turns
    failures into one line, in the words of cli/stdout.py ("write error: ..."; a
    reader that went away is BrokenPipeError, which the command ends quietly on, as a
    pipe into ``head`` expects)."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd

    def write(self, data: bytes) -> None:
        if not data:
            return
        if self.fd is None:
            raise SockscopeError("write error: standard output is closed")
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.fd, view):]
            except BlockingIOError:
                poller = select.poll()
                poller.register(self.fd, select.POLLOUT)
                poller.poll()
            except BrokenPipeError:
                raise
            except OSError as exc:
                raise SockscopeError(f"write error: {exc.strerror}") from None


def relay_stream(sock: socket.socket, source: Input, sink: Output, options: RelayOptions) -> str:
    """Relay over a connected stream (or seqpacket) socket until both directions have
    ended; returns why it ended: "done", "idle" (``options.idle`` passed) or "reset"."""
    sock.setblocking(False)
    peer_sending = True  # the socket's read side: until the peer's end of file
    sending = True  # our side: until the input ended (and was sent) or the peer refused
    fd = sock.fileno()
    timeout = None if options.idle is None else int(options.idle * 1000)
    while True:
        if sending and not source.open and not source.pending:
            sending = False
            if options.shutdown and not source.detached:  # nc -d -N never sees an end of file
                _shutdown(sock, socket.SHUT_WR)
        if not peer_sending:
            if not sending:
                return "done"
            if options.listener and not source.pending:
                # The client has finished: send what the input has ready, then end.
                if not source.ready_now():
                    return "done"
                source.read()
                continue
        want = (select.POLLIN if peer_sending else 0) | (select.POLLOUT if sending and source.pending else 0)
        reading_input = sending and source.open and not source.pending
        events = _wait(fd, want, source.fd if reading_input else None, timeout)
        if not events:
            return "idle"
        for ready_fd, mask in events:
            if ready_fd != fd:
                if mask & (_IN | _GONE):
                    source.read()
                continue
            if peer_sending and mask & (_IN | _GONE):
                got = _receive(sock, sink)
                if got == "reset":
                    return "reset"
                peer_sending = got == "data"
            if mask & _GONE and not peer_sending:
                sending = False  # closed both ways (POLLHUP): nothing more can be sent
            if mask & select.POLLOUT and sending and source.pending and not _send(sock, source):
                sending = False  # the peer refuses more: read what it still says


def _wait(sock_fd: int, sock_events: int, input_fd: int | None, timeout: int | None) -> list[tuple[int, int]]:
    """poll(): the socket for ``sock_events`` (its hang-ups and errors always) and,
    if given, the input for reading."""
    poller = select.poll()
    poller.register(sock_fd, sock_events)
    if input_fd is not None:
        poller.register(input_fd, select.POLLIN)
    return poller.poll(timeout)


def _receive(sock: socket.socket, sink: Output) -> str:
    try:
        data = sock.recv(CHUNK)
    except BlockingIOError:
        return "data"
    except ConnectionResetError:
        return "reset"
    except OSError as exc:
        if exc.errno in (errno.ECONNRESET, errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH):
            return "reset"
        raise
    if not data:
        return "eof"
    sink.write(data)
    return "data"


def _send(sock: socket.socket, source: Input) -> bool:
    """Send what is pending; False if the peer takes no more (what was not sent stays
    pending, for the next connection of a ``listen -k``)."""
    try:
        sent = sock.send(source.pending)
    except BlockingIOError:
        return True
    except (BrokenPipeError, ConnectionResetError):
        return False
    source.pending = source.pending[sent:]
    return True


def _shutdown(sock: socket.socket, how: int) -> None:
    try:
        sock.shutdown(how)
    except OSError:
        pass  # already gone: the reads will tell


def relay_datagrams(sock: socket.socket, source: Input, sink: Output, options: RelayOptions, *,
                    reply_to: Callable[[], object] | None = None,
                    recv: Callable[[], tuple[bytes, object] | None] | None = None) -> str:
    """Relay over a datagram socket: connected (a client), or a server whose ``recv``
    returns the next allowed datagram (None for a refused one) and whose ``reply_to``
    names the sender to send input to. A client's relay ends ``options.linger``
    seconds after its input ended with nothing received meanwhile (there is no end
    of file to wait for), or after ``options.idle`` seconds of nothing at all."""
    fd = sock.fileno()
    while True:
        client_done = reply_to is None and not source.open and not source.pending
        if client_done and options.linger <= 0:
            return "done"
        timeouts = [t for t in (options.idle, options.linger if client_done else None) if t is not None]
        timeout = int(min(timeouts) * 1000) if timeouts else None
        events = _wait(fd, select.POLLIN, source.fd if source.open else None, timeout)
        if not events:
            return "done" if client_done else "idle"
        for ready_fd, mask in events:
            if ready_fd == fd:
                _receive_datagram(sock, sink, recv)
            elif mask & (_IN | _GONE):
                source.read()
                data, source.pending = source.pending, b""
                if data:
                    _send_datagram(sock, data, reply_to)


def _receive_datagram(sock: socket.socket, sink: Output,
                      recv: Callable[[], tuple[bytes, object] | None] | None) -> None:
    try:
        if recv is not None:
            got = recv()
            if got is None:
                return  # a refused datagram: dropped
            data = got[0]
        else:
            data = sock.recv(CHUNK)
    except (ConnectionRefusedError, ConnectionResetError):
        return  # an ICMP error for an earlier datagram: the peer is not (yet) there
    sink.write(data)


def _send_datagram(sock: socket.socket, data: bytes, reply_to: Callable[[], object] | None) -> None:
    try:
        if reply_to is None:
            sock.send(data)
        else:
            target = reply_to()
            if target is not None:
                sock.sendto(data, target)  # type: ignore[call-overload]
    except (ConnectionRefusedError, ConnectionResetError, FileNotFoundError):
        pass  # a datagram peer that is not there: the datagram is lost, as UDP's are
