"""``sockscope connect``: a netcat client for TCP, UDP and Unix sockets."""

from __future__ import annotations

import argparse
import os
import socket
import sys
from typing import TYPE_CHECKING

from sockscope.errors import SockscopeError, UsageError

from .argtypes import seconds_or_zero
from .netcat import add_relay_arguments, relay_options, run_until_signal, standard_streams

if TYPE_CHECKING:
    from collections.abc import Iterable

    from sockscope.services.address import Endpoint
    from sockscope.services.relay import Input


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.usage = "sockscope connect [options] ADDRESS"
    p.description = ("Connect to ADDRESS (tcp:HOST:PORT, udp:HOST:PORT, unix:/path, unix:@name, "
                     "unix-dgram:..., unix-seqpacket:...; PORT a number or a service name) and relay "
                     "stdin/stdout, as OpenBSD nc: the relay goes on until the peer has finished sending, "
                     "and the rest of the input is sent even after that. To test whether ports are open "
                     "(nc -z), use `sockscope scan HOST -p PORTS`.")
    p.add_argument("address", metavar="ADDRESS")
    add_relay_arguments(p, listen=False)
    p.add_argument("-s", "--source", metavar="ADDRESS", help="local address to connect from (tcp, udp)")
    p.add_argument("-p", "--source-port", metavar="PORT", help="local port to connect from (tcp, udp)")
    p.add_argument("-v", "--verbose", action="store_true", help="say on stderr when connected")
    p.add_argument("--send-fd", type=int, action="append", metavar="FD",
                   help="pass this open descriptor to the server (SCM_RIGHTS) with the first data; "
                        "repeatable; unix sockets only")
    p.add_argument("-q", "--quiet-time", type=seconds_or_zero, default=1.0, metavar="SECONDS",
                   help="datagram sockets: after the input ends, wait this long for replies (default 1)")
    p.add_argument("-z", dest="zero_io", action="store_true",
                   help="not here: nc's port test is `sockscope scan HOST -p PORTS`")


def run(args: argparse.Namespace) -> int:
    from sockscope.services import server
    from sockscope.services.address import parse_endpoint, parse_port
    from sockscope.services.relay import Input, Output, relay_datagrams, relay_stream

    if args.zero_io:
        raise UsageError("-z: to test whether ports are open use `sockscope scan HOST -p PORTS` "
                         "(add --udp for UDP)")
    endpoint = parse_endpoint(args.address)
    if args.send_fd and not endpoint.is_unix:
        raise UsageError("--send-fd needs a unix socket")
    source = None
    if args.source is not None or args.source_port is not None:
        if endpoint.is_unix:
            raise UsageError("-s and -p apply to tcp and udp addresses only")
        port = parse_port(args.source_port, endpoint.kind) if args.source_port is not None else 0
        source = (args.source or "", port)
    in_fd, out_fd = standard_streams()
    _check_send_fds(args.send_fd or ())
    sock = server.connect_endpoint(endpoint, timeout=args.wait or 10.0, family=args.family or 0,
                                   source=source)

    def body(gate: object) -> int:
        if args.verbose:
            sys.stderr.write(f"sockscope connect: connected to {_peer_text(endpoint, sock)}\n")
            sys.stderr.flush()
        source_input = Input(in_fd, crlf=args.crlf, detached=args.detach)
        if args.send_fd:
            _send_fds(sock, source_input, args.send_fd)
        sink = Output(out_fd)
        if endpoint.stream:
            relay_stream(sock, source_input, sink, relay_options(args, listener=False))
        else:
            options = relay_options(args, listener=False, linger=args.quiet_time)
            relay_datagrams(sock, source_input, sink, options)
        return 0

    return run_until_signal(body, lambda signum: sock.close())


def _peer_text(endpoint: Endpoint, sock: socket.socket) -> str:
    try:
        address = sock.getpeername()
    except OSError:
        return str(endpoint)
    if isinstance(address, tuple):
        host, port = address[0], address[1]
        return f"{endpoint.kind}:[{host}]:{port}" if ":" in host else f"{endpoint.kind}:{host}:{port}"
    return str(endpoint)


def _check_send_fds(fds: Iterable[int]) -> None:
    for fd in fds:
        try:
            os.fstat(fd)
        except OSError:
            raise UsageError(f"--send-fd {fd}: not an open descriptor") from None


def _send_fds(sock: socket.socket, source: Input, fds: list[int]) -> None:
    """The descriptors go with the first data read from the input: at least one
    byte on a stream socket, which cannot carry them without data."""
    from sockscope.services import fdpass

    while source.open and not source.pending:
        source.read()
    first, source.pending = source.pending, b""
    if not first and sock.type == socket.SOCK_STREAM:
        raise SockscopeError("--send-fd: the input is empty, and a stream socket carries descriptors "
                             "only with data")
    fdpass.send_fds(sock, [first] if first else [], fds)
