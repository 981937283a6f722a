"""``sockscope`` entry point: builds the parser from the command modules and
turns SockscopeError into one line on stderr plus an exit status.

Command modules are imported only when their command runs, so ``sockscope ls``
pays for nothing else. Each module exposes ``add_arguments(parser)`` and
``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from sockscope import __version__
from sockscope.errors import SockscopeError

# command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "ls": ("sockscope.cli.ls", "list sockets with their owners (ss / netstat / lsof -i)"),
    "ifaces": ("sockscope.cli.ifaces", "interface counters and addresses (netstat -i, ip -s link)"),
    "kill": ("sockscope.cli.kill", "destroy matching TCP/UDP sockets (ss -K)"),
    "watch": ("sockscope.cli.watch", "stream socket events: new, state change, closed"),
    "capture": ("sockscope.cli.capture", "capture packets: print them or write pcap/pcapng (tcpdump)"),
    "send": ("sockscope.cli.send", "replay a capture file's frames out of an interface (tcpreplay)"),
    "listen": ("sockscope.cli.listen", "serve TCP, UDP or Unix sockets, netcat-style, with a policy"),
    "connect": ("sockscope.cli.connect", "connect to TCP, UDP or Unix sockets, netcat-style"),
    "guard": ("sockscope.cli.guard", "enforce a policy's address rules in nftables, before accept"),
    "check": ("sockscope.cli.check", "explain which policy rule decides for a client (tcpdmatch)"),
    "ping": ("sockscope.cli.ping", "ICMP echo, IPv4 and IPv6 (ping)"),
    "trace": ("sockscope.cli.trace", "the path to a host: UDP, ICMP or TCP probes (traceroute)"),
    "scan": ("sockscope.cli.scan", "TCP connect, SYN or UDP port scan of your own hosts (nmap)"),
    "divert": ("sockscope.cli.divert", "take packets out of the firewall path, change them (NFQUEUE)"),
}


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
                except (OSError, ValueError):  # not a terminal
                    width = 80
            width -= 2  # as argparse does
        super().__init__(prog, indent_increment, max_help_position, width)


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error and exit status 2 (its own default is 2 too,
    but it prints the full usage; we print the usage line only once, briefly)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


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


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    # Import only the module of the command asked for (start-up time).
    only = next((a for a in args_list if not a.startswith("-")), None)
    if only not in COMMANDS:
        only = None
    parser = build_parser(only if only is not None else "")
    if only is None and not any(a in ("-h", "--help", "--version") for a in args_list):
        if not args_list:
            parser.print_help()
            return 2
        parser.error(f"unknown command {args_list[0]!r} (try: {', '.join(COMMANDS)})")
    args = parser.parse_args(args_list)
    if args.subcommand is None:
        parser.print_help()
        return 2
    module = importlib.import_module(COMMANDS[args.subcommand][0])
    try:
        return int(module.run(args))
    except SockscopeError as exc:
        sys.stderr.write(f"sockscope {args.subcommand}: {exc}\n")
        return exc.exit_status
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Output piped into `head`: stop quietly, as ss does.
        _silence_stdout()
        return 0


def _silence_stdout() -> None:
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass


def user_label(uid: int) -> str:
    """A user name for display, the number when the uid has no name."""
    from sockscope.inventory.owners import user_name

    return user_name(uid) or str(uid)
