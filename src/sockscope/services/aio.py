"""asyncio faces of the servers and clients.

The accept loop is ours rather than asyncio.start_server's, because asyncio's
protocol starts reading as soon as a connection is made: here the policy check
comes first and only an allowed connection is wrapped in streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from collections.abc import Awaitable, Callable

from sockscope.policy import Policy

from . import unixpath
from .address import Endpoint, parse_endpoint
from .server import Guarded, Peer, bind_endpoint

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, Peer], Awaitable[None]]


class AsyncServer:
    """Serves stream connections with ``handler(reader, writer, peer)``; closes as
    `asyncio.Server` does (``close()``, ``await wait_closed()``, ``async with``)."""

    def __init__(self, endpoint: Endpoint, handler: Handler, guard: Guarded, sock: socket.socket) -> None:
        self.endpoint, self.handler, self.guard, self.socket = endpoint, handler, guard, sock
        self._identity = unixpath.file_identity(endpoint.path) if endpoint.is_unix else None
        self._tasks: set[asyncio.Task[None]] = set()
        self._accepting: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, address = await loop.sock_accept(self.socket)
            except (ConnectionAbortedError, InterruptedError):
                continue
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    await asyncio.sleep(0.05)  # out of descriptors: clients wait in the backlog
                    continue
                raise
            policy = self.guard.policy
            if policy is not None and policy.uses_names and isinstance(address, tuple):
                # The decision may wait on DNS (host-name rules): in a worker thread,
                # one task per client, so the loop and the other clients go on meanwhile.
                self._track(asyncio.create_task(self._admit(conn, address)))
                continue
            peer = self.guard.check_connection(conn, address)
            if peer is None:
                continue
            self._track(asyncio.create_task(self._serve(conn, peer)))

    def _track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _admit(self, conn: socket.socket, address: object) -> None:
        try:
            peer = await asyncio.get_running_loop().run_in_executor(
                None, self.guard.check_connection, conn, address
            )
        except asyncio.CancelledError:
            conn.close()
            raise
        if peer is not None:
            await self._serve(conn, peer)

    async def _serve(self, conn: socket.socket, peer: Peer) -> None:
        if conn.family == socket.AF_UNIX:
            reader, writer = await asyncio.open_unix_connection(sock=conn)
        else:
            reader, writer = await asyncio.open_connection(sock=conn)
        try:
            await self.handler(reader, writer, peer)
        finally:
            if peer.credentials is not None:
                peer.credentials.close()
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._accepting = asyncio.create_task(self._accept_loop())

    def is_serving(self) -> bool:
        return self._accepting is not None and not self._accepting.done() and self.socket.fileno() >= 0

    async def serve_forever(self) -> None:
        if self._accepting is None:
            self.start()
        assert self._accepting is not None
        await self._accepting

    def close(self) -> None:
        """Stop accepting: the listening socket is closed (and its file removed) now.
        As `asyncio.Server.close`, connections being served go on; `wait_closed`
        waits for them, `close_clients` ends them."""
        if self._accepting is not None:
            self._accepting.cancel()
        if self.socket.fileno() >= 0:
            if self._loop is not None:
                self._loop.remove_reader(self.socket.fileno())
            self.socket.close()
            if self.endpoint.is_unix:
                unixpath.remove_own(self.endpoint.path, self._identity)

    def close_clients(self) -> None:
        """End the connections being served (their handlers are cancelled)."""
        for task in list(self._tasks):
            task.cancel()

    async def wait_closed(self) -> None:
        """Wait until `close` has taken effect and every connection has been served."""
        if self._accepting is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> AsyncServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self.wait_closed()


async def start_server(address: str | Endpoint, handler: Handler, *, policy: Policy | None = None,
                       daemon: str = "sockscope", mode: int | None = None,
                       owner: tuple[int, int] | None = None, backlog: int = 1024,
                       on_refused: Callable[[Peer], None] | None = None,
                       credentials: bool | None = None) -> AsyncServer:
    """Bind, listen and start accepting (stream endpoints). Unix peer credentials are
    read when a policy is set or ``credentials`` is true."""
    endpoint = parse_endpoint(address) if isinstance(address, str) else address
    if not endpoint.stream:
        from sockscope.errors import UsageError

        raise UsageError(f"{endpoint}: the asyncio server serves stream sockets")
    sock = bind_endpoint(endpoint, mode=mode, owner=owner, backlog=backlog)
    sock.setblocking(False)
    server = AsyncServer(endpoint, handler, Guarded(policy, daemon, on_refused, credentials), sock)
    server.start()
    return server


async def open_connection(address: str | Endpoint) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    endpoint = parse_endpoint(address) if isinstance(address, str) else address
    if endpoint.is_unix:
        if not endpoint.stream:
            from sockscope.errors import UsageError

            raise UsageError(f"{endpoint}: asyncio streams need a stream socket")
        if not endpoint.abstract:
            unixpath.check_path_length(endpoint.path)
        sock = socket.socket(socket.AF_UNIX, endpoint.socktype)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, endpoint.unix_address())
        except BaseException:
            sock.close()
            raise
        return await asyncio.open_unix_connection(sock=sock)
    return await asyncio.open_connection(endpoint.host or "localhost", endpoint.port)
