"""The argparse parser of every command: built only when a command line needs it
(``sockscope trace`` mostly does not: see cli/options.py)."""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from typing import Any

from sockscope import __version__
from sockscope.cli.main import COMMANDS


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter, sized without importing shutil: argparse builds one per
    add_argument, and shutil (with bz2 and lzma) costs 4 ms of every start-up."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:  # fmt: skip
        if width is None:
            columns = os.environ.get("COLUMNS", "")
            if columns.isdigit():
                width = int(columns)
            else:
                try:
                    width = os.get_terminal_size(sys.stdout.fileno()).columns
                except (OSError, ValueError, AttributeError):  # not a terminal, or closed (None)
                    width = 80
            width -= 2  # as argparse does
        super().__init__(prog, indent_increment, max_help_position, width)


_NEGATIVE = re.compile(r"-(\d+\.?\d*|\.\d+)(e[-+]?\d+)?|-0x[0-9a-f]+", re.IGNORECASE)


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error and exit status 2 (its own default is 2 too,
    but it prints the full usage; we print the usage line only once, briefly)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        return super().parse_known_args(self._negative_values(args), namespace)

    def _negative_values(self, args: Any) -> Any:
        """``-c -1`` read as -c with the value -1, so the command's own check can say
        what range it wants. argparse takes "-1" for an option whenever the parser
        has options that look like negative numbers (-4, -6), and then says only
        "expected one argument"."""
        if args is None:
            return None
        words = list(args)
        out: list[str] = []
        i = 0
        while i < len(words):
            word = words[i]
            action = self._option_string_actions.get(word)
            takes_value = action is not None and action.nargs is None and action.const is None
            if takes_value and i + 1 < len(words) and _NEGATIVE.fullmatch(words[i + 1]):
                joiner = "=" if word.startswith("--") else ""
                out.append(f"{word}{joiner}{words[i + 1]}")
                i += 2
                continue
            out.append(word)
            i += 1
        return out


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``only`` naming a command, that command's alone.

    Each sub-parser costs about half a millisecond to build, so a command line
    that names its command gets only that one (the listing of all commands is
    for ``sockscope --help`` and mistakes). ``only=""``: all, without arguments.
    """
    parser = _Parser(prog="sockscope", description="See and control the sockets of a Linux host.")
    parser.add_argument("--version", action="version", version=f"sockscope {__version__}")
    sub = parser.add_subparsers(dest="subcommand", metavar="COMMAND", parser_class=_Parser)
    for name, (module_name, help_text) in COMMANDS.items():
        if only and only != name:
            continue
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        if only is None or only == name:
            importlib.import_module(module_name).add_arguments(cmd)
    return parser
