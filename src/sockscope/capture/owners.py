"""Which process a captured packet belongs to (``capture --owners``).

tcpdump cannot say which program sent or received a packet (its issue #299); the
socket inventory can. For a TCP or UDP packet the local end is either the
destination (arriving) or the source (leaving); the index maps (protocol, address,
port) of every local TCP/UDP socket in the capture's namespace to the processes
holding it, from one ``sockscope.sockets`` call. A packet of a flow the index does
not know refreshes it, at most once per ``refresh_s``: a connection that opens and
closes between two refreshes stays unattributed.
"""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING

from sockscope.packets.quick import FlowKey

if TYPE_CHECKING:  # the inventory's model is imported with the inventory, in refresh()
    from sockscope.inventory.model import Owner


def owner_text(owners: tuple[Owner, ...]) -> str:
    """ "nginx[812]", or "sshd[90],sshd[91]" for a socket several processes share."""
    return ",".join(f"{o.command}[{o.pid}]" for o in owners)


class OwnerIndex:
    """(proto, local address, local port) -> the processes holding that socket."""

    def __init__(self, netns: str | None = None, refresh_s: float = 0.5) -> None:
        self.netns = netns
        self.refresh_s = refresh_s
        self._table: dict[tuple[str, str, int], tuple[Owner, ...]] = {}
        self._loaded_at = -refresh_s
        self.refreshes = 0
        self.refresh()

    def refresh(self) -> None:
        from sockscope.inventory.model import InetAddress
        from sockscope.inventory.query import sockets

        table: dict[tuple[str, str, int], tuple[Owner, ...]] = {}
        for s in sockets(["tcp", "udp"], netns=self.netns):
            local = s.local
            if not s.owners or not isinstance(local, InetAddress):
                continue
            key = (s.proto, local.address, local.port)
            # A connected socket is more specific than the listener on the same port.
            if s.remote is not None or key not in table:
                table[key] = tuple(s.owners)
        self._table = table
        self._loaded_at = time.monotonic()
        self.refreshes += 1

    def owners_of(self, key: FlowKey | None, outgoing: bool = False) -> tuple[Owner, ...]:
        """The processes at the local end of the packet whose flow key is ``key``: the
        sender's for an outgoing packet, else the receiver's (on loopback both ends
        are local; the packet's direction says which one is meant)."""
        if key is None:
            return ()
        found = self._lookup(key, outgoing)
        if not found and time.monotonic() - self._loaded_at >= self.refresh_s:
            self.refresh()
            found = self._lookup(key, outgoing)
        return found

    def _lookup(self, key: FlowKey, outgoing: bool) -> tuple[Owner, ...]:
        version, proto_number = key[0], key[1]
        family, size = (socket.AF_INET, 4) if version == 4 else (socket.AF_INET6, 16)
        proto = "tcp" if proto_number == 6 else "udp"
        src, dst = key[2 : 2 + size], key[2 + size : 2 + 2 * size]
        sport = int.from_bytes(key[2 + 2 * size : 4 + 2 * size], "big")
        dport = int.from_bytes(key[4 + 2 * size : 6 + 2 * size], "big")
        ends = [(src, sport), (dst, dport)] if outgoing else [(dst, dport), (src, sport)]
        table = self._table
        for address, port in ends:
            for text in _candidates(version, socket.inet_ntop(family, address)):
                found = table.get((proto, text, port))
                if found:
                    return found
        return ()


def _candidates(version: int, text: str) -> tuple[str, ...]:
    """Local addresses a socket may show for a packet to ``text``: the address itself,
    its IPv4-mapped form on a dual-stack socket, and the wildcard binds."""
    if version == 4:
        return (text, f"::ffff:{text}", "0.0.0.0", "::")
    return (text, "::")
