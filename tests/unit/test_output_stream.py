"""The streamed outputs write what the one-string ones did."""

from __future__ import annotations

import io
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from sockscope.cli import output

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(json_values, max_size=5))
def test_json_array_streamed_is_the_whole_dump(items: list[object]) -> None:
    assert "".join(output.json_array_lines(items)) == json.dumps(items, indent=1) + "\n"


def test_jsonl_and_csv_streamed() -> None:
    rows = [["a", 1, None], ['quote"d', "comma,", "new\nline"]]
    assert "".join(output.csv_lines(["x", "y", "z"], rows)) == output.dump_csv(["x", "y", "z"], rows)
    items = [{"a": 1}, {"b": [1, "ü"]}]
    assert "".join(output.jsonl_lines(items)) == output.dump_jsonl(items)


def reference_table(headers: list[str], rows: list[list[str]], right: set[int], header: bool) -> str:
    """The table as it was built before rows were packed: pad to the widest cell."""
    widths = [max([len(h) if header else 0] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        out = [c.rjust(widths[i]) if i in right else c.ljust(widths[i])
               for i, c in enumerate(cells[:-1])]
        return " ".join([*out, cells[-1]]) if cells[-1] else " ".join([*out, ""]).rstrip()

    lines = ([line(headers)] if header else []) + [line(r) for r in rows]
    return "".join(f"{text}\n" for text in lines)


cells = st.text(alphabet="ab:é[]* 0123456789", max_size=12)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(cells, min_size=4, max_size=4), max_size=30), st.booleans())
def test_packed_table_pads_as_before(rows: list[list[str]], header: bool) -> None:
    headers = ["Netid", "Recv-Q", "Local", "Process"]
    expected = reference_table(headers, rows, {1}, header)
    assert output.table(headers, rows, right=[1], header=header) == expected
    streamed = io.StringIO()
    table = output.StreamedTable(headers, [1], header, stream=streamed)
    for row in rows:
        table.add(row)
    table.flush()
    assert streamed.getvalue() == expected  # one block: aligned as a whole


def test_table_blocks_details_and_a_last_column_given_late() -> None:
    table = output.Table(["A", "B", "Process"], right=[1])
    for i in range(2500):  # more than two blocks of packed rows
        table.add([f"r{i}", str(i)], detail="info" if i % 1000 == 0 else "")
    lines = "".join(table.lines(last=lambda row: f"p{row}" if row % 2 else "")).splitlines()
    assert lines[0] == "A        B Process"
    assert lines[1:4] == ["r0       0", "\tinfo", "r1       1 p1"]
    assert lines[-1] == "r2499 2499 p2499" and len(lines) == 1 + 2500 + 3


def test_streamed_table_widens_as_ss_does() -> None:
    out = io.StringIO()
    table = output.StreamedTable(["A", "B"], stream=out)
    table._BLOCK = 2
    for row in (["x", "1"], ["y", "2"], ["longer", "3"]):
        table.add(row)
    table.flush()
    assert out.getvalue().splitlines() == ["A B", "x 1", "y 2", "longer 3"]
