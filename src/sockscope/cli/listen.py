"""``sockscope listen``: a netcat server for TCP, UDP and Unix sockets, with a policy."""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
from typing import TYPE_CHECKING, Any

from sockscope.errors import SockscopeError, UsageError

from .check import add_policy_arguments, load_policy
from .netcat import SignalGate, add_relay_arguments, relay_options, run_until_signal, standard_streams

if TYPE_CHECKING:
    import socket

    from sockscope.services.relay import Input, Output
    from sockscope.services.server import Guarded

# How long --exec children get to end after the signal that ended the server,
# before they are killed.
CHILD_GRACE_S = 2.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.usage = "sockscope listen [options] ADDRESS"
    p.description = ("Listen on ADDRESS (tcp:HOST:PORT, udp:HOST:PORT, unix:/path, unix:@name, "
                     "unix-dgram:..., unix-seqpacket:...; PORT a number or a service name, 0 for any) "
                     "and relay stdin/stdout, as OpenBSD nc -l, or serve each connection with --exec. "
                     "With a policy, refused TCP clients are reset before a byte is read, UDP datagrams "
                     "dropped one by one, Unix peers refused at accept.")
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
    add_relay_arguments(p, listen=True)
    add_policy_arguments(p)


def _log(args: argparse.Namespace, text: str, *, always: bool = False) -> None:
    if args.verbose or always:
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


def parse_command(text: str | None) -> list[str] | None:
    """--exec's words (shell quoting, no shell), its program checked now rather than
    at the first client."""
    if text is None:
        return None
    try:
        command = shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"--exec {text!r}: {exc}") from None
    if not command:
        raise UsageError("--exec needs a command")
    program = command[0]
    if "/" in program:
        if not os.path.isfile(program) or not os.access(program, os.X_OK):
            why = "not an executable file" if os.path.exists(program) else "no such file"
            raise UsageError(f"--exec {program}: {why}")
    elif shutil.which(program) is None:
        raise UsageError(f"--exec {program}: not found in PATH")
    return command


def run(args: argparse.Namespace) -> int:
    from sockscope.services import server, unixpath
    from sockscope.services.address import parse_endpoint

    endpoint = parse_endpoint(args.address)
    if args.max_conns is not None and args.max_conns < 1:
        raise UsageError("--max-conns wants 1 or more")
    command = parse_command(args.exec)
    policy = load_policy(args, required=False)
    mode, owner = parse_mode(args.mode), parse_owner(args.owner)
    if (mode is not None or owner is not None) and (not endpoint.is_unix or endpoint.abstract):
        raise UsageError("--mode and --owner apply to unix socket files only")
    in_fd, out_fd = standard_streams()
    bound: list[tuple[socket.socket, tuple[int, int] | None]] = []  # the socket, its file's identity
    children: list[subprocess.Popen[bytes]] = []

    def refused(peer: server.Peer) -> None:
        rule = peer.decision.rule.where if peer.decision and peer.decision.rule else "no rule"
        _log(args, f"refused {peer.address}: {rule}")

    def body(gate: SignalGate) -> int:
        from sockscope.services.relay import Input, Output

        with gate.held():  # a signal now would leave the socket file behind
            sock = server.bind_endpoint(endpoint, mode=mode, owner=owner, family=args.family or 0)
            bound.append((sock, unixpath.file_identity(endpoint.path) if endpoint.is_unix else None))
        guard = server.Guarded(policy, args.daemon, refused, credentials=True)
        _log(args, f"listening on {server.bound_endpoint(endpoint, sock)}")
        source = Input(in_fd, crlf=args.crlf, detached=args.detach or command is not None)
        if not endpoint.stream:
            return _serve_datagrams(args, sock, guard, command, source, Output(out_fd))
        if command is not None:
            signal.signal(signal.SIGCHLD, lambda *_: _reap(children))  # no zombies between clients
            return _serve_exec(args, sock, guard, command, children, gate)
        return _serve_relay(args, sock, guard, source, Output(out_fd))

    def cleanup(signum: int) -> None:
        for sock, identity in bound:
            sock.close()
            if endpoint.is_unix:
                unixpath.remove_own(endpoint.path, identity)
        _end_children(children, signum)

    return run_until_signal(body, cleanup)


