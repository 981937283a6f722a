"""``sockscope connect``: a netcat client for TCP, UDP and Unix sockets."""

from __future__ import annotations

import argparse
import os
import socket
import sys

from sockscope.errors import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.usage = "sockscope connect [options] ADDRESS"
    p.description = ("Connect to ADDRESS (tcp:HOST:PORT, udp:HOST:PORT, unix:/path, unix:@name, "
                     "unix-dgram:..., unix-seqpacket:...) and relay stdin/stdout.")
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument("--send-fd", type=int, action="append", metavar="FD",
                   help="pass this open descriptor to the server (SCM_RIGHTS) with the first data; "
                        "repeatable; unix sockets only")
    p.add_argument("-w", "--wait", type=float, default=10.0, metavar="SECONDS",
                   help="connect timeout (default 10)")
    p.add_argument("-q", "--quiet-time", type=float, default=1.0, metavar="SECONDS",
                   help="datagram sockets: after the input ends, wait this long for replies (default 1)")


def run(args: argparse.Namespace) -> int:
    from sockscope.services import fdpass, server
    from sockscope.services.address import parse_endpoint
    from sockscope.services.relay import relay

    endpoint = parse_endpoint(args.address)
    if args.send_fd and not endpoint.is_unix:
        raise UsageError("--send-fd needs a unix socket")
    for fd in args.send_fd or ():
        try:
            os.fstat(fd)
        except OSError:
            raise UsageError(f"--send-fd {fd}: not an open descriptor") from None
    sock = server.connect_endpoint(endpoint, timeout=args.wait)
    in_fd = sys.stdin.fileno()
    with sock:
        if args.send_fd:
            first = os.read(in_fd, 65536)
            fdpass.send_fds(sock, args.send_fd, first or b"\0")
            if not first:
                if endpoint.stream:
                    sock.shutdown(socket.SHUT_WR)  # input already ended
                relay(sock, None, sys.stdout.fileno(), stream=endpoint.stream, linger=args.quiet_time)
                return 0
        relay(sock, in_fd, sys.stdout.fileno(), stream=endpoint.stream, linger=args.quiet_time)
    return 0
