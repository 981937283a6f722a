"""Servers and clients over `Endpoint`s, with a policy enforced in process.

TCP clients are checked right after accept, before a byte is read (a refused
one is reset with SO_LINGER 0); UDP per datagram; Unix stream and seqpacket
peers at accept by their credentials; Unix datagrams by SCM_CREDENTIALS. A peer
that vanishes during the check is refused, never an error of the server.
"""

from __future__ import annotations

import errno
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from sockscope.errors import PermissionNeeded, SockscopeError, UsageError
from sockscope.policy import Client, Decision, Policy

from . import fdpass, unixpath
from .address import Endpoint, resolve_inet
from .credentials import PeerCredentials, family_of, peer_credentials

_LINGER_RESET = struct.pack("ii", 1, 0)


@dataclass
class Peer:
    """An accepted (or refused) client: its address and, for Unix, its credentials.

    The credentials may hold a pidfd: ``close()`` (or ``with peer:``) releases it at
    once; otherwise it is released when the credentials are garbage collected."""

    address: str
    credentials: PeerCredentials | None = None
    decision: Decision | None = None

    def close(self) -> None:
        if self.credentials is not None:
            self.credentials.close()

    def __enter__(self) -> Peer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def to_dict(self) -> dict[str, object]:
        return {"address": self.address,
                "credentials": self.credentials.to_dict() if self.credentials else None,
                "allowed": self.decision.allowed if self.decision else True,
                "rule": self.decision.rule.where if self.decision and self.decision.rule else None}


def unprivileged_port_start() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 1024


def _inet_bind_error(endpoint: Endpoint, exc: OSError) -> SockscopeError:
    where = str(endpoint)
    if exc.errno == errno.EACCES and 0 < endpoint.port:
        start = unprivileged_port_start()
        if endpoint.port < start:
            return PermissionNeeded(
                f"{where}: port {endpoint.port} is privileged: net.ipv4.ip_unprivileged_port_start is "
                f"{start}; run as root, grant CAP_NET_BIND_SERVICE (setcap cap_net_bind_service=+ep), "
                f"lower the sysctl, or use a port of {start} or more")
    if exc.errno == errno.EADDRINUSE:
        return SockscopeError(f"{where}: address already in use")
    if exc.errno == errno.EADDRNOTAVAIL:
        return SockscopeError(f"{where}: no interface has this address")
    if exc.errno == errno.EAFNOSUPPORT:
        return UsageError(f"{where}: address family not supported")
    return SockscopeError(f"{where}: cannot bind: {exc.strerror}")


def bind_endpoint(endpoint: Endpoint, *, mode: int | None = None, owner: tuple[int, int] | None = None,
                  backlog: int = 128, family: int = socket.AF_UNSPEC) -> socket.socket:
    """A socket bound (and listening, for stream kinds) at endpoint. ``family``
    AF_INET or AF_INET6 keeps an INET endpoint to one (an empty host with AF_INET6
    then listens for IPv6 only)."""
    if endpoint.is_unix:
        sock = socket.socket(socket.AF_UNIX, endpoint.socktype)
        try:
            unixpath.bind_unix(sock, endpoint.path, mode, owner)
            if endpoint.stream:
                sock.listen(backlog)
            else:
                fdpass.enable_credentials(sock)  # per-datagram checks need the sender
        except BaseException:
            sock.close()
            raise
        return sock
    if mode is not None or owner is not None:
        raise UsageError("--mode and --owner apply to unix socket files only")
    last: OSError | None = None
    for fam, sockaddr in resolve_inet(endpoint, passive=True, family=family):
        sock = socket.socket(fam, endpoint.socktype)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if fam == socket.AF_INET6 and not endpoint.host:
                # dual stack, unless IPv6 alone was asked for
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(family == socket.AF_INET6))
            sock.bind(sockaddr)
            if endpoint.stream:
                sock.listen(backlog)
            return sock
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EAFNOSUPPORT:
                last = exc
                continue
            raise _inet_bind_error(endpoint, exc) from None
    assert last is not None
    raise _inet_bind_error(endpoint, last)


def bound_endpoint(endpoint: Endpoint, sock: socket.socket) -> Endpoint:
    """The endpoint as bound: port 0 replaced by the port the kernel chose."""
    if endpoint.is_unix or endpoint.port:
        return endpoint
    return Endpoint(endpoint.kind, host=endpoint.host, port=sock.getsockname()[1])


