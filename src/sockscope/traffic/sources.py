"""Traffic other than TCP's: which source counts it, and its rows.

``bpf`` (eBPF counters, ``datagrams.py``): UDP, ICMP and raw per calling process,
and per namespace the frames it passed on that no socket sent (``unowned``).
``capture`` (``capture_source.py``, where eBPF may not run): UDP per socket
holder. ``counters``: none. "auto" takes ``bpf``, else ``capture``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Final

from sockscope.errors import SockscopeError
from sockscope.inventory.model import Owner
from sockscope.platform import linux

from .rows import Rows

if TYPE_CHECKING:
    from sockscope.inventory.filter import SocketFilter

    from .capture_source import Key, UdpCapture, UdpSocket
    from .datagrams import DatagramCounters
    from .tcp import NamespaceTcp

SOURCE_COUNTERS: Final = "counters"  # TCP from tcp_info only
SOURCE_BPF: Final = "bpf"  # TCP from tcp_info; UDP, ICMP and raw from the eBPF send/receive counters
SOURCE_CAPTURE: Final = "capture"  # TCP from tcp_info; UDP from a header-only capture
SOURCES: Final = ("auto", SOURCE_BPF, SOURCE_CAPTURE, SOURCE_COUNTERS)


class OtherTraffic:
    """The source of non-TCP traffic ``source`` (one of ``SOURCES``, checked by the
    caller) asks for (``name`` says which runs;
    ``note``, when set, goes into every sample: what is not counted, and why)."""

    def __init__(self, source: str, refs: list[linux.NetnsRef]) -> None:
        self.name = SOURCE_COUNTERS
        self.note: str | None = None
        self._datagrams: DatagramCounters | None = None
        self._capture: UdpCapture | None = None
        self._last: tuple[dict[int, list[UdpSocket]], dict[int, Owner]] = ({}, {})
        why = ""
        if source in ("auto", SOURCE_BPF):
            from .datagrams import DatagramCounters

            try:
                self._datagrams = DatagramCounters()
                self.name = SOURCE_BPF
                return
            except (OSError, SockscopeError) as exc:
                why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                if source == SOURCE_BPF:
                    raise SockscopeError(f"the bpf traffic source cannot run here: {why}") from None
        if source == SOURCE_COUNTERS:
            self.note = "UDP, ICMP and raw traffic are not counted (source: counters)"
            return
        from .capture_source import UdpCapture

        self._capture = UdpCapture()
        self._capture.watch(refs)
        self.name = SOURCE_CAPTURE
        self.note = "ICMP and raw traffic are not counted (source: capture" + (
            f"; eBPF cannot run here: {why})" if why else ")")

    def sockets(self, namespaces: dict[int, NamespaceTcp], notes: list[str]) -> Captured:
        """Before the owner scan: with the capture source, the bytes captured since the
        last sample and each namespace's UDP sockets now (their holders are wanted)."""
        if self._capture is None:
            return {}, {}
        from .capture_source import UdpSocket

        notes += self._capture.watch([ns.ref for ns in namespaces.values()])
        sockets = {inode: [UdpSocket(*found) for found in ns.udp_sockets()]
                   for inode, ns in namespaces.items()}
        return self._capture.take(), sockets

    @staticmethod
    def inodes(captured: Captured) -> Iterable[int]:
        return (u.inode for found in captured[1].values() for u in found)

    def add_rows(self, rows: Rows, captured: Captured, owner_of: Callable[[int], Owner | None],
                 names: dict[int, str], flt: SocketFilter | None, interval: float) -> set[int]:
        """This source's bytes since the last sample into the rows (``owner_of``: a
        socket inode's holder; ``names``: the namespaces sampled, by inode). Returns
        the pids seen alive."""
        if self._datagrams is not None:
            from .datagrams import add_rows

            return add_rows(rows, self._datagrams.deltas(), self._datagrams.forwarded(), names,
                            flt, interval)
        if self._capture is None:
            return set()
        from .capture_source import add_captured_rows

        counts, sockets = captured
        owners = {u.inode: owner for found in sockets.values() for u in found
                  if (owner := owner_of(u.inode)) is not None}
        # A socket closed since the last sample (a sender that sent and exited) is
        # matched as that sample saw it.
        last_sockets, last_owners = self._last
        self._last = sockets, owners
        sockets = {netns: found + last_sockets.get(netns, []) for netns, found in sockets.items()}
        return add_captured_rows(rows, counts, sockets, {**last_owners, **owners}, names, flt, interval)

    def close(self) -> None:
        if self._datagrams is not None:
            self._datagrams.close()
            self._datagrams = None
        if self._capture is not None:
            self._capture.close()
            self._capture = None


Captured = tuple[dict["Key", int], dict[int, list["UdpSocket"]]]
