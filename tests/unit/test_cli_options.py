"""The quick parser (cli/options.py) against argparse, for `trace`'s option table:
wherever the quick parser gives an answer it is argparse's answer, and the usual
command lines get one."""

from __future__ import annotations

import argparse
import contextlib
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sockscope.cli import trace
from sockscope.cli.options import Option, quick_parse
from sockscope.cli.parser import build_parser


def by_argparse(argv: list[str]) -> dict[str, object] | None:
    parser = build_parser("trace")
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            return vars(parser.parse_args(["trace", *argv]))
    except SystemExit:
        return None


def by_quick(argv: list[str]) -> dict[str, object] | None:
    parsed = quick_parse(argv, trace.OPTIONS, subcommand="trace")
    return None if parsed is None else vars(parsed)


USUAL = [
    ["192.0.2.1"],
    ["-n", "192.0.2.1"],
    ["-I", "192.0.2.1"],
    ["-T", "-p", "443", "example.org"],
    ["-U", "-q", "1", "-m", "10", "-w", "1", "2001:db8::1"],
    ["-q1", "-m10", "192.0.2.1", "60"],
    ["--max-hops=12", "--json", "-6", "host"],
    ["-f", "3", "-N", "32", "-t", "16", "-r", "-v", "host", "1500"],
]


@pytest.mark.parametrize("argv", USUAL, ids=" ".join)
def test_usual_lines_are_read_quickly_and_as_argparse_reads_them(argv: list[str]) -> None:
    quick = by_quick(argv)
    assert quick is not None
    assert quick == by_argparse(argv)


@pytest.mark.parametrize(
    "argv",
    [
        [],  # HOST missing
        ["-h"],
        ["--help"],
        ["-I", "-T", "host"],  # exclusive
        ["-4", "-6", "host"],
        ["-q", "x", "host"],  # not an int
        ["-nI", "host"],  # clustered flags: argparse's rules
        ["--max", "5", "host"],  # an abbreviation
        ["host", "60", "70"],  # too many positionals
        ["host", "-q", "1", "60"],  # PACKETLEN after an option: argparse refuses it
        ["-m", "-1", "host"],  # a value that looks like an option
        ["--", "host"],
        ["--json=1", "host"],
        ["-Z", "host"],
    ],
    ids=repr,
)
def test_anything_unusual_is_left_to_argparse(argv: list[str]) -> None:
    assert by_quick(argv) is None


WORDS = st.sampled_from(
    ["-I", "-U", "-T", "-n", "-r", "-v", "-4", "-6", "--json", "--icmp", "--tcp", "-p", "-q", "-m", "-f",
     "-w", "-N", "-t", "--port", "--queries", "--max-hops=3", "-q2", "-p80", "--wait=1,2,3", "--",
     "-h", "-nI", "-x", "--max"]
)  # fmt: skip
VALUES = st.sampled_from(["host", "192.0.2.1", "60", "3", "0", "-1", "1,2", "x", "", "-", "1e3", " 7"])


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(WORDS, VALUES), max_size=7))
def test_the_quick_answer_is_always_argparses(argv: list[str]) -> None:
    quick = by_quick(argv)
    if quick is not None:
        assert quick == by_argparse(argv), argv


def test_an_option_the_quick_parser_cannot_mirror_is_refused_at_declaration() -> None:
    with pytest.raises(ValueError):
        Option("-x", action="append")
    with pytest.raises(ValueError):
        Option("-x", choices=["a"])


def test_argparse_is_built_from_the_same_table() -> None:
    parser = argparse.ArgumentParser()
    trace.add_arguments(parser)
    flags = {flag for action in parser._actions for flag in action.option_strings}
    assert {flag for opt in trace.OPTIONS for flag in opt.flags if flag.startswith("-")} <= flags
