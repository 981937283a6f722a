"""How the inventory reacts when the kernel lacks a sock_diag handler."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from typing import Any

import pytest

from sockscope.errors import SockscopeError
from sockscope.inventory import query
from sockscope.netlink.codec import NetlinkError


class RefusingSocket:
    """A diag socket whose every dump fails with one errno, as a kernel without
    the handler (ENOENT) or a broken one (EIO) would answer."""

    def __init__(self, code: int) -> None:
        self.code = code

    def dump_payloads(self, *_: Any) -> Iterator[list[memoryview]]:
        raise NetlinkError(self.code, "refused")
        yield []  # pragma: no cover - makes this a generator like the real one

    def dump(self, *_: Any) -> Iterator[Any]:
        raise NetlinkError(self.code, "refused")
        yield None  # pragma: no cover


@pytest.mark.parametrize("kind", ["tcp", "udp", "raw", "unix", "packet"])
def test_missing_handler_means_fall_back(kind: str) -> None:
    dump = query._dump_kind(RefusingSocket(errno.ENOENT), kind, "inet" if kind in query.INET_PROTOS
                            else kind, "n", 0xFFFFFFFF, False, False, False, False, lambda i: None)
    with pytest.raises(query.NoDiagHandler):  # the caller reads /proc/net instead
        list(dump)


def test_other_kernel_errors_are_one_clear_message() -> None:
    with pytest.raises(SockscopeError, match="sock_diag dump of tcp sockets failed"):
        list(query._dump_kind(RefusingSocket(errno.EIO), "tcp", "inet", "n", 0xFFFFFFFF, False,
                              False, False, False, lambda i: None))
