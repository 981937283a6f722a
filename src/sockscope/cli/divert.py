"""``sockscope divert --rule RULE``: take matching packets out of the firewall path.

Per packet, in order: ``--drop FILTER`` (tcpdump syntax, run in user space over
the IP packet) drops it; ``--exec FILE`` hands it to the file's ``handle(packet)``;
``--rewrite FIELD=VALUE`` changes it (checksums recomputed); ``--set-mark`` marks
it; anything left is accepted. ``--print`` shows each packet and its verdict.
Counters go to stderr at the end; Ctrl-C and SIGTERM end the divert (status 0)
after the rules are removed.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from sockscope.errors import UsageError

from . import output

RULE_HELP = (
    "which packets: terms from ip ip6 | tcp udp udplite sctp icmp icmp6 | input output forward | "
    "sport/dport/port N[-M] | saddr/daddr/host ADDR[/LEN] | iif/oif IFNAME | mark N[/MASK]; "
    "'not' or '!=' negates; e.g. 'udp dport 5000', 'tcp port 80 forward', 'ip6 saddr 2001:db8::/32'. "
    "Default hooks: input and output."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.usage = "sockscope divert --rule RULE [options]"
    p.add_argument("--rule", metavar="RULE", help=RULE_HELP)
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
    p.add_argument("--jsonl", action="store_true", help="with --print: one JSON object per packet")
    p.add_argument("--exec", metavar="PYTHON_FILE", help="call handle(packet) from this file for each packet")
    p.add_argument("--drop", metavar="FILTER", help="drop packets matching this tcpdump filter")
    p.add_argument(
        "--rewrite",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="change sport, dport, saddr, daddr, ttl or payload (text); repeatable",
    )
    p.add_argument("--set-mark", type=mark_number, metavar="N", help="set this firewall mark (32 bits)")
    p.add_argument("--bypass", action="store_true", help="packets pass while no program listens on the queue")
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
        help="verdict for packets left undecided (handler error, timeout); default accept",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="undecided packets get the default verdict after this long (default 1)",
    )
    p.add_argument(
        "--maxlen", type=int, default=32768, metavar="N", help="queue length in the kernel (default 32768)"
    )
    p.add_argument("--count", type=int, metavar="N", help="stop after N packets")
    p.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this long")
    p.add_argument(
        "--cleanup", action="store_true", help="only remove rules left by divert runs that died, then exit"
    )


def mark_number(text: str) -> int:
    """A 32-bit mark, decimal or 0x-hex (argparse turns ValueError into a usage error)."""
    value = int(text, 0)
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(text)
    return value


def run(args: argparse.Namespace) -> int:
    from sockscope.divert import Divert
    from sockscope.divert.firewall import clean_leftovers

    if args.cleanup:
        for name in clean_leftovers():
            sys.stdout.write(f"removed {name}\n")
        return 0
    if not args.rule:
        raise UsageError("--rule is required, e.g. --rule 'udp dport 5000'")
    for name in ("count", "maxlen", "copy_range"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
    if args.copy_range > 0xFFFF:
        raise UsageError("--copy-range is at most 65535")
    steps = _build_steps(args)
    session = Divert(args.rule, args.queue, queue_balance=args.queue_balance, **_queue_options(args))
    seen = 0
    deadline = None if args.duration is None else time.monotonic() + args.duration

    def handler(pkt: Any) -> None:
        for step in steps:
            step(pkt)
            if pkt.verdict is not None:
                break
        if pkt.verdict is None:
            pkt.accept()

    def after(pkt: Any) -> None:  # the verdict is settled, a handler error's default included
        nonlocal seen
        seen += 1
        if args.print:
            _show(pkt, args.jsonl)
        if seen == args.count:
            session.stop()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        session.stop()

    until = None if deadline is None else lambda: time.monotonic() > deadline
    if args.workers != 1:
        return _run_workers(args, handler, until, after)
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        with session:
            for name in session.leftovers_removed:
                sys.stderr.write(f"sockscope divert: removed leftover {name} of a divert that died\n")
            try:
                session.run(handler, until=until, after=after)
            except KeyboardInterrupt:
                pass
            kernel = session.stats().kernel  # while the queue is bound
        stats = session.stats()  # after close: packets given the default verdict at exit too
        stats.kernel = kernel
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    _report(stats, session.last_error)
    return 0


def _run_workers(
    args: argparse.Namespace,
    handler: Callable[[Any], None],
    until: Callable[[], bool] | None,
    after: Callable[[Any], None],
) -> int:
    from sockscope.divert.session import queue_range
    from sockscope.divert.workers import Workers

    if args.queue_balance is None:
        raise UsageError("--workers needs --queue-balance A:B (each worker reads its share of the queues)")
    if args.count is not None:
        raise UsageError("--count counts in one process: use it without --workers")
    workers = Workers(
        args.rule, queue_range(args.queue, args.queue_balance), args.workers, **_queue_options(args)
    )

    def on_signal(signum: int, frame: FrameType | None) -> None:
        workers.stop()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        stats = workers.run(handler, until=until, after=after)
    except KeyboardInterrupt:
        return 0
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    for name in workers.leftovers_removed:
        sys.stderr.write(f"sockscope divert: removed leftover {name} of a divert that died\n")
    _report(stats, workers.first_error)
    return 0


def _build_steps(args: argparse.Namespace) -> list[Callable[[Any], Any]]:
    steps: list[Callable[[Any], Any]] = []
    if args.drop is not None:
        from sockscope.capture.bpf import compile_filter
        from sockscope.packets import LINKTYPE_RAW

        program = compile_filter(args.drop, LINKTYPE_RAW)

        def drop_matching(pkt: Any) -> None:
            if program.matches(pkt.payload):
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


_ifname: Callable[[int], str | None] | None = None


def _interface(index: int | None) -> str | None:
    global _ifname
    if index is None:
        return None
    if _ifname is None:
        from sockscope.platform.linux import ifname_lookup

        _ifname = ifname_lookup()
    return _ifname(index) or str(index)


def _show(pkt: Any, jsonl: bool) -> None:
    verdict = pkt.verdict.name.lower() if pkt.verdict is not None else "pending"
    rewritten = pkt._new_payload is not None and verdict == "accept"
    if jsonl:
        info = pkt.info
        record = {
            "queue": pkt.queue,
            "id": pkt.id,
            "hook": pkt.hook,
            "in": _interface(info.indev),
            "out": _interface(info.outdev),
            "mark": pkt.mark,
            "uid": info.uid,
            "gid": info.gid,
            "conntrack": info.ct_info,
            "length": info.wire_len,
            "summary": pkt.summary(),
            "verdict": verdict,
            "rewritten": rewritten,
        }
        line = output.dump_jsonl([record])
    else:
        line = (
            f"q{pkt.queue} {pkt.hook:<7} {pkt.summary()} -> {verdict}{' (rewritten)' if rewritten else ''}\n"
        )
    sys.stdout.write(line)
    sys.stdout.flush()


def _report(stats: Any, error: str | None) -> None:
    d = stats.to_dict()
    parts = [f"{d['received']} received", f"{d['accepted']} accepted", f"{d['dropped']} dropped"]
    for key, label in (
        ("modified", "rewritten"),
        ("repeated", "repeated"),
        ("expired", "timed out"),
        ("handler_errors", "handler errors"),
        ("enobufs", "lost: socket buffer full (ENOBUFS)"),
        ("queue_dropped", "lost: queue full"),
        ("user_dropped", "lost: not delivered"),
        ("verdict_errors", "verdicts refused"),
    ):
        if d[key]:
            parts.append(f"{d[key]} {label}")
    sys.stderr.write("sockscope divert: " + ", ".join(parts) + "\n")
    if error:
        sys.stderr.write(f"sockscope divert: first handler error: {error}\n")


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
