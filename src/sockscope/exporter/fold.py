"""Per-process series with a bounded cardinality.

At most ``max_series`` process label sets are exported, the busiest of each
collection (bytes moved since the previous one, then connections held; a set
already exported wins a tie, so idle processes do not trade places); everything
else is added into one set labelled ``command="other"``.

Every exported counter stays monotonic however processes move in and out of the
kept sets: ``other`` accumulates the increase of each folded set since the
previous collection rather than summing their totals, so a set that leaves the
fold does not take its bytes back out of it, and a set that enters the fold
adds only what it moves from then on (its own series simply stops).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

OTHER = "other"

class ProcessTotals(Protocol):
    """Per-process totals as ``sockscope.traffic.Sampler.totals()`` gives them."""

    @property
    def command(self) -> str: ...
    @property
    def user(self) -> str | None: ...
    @property
    def netns(self) -> str: ...
    @property
    def container(self) -> str | None: ...
    @property
    def pid(self) -> int | None: ...
    @property
    def tcp_sent_bytes(self) -> int: ...
    @property
    def tcp_received_bytes(self) -> int: ...
    @property
    def tcp_retransmitted_segments(self) -> int: ...
    @property
    def udp_sent_bytes(self) -> int: ...
    @property
    def udp_received_bytes(self) -> int: ...
    @property
    def connections(self) -> int: ...


# command, user, netns, container, pid ("" where there is none)
ProcessKey = tuple[str, str, str, str, str]
Counts = tuple[int, ...]  # a row's counters, in COUNTERS order

# The counters of a row, as (ProcessRow attribute, ProcessTotals attribute).
COUNTERS = (("sent", "tcp_sent_bytes"), ("received", "tcp_received_bytes"),
            ("retransmitted", "tcp_retransmitted_segments"), ("udp_sent", "udp_sent_bytes"),
            ("udp_received", "udp_received_bytes"))


@dataclass(slots=True)
class ProcessRow:
    """One exported process label set and its values."""

    command: str
    user: str
    netns: str
    container: str
    pid: str
    connections: int = 0
    sent: int = 0
    received: int = 0
    retransmitted: int = 0
    udp_sent: int = 0
    udp_received: int = 0

    @property
    def key(self) -> ProcessKey:
        return (self.command, self.user, self.netns, self.container, self.pid)

    @property
    def counts(self) -> Counts:
        return tuple(getattr(self, name) for name, _ in COUNTERS)

    def add(self, counts: Counts) -> None:
        for (name, _), value in zip(COUNTERS, counts, strict=True):
            setattr(self, name, getattr(self, name) + value)

    @classmethod
    def of(cls, t: ProcessTotals) -> ProcessRow:
        row = cls(t.command, t.user or "", t.netns, t.container or "",
                  "" if t.pid is None else str(t.pid), t.connections)
        row.add(tuple(getattr(t, total) for _, total in COUNTERS))
        return row


class Folding:
    """The state that keeps the folded series monotonic across collections."""

    def __init__(self, max_series: int) -> None:
        if max_series < 1:
            raise ValueError("max_series must be at least 1")
        self.max_series = max_series
        self._last: dict[ProcessKey, Counts] = {}
        self._kept: set[ProcessKey] = set()
        self._other: ProcessRow | None = None
        self.folded = 0  # label sets folded into "other" by the last call

    def fold(self, totals: Sequence[ProcessTotals]) -> list[ProcessRow]:
        """The rows to export for these totals (one collection's)."""
        current: dict[ProcessKey, ProcessRow] = {}
        for t in totals:
            new = ProcessRow.of(t)
            row = current.get(new.key)
            if row is None:
                current[new.key] = new
                continue
            row.connections += new.connections
            row.add(new.counts)
        increases = {key: self._increase(key, row) for key, row in current.items()}
        self._last = {key: row.counts for key, row in current.items()}

        def busiest(key: ProcessKey) -> tuple[int, bool, int]:
            sent, received, _, udp_sent, udp_received = increases[key]
            return (sent + received + udp_sent + udp_received, key in self._kept, current[key].connections)

        ranked = sorted(current, key=busiest, reverse=True)
        kept = ranked[: self.max_series]
        folded = ranked[self.max_series:]
        self._kept = set(kept)
        self.folded = len(folded)
        rows = [current[key] for key in kept]
        if folded and self._other is None:
            self._other = ProcessRow(OTHER, "", "", "", "")
        other = self._other
        if other is not None:
            other.connections = 0
            for key in folded:
                other.add(increases[key])
                other.connections += current[key].connections
            rows.append(other)  # once it exists it stays, so its counters never vanish
        return rows

    def _increase(self, key: ProcessKey, row: ProcessRow) -> Counts:
        """What the set moved since the previous collection; all of it for a new set,
        and for one whose totals went backwards (dropped and made again by the
        sampler): its counters restarted."""
        last = self._last.get(key)
        now = row.counts
        if last is None or any(n < b for n, b in zip(now, last, strict=True)):
            return now
        return tuple(n - b for n, b in zip(now, last, strict=True))
