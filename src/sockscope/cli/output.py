"""Output helpers shared by the commands: aligned tables, JSON, JSON lines, CSV.

Text is written in large pieces: 20,000 rows must not cost 20,000 writes.
Small outputs are built as one string (``table``, ``dump_*``); listings that
may be huge are written as they are produced (``write_lines`` over the
``*_lines`` generators, ``Table`` and ``StreamedTable`` for tables), so their
memory does not grow with their length.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # not `from typing import ...`: see sockscope/__init__.py (start-up time)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence
    from typing import Any, TextIO


def table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], right: Iterable[int] = (), header: bool = True
) -> str:
    """Columns padded to their widest cell; columns in ``right`` are right-aligned.
    The last column is never padded (it holds free text such as process lists)."""
    built = Table(headers, right, header)
    for row in rows:
        built.add(row)
    return "".join(built.lines())


def write(text: str, stream: TextIO | None = None) -> None:
    _stream(stream).write(text)


def _stream(stream: TextIO | None) -> TextIO:
    """``stream``, else standard output; a closed one (``>&-``) is a write error."""
    out = stream or sys.stdout
    if out is None:
        from .stdout import WriteError

        raise WriteError("write error: standard output is closed")
    return out


def dump_json(items: Sequence[Any]) -> str:
    import json

    return json.dumps(items, indent=1) + "\n"


def dump_jsonl(items: Iterable[Any]) -> str:
    import json

    dumps = json.JSONEncoder(separators=(",", ":")).encode
    return "".join(dumps(item) + "\n" for item in items)


def dump_csv(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(headers)
    writer.writerows(rows)
    return buf.getvalue()


_CHUNK = 1 << 16  # characters per write of a stream


def write_lines(lines: Iterable[str], stream: TextIO | None = None) -> None:
    """Write ``lines`` (each with its newline) as they come, about 64 KiB at a time."""
    out = _stream(stream)
    pending: list[str] = []
    size = 0
    for line in lines:
        pending.append(line)
        size += len(line)
        if size >= _CHUNK:
            out.write("".join(pending))
            pending.clear()
            size = 0
    if pending:
        out.write("".join(pending))


def jsonl_lines(items: Iterable[Any]) -> Iterator[str]:
    import json

    dumps = json.JSONEncoder(separators=(",", ":")).encode
    for item in items:
        yield dumps(item) + "\n"


def json_array_lines(items: Iterable[Any]) -> Iterator[str]:
    """The text of ``dump_json(list(items))``, an item at a time."""
    import json

    encode = json.JSONEncoder(indent=1).encode
    first = True
    for item in items:
        # An item inside the array is the item alone, one level deeper.
        yield ("[\n " if first else ",\n ") + encode(item).replace("\n", "\n ")
        first = False
    yield "[]\n" if first else "\n]\n"


def csv_lines(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> Iterator[str]:
    import csv

    pending: list[str] = []
    writer = csv.writer(_Appender(pending), lineterminator="\n")
    writer.writerow(headers)
    yield pending.pop()
    for row in rows:
        writer.writerow(row)
        yield pending.pop()


class _Appender:
    """A file-like object for csv.writer that collects what it writes."""

    def __init__(self, into: list[str]) -> None:
        self.write = into.append


class Table:
    """An aligned table built a row at a time and kept compact: each block of rows
    is one string with the cell lengths in an array, not a list of strings per row
    (about 1 byte a character plus 4 a cell, where lists of str take ~60 a cell).

    Columns are padded to their widest cell; columns in ``right`` are
    right-aligned. The last column is never padded (free text such as process
    lists); it may be left out of ``add`` and supplied at ``lines(last=...)``,
    given the row's number. A row may carry a ``detail`` line, printed under it
    after a tab.
    """

    _BLOCK = 1024  # rows joined into one string

    def __init__(self, headers: Sequence[str], right: Iterable[int] = (), header: bool = True) -> None:
        self.headers = list(headers)
        self.right = set(right)
        self.header = header
        self._stride = len(self.headers) + 1  # the cells' lengths, then the detail's
        from array import array

        self._lengths = array("I")
        self._blocks: list[str] = []
        self._pending: list[str] = []
        self._rows = 0

    def __len__(self) -> int:
        return self._rows

    def add(self, cells: Sequence[str], detail: str = "") -> None:
        lengths = [len(c) for c in cells]
        lengths += [0] * (self._stride - 1 - len(lengths))
        lengths.append(len(detail))
        self._lengths.extend(lengths)
        self._pending.append("".join(cells) + detail)
        self._rows += 1
        if len(self._pending) >= self._BLOCK:
            self._blocks.append("".join(self._pending))
            self._pending.clear()

    def widths(self, extra: Sequence[Sequence[str]] = ()) -> list[int]:
        lengths, stride = self._lengths, self._stride
        widths = [len(h) if self.header else 0 for h in self.headers]
        for i in range(len(widths) - 1):
            if self._rows:
                widths[i] = max(widths[i], max(lengths[i::stride]))
            for row in extra:
                widths[i] = max(widths[i], len(row[i]))
        return widths

    def lines(self, last: Callable[[int], str] | None = None) -> Iterator[str]:
        """The rendered lines (each with its newline); the rows are freed as they go."""
        fmt = _row_format(self.widths(), self.right)
        if self.header:
            yield fmt(*self.headers).rstrip() + "\n"
        if self._pending:
            self._blocks.append("".join(self._pending))
            self._pending = []
        lengths, stride, ncols = self._lengths, self._stride, len(self.headers)
        row = 0
        blocks, self._blocks = self._blocks, []
        blocks.reverse()
        while blocks:
            text = blocks.pop()
            pos = 0
            for _ in range(min(self._BLOCK, self._rows - row)):
                cells = []
                base = row * stride
                for i in range(ncols):
                    n = lengths[base + i]
                    cells.append(text[pos : pos + n])
                    pos += n
                n = lengths[base + ncols]
                detail = text[pos : pos + n]
                pos += n
                if last is not None:
                    cells[-1] = last(row)
                line = fmt(*cells) if cells[-1] else fmt(*cells).rstrip()
                yield line + "\n" + ("\t" + detail + "\n" if detail else "")
                row += 1


class StreamedTable:
    """A table written as rows come, in blocks (as ss does): each block is padded to
    the widest cells seen so far, so columns line up unless a later value is wider.
    Memory: one block."""

    _BLOCK = 1000

    def __init__(self, headers: Sequence[str], right: Iterable[int] = (), header: bool = True,
                 stream: TextIO | None = None) -> None:
        self.headers = list(headers)
        self.right = set(right)
        self.header = header
        self.stream = _stream(stream)
        self._widths = [len(h) if header else 0 for h in headers]
        self._rows: list[tuple[Sequence[str], str]] = []

    def add(self, cells: Sequence[str], detail: str = "") -> None:
        self._rows.append((cells, detail))
        if len(self._rows) >= self._BLOCK:
            self.flush()

    def flush(self) -> None:
        rows, self._rows = self._rows, []
        widths = self._widths
        for cells, _ in rows:
            for i in range(len(widths) - 1):
                if len(cells[i]) > widths[i]:
                    widths[i] = len(cells[i])
        fmt = _row_format(widths, self.right)
        out: list[str] = []
        if self.header:
            out.append(fmt(*self.headers).rstrip() + "\n")
            self.header = False
        for cells, detail in rows:
            out.append((fmt(*cells) if cells[-1] else fmt(*cells).rstrip()) + "\n")
            if detail:
                out.append("\t" + detail + "\n")
        if out:
            self.stream.write("".join(out))


def _row_format(widths: Sequence[int], right: set[int]) -> Callable[..., str]:
    parts = []
    for i, width in enumerate(widths):
        if i == len(widths) - 1:
            parts.append("{}")
        elif i in right:
            parts.append(f"{{:>{width}}}")
        else:
            parts.append(f"{{:<{width}}}")
    return " ".join(parts).format


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.1f}TiB"