def _peer_env(peer: Any) -> dict[str, str]:
    env = dict(os.environ, SOCKSCOPE_PEER=peer.address)
    cred = peer.credentials
    if cred is not None:
        env.update(SOCKSCOPE_PEER_PID=str(cred.pid), SOCKSCOPE_PEER_UID=str(cred.uid),
                   SOCKSCOPE_PEER_GID=str(cred.gid))
    return env


def _serve_relay(args: argparse.Namespace, sock: socket.socket, guard: Guarded, source: Input,
                 sink: Output) -> int:
    from sockscope.services import server
    from sockscope.services.relay import relay_stream

    options = relay_options(args, listener=True)
    while True:
        accepted = server.accept_checked(sock, guard)
        if accepted is None:
            continue
        conn, peer = accepted
        with conn, peer:
            _log(args, f"connection from {peer.address}")
            how = relay_stream(conn, source, sink, options)
            if how != "done":
                _log(args, f"{peer.address}: {'idle for ' + str(args.wait) + ' s' if how == 'idle' else how}")
        if not args.keep_open:
            return 0


def _serve_exec(args: argparse.Namespace, sock: socket.socket, guard: Guarded, command: list[str],
                children: list[subprocess.Popen[bytes]], gate: SignalGate) -> int:
    from sockscope.services import server

    while True:
        accepted = server.accept_checked(sock, guard)
        if accepted is None:
            continue
        conn, peer = accepted
        with conn, peer:
            _reap(children)
            if args.max_conns is not None and len(children) >= args.max_conns:
                _log(args, f"closing {peer.address}: {args.max_conns} connections already")
                continue
            _log(args, f"connection from {peer.address}")
            try:
                with gate.held():  # a child started is a child recorded, for the cleanup to end it
                    children.append(subprocess.Popen(command, stdin=conn.fileno(), stdout=conn.fileno(),
                                                     env=_peer_env(peer)))
            except OSError as exc:
                # As socat's fork EXEC: this client is dropped, the server goes on.
                message = f"{peer.address}: --exec {command[0]}: {exc.strerror}"
                if not args.keep_open:
                    raise SockscopeError(message) from None
                _log(args, message, always=True)
                continue
        _reap(children)  # one that ended before it was recorded: its SIGCHLD found nothing to reap
        if not args.keep_open:
            return children[-1].wait()


def _reap(children: list[subprocess.Popen[bytes]]) -> None:
    """Collect the children that have ended (Popen.poll waits for none)."""
    children[:] = [c for c in children if c.poll() is None]


def _end_children(children: list[subprocess.Popen[bytes]], signum: int) -> None:
    """Pass the signal that ended the server on to its --exec children (as socat does),
    kill those still there after a grace period, and reap them all: no orphan keeps
    a client's connection, no zombie stays."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the handler's reaping would race this one
    _reap(children)
    if not children:
        return
    import time

    for child in children:
        child.send_signal(signum or signal.SIGTERM)
    deadline = time.monotonic() + CHILD_GRACE_S
    for child in children:
        try:
            child.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    children.clear()


def _serve_datagrams(args: argparse.Namespace, sock: socket.socket, guard: Guarded, command: list[str] | None,
                     source: Input, sink: Output) -> int:
    from sockscope.services import server
    from sockscope.services.relay import relay_datagrams

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
        try:
            result = subprocess.run(command, input=data, stdout=subprocess.PIPE, env=_peer_env(peer),
                                    check=False, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            _log(args, f"{peer.address}: --exec {command[0]}: {getattr(exc, 'strerror', None) or exc}",
                 always=True)
            return b"", address
        if address and result.stdout:
            sock.sendto(result.stdout, address)  # type: ignore[call-overload]
        return b"", address

    relay_datagrams(sock, source, sink, relay_options(args, listener=True), reply_to=lambda: last[0],
                    recv=receive)
    return 0
