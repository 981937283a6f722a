"""Options declared once, as a table: argparse is built from it, and `quick_parse`
reads the usual command lines with it without importing argparse.

argparse (with re and gettext) is about a third of a Python traceroute's start-up,
so the commands where start-up is the benchmark (``trace``) declare their options
here. `quick_parse` handles only what it is sure of -- each option spelled exactly,
values as separate or ``--opt=value`` / ``-qVALUE`` words, positionals -- and answers
None for anything else (help, abbreviations, clustered flags, ``--``, a value that
does not convert, two options of one exclusive group...), which argparse then reads
with its full rules and error messages. tests/unit/test_cli_options.py holds the two
to the same answers.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not `from typing import ...`: see sockscope/__init__.py (start-up time)
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence
    from typing import Any


class Option:
    """One ``parser.add_argument(*flags, **kwargs)``, optionally in a mutually
    exclusive ``group``. Only the kwargs argparse and `quick_parse` both know:
    action (store, store_true, store_const), type (a one-argument converter),
    nargs (None, or "?" for a positional), dest, default, const, metavar, help."""

    __slots__ = ("dest", "flags", "group", "kwargs")

    KNOWN = frozenset(("action", "type", "nargs", "dest", "default", "const", "metavar", "help"))

    def __init__(self, *flags: str, group: str | None = None, **kwargs: Any) -> None:
        unknown = set(kwargs) - self.KNOWN
        if unknown or kwargs.get("action", "store") not in ("store", "store_true", "store_const"):
            raise ValueError(f"option {flags}: not for the quick parser: {unknown or kwargs['action']}")
        self.flags, self.group, self.kwargs = flags, group, kwargs
        self.dest: str = kwargs.get("dest") or _dest_of(flags)

    @property
    def positional(self) -> bool:
        return not self.flags[0].startswith("-")

    @property
    def takes_value(self) -> bool:
        return bool(self.kwargs.get("action", "store") == "store")

    @property
    def default(self) -> Any:
        if "default" in self.kwargs:
            return self.kwargs["default"]
        return False if self.kwargs.get("action") == "store_true" else None


def _dest_of(flags: Sequence[str]) -> str:
    """argparse's rule: the first long option, else the first flag, minus its dashes."""
    longs = [f for f in flags if f.startswith("--")]
    return (longs or list(flags))[0].lstrip("-").replace("-", "_")


def add_all(parser: argparse.ArgumentParser, options: Sequence[Option]) -> None:
    """Declare ``options`` on an argparse parser."""
    groups: dict[str, Any] = {}
    for opt in options:
        target: Any = parser
        if opt.group is not None:
            target = groups.get(opt.group) or groups.setdefault(
                opt.group, parser.add_mutually_exclusive_group()
            )
        target.add_argument(*opt.flags, **opt.kwargs)


class Parsed:
    """What argparse's Namespace is to the commands: the options as attributes."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)

    def __getattr__(self, name: str) -> Any:  # only for unknown names; lets mypy see Any
        raise AttributeError(name)

    def __repr__(self) -> str:
        return f"Parsed({self.__dict__!r})"


def quick_parse(argv: Sequence[str], options: Sequence[Option], **extra: Any) -> Parsed | None:
    """``argv`` (the words after the command) read with ``options``, or None where
    only argparse should decide. ``extra`` values are set as well (e.g. the command)."""
    by_flag = {flag: opt for opt in options if not opt.positional for flag in opt.flags}
    slots = [opt for opt in options if opt.positional]
    values: dict[str, Any] = {}
    seen_groups: dict[str, Option] = {}
    filled = 0
    # argparse gives out positionals a run of words at a time (an optional one may
    # get nothing from the first run); only one run is read here.
    run_over = False
    i = 0
    while i < len(argv):
        word = argv[i]
        i += 1
        if not word.startswith("-") or word == "-":
            if filled == len(slots) or run_over:
                return None
            filled += 1
            if not _store(values, slots[filled - 1], word):
                return None
            continue
        if word.startswith("--"):
            name, eq, inline = word.partition("=")
        else:  # -q3 is -q 3; -nI (two flags in one word) is left to argparse
            name, inline = word[:2], word[2:]
            eq = "=" if inline else ""
        found = by_flag.get(name)
        if found is None or name in ("-h", "--help"):
            return None
        opt = found
        run_over = filled > 0
        if opt.group is not None:
            if seen_groups.setdefault(opt.group, opt) is not opt:
                return None
        if not opt.takes_value:
            if eq:
                return None
            action = opt.kwargs.get("action")
            values[opt.dest] = True if action == "store_true" else opt.kwargs.get("const")
            continue
        if eq:
            value = inline
        elif i < len(argv) and not argv[i].startswith("-"):
            value = argv[i]
            i += 1
        else:
            return None  # missing, or a value like "-1" that argparse has rules for
        if not _store(values, opt, value):
            return None
    if any(slot.kwargs.get("nargs") != "?" for slot in slots[filled:]):
        return None  # a required positional is missing: argparse says so
    for opt in options:
        values.setdefault(opt.dest, opt.default)
    return Parsed(**values, **extra)


def _store(values: dict[str, Any], opt: Option, text: str) -> bool:
    convert: Callable[[str], Any] | None = opt.kwargs.get("type")
    if convert is None:
        values[opt.dest] = text
        return True
    try:
        values[opt.dest] = convert(text)
    except (ValueError, TypeError):
        return False
    return True


def integer(text: str) -> int:
    """A decimal or ``0x`` hexadecimal integer, as traceroute -t and ping -Q take a
    TOS (a ``type=`` for both parsers: ValueError on anything else)."""
    word = text.strip().lower()
    negative = word.startswith("-")
    digits = word.lstrip("-+")
    value = int(digits[2:], 16) if digits.startswith("0x") else int(digits, 10)
    return -value if negative else value