def connect_endpoint(endpoint: Endpoint, timeout: float | None = 10.0, *, family: int = socket.AF_UNSPEC,
                     source: tuple[str, int] | None = None) -> socket.socket:
    """A socket connected to endpoint (datagram: default destination set).
    ``family`` keeps to IPv4 or IPv6 (nc -4/-6); ``source`` = (address, port) binds
    the local end first (nc -s/-p; "" for any address, 0 for any port)."""
    if endpoint.is_unix:
        if source is not None:
            raise UsageError("a source address and port apply to tcp and udp only")
        if not endpoint.abstract:
            unixpath.check_path_length(endpoint.path)
        sock = socket.socket(socket.AF_UNIX, endpoint.socktype)
        try:
            if not endpoint.stream:
                sock.bind(b"")  # autobind (Linux): the server needs an address to reply to
            sock.settimeout(timeout)
            sock.connect(endpoint.unix_address())
            sock.settimeout(None)
        except OSError as exc:
            sock.close()
            raise SockscopeError(f"{endpoint}: {_connect_error(exc)}") from None
        return sock
    if source is not None and source[0] and family == socket.AF_UNSPEC:
        family = _literal_family(source[0])  # a source address picks the destination's family
    last_error = "no address"
    for fam, sockaddr in resolve_inet(endpoint, passive=False, family=family):
        sock = socket.socket(fam, endpoint.socktype)
        try:
            if source is not None:
                _bind_source(sock, fam, source, endpoint)
            sock.settimeout(timeout)
            sock.connect(sockaddr)
            sock.settimeout(None)
            return sock
        except SockscopeError:
            sock.close()
            raise
        except OSError as exc:
            sock.close()
            last_error = _connect_error(exc)
    raise SockscopeError(f"{endpoint}: {last_error}")


def _literal_family(host: str) -> int:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
            return family
        except OSError:
            continue
    return socket.AF_UNSPEC


def _connect_error(exc: OSError) -> str:
    if isinstance(exc, TimeoutError) and exc.errno is None:
        return "timed out"
    return exc.strerror or str(exc)


def _bind_source(sock: socket.socket, family: int, source: tuple[str, int], endpoint: Endpoint) -> None:
    host, port = source
    where = f"source {host or '*'}:{port}" if ":" not in host else f"source [{host}]:{port}"
    if host:
        try:
            infos = socket.getaddrinfo(host, port, family, endpoint.socktype, 0, socket.AI_PASSIVE)
        except socket.gaierror:
            raise UsageError(f"{where}: not an {'IPv6' if family == socket.AF_INET6 else 'IPv4'} "
                             f"address or name (the destination is {endpoint})") from None
        sockaddr = infos[0][4]
    else:
        sockaddr = ("::", port) if family == socket.AF_INET6 else ("0.0.0.0", port)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(sockaddr)
    except OSError as exc:
        if exc.errno == errno.EADDRNOTAVAIL:
            raise SockscopeError(f"{where}: no interface has this address") from None
        if exc.errno == errno.EADDRINUSE:
            raise SockscopeError(f"{where}: address already in use") from None
        if exc.errno == errno.EACCES:
            raise PermissionNeeded(f"{where}: port {port} is privileged (needs CAP_NET_BIND_SERVICE)"
                                   ) from None
        raise SockscopeError(f"{where}: cannot bind: {exc.strerror}") from None


def _address_text(address: object) -> str:
    if isinstance(address, tuple):
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    if isinstance(address, bytes):
        return "@" + address[1:].decode(errors="replace") if address[:1] == b"\0" else address.decode()
    return str(address) if address else "(unnamed)"


