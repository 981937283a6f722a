"""``sockscope listen``: a netcat server for TCP, UDP and Unix sockets, with a policy."""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
from typing import Any

from sockscope.errors import UsageError

from .check import add_policy_arguments, load_policy


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.usage = "sockscope listen [options] ADDRESS"
    p.description = ("Listen on ADDRESS (tcp:HOST:PORT, udp:HOST:PORT, unix:/path, unix:@name, "
                     "unix-dgram:..., unix-seqpacket:...) and relay stdin/stdout, or serve each "
                     "connection with --exec. With a policy, refused TCP clients are reset before a "
                     "byte is read, UDP datagrams dropped one by one, Unix peers refused at accept.")
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument("-k", "--keep-open", action="store_true", help="accept more connections after the first")
    p.add_argument("--exec", metavar="CMD",
                   help="run CMD (no shell) per connection, the socket as its stdin/stdout")
    p.add_argument("--max-conns", type=int, metavar="N",
                   help="with --exec: at most N connections at once; more are closed at once")
    p.add_argument("--mode", metavar="OCTAL", help="permissions of the socket file, e.g. 0660 (set at bind)")
    p.add_argument("--owner", metavar="USER[:GROUP]", help="owner of the socket file")
    p.add_argument("--daemon", default="sockscope", metavar="NAME",
                   help="daemon name the policy's rules are matched against (default: sockscope)")
    p.add_argument("-v", "--verbose", action="store_true", help="log connections and refusals to stderr")
    add_policy_arguments(p)


def _log(args: argparse.Namespace, text: str) -> None:
    if args.verbose:
        sys.stderr.write(f"sockscope listen: {text}\n")
        sys.stderr.flush()


def parse_mode(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        mode = int(text, 8)
    except ValueError:
        raise UsageError(f"bad --mode {text!r}: want octal permission bits, e.g. 0660") from None
    if not 0 <= mode <= 0o777:
        raise UsageError(f"bad --mode {text!r}: permission bits only (0-0777)")
    return mode


def parse_owner(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    import grp
    import pwd

    user, _, group = text.partition(":")
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        raise UsageError(f"unknown user {user!r}") from None
    gid = entry.pw_gid
    if group:
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise UsageError(f"unknown group {group!r}") from None
    return entry.pw_uid, gid


def run(args: argparse.Namespace) -> int:
    from sockscope.services import server, unixpath
    from sockscope.services.address import parse_endpoint

    endpoint = parse_endpoint(args.address)
    if args.max_conns is not None and args.max_conns < 1:
        raise UsageError("--max-conns wants 1 or more")
    command = shlex.split(args.exec) if args.exec else None
    if args.exec is not None and not command:
        raise UsageError("--exec needs a command")
    policy = load_policy(args, required=False)
    mode, owner = parse_mode(args.mode), parse_owner(args.owner)
    if (mode is not None or owner is not None) and (not endpoint.is_unix or endpoint.abstract):
        raise UsageError("--mode and --owner apply to unix socket files only")
    sock = server.bind_endpoint(endpoint, mode=mode, owner=owner)
    identity = unixpath.file_identity(endpoint.path) if endpoint.is_unix else None
    # SIGTERM ends the server like Ctrl-C, so the socket file is removed.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))

    def refused(peer: server.Peer) -> None:
        rule = peer.decision.rule.where if peer.decision and peer.decision.rule else "no rule"
        _log(args, f"refused {peer.address}: {rule}")

    guard = server.Guarded(policy, args.daemon, refused, credentials=True)
    _log(args, f"listening on {endpoint}")
    try:
        if endpoint.stream:
            return _serve_stream(args, sock, guard, command)
        return _serve_datagrams(args, sock, guard, command)
    finally:
        sock.close()
        if endpoint.is_unix:
            unixpath.remove_own(endpoint.path, identity)


def _peer_env(peer: Any) -> dict[str, str]:
    env = dict(os.environ, SOCKSCOPE_PEER=peer.address)
    cred = peer.credentials
    if cred is not None:
        env.update(SOCKSCOPE_PEER_PID=str(cred.pid), SOCKSCOPE_PEER_UID=str(cred.uid),
                   SOCKSCOPE_PEER_GID=str(cred.gid))
    return env


def _serve_stream(args: argparse.Namespace, sock: Any, guard: Any, command: list[str] | None) -> int:
    from sockscope.services import server
    from sockscope.services.relay import relay

    children: list[subprocess.Popen[bytes]] = []
    in_fd: int | None = sys.stdin.fileno()
    while True:
        accepted = server.accept_checked(sock, guard)
        if accepted is None:
            continue
        conn, peer = accepted
        if command is None:
            _log(args, f"connection from {peer.address}")
            with conn:
                in_open = relay(conn, in_fd, sys.stdout.fileno(), stream=True)
            if not in_open:
                in_fd = None
            if peer.credentials:
                peer.credentials.close()
            if not args.keep_open:
                return 0
            continue
        children = [c for c in children if c.poll() is None]
        if args.max_conns is not None and len(children) >= args.max_conns:
            _log(args, f"closing {peer.address}: {args.max_conns} connections already")
            conn.close()
            continue
        _log(args, f"connection from {peer.address}")
        try:
            child = subprocess.Popen(command, stdin=conn.fileno(), stdout=conn.fileno(), env=_peer_env(peer))
        except OSError as exc:
            raise UsageError(f"--exec {command[0]}: {exc.strerror}") from None
        finally:
            conn.close()
            if peer.credentials:
                peer.credentials.close()
        children.append(child)
        if not args.keep_open:
            return child.wait()


def _serve_datagrams(args: argparse.Namespace, sock: Any, guard: Any, command: list[str] | None) -> int:
    from sockscope.services import server
    from sockscope.services.relay import relay

    last: list[object] = [None]

    def receive() -> tuple[bytes, object] | None:
        got = server.recv_checked(sock, guard)
        if got is None:
            return None
        data, address, peer = got
        if address:
            last[0] = address
        if command is None:
            return data, address
        result = subprocess.run(command, input=data, stdout=subprocess.PIPE, env=_peer_env(peer),
                                check=False, timeout=60)
        if address and result.stdout:
            sock.sendto(result.stdout, address)
        return b"", address

    relay(sock, sys.stdin.fileno() if command is None else None, sys.stdout.fileno(), stream=False,
          reply_to=lambda: last[0], recv=receive)
    return 0
