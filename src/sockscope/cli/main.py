"""``sockscope`` entry point: reads the command line and turns SockscopeError into
one line on stderr plus an exit status.

Command modules are imported only when their command runs, so ``sockscope ls``
pays for nothing else. Each module exposes ``add_arguments(parser)`` and
``run(args) -> int``; one that also declares its options as a table (``OPTIONS``,
cli/options.py) has usual command lines read without argparse, whose parser
(cli/parser.py) is built only when needed.
"""

from __future__ import annotations

import gc
import os
import sys

from sockscope.errors import SockscopeError

TYPE_CHECKING = False  # not `from typing import ...`: see sockscope/__init__.py (start-up time)
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any, NoReturn

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
    "top": ("sockscope.cli.top", "traffic per process, connection and remote host, live (nethogs, iftop)"),
    "exporter": ("sockscope.cli.exporter", "serve sockets, listeners and per-process traffic to Prometheus"),
}


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    # Import only the module of the command asked for (start-up time).
    only = next((a for a in args_list if not a.startswith("-")), None)
    if only not in COMMANDS:
        only = None
    if args_list == ["--version"]:  # without building the parser (start-up time)
        from sockscope import __version__

        sys.stdout.write(f"sockscope {__version__}\n")
        return 0
    args = _quick_args(only, args_list)
    if args is None:
        from sockscope.cli.parser import build_parser

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
    module = _command_module(args.subcommand)
    global _brief_run
    _brief_run = getattr(module, "BRIEF", False)
    if not _brief_run:
        gc.enable()  # `launch` starts with it off
    try:
        status = int(module.run(args))
        if sys.stdout is not None:  # None: the shell closed it (`>&-`)
            sys.stdout.flush()  # here, not at exit, so a write error is reported below
        return status
    except SockscopeError as exc:
        sys.stderr.write(f"sockscope {args.subcommand}: {exc}\n")
        return exc.exit_status
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Output piped into `head`: stop quietly, as ss does.
        _silence_stdout()
        return 0
    except OSError as exc:
        if exc.errno not in _WRITE_ERRORS:
            raise
        # A full disk, /dev/full, a quota, an I/O error: as tcpdump and ping, one
        # line and status 1, never a traceback; what could not be written is dropped.
        _silence_stdout()
        where = f" ({exc.filename})" if exc.filename else ""
        sys.stderr.write(f"sockscope {args.subcommand}: write error{where}: {os.strerror(exc.errno)}\n")
        return 1

# errno values that mean "the output could not be written": ENOSPC, EDQUOT, EFBIG, EIO
# (numbers, not the errno module: start-up time).
_WRITE_ERRORS = (28, 122, 27, 5)

# Set by `main` from the command module's BRIEF (see `launch`).
_brief_run = False


def launch() -> NoReturn:
    """The ``sockscope`` program (bin/sockscope, ``python -m sockscope``).

    Start-up is part of a command's speed (``sockscope trace`` is measured against
    traceroute), so the program starts with the garbage collector off: the imports
    make no garbage worth collecting, and collections during them cost milliseconds.
    `main` turns it back on before a command runs, except for a command whose module
    says ``BRIEF = True``: one that runs for moments, writes only to stdout/stderr
    and closes what it opens. Such a command also skips the interpreter's teardown
    (freeing every module, a last collection: ~3 ms), once its output is flushed.
    """
    gc.disable()
    status = main()
    if not _brief_run:
        sys.exit(status)
    try:
        sys.stdout.flush()
    except (OSError, ValueError, AttributeError):  # `| head` went away, stdout full or closed
        pass
    sys.stderr.flush()
    os._exit(status)


def _command_module(name: str) -> Any:
    module_name = COMMANDS[name][0]
    __import__(module_name)  # not importlib: one import fewer at start-up
    return sys.modules[module_name]


def _quick_args(command: str | None, args_list: list[str]) -> Any:
    """The arguments read without argparse, for a command that declares its options
    as a table (``OPTIONS``, see cli/options.py) and a command line that the quick
    parser is sure of; None otherwise."""
    if command is None or args_list[0] != command:
        return None
    options = getattr(_command_module(command), "OPTIONS", None)
    if options is None:
        return None
    from sockscope.cli.options import quick_parse

    return quick_parse(args_list[1:], options, subcommand=command)


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass


def user_label(uid: int) -> str:
    """A user name for display, the number when the uid has no name."""
    from sockscope.inventory.owners import user_name

    return user_name(uid) or str(uid)
