"""The listeners' holders kept between collections: /proc walked again only when
a listener is new, a holder let go of it, or the refresh time passed (#16)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from sockscope.exporter.listeners import ListenerOwners

COMMAND = Path("/proc/self/comm").read_text().strip()


def inode(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino


def test_holders_are_checked_not_walked_again() -> None:
    owners = ListenerOwners(refresh=3600)
    with socket.create_server(("127.0.0.1", 0)) as one:
        assert owners.commands({inode(one)}) == {inode(one): {COMMAND}}
        assert owners.walks == 1
        for _ in range(3):
            assert owners.commands({inode(one)}) == {inode(one): {COMMAND}}
        assert owners.walks == 1  # the same listener, still held: a readlink, no walk
        with socket.create_server(("127.0.0.1", 0)) as two:
            found = owners.commands({inode(one), inode(two)})
            assert found == {inode(one): {COMMAND}, inode(two): {COMMAND}}
            assert owners.walks == 2  # a new listener: walked
            gone = inode(two)
        assert owners.commands({inode(one)}) == {inode(one): {COMMAND}}
        assert owners.walks == 2  # one closed: the others still checked, no walk
    # Closed: the readlink of its descriptor fails, so the next look walks again.
    assert owners.commands({gone}) == {gone: set()}
    assert owners.walks == 3


def test_a_moved_descriptor_is_noticed() -> None:
    owners = ListenerOwners(refresh=3600)
    lst = socket.create_server(("127.0.0.1", 0))
    try:
        ino = inode(lst)
        owners.commands({ino})
        moved = os.dup(lst.fileno())
        lst.close()  # the fd the walk found is gone; the socket lives on through `moved`
        try:
            assert owners.commands({ino}) == {ino: {COMMAND}}
            assert owners.walks == 2
        finally:
            os.close(moved)
    finally:
        lst.close()


def test_refresh_walks_again_and_no_holder_is_remembered() -> None:
    owners = ListenerOwners(refresh=0.0)
    with socket.create_server(("127.0.0.1", 0)) as lst:
        owners.commands({inode(lst)})
        owners.commands({inode(lst)})
    assert owners.walks == 2
    lazy = ListenerOwners(refresh=3600)
    unheld = 1  # no socket has inode 1: nobody holds it
    assert lazy.commands({unheld}) == {unheld: set()}
    assert lazy.commands({unheld}) == {unheld: set()}
    assert lazy.walks == 1  # known to have no holder: not walked again until the refresh


def test_no_listeners_no_walk() -> None:
    owners = ListenerOwners(refresh=0.0)
    assert owners.commands(set()) == {}
    assert owners.walks == 0
