"""``capture -r FILE`` on two cores: the text lines of a large file, in order.

Reading a record costs about a third of printing one, formatting the rest. Two
processes (the command and a forked child) each read the whole file -- a pcap file
has no markers to start reading in the middle -- but decode and format only every
other chunk, walking the other chunks' record headers to stay in step; a token
passed through two pipes lets them write their chunks' lines to standard output in
file order. Used for plain text output of a large regular file only: with -c,
JSON, -v, -e, the delta timestamps (-ttt, -ttttt) or standard input the command
reads in one process.

A damaged file: both processes stop at the same batch; the child exits quietly and
the command, once the child's last batch is out, reports the damage as usual. A
closed standard output (``| head``) or a failed child ends the other side at its
next turn (the token pipe reports end of file).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from sockscope.pcap.records import PcapError

from .capture_print import Printer

MIN_SIZE = 8 << 20  # below this, forking costs more than it saves
# The helper's exit status: why it stopped before the end.
_DAMAGE = 3
_OUTPUT_CLOSED = 4


def worth_it(args: argparse.Namespace) -> bool:
    if (args.read == "-" or args.write or args.count is not None or args.json or args.jsonl
            or args.verbose or args.link_header or args.time_style in (3, 5)):  # fmt: skip
        return False
    if (os.cpu_count() or 1) < 2 or len(os.sched_getaffinity(0)) < 2:
        return False
    try:
        return os.stat(args.read).st_size >= MIN_SIZE
    except OSError:
        return False  # the one-process path gives the error message


def read_in_two(args: argparse.Namespace, keep: Callable[..., list[object]] | None) -> int:
    """Print the file's lines with a forked helper; ``keep(batch, interfaces)`` filters."""
    from sockscope.pcap.files import open_reader

    sys.stdout.flush()
    to_parent_r, to_parent_w = os.pipe()
    to_child_r, to_child_w = os.pipe()
    pid = os.fork()
    me = 1 if pid == 0 else 0
    if me:
        os.close(to_parent_r)
        os.close(to_child_w)
        my_turn, their_turn = to_child_r, to_parent_w
    else:
        os.close(to_child_r)
        os.close(to_parent_w)
        my_turn, their_turn = to_parent_r, to_child_w
    error: BaseException | None = None
    finished = True
    try:
        finished = _print_share(args, open_reader(args.read), me, my_turn, their_turn, keep)
    except PcapError as exc:
        error = exc
    except BrokenPipeError as exc:
        if me:
            os._exit(_OUTPUT_CLOSED)
        error = exc
    except BaseException as exc:
        if me:
            os._exit(1)
        error = exc
    finally:
        os.close(their_turn)  # an end of file at the other side's next turn
        os.close(my_turn)
    if me:
        os._exit(_DAMAGE if error is not None else 0)
    _, status = os.waitpid(pid, 0)
    if error is None and not finished and os.waitstatus_to_exitcode(status) == _DAMAGE:
        # The helper met damage in a part we did not read: find it ourselves, so the
        # message is the one a single process gives (every line before it is out).
        for _ in open_reader(args.read).frames(share=(0, 1 << 30)):
            pass
    if error is not None:
        raise error
    return 0


def _print_share(args: argparse.Namespace, reader: object, me: int, my_turn: int, their_turn: int,
                 keep: Callable[..., list[object]] | None) -> bool:  # fmt: skip
    """This process's share of the lines; False when the other side stopped first."""
    from sockscope.pcap.files import Reader

    assert isinstance(reader, Reader)
    printer: Printer | None = None
    handing_over = True
    with reader:
        for j, batch in enumerate(reader.frames(share=(me, 2))):
            i = 2 * j + me  # the chunk's number in the file
            interfaces = reader.interfaces
            if keep is not None:
                batch = keep(batch, interfaces)  # type: ignore[assignment]
            if printer is None:
                printer = Printer(args, show_interface=any(f.name for f in interfaces))
            text = printer.file_lines(batch, interfaces).encode()
            if i > 0 and not os.read(my_turn, 1):
                return False  # the other side has stopped
            _write_all(text)
            if handing_over:
                try:
                    os.write(their_turn, b"t")
                except BrokenPipeError:
                    # The other side has finished, or met damage in a part it read
                    # ahead; reading on finds which (our next feed raises the damage).
                    handing_over = False
    return True


def _write_all(data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(1, view)
        view = view[n:]
