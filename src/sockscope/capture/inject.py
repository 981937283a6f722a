"""Sending link-layer frames through a packet socket: one frame, or a capture file
replayed with its original timing, a speed multiplier, a fixed rate or flat out (as
tcpreplay does)."""

from __future__ import annotations

import errno
import os
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass

from sockscope.capture.packet_socket import link_info, open_sender
from sockscope.errors import SockscopeError, UsageError
from sockscope.packets.packet import LINKTYPE_ETHERNET
from sockscope.platform.linux import in_netns, resolve_netns

# <linux/if_arp.h> ARPHRD types that take Ethernet frames.
_ETHERNET_HATYPES = {1, 772}


@dataclass(frozen=True, slots=True)
class ReplayResult:
    sent: int
    bytes: int
    seconds: float
    failed: int  # frames the kernel refused (e.g. larger than the MTU)
    first_error: str | None = None

    @property
    def rate_pps(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


def _sender(interface: str, netns: str | None) -> tuple[socket.socket, int]:
    with in_netns(resolve_netns(netns) if netns else None):
        _index, hatype = link_info(interface, "sending frames")
        return open_sender(interface), hatype


def send_frame(interface: str, frame: bytes, netns: str | None = None) -> None:
    """Send one whole frame (link header included) out of ``interface``."""
    result = send_frames(interface, [frame], netns=netns)
    if result.failed:
        raise SockscopeError(f"cannot send on {interface}: {result.first_error}")


def send_frames(interface: str, frames: Iterable[bytes], netns: str | None = None) -> ReplayResult:
    """Send frames back to back; refusals are counted, not raised."""
    return _send(interface, ((0, f) for f in frames), netns, pace=None)


def replay(
    interface: str,
    path: str,
    *,
    netns: str | None = None,
    multiplier: float | None = 1.0,
    pps: float | None = None,
    loops: int = 1,
    count: int | None = None,
) -> ReplayResult:
    """Replay the frames of a pcap/pcapng file out of ``interface``.

    Timing: the file's own gaps divided by ``multiplier`` (default 1.0: as captured),
    or ``pps`` frames a second, or as fast as possible (``multiplier=None`` and no
    ``pps``). The file must hold Ethernet frames: a cooked capture (``-i any``) has
    no link header to put on the wire.
    """
    from sockscope.pcap.files import open_reader

    if multiplier is not None and multiplier <= 0:
        raise UsageError(f"multiplier must be positive, not {multiplier}")
    if pps is not None and pps <= 0:
        raise UsageError(f"packets per second must be positive, not {pps}")
    if loops < 1:
        raise UsageError(f"loop count must be at least 1, not {loops}")

    def timed_frames() -> Iterable[tuple[int, bytes]]:
        n = 0
        for _ in range(loops):
            with open_reader(path) as reader:
                for record in reader:
                    linktype = reader.interfaces[record.interface_id].linktype
                    if linktype != LINKTYPE_ETHERNET:
                        raise UsageError(
                            f"{path}: link type {linktype} frames cannot be sent on an Ethernet interface "
                            "(only Ethernet captures can be replayed; a -i any capture is cooked)"
                        )
                    yield record.timestamp_ns, record.data
                    n += 1
                    if count is not None and n >= count:
                        return

    pace = ("pps", pps) if pps else (("file", multiplier) if multiplier else None)
    return _send(interface, timed_frames(), netns, pace)


def _send(
    interface: str, frames: Iterable[tuple[int, bytes]], netns: str | None, pace: tuple[str, float] | None
) -> ReplayResult:
    sock, hatype = _sender(interface, netns)
    if hatype not in _ETHERNET_HATYPES:
        sock.close()
        raise UsageError(f"{interface} is not an Ethernet interface (ARPHRD {hatype}): cannot send frames")
    sent = nbytes = failed = 0
    first_error: str | None = None
    start = time.monotonic()
    first_ts: int | None = None
    try:
        for i, (ts, frame) in enumerate(frames):
            if pace is not None:
                if pace[0] == "pps":
                    due = start + i / pace[1]
                else:
                    first_ts = ts if first_ts is None else first_ts
                    due = start + (ts - first_ts) / 1e9 / pace[1]
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            try:
                sock.send(frame)
            except OSError as e:
                if e.errno == errno.ENOBUFS:  # the device queue is full: wait and retry once
                    time.sleep(0.001)
                    try:
                        sock.send(frame)
                    except OSError as e2:
                        e = e2
                    else:
                        sent += 1
                        nbytes += len(frame)
                        continue
                failed += 1
                if first_error is None:
                    first_error = f"frame {i + 1} ({len(frame)} bytes): {os.strerror(e.errno or 0)}"
                continue
            sent += 1
            nbytes += len(frame)
    finally:
        sock.close()
    return ReplayResult(sent, nbytes, time.monotonic() - start, failed, first_error)
