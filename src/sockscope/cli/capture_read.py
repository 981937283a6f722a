"""``sockscope capture -r FILE``: the packets of a pcap/pcapng file, filtered,
printed or written to another file. A damaged file gives every packet before the
damage, then one message naming the offset."""

from __future__ import annotations

import argparse
import gc
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from sockscope.capture.sink import FileSink, Rotation
from sockscope.pcap.files import Frame as FileFrame
from sockscope.pcap.records import Interface, Record

from .capture_print import Printer, pause_gc

if TYPE_CHECKING:
    from sockscope.capture.bpf import BpfProgram


def read_file(args: argparse.Namespace) -> int:
    """``capture -r FILE [FILTER]``: print (or ``-w``) the packets that match.

    Works a batch of records (one read chunk) at a time; a damaged file raises
    PcapError only after every packet before the damage is out.
    """
    from sockscope.capture.bpf import compile_filter

    from .capture_read_two import read_in_two, worth_it

    keep = _keeper(args, compile_filter) if args.filter_text else None
    paused = pause_gc()
    try:
        if worth_it(args):
            return read_in_two(args, keep)
        return _read_in_one(args, keep)
    finally:
        if paused:
            gc.enable()


def _read_in_one(args: argparse.Namespace, keep: Callable[..., list[object]] | None) -> int:
    from sockscope.pcap.files import open_reader

    reader = open_reader(sys.stdin.buffer if args.read == "-" else args.read)
    sink: FileSink | None = None
    printer: Printer | None = None
    remaining = args.count
    try:
        with reader:
            # Writing needs whole records; printing takes the cheaper plain tuples.
            batches = reader.batches() if args.write else reader.frames()
            for batch in batches:
                interfaces = reader.interfaces
                if keep is not None:
                    batch = keep(batch, interfaces)  # type: ignore[assignment]
                if remaining is not None:
                    batch = batch[:remaining]
                    remaining -= len(batch)
                if args.write:
                    if sink is None:
                        sink = _file_sink_for(args, reader.format == "pcapng", list(interfaces))
                    for record in batch:
                        sink.write_record(record)  # type: ignore[arg-type]
                else:
                    if printer is None:
                        printer = Printer(args, show_interface=any(i.name for i in interfaces))
                    printer.file_frames(batch, interfaces)  # type: ignore[arg-type]
                if remaining == 0:
                    break
    finally:
        if sink is not None:
            sink.close()
        if printer is not None:
            printer.close()
        elif args.json:
            sys.stdout.write("[]\n")
    return 0


def _keeper(
    args: argparse.Namespace, compile_filter: Callable[[str, int], BpfProgram]
) -> Callable[..., list[object]]:
    """A filter over batches of file frames or records, compiling the expression once
    per link type."""
    programs: dict[int, BpfProgram | None] = {}

    def keep(batch: list[FileFrame] | list[Record], interfaces: Sequence[Interface]) -> list[object]:
        for linktype in {i.linktype for i in interfaces} - programs.keys():
            programs[linktype] = compile_filter(args.filter_text, linktype)
        return [item for item in batch if _matches(programs, interfaces, item)]

    return keep


def _matches(
    programs: dict[int, BpfProgram | None], interfaces: Sequence[Interface], item: Record | FileFrame
) -> bool:
    if isinstance(item, Record):
        data, orig, iid = item.data, item.orig_len, item.interface_id
    else:
        _sec, _nsec, data, orig, iid, _direction = item
    program = programs[interfaces[iid].linktype]
    return program is None or program.matches(data, orig)


def _file_sink_for(args: argparse.Namespace, source_pcapng: bool, interfaces: list[Interface]) -> FileSink:
    pcapng = args.pcapng or args.write.endswith(".pcapng") or source_pcapng
    size = int(args.file_size * 1_000_000) if args.file_size else None
    rotation = Rotation(size, args.rotate_seconds, args.file_count)
    return FileSink(args.write, interfaces, pcapng, args.time_stamp_precision == "nano", rotation)
