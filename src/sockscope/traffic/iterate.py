"""``traffic()``: samples at a fixed interval, as an iterator or an async iterator."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence

from sockscope.errors import UsageError

from .model import TrafficSample
from .sampler import Sampler


class Traffic:
    """Samples every ``interval`` seconds, ``count`` of them (None: until closed).

    Iterate it (``for``) or async-iterate it (``async for``; the collection runs
    in a worker thread, so the event loop is not held up); close it, or use it as
    a context manager, to release its netlink sockets. The sampler is ready when
    this returns: the first sample counts what moves from then on.
    """

    def __init__(self, sampler: Sampler, interval: float, count: int | None) -> None:
        self.sampler = sampler
        self.interval = interval
        self.count = count
        self._taken = 0
        self._deadline = time.monotonic() + interval

    def __enter__(self) -> Traffic:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sampler.close()

    def _done(self) -> bool:
        return self.count is not None and self._taken >= self.count

    def _next_wait(self) -> float:
        """Seconds until the next sample is due; the deadlines stay on the grid
        the first one set, whatever a collection costs."""
        wait = self._deadline - time.monotonic()
        self._deadline += self.interval
        if wait < -self.interval:  # far behind (the caller was slow): start again from now
            self._deadline = time.monotonic() + self.interval
        return max(wait, 0.0)

    def __iter__(self) -> Iterator[TrafficSample]:
        try:
            while not self._done():
                time.sleep(self._next_wait())
                self._taken += 1
                yield self.sampler.collect()
        finally:
            if self._done():
                self.close()

    async def _samples(self) -> AsyncIterator[TrafficSample]:
        import asyncio

        try:
            while not self._done():
                await asyncio.sleep(self._next_wait())
                self._taken += 1
                yield await asyncio.to_thread(self.sampler.collect)
        finally:
            if self._done():
                self.close()

    def __aiter__(self) -> AsyncIterator[TrafficSample]:
        return self._samples()


def traffic(
    interval: float = 1.0,
    count: int | None = None,
    *,
    netns: str | Sequence[str] | None = None,
    filter: str | Sequence[str] | None = None,
    pid: int | Iterable[int] | None = None,
    user: str | int | None = None,
    command: str | None = None,
    source: str = "auto",
) -> Traffic:
    """Traffic samples of every network namespace (``netns`` narrows), one per
    ``interval`` seconds; ``count`` of them, or until closed.

    ``filter``: an ss filter expression over the sockets counted;
    ``pid``/``user``/``command``: only those processes' rows; ``source``: as
    ``Sampler``'s ("auto", "bpf", "capture", "counters").
    """
    if not interval > 0:
        raise UsageError("the interval must be positive")
    if count is not None and count < 1:
        raise UsageError("count must be at least 1")
    sampler = Sampler(netns, filter=filter, pid=pid, user=user, command=command, source=source)
    return Traffic(sampler, interval, count)
