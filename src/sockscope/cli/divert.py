"""``sockscope divert --rule FILTER``: take matching packets out of the firewall path.

``--rule`` is a tcpdump filter (compiled by libpcap for raw IP, matched in the kernel
by iptables' bpf match); ``--hook``, ``-i``/``-o`` and ``--mark`` say where. Per
packet, in order: ``--drop FILTER`` (tcpdump syntax, run in user space; repeatable,
any match drops) drops it; ``--exec FILE`` hands it to the file's ``handle(packet)``;
``--rewrite FIELD=VALUE`` changes it (checksums recomputed); ``--set-mark`` marks it;
anything left is accepted. ``--print`` shows each packet once its verdict is sent,
default verdicts included.

Ending: Ctrl-C, SIGTERM and SIGHUP end the divert (status 0) after the rules are
removed and every packet held has its verdict; a handler still running is
interrupted, and if it does not let go within `STOP_GRACE` seconds the divert ends
without it (status 1). Repeated signals change nothing of that. A handler's
``sys.exit(N)`` ends the divert with status N. Counters go to stderr in every case.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from typing import Any

from sockscope.errors import UsageError

from .divert_report import STOP_GRACE, Counter, Stopper

RULE_HELP = (
    "which packets: a tcpdump filter, e.g. 'udp and dst port 5000', 'tcp port 80', "
    "'ip6 and src net 2001:db8::/32 and not dst port 22' ('' for every packet)"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.usage = "sockscope divert --rule FILTER [--hook HOOK] [-i IFACE] [-o IFACE] [--mark MARK] [options]"
    p.add_argument("--rule", metavar="FILTER", help=RULE_HELP)
    p.add_argument(
        "--hook",
        action="append",
        choices=("input", "output", "forward"),
        help="where to take packets: input, output or forward (repeatable; default input and output)",
    )
    p.add_argument(
        "-i",
        dest="in_interface",
        metavar="IFACE",
        help="only packets that came in on IFACE (!IFACE: not; eth+: prefix)",
    )
    p.add_argument(
        "-o",
        dest="out_interface",
        metavar="IFACE",
        help="only packets that go out on IFACE (!IFACE: not; eth+: prefix)",
    )
    p.add_argument(
        "--mark", metavar="[!]N[/MASK]", help="only packets with this firewall mark ('!1': without)"
    )
    p.add_argument("--queue", type=int, default=0, metavar="N", help="NFQUEUE number (default 0)")
    p.add_argument(
        "--queue-balance",
        metavar="A:B",
        help="spread over queues A..B (one per CPU), read by --workers processes",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="with --queue-balance: N processes, each reading its share of the queues (default 1)",
    )
    p.add_argument("--print", action="store_true", help="print each packet and its verdict")
    p.add_argument(
        "--jsonl", action="store_true", help="print each packet as a JSON object (implies --print)"
    )
    p.add_argument("--exec", metavar="PYTHON_FILE", help="call handle(packet) from this file for each packet")
    p.add_argument(
        "--drop",
        action="append",
        default=[],
        metavar="FILTER",
        help="drop packets matching this tcpdump filter (repeatable: any match drops)",
    )
    p.add_argument(
        "--rewrite",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="change sport, dport, saddr, daddr, ttl or payload (TCP: same length only); repeatable",
    )
    p.add_argument("--set-mark", type=mark_number, metavar="N", help="set this firewall mark (32 bits)")
    p.add_argument(
        "--bypass",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="packets pass while no program is bound to the queue (default; --no-bypass: they are dropped)",
    )
    p.add_argument("--fail-open", action="store_true", help="packets pass when the queue is full")
    p.add_argument("--gso", action="store_true", help="take GSO packets whole (no forced segmentation)")
    p.add_argument("--uid-gid", action="store_true", help="ask the kernel for the sending socket's uid/gid")
    p.add_argument("--conntrack", action="store_true", help="ask the kernel for the conntrack state")
    p.add_argument(
        "--copy-range",
        type=int,
        default=0xFFFF,
        metavar="BYTES",
        help="copy at most this much of each packet (default 65535; cut packets cannot be rewritten)",
    )
    p.add_argument(
        "--default",
        choices=("accept", "drop"),
        default="accept",
        help="verdict for packets left undecided (handler error, timeout, stop); default accept",
    )
    p.add_argument(
        "--timeout",
        type=seconds,
        default=1.0,
        metavar="SECONDS",
        help="undecided packets get the default verdict after this long (default 1)",
    )
    p.add_argument(
        "--maxlen", type=int, default=32768, metavar="N", help="queue length in the kernel (default 32768)"
    )
    p.add_argument("--count", type=int, metavar="N", help="stop after N packets")
    p.add_argument("--duration", type=seconds, metavar="SECONDS", help="stop after this long")
    p.add_argument(
        "--cleanup",
        action="store_true",
        help="only remove rules left by divert runs that died (or by older versions), then exit",
    )


def mark_number(text: str) -> int:
    """A 32-bit mark, decimal or 0x-hex (argparse turns ValueError into a usage error)."""
    value = int(text, 0)
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(text)
    return value


def seconds(text: str) -> float:
    """A positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < math.inf:  # also rejects nan
        raise argparse.ArgumentTypeError(f"want a positive number of seconds: {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    if args.cleanup:
        return _cleanup()
    if args.rule is None:
        raise UsageError("--rule is required, e.g. --rule 'udp and dst port 5000'")
    for name in ("count", "maxlen", "copy_range"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
    if args.copy_range > 0xFFFF:
        raise UsageError("--copy-range is at most 65535")
    from sockscope.divert.rule import compile_rule

    rule = compile_rule(args.rule, args.hook, args.in_interface, args.out_interface, args.mark)
    steps = _build_steps(args)
    if args.jsonl:
        args.print = True
    stopper = Stopper()
    if args.workers != 1:
        return _run_workers(args, rule, steps, stopper)
    from sockscope.divert import Divert

    session = Divert(rule, args.queue, queue_balance=args.queue_balance, **_queue_options(args))
    counter = Counter(args, session.stop)
    stopper.session = session
    with stopper:
        with session:
            _say_notes(session.leftovers_removed, rule.notes)
            stopper.armed = True
            try:
                session.run(_handler(steps), until=_until(args), after=counter.settled)
            except SystemExit as exc:  # the handler's sys.exit(N)
                counter.exit_status = exc.code if isinstance(exc.code, int) else 1
            kernel = session.stats().kernel  # while the queue is bound
        if not stopper.finish():
            return 1  # the stop deadline ended the run and reported already
    stats = session.stats()  # after close: the default verdicts given at exit too
    stats.kernel = kernel
    return counter.finish(stats, session.last_error)


def _cleanup() -> int:
    from sockscope.divert.firewall import clean_leftovers
    from sockscope.divert.legacy import clean_iptables_leftovers
    from sockscope.divert.process import process_start_time

    removed = clean_leftovers()
    removed += clean_iptables_leftovers(lambda pid, start: process_start_time(pid) != start)
    for name in removed:
        sys.stdout.write(f"removed {name}\n")
    return 0


def _say_notes(leftovers: list[str], notes: list[str]) -> None:
    for name in leftovers:
        sys.stderr.write(f"sockscope divert: removed leftover {name} of a divert that died\n")
    for note in notes:
        sys.stderr.write(f"sockscope divert: note: {note}\n")


def _until(args: argparse.Namespace) -> Callable[[], bool] | None:
    if args.duration is None:
        return None
    deadline = time.monotonic() + args.duration
    return lambda: time.monotonic() > deadline


def _handler(steps: list[Callable[[Any], Any]]) -> Callable[[Any], None]:
    def handler(pkt: Any) -> None:
        for step in steps:
            step(pkt)
            if pkt.verdict is not None:
                break
        if pkt.verdict is None:
            pkt.accept()

    return handler


def _run_workers(
    args: argparse.Namespace, rule: Any, steps: list[Callable[[Any], Any]], stopper: Stopper
) -> int:
    from sockscope.divert.session import queue_range
    from sockscope.divert.workers import Workers

    if args.queue_balance is None:
        raise UsageError("--workers needs --queue-balance A:B (each worker reads its share of the queues)")
    if args.count is not None:
        raise UsageError("--count counts in one process: use it without --workers")
    workers = Workers(rule, queue_range(args.queue, args.queue_balance), args.workers, **_queue_options(args))
    counter = Counter(args, workers.stop)
    stopper.workers = workers
    with stopper:
        stats = workers.run(_handler(steps), until=_until(args), after=counter.settled)
    _say_notes(workers.leftovers_removed, [])
    counter.exit_status = workers.exit_status
    status = counter.finish(stats, workers.first_error)
    if workers.killed:
        sys.stderr.write(
            f"sockscope divert: {workers.killed} worker(s) did not stop within {STOP_GRACE:g} s and were "
            "killed: their counters are lost, and the kernel dropped the packets they held\n"
        )
        return status or 1
    return status


def _build_steps(args: argparse.Namespace) -> list[Callable[[Any], Any]]:
    steps: list[Callable[[Any], Any]] = []
    if args.drop:
        from sockscope.capture.bpf import compile_filter
        from sockscope.packets import LINKTYPE_RAW

        programs = [compile_filter(text, LINKTYPE_RAW) for text in args.drop]

        def drop_matching(pkt: Any) -> None:
            payload = pkt.payload
            if any(program.matches(payload) for program in programs):
                pkt.drop()

        steps.append(drop_matching)
    if args.exec is not None:
        handle = _load_handler(args.exec)
        from sockscope.divert import apply_result

        steps.append(lambda pkt: apply_result(pkt, handle(pkt)))
    if args.rewrite:
        from sockscope.divert.rewrite import parse_rewrites, rewrite

        changes = parse_rewrites(args.rewrite)
        steps.append(lambda pkt: rewrite(pkt, changes))
    if args.set_mark is not None:
        mark = args.set_mark

        def set_mark(pkt: Any) -> None:
            pkt.mark = mark

        steps.append(set_mark)
    return steps


def _load_handler(path: str) -> Callable[[Any], Any]:
    import runpy

    try:
        namespace = runpy.run_path(path)
    except FileNotFoundError:
        raise UsageError(f"--exec {path}: no such file") from None
    except Exception as exc:  # the user's file: its error is the message
        raise UsageError(f"--exec {path}: {type(exc).__name__}: {exc}") from None
    handle = namespace.get("handle")
    if not callable(handle):
        raise UsageError(f"--exec {path}: defines no handle(packet) function")
    return handle  # type: ignore[no-any-return]


def _queue_options(args: argparse.Namespace) -> dict[str, Any]:
    """The queue and verdict settings a single divert and workers take alike."""
    from sockscope.divert import Verdict

    return {
        "bypass": args.bypass,
        "fail_open": args.fail_open,
        "gso": args.gso,
        "uid_gid": args.uid_gid,
        "conntrack": args.conntrack,
        "copy_range": args.copy_range,
        "default": Verdict[args.default.upper()],
        "timeout": args.timeout,
        "maxlen": args.maxlen,
    }
