"""``sockscope exporter``: serve the host's sockets to Prometheus (``/metrics``)
until Ctrl-C or SIGTERM. The work is in ``sockscope.exporter``; this module reads
the options, says where it listens, and turns signals into exit statuses."""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType

from sockscope.errors import PermissionNeeded, SockscopeError, UsageError
from sockscope.platform import linux

from .argtypes import MAX_INTERVAL, positive_int

# What an exporter needs to see every namespace and every process's sockets:
# setns (CAP_SYS_ADMIN), other users' /proc/PID/fd and ns/net (CAP_SYS_PTRACE,
# CAP_DAC_READ_SEARCH). deploy/sockscope-exporter.service grants these, and
# CAP_NET_ADMIN for the kernel's socket-destroy messages (--udp's eBPF programs
# load under CAP_SYS_ADMIN).
NEEDED_CAPABILITIES = ("CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= MAX_INTERVAL:  # also rejects nan and inf
        raise argparse.ArgumentTypeError(f"must be 0 to {MAX_INTERVAL:g} seconds: {text!r}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    from sockscope.exporter import DEFAULT_LISTEN, DEFAULT_MAX_SERIES

    p.usage = ("sockscope exporter [--listen ADDR:PORT] [--web.config.file FILE] [-N NETNS ...] "
               "[--pids] [--max-series N] [--min-interval SECONDS] [--interfaces] [--udp] "
               "[--no-processes]")
    p.add_argument("--listen", "--web.listen-address", dest="listen", metavar="ADDR:PORT",
                   default=DEFAULT_LISTEN,
                   help=f"where to serve /metrics (default {DEFAULT_LISTEN}; :PORT for every address)")
    p.add_argument("--web.config.file", dest="web_config", metavar="FILE",
                   help="TLS and basic auth, in the YAML shape of Prometheus's exporters (exporter-toolkit)")
    p.add_argument("-N", "--netns", action="append", metavar="NAME|PATH|PID",
                   help="watch this network namespace (repeatable; default: every one on the host)")
    p.add_argument("--pids", action="store_true",
                   help="a pid label on per-process series (more series: off by default)")
    p.add_argument("--max-series", type=positive_int, default=DEFAULT_MAX_SERIES, metavar="N",
                   help=f"per-process label sets exported, the busiest; the rest add up into "
                        f"command=\"other\" (default {DEFAULT_MAX_SERIES})")
    p.add_argument("--min-interval", type=_seconds, default=0.0, metavar="SECONDS",
                   help="reuse a collection this long (default 0: every scrape collects, "
                        "concurrent scrapes share one)")
    p.add_argument("--interfaces", action="store_true",
                   help="interface counters per namespace too (node_exporter has the host's)")
    p.add_argument("--udp", action="store_true",
                   help="UDP bytes per process too (loads sockscope top's eBPF counters into the kernel)")
    p.add_argument("--no-processes", action="store_true",
                   help="no per-process series (no traffic accounting: cheaper scrapes)")


class _Terminated(Exception):
    """SIGTERM, raised in the main thread so the server unwinds as on Ctrl-C."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Terminated


def run(args: argparse.Namespace) -> int:
    missing = linux.missing_capabilities(NEEDED_CAPABILITIES)
    if missing:
        raise PermissionNeeded(f"the exporter needs root, or the capabilities {', '.join(missing)} "
                               "(deploy/sockscope-exporter.service grants them)")
    try:
        from sockscope.exporter import Exporter
    except ImportError as exc:
        raise SockscopeError(f"the exporter needs {exc.name or 'prometheus-client'}: "
                             "pip install 'sockscope[exporter]' (scripts/setup.sh does)") from None
    if args.udp and args.no_processes:
        raise UsageError("--udp counts bytes per process: it cannot go with --no-processes")
    sampler = None
    if not args.no_processes:
        from sockscope.traffic import Sampler

        # The counters source (tcp_info) loads nothing into the kernel; --udp asks
        # for the eBPF send/receive counters, which count UDP too.
        sampler = Sampler(args.netns, per_pid=args.pids, source="bpf" if args.udp else "counters")
    try:
        exporter = Exporter(args.listen, netns=args.netns, pids=args.pids, max_series=args.max_series,
                            min_interval=args.min_interval, interfaces=args.interfaces,
                            web_config_file=args.web_config, traffic=sampler, udp=args.udp)
    except BaseException:
        if sampler is not None:
            sampler.close()
        raise
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        sys.stderr.write(f"sockscope exporter: listening on {exporter.url}/metrics\n")
        sys.stderr.flush()
        exporter.serve_forever()
    except KeyboardInterrupt:
        return 130
    except _Terminated:
        return 128 + signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, previous)
        exporter.close()
        if sampler is not None:
            sampler.close()
    return 0
