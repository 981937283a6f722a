"""The NFQUEUE engine: one netlink socket bound to one or more queues.

Receiving: netlink hands over one queued packet per ``recv``, so the engine drains
the socket with non-blocking reads (up to ``batch`` packets) and parses only the
packet id at its fixed offset. Verdicts: packets decided in arrival order share
one NFQNL_MSG_VERDICT_BATCH per run of equal (verdict, mark); changed payloads and
packets decided after an undecided one get a verdict each; all of a flush goes out
in one ``send``. Packets left undecided past ``timeout`` get the default verdict.

Every loss is counted: ENOBUFS on the socket (the kernel dropped a message because
our receive buffer was full) here, queue overflows from the kernel's own counters
in /proc/net/netfilter/nfnetlink_queue (`kernel_stats`).
"""

from __future__ import annotations

import errno
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sockscope.divert.packet import DivertPacket, Verdict, interface_name
from sockscope.divert.process import forget_in_children
from sockscope.errors import PermissionNeeded, SockscopeError
from sockscope.netlink import nfqueue as nfq
from sockscope.netlink.codec import NLMSG_ERROR, NetlinkError, error_code, iter_messages
from sockscope.netlink.socket import NETLINK_NETFILTER, NetlinkSocket

if TYPE_CHECKING:
    from sockscope.capture.bpf import BpfProgram

_PACKET_TYPE = struct.pack("=H", nfq.MSG_PACKET)  # nlmsg_type as it sits at offset 4
_FIRST = struct.Struct("!H2xHI")  # res_id (queue), first attribute's type (byte-swapped), packet id
_PACKET_HDR_SWAPPED = nfq.NFQA_PACKET_HDR << 8  # nla_type is host order; read big-endian here
_PROC_STATS = "/proc/net/netfilter/nfnetlink_queue"


@dataclass
class DivertStats:
    """Counters of one engine; `kernel` holds the kernel's view of each queue."""

    received: int = 0
    accepted: int = 0
    dropped: int = 0
    repeated: int = 0
    modified: int = 0  # accepted with a new payload
    expired: int = 0  # given the default verdict after the timeout
    handler_errors: int = 0
    enobufs: int = 0  # receive-buffer overflows: the kernel dropped packets for us
    verdict_errors: int = 0  # kernel refused a verdict (e.g. the packet was already gone)
    unmatched: int = 0  # accepted unseen: the user-space filter of a long --rule said no
    kernel: list[nfq.QueueStats] = field(default_factory=list)

    @property
    def queue_dropped(self) -> int:
        return sum(q.queue_dropped for q in self.kernel)

    @property
    def user_dropped(self) -> int:
        return sum(q.user_dropped for q in self.kernel)

    def to_dict(self) -> dict[str, int]:
        out = {k: v for k, v in self.__dict__.items() if k != "kernel"}
        out["queue_dropped"] = self.queue_dropped
        out["user_dropped"] = self.user_dropped
        return out