class Guarded:
    """A policy for one daemon name, applied to the clients of one server."""

    def __init__(self, policy: Policy | None, daemon: str,
                 on_refused: Callable[[Peer], None] | None = None, credentials: bool | None = None) -> None:
        self.policy, self.daemon, self.on_refused = policy, daemon, on_refused
        # Unix peer credentials: always when a policy is set, else on request.
        self.credentials = policy is not None if credentials is None else credentials
        # The pidfd at accept only for exe: rules; otherwise when first asked for.
        self.pidfd = policy is not None and policy.uses_exe

    def _refuse(self, peer: Peer) -> None:
        if self.on_refused is not None:
            self.on_refused(peer)

    def check_connection(self, conn: socket.socket, address: object) -> Peer | None:
        """The peer of a freshly accepted connection if allowed; else closes it and returns None."""
        peer = Peer(_address_text(address))
        try:
            if not isinstance(address, tuple):  # AF_UNIX: a path, bytes or ''
                if not self.credentials:
                    return peer
                cred = peer.credentials = peer_credentials(conn, pidfd=self.pidfd)
                if peer.address == "(unnamed)":
                    peer.address = f"pid {cred.pid} uid {cred.uid} gid {cred.gid}"
                client: Client | str | PeerCredentials = cred
            else:
                client = str(address[0]).split("%")[0]  # decide() parses it without ipaddress
        except (OSError, SockscopeError):
            _reset(conn, peer)  # vanished during the check: refused
            self._refuse(peer)
            return None
        if self.policy is None:
            return peer
        peer.decision = self.policy.decide(self.daemon, client)
        if peer.decision.allowed:
            return peer
        _reset(conn, peer)
        self._refuse(peer)
        return None

    def check_datagram(self, address: object, cred: tuple[int, int, int] | None) -> Peer | None:
        peer = Peer(_address_text(address))
        if self.policy is None:
            return peer
        client: Client | str | PeerCredentials
        if isinstance(address, tuple):
            client = str(address[0]).split("%")[0]
        elif cred is not None:
            peer.credentials = PeerCredentials(*cred)
            peer.address += f" (pid {cred[0]} uid {cred[1]} gid {cred[2]})"
            client = peer.credentials
        else:
            client = Client()  # no credentials: only ALL can match
        peer.decision = self.policy.decide(self.daemon, client)
        if peer.decision.allowed:
            return peer
        self._refuse(peer)
        return None


def _reset(conn: socket.socket, peer: Peer) -> None:
    if peer.credentials is not None:
        peer.credentials.close()
    try:
        if family_of(conn) != socket.AF_UNIX:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    except OSError:
        pass
    conn.close()


def accept_checked(listener: socket.socket, guard: Guarded) -> tuple[socket.socket, Peer] | None:
    """One accept plus the policy check; None if the client was refused or vanished."""
    try:
        conn, address = listener.accept()
    except (ConnectionAbortedError, InterruptedError):
        return None
    except OSError as exc:
        if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
            time.sleep(0.05)  # out of descriptors: the client waits in the backlog
            return None
        raise
    peer = guard.check_connection(conn, address)
    return (conn, peer) if peer is not None else None


def recv_checked(sock: socket.socket, guard: Guarded, bufsize: int = 65536
                 ) -> tuple[bytes, object, Peer] | None:
    """One datagram and its sender if the policy allows it (refused ones are dropped)."""
    if family_of(sock) == socket.AF_UNIX:
        data, cred, address = fdpass.recv_credentials(sock, bufsize)
    else:
        data, address = sock.recvfrom(bufsize)
        cred = None
    peer = guard.check_datagram(address, cred)
    return (data, address, peer) if peer is not None else None


class Server:
    """A bound endpoint with a policy: ``accept()`` returns only allowed clients,
    ``recv()`` only allowed datagrams; ``close()`` removes the socket file."""

    def __init__(self, address: str | Endpoint, *, policy: Policy | None = None, daemon: str = "sockscope",
                 mode: int | None = None, owner: tuple[int, int] | None = None, backlog: int = 128,
                 on_refused: Callable[[Peer], None] | None = None, credentials: bool = True) -> None:
        from .address import parse_endpoint

        self.endpoint = parse_endpoint(address) if isinstance(address, str) else address
        self.socket = bind_endpoint(self.endpoint, mode=mode, owner=owner, backlog=backlog)
        self.guard = Guarded(policy, daemon, on_refused, credentials)
        self._identity = unixpath.file_identity(self.endpoint.path) if self.endpoint.is_unix else None

    def accept(self) -> tuple[socket.socket, Peer]:
        while True:
            accepted = accept_checked(self.socket, self.guard)
            if accepted is not None:
                return accepted

    def recv(self, bufsize: int = 65536) -> tuple[bytes, object, Peer]:
        while True:
            got = recv_checked(self.socket, self.guard, bufsize)
            if got is not None:
                return got

    def close(self) -> None:
        self.socket.close()
        if self.endpoint.is_unix:
            unixpath.remove_own(self.endpoint.path, self._identity)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
