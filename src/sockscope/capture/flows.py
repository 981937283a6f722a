"""Packets per TCP/UDP flow in a capture file (``capture -r FILE --flows``).

Flow keys come from ``packets.quick.flow_keyer`` (``flow_text`` renders one). A large
file is counted by two processes, each decoding every other chunk of the file (see
``Reader.frames(share=...)``) and the helper sending its counts back, as
``capture -r`` prints on two cores.
"""

from __future__ import annotations

import gc
import marshal
import os
from collections import Counter
from collections.abc import Callable

from sockscope.packets.quick import FlowKey, flow_keyer
from sockscope.pcap.files import open_reader
from sockscope.pcap.records import PcapError

TWO_PROCESS_SIZE = 8 << 20  # bytes of file below which one process is quicker


def count_flows(path: str, processes: int = 2) -> Counter[FlowKey]:
    """Packets per flow key in the pcap/pcapng file at ``path``; packets that are not
    TCP or UDP are not counted. ``processes=1`` keeps it in this process."""
    was_on = gc.isenabled()
    gc.disable()  # nothing here makes reference cycles; see cli.capture_print.pause_gc
    try:
        if processes < 2 or os.stat(path).st_size < TWO_PROCESS_SIZE or len(os.sched_getaffinity(0)) < 2:
            return _count(path, None)
        return _count_in_two(path)
    except FileNotFoundError as exc:
        raise PcapError(f"{path}: No such file or directory") from exc
    finally:
        if was_on:
            gc.enable()


def _count(path: str, share: tuple[int, int] | None) -> Counter[FlowKey]:
    counts: Counter[FlowKey | None] = Counter()  # None: not a TCP/UDP packet
    keyers: dict[int, Callable[[bytes], FlowKey | None]] = {}
    with open_reader(path) as reader:
        for batch in reader.frames(share):
            interfaces = reader.interfaces
            if len(interfaces) == 1:
                linktype = interfaces[0].linktype
                key = keyers.get(linktype) or keyers.setdefault(linktype, flow_keyer(linktype))
                counts.update(map(key, [frame[2] for frame in batch]))
            else:
                for frame in batch:
                    linktype = interfaces[frame[4]].linktype
                    key = keyers.get(linktype) or keyers.setdefault(linktype, flow_keyer(linktype))
                    counts[key(frame[2])] += 1
    counts.pop(None, None)
    return counts  # type: ignore[return-value]  # the None key is gone


def _count_in_two(path: str) -> Counter[FlowKey]:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the helper: every odd chunk, counts back through the pipe
        os.close(read_end)
        try:
            payload = marshal.dumps((None, dict(_count(path, (1, 2)))))
        except BaseException as exc:
            payload = marshal.dumps((str(exc), {}))
        with os.fdopen(write_end, "wb") as out:
            out.write(payload)
        os._exit(0)
    os.close(write_end)
    error: BaseException | None = None
    counts: Counter[FlowKey] = Counter()
    try:
        counts = _count(path, (0, 2))
    except BaseException as exc:
        error = exc
    with os.fdopen(read_end, "rb") as got:
        data = got.read()
    os.waitpid(pid, 0)
    if error is not None:
        raise error
    helper_error, theirs = marshal.loads(data) if data else ("the helper process failed", {})
    if helper_error is not None:
        raise PcapError(helper_error)
    counts.update(theirs)
    return counts