class Engine:
    """Bind queues, receive packets, send verdicts. Not a context manager on purpose:
    `divert.session.Divert` owns it together with the firewall rules."""

    def __init__(
        self,
        queues: list[int],
        *,
        copy_range: int = 0xFFFF,
        maxlen: int = 32768,
        fail_open: bool = False,
        gso: bool = False,
        conntrack: bool = False,
        uid_gid: bool = False,
        rcvbuf: int = 64 << 20,
        default: Verdict = Verdict.ACCEPT,
        timeout: float = 1.0,
        batch: int = 256,
        user_filter: BpfProgram | None = None,
    ) -> None:
        self.queues = queues
        self.default = default
        self.timeout = timeout
        self.batch = batch
        self.stats = DivertStats()
        self.user_filter = user_filter
        # Called (outside the lock, in the thread that sent the verdicts) with each
        # packet whose verdict went to the kernel, the default ones included.
        self.on_settled: Callable[[DivertPacket], None] | None = None
        self.lock = threading.Lock()  # receive/flush/expire may run from a watchdog thread
        self._pending: list[DivertPacket] = []  # arrival order = id order per queue
        self.last_receive = time.monotonic()
        self._bufsize = copy_range + 4096
        try:
            self._nl = NetlinkSocket(NETLINK_NETFILTER, rcvbuf=rcvbuf)
        except PermissionError as exc:
            raise PermissionNeeded("divert needs CAP_NET_ADMIN (run as root)") from exc
        try:
            flags = {
                nfq.F_FAIL_OPEN: fail_open,
                nfq.F_GSO: gso,
                nfq.F_CONNTRACK: conntrack,
                nfq.F_UID_GID: uid_gid,
            }
            set_flags = sum(bit for bit, on in flags.items() if on)
            names = {nfq.F_FAIL_OPEN: "--fail-open", nfq.F_GSO: "--gso", nfq.F_CONNTRACK: "--conntrack"}
            names[nfq.F_UID_GID] = "--uid-gid"
            self._flags_asked = [names[bit] for bit, on in flags.items() if on]
            clear_flags = sum(bit for bit, on in flags.items() if not on)
            for queue in queues:
                self._config(queue, nfq.bind_payload(queue), "bind")
                self._config(
                    queue,
                    nfq.config_payload(
                        queue,
                        copy_mode=nfq.NFQNL_COPY_PACKET,
                        copy_range=copy_range,
                        maxlen=maxlen,
                        set_flags=set_flags,
                        clear_flags=clear_flags,
                    ),
                    "configure",
                )
        except BaseException:
            self._nl.close()
            raise
        self._sock = self._nl.sock
        self._sock.setblocking(False)
        forget_in_children(self)

    def _config(self, queue: int, payload: bytes, what: str) -> None:
        try:
            self._nl.request(nfq.MSG_CONFIG, payload)
        except NetlinkError as exc:
            # The kernel answers EPERM both to a caller without CAP_NET_ADMIN and to a
            # bind of a queue another socket holds; the queue table tells them apart.
            if exc.errno in (errno.EPERM, errno.EBUSY):
                ours = self._nl.sock.getsockname()[0]
                holder = [q.portid for q in self.kernel_stats() if q.queue == queue and q.portid != ours]
                if holder:
                    raise SockscopeError(
                        f"queue {queue} is already bound by another process (netlink port {holder[0]}); "
                        "choose another --queue"
                    ) from exc
                if exc.errno == errno.EPERM:
                    raise PermissionNeeded("divert needs CAP_NET_ADMIN (run as root)") from exc
            asked = self._flags_asked
            if exc.errno == errno.EOPNOTSUPP and what == "configure" and asked:
                raise SockscopeError(
                    f"cannot configure nfqueue {queue} with {' '.join(asked)}: this kernel does not "
                    f"support {'it' if len(asked) == 1 else 'them'}"
                    f"{' (--conntrack needs nf_conntrack_netlink)' if '--conntrack' in asked else ''}"
                ) from exc
            raise SockscopeError(f"cannot {what} nfqueue {queue}: {exc.strerror}") from exc

    def fileno(self) -> int:
        return self._sock.fileno()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def receive(self, *, watchdog: bool = False) -> list[DivertPacket]:
        """The packets waiting on the socket now (up to ``batch``); never blocks.

        The watchdog receives only when the caller has stopped receiving (see
        `last_receive`); what it takes stays pending and expires to the default verdict.
        """
        out: list[DivertPacket] = []
        recv = self._sock.recv
        bufsize = self._bufsize
        first = _FIRST.unpack_from
        packet_type = _PACKET_TYPE
        append = out.append
        now = time.monotonic()
        if not watchdog:
            self.last_receive = now
        with self.lock:
            for _ in range(self.batch):
                try:
                    data = recv(bufsize)
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno == errno.ENOBUFS:
                        self.stats.enobufs += 1
                        continue
                    raise
                # One message per read, the packet header first: read the id in place.
                if data[4:6] == packet_type and len(data) >= 28:
                    queue, atype, packet_id = first(data, 18)
                    if atype == _PACKET_HDR_SWAPPED:
                        append(DivertPacket(queue, packet_id, data, now))
                        continue
                self._slow_path(data, out, now)
            self._pending += out
            if self.user_filter is not None and out:
                out = self._apply_user_filter(out)
            self.stats.received += len(out)
        return out

    def _apply_user_filter(self, packets: list[DivertPacket]) -> list[DivertPacket]:
        """Accept at once what the exact filter does not match (the kernel's rule was
        broader: see `divert.rule`); the rest is handed out."""
        assert self.user_filter is not None
        matches = self.user_filter.matches
        kept = []
        for pkt in packets:
            info = pkt.info
            if matches(info.payload, info.wire_len):
                kept.append(pkt)
            else:
                pkt.verdict = Verdict.ACCEPT
                pkt._unseen = True
                self.stats.unmatched += 1
        return kept

    def _slow_path(self, data: bytes, out: list[DivertPacket], now: float) -> None:
        for msg in iter_messages(data):
            if msg.type == NLMSG_ERROR:
                if error_code(msg):
                    self.stats.verdict_errors += 1
            elif msg.type == nfq.MSG_PACKET:
                info = nfq.parse_packet(msg.payload, interface_name)
                pkt = DivertPacket(info.queue, info.packet_id, bytes(msg.payload.obj), now)
                pkt._info = info
                out.append(pkt)

    def flush(self) -> int:
        """Send the verdicts given so far; returns how many packets they cover."""
        with self.lock:
            settled = self._flush_locked()
        self._report(settled)
        return len(settled)

    def _report(self, settled: list[DivertPacket]) -> None:
        callback = self.on_settled
        if callback is not None:
            for pkt in settled:
                if not pkt._unseen:
                    callback(pkt)

    def _flush_locked(self) -> list[DivertPacket]:
        pending = self._pending
        if not pending:
            return []
        msgs: list[bytes] = []
        undecided: list[DivertPacket] = []
        blocked: set[int] = set()  # queues with an undecided packet: no batch past it
        runs: dict[int, list[int]] = {}  # queue -> [last id, verdict, mark or -1]
        counts = [0] * 5  # by verdict number
        modified = 0
        batch_message = nfq.batch_verdict_message
        settled: list[DivertPacket] = []
        for pkt in pending:
            verdict = pkt.verdict
            queue = pkt.queue
            if verdict is None:
                blocked.add(queue)
                undecided.append(pkt)
                continue
            counts[verdict] += 1
            settled.append(pkt)
            new_payload = pkt._new_payload
            if new_payload is None and queue not in blocked:
                mark = pkt._new_mark
                mark_key = -1 if mark is None else mark
                run = runs.get(queue)
                if run is not None and run[1] == verdict and run[2] == mark_key:
                    run[0] = pkt.id
                    continue
                if run is not None:
                    msgs.append(batch_message(queue, run[0], run[1], mark=None if run[2] < 0 else run[2]))
                runs[queue] = [pkt.id, verdict, mark_key]
                continue
            run = runs.pop(queue, None)
            if run is not None:
                msgs.append(batch_message(queue, run[0], run[1], mark=None if run[2] < 0 else run[2]))
            if verdict == Verdict.DROP:
                new_payload = None
            elif new_payload is not None:
                modified += 1
            msgs.append(nfq.verdict_message(queue, pkt.id, verdict, mark=pkt._new_mark, payload=new_payload))
        for queue, run in runs.items():
            msgs.append(batch_message(queue, run[0], run[1], mark=None if run[2] < 0 else run[2]))
        self._pending = undecided
        stats = self.stats
        unseen = sum(pkt._unseen for pkt in settled) if self.user_filter is not None else 0
        stats.accepted += counts[Verdict.ACCEPT] - unseen
        stats.dropped += counts[Verdict.DROP]
        stats.repeated += counts[Verdict.REPEAT]
        stats.modified += modified
        if msgs:
            self._send(b"".join(msgs))
        return settled

    def _send(self, data: bytes) -> None:
        # Netlink takes a whole buffer of messages in one skb or fails with ENOBUFS/EAGAIN
        # when memory is short: retry briefly rather than lose verdicts.
        for attempt in range(100):
            try:
                self._sock.send(data)
                return
            except (BlockingIOError, InterruptedError):
                time.sleep(0.001 * (attempt + 1))
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                time.sleep(0.001 * (attempt + 1))
        raise SockscopeError("cannot send verdicts: netlink socket stays full")

    def next_expiry(self) -> float | None:
        """When the oldest undecided packet reaches the timeout (monotonic), or None."""
        with self.lock:
            for pkt in self._pending:
                if pkt.verdict is None:
                    return pkt.received + self.timeout
        return None

    def expire(self, now: float | None = None, everything: bool = False) -> int:
        """Give the default verdict to undecided packets older than the timeout (all of
        them with ``everything``), then flush. Returns how many expired."""
        now = time.monotonic() if now is None else now
        limit = now - self.timeout
        n = 0
        with self.lock:
            for pkt in self._pending:
                if pkt.verdict is None:
                    if not everything and pkt.received > limit:
                        break  # arrival order: the rest are younger
                    pkt.verdict = self.default
                    n += 1
            self.stats.expired += n
            settled = self._flush_locked()
        self._report(settled)
        return n

    def kernel_stats(self) -> list[nfq.QueueStats]:
        """The kernel's counters for our queues (this network namespace)."""
        try:
            with open(_PROC_STATS) as f:
                text = f.read()
        except OSError:
            return []
        return [q for q in nfq.parse_proc_stats(text) if q.queue in self.queues]

    def snapshot(self) -> DivertStats:
        stats = DivertStats(**{k: v for k, v in self.stats.__dict__.items() if k != "kernel"})
        stats.kernel = self.kernel_stats()
        return stats

    def drain(self) -> None:
        """Read everything the kernel holds for us and give it the default verdict
        (what was undecided too). For after the rules stopped steering packets here:
        one that was already on its way gets a moment to arrive."""
        if self._sock.fileno() < 0:
            return
        settled = False
        for _ in range(1000):  # bounded: a queue never refills once the rules are gone
            self.receive(watchdog=True)
            self.expire(everything=True)
            if self.kernel_queued():
                continue
            if settled:
                break
            settled = True
            time.sleep(0.01)

    def close(self) -> None:
        """`drain`, then close the socket, which unbinds the queues (the kernel drops
        anything still queued to an unbound queue)."""
        if self._sock.fileno() < 0:
            return
        try:
            self.drain()
        finally:
            self._nl.close()

    def kernel_queued(self) -> int:
        """Packets the kernel holds for our queues now (waiting for a verdict)."""
        return sum(q.queued for q in self.kernel_stats())

    def forget(self) -> None:
        """In a forked child: let go of the parent's socket (the parent keeps the queue)."""
        self._nl.close()
