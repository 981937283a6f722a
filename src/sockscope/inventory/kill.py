"""Destroy sockets through SOCK_DESTROY, as ``ss -K`` does.

The kernel aborts the socket (a TCP peer gets a RST, the owner's next call
fails with ECONNABORTED). Needs CONFIG_INET_DIAG_DESTROY and CAP_NET_ADMIN.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sockscope.errors import PermissionNeeded, SockscopeError, UsageError
from sockscope.netlink import sockdiag
from sockscope.netlink.codec import NetlinkError
from sockscope.netlink.socket import NETLINK_SOCK_DIAG, NetlinkSocket
from sockscope.platform import linux

from .model import Socket
from .query import start


@dataclass(slots=True)
class KillResult:
    socket: Socket
    ok: bool
    error: str | None = None  # why the kernel refused, when it did

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "error": self.error, "socket": self.socket.to_dict()}


def kill_sockets(
    filter: str | Sequence[str],
    *,
    proto: str | Sequence[str] = ("tcp", "udp"),
    family: str | Sequence[str] = ("inet", "inet6"),
    netns: str | None = None,
    dry_run: bool = False,
    listening: bool | None = None,
) -> list[KillResult]:
    """Destroy every TCP/UDP socket matching the ss filter expression ``filter``
    (``family``: inet, inet6 or both; ``listening``: as in ``sockets()``).

    An empty filter is refused: "kill everything" is never what a user meant.
    With ``dry_run`` nothing is destroyed; the results say what would be.
    """
    text = filter if isinstance(filter, str) else " ".join(filter)
    if not text.strip():
        raise UsageError("refusing to kill with an empty filter (it would match every socket)")
    protos = (proto,) if isinstance(proto, str) else tuple(proto)
    for p in protos:
        if p not in ("tcp", "udp"):
            raise UsageError(f"cannot destroy {p} sockets: SOCK_DESTROY covers tcp and udp")
    families = (family,) if isinstance(family, str) else tuple(family)
    for f in families:
        if f not in ("inet", "inet6"):
            raise UsageError(f"unknown family {f!r} (expected inet or inet6)")
    # TIME_WAIT and request sockets are destroyed too (tcp_abort takes them off
    # the hash tables), as ss -K does.
    targets = start(protos, families, filter=filter, netns=netns,
                    listening=listening).finish().sockets
    if dry_run or not targets:
        return [KillResult(s, True) for s in targets]
    ref = linux.resolve_netns(netns) if netns is not None else None
    results: list[KillResult] = []
    with linux.in_netns(ref):
        nl = NetlinkSocket(NETLINK_SOCK_DIAG)
    with nl:
        for sock in targets:
            try:
                nl.request(sockdiag.SOCK_DESTROY, sockdiag.destroy_request(sock))
                results.append(KillResult(sock, True))
            except NetlinkError as exc:
                if exc.errno == errno.EPERM:
                    raise PermissionNeeded("destroying sockets needs root (CAP_NET_ADMIN)") from None
                if exc.errno == errno.EOPNOTSUPP:
                    raise SockscopeError(
                        "this kernel cannot destroy sockets (built without CONFIG_INET_DIAG_DESTROY)"
                    ) from None
                # ENOENT: it closed on its own between the dump and now.
                results.append(KillResult(sock, False, exc.strerror))
    return results
