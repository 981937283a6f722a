"""The steering rules: nft tables of divert's own, owned by the process that made them.

For each family the rule can match, one table ``ip|ip6 sockscope_divert_<queue>_<pid>_<start>``
with one base chain per hook (type filter, priority -10, policy accept) holding one
rule: ``[iifname] [oifname] [mark] [bpf program] NFQUEUE``. Built over netlink
(`sockscope.netlink.nftables`) in one transaction, so it is all there or none of it.

Why this shape:

* Nothing else is touched. No table, chain or rule of anyone else's is created,
  changed or removed (no ``table ip filter`` appears because divert ran), so the
  ruleset after a run is the ruleset before, byte for byte.
* The tables carry ``NFT_TABLE_F_OWNER``: they belong to this process's netlink
  socket and the kernel deletes them when it closes, however the process ends
  (SIGKILL included). Other processes cannot change or delete them; ``nft flush
  ruleset`` passes them by.
* Priority -10 runs before the usual filter chains (iptables' and nft's ``filter``,
  priority 0). A verdict of accept continues with the next hook function, so the
  host's own filter rules still judge every packet after the divert, as BSD's divert
  re-injects a packet at the rule after the divert rule. Two diverts on the same
  packets each have their own chain: the packet passes through both, the divert
  installed later first (equal priorities run newest first).
* NFQUEUE and the bpf match are iptables extensions, run by nft_compat: this kernel
  has no nft ``queue`` statement. ``nft list ruleset`` shows them as ``xt match bpf``
  and ``queue num N``.
* Removal is two steps, because the kernel drops every packet queued in the
  namespace whenever a netfilter hook goes away (nf_queue_nf_hook_drop): `quiesce`
  empties the chains (no new packets, hooks kept), the caller gives every packet
  still queued its verdict, then `remove` deletes the tables.
* Where the kernel lacks owner tables (before Linux 5.12) the tables are plain; the
  pid and start time in the name let a later run, or ``--cleanup``, remove those of
  a process that is gone.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import struct
import threading

from sockscope.divert.process import forget_in_children, process_start_time
from sockscope.divert.rule import Rule
from sockscope.errors import PermissionNeeded, SockscopeError
from sockscope.netlink import nftables as nft
from sockscope.netlink.codec import NLMSG_ERROR, NetlinkError, error_code, iter_messages
from sockscope.netlink.socket import NETLINK_NETFILTER, NetlinkSocket

PRIORITY = -10
TABLE_PREFIX = "sockscope_divert_"
_TABLE = re.compile(re.escape(TABLE_PREFIX) + r"\d+_(\d+)_(\d+)")
_FAMILIES = {4: nft.NFPROTO_IPV4, 6: nft.NFPROTO_IPV6}
_NEED_ADMIN = "divert needs CAP_NET_ADMIN to change the firewall (run as root)"


class Steering:
    """What one divert put into the firewall: its tables, and the socket that owns them."""

    def __init__(
        self, nl: NetlinkSocket, name: str, families: list[int], hooks: tuple[str, ...], owned: bool
    ) -> None:
        self.name = name
        self.families = families  # NFPROTO_* of the tables still there
        self.hooks = hooks
        self.owned = owned
        self._nl: NetlinkSocket | None = nl
        self._lock = threading.Lock()
        forget_in_children(self)

    @property
    def tables(self) -> list[str]:
        return [f"{nft.FAMILY_NAMES[f]} {self.name}" for f in self.families]

    def quiesce(self) -> None:
        """Empty the chains: nothing more is queued, and the hooks stay (their removal
        would drop what is queued). Failing that, nothing is lost: `remove` follows."""
        with self._lock:
            nl = self._nl
            if nl is None or not self.families:
                return
            messages = [
                nft.del_rules(family, self.name, hook, nl.next_seq())
                for family in self.families
                for hook in self.hooks
            ]
            try:
                _transact(nl, messages)
            except NetlinkError:
                for message in messages:  # one part gone (a table without owner): each alone
                    with contextlib.suppress(NetlinkError):
                        _transact(nl, [_renumber(message, nl.next_seq())])

    def remove(self) -> None:
        """Delete each table on its own (one that is gone already is no error), then
        close the socket; errors joined into one SockscopeError. Idempotent."""
        with self._lock:
            nl, self._nl = self._nl, None
            if nl is None:
                return
            errors = []
            try:
                while self.families:
                    family = self.families.pop()
                    try:
                        _transact(nl, [nft.del_table(family, self.name, nl.next_seq())])
                    except NetlinkError as exc:
                        if exc.errno != errno.ENOENT:
                            errors.append(f"{nft.FAMILY_NAMES[family]} {self.name}: {exc.strerror}")
            finally:
                nl.close()  # an owned table still there goes with the socket
        if errors:
            raise SockscopeError("could not remove the divert rules: " + "; ".join(errors))

    def forget(self) -> None:
        """In a forked child: let go of the parent's socket without touching its tables."""
        nl, self._nl = self._nl, None
        self.families = []
        if nl is not None:
            nl.close()


def install(rule: Rule, queues: list[int], *, bypass: bool, owner: bool = True) -> Steering:
    """Install the tables for ``rule`` in one transaction; nothing stays if it fails."""
    pid = os.getpid()
    name = f"{TABLE_PREFIX}{queues[0]}_{pid}_{process_start_time(pid) or 0}"
    comment = f"sockscope divert (pid {pid}): {rule.text!r} {rule.scope} -> queue {queues[0]}"
    if len(queues) > 1:
        comment += f"-{queues[-1]}"
    families = [_FAMILIES[f] for f in rule.families]
    try:
        nl = NetlinkSocket(NETLINK_NETFILTER)
    except PermissionError as exc:
        raise PermissionNeeded(_NEED_ADMIN) from exc
    try:
        try:
            _transact(nl, _messages(nl, rule, name, queues, bypass, owner, comment))
        except NetlinkError as exc:
            if not owner or exc.errno != errno.EOPNOTSUPP:
                raise
            owner = False  # a kernel before owner tables: plain ones, named after us
            _transact(nl, _messages(nl, rule, name, queues, bypass, owner, comment))
    except NetlinkError as exc:
        nl.close()
        raise _install_error(exc, name) from exc
    except BaseException:
        nl.close()
        raise
    return Steering(nl, name, families, rule.hooks, owner)


def _messages(
    nl: NetlinkSocket, rule: Rule, name: str, queues: list[int], bypass: bool, owner: bool, comment: str
) -> list[bytes]:
    target = nft.nfqueue_target(queues[0], len(queues), bypass=bypass, fanout=len(queues) > 1)
    out = []
    for version in rule.families:
        family = _FAMILIES[version]
        out.append(nft.new_table(family, name, nl.next_seq(), owner=owner, comment=comment))
        for hook in rule.hooks:
            out.append(nft.new_base_chain(family, name, hook, hook, PRIORITY, nl.next_seq()))
            exprs: list[bytes] = []
            if rule.in_interface is not None and hook != "output":
                exprs += nft.interface_match(
                    nft.NFT_META_IIFNAME, rule.in_interface.name, rule.in_interface.negate
                )
            if rule.out_interface is not None and hook != "input":
                exprs += nft.interface_match(
                    nft.NFT_META_OIFNAME, rule.out_interface.name, rule.out_interface.negate
                )
            if rule.mark is not None:
                exprs += nft.mark_match(rule.mark.value, rule.mark.mask, rule.mark.negate)
            program = rule.programs[version]
            if program is not None:
                exprs.append(nft.bpf_match(program.instructions))
            exprs.append(target)
            out.append(nft.new_rule(family, name, hook, exprs, nl.next_seq()))
    return out


def _transact(nl: NetlinkSocket, messages: list[bytes]) -> None:
    """Send ``messages`` as one batch and wait for every answer; NetlinkError with the
    first error (the kernel then applied none of them)."""
    begin, end = nl.next_seq(), nl.next_seq()
    waiting = {msg_seq(m) for m in messages} | {begin}
    nl.sock.send(nft.batch(messages, begin, end))
    first = 0
    nl.sock.settimeout(10)
    try:
        while waiting - {begin}:
            for msg in iter_messages(nl.sock.recv(1 << 16)):
                if msg.type != NLMSG_ERROR or msg.seq not in waiting:
                    continue
                waiting.discard(msg.seq)
                code = error_code(msg)
                first = first or code
                if msg.seq == begin and code:  # the batch itself failed (out of memory)
                    waiting.clear()
    except TimeoutError:
        if not first:
            raise SockscopeError("nf_tables did not answer within 10 s") from None
    finally:
        nl.sock.settimeout(None)
    if first:
        raise NetlinkError(first, os.strerror(first))


def msg_seq(message: bytes) -> int:
    return int(struct.unpack_from("=I", message, 8)[0])  # nlmsghdr: len, type, flags, seq


def _renumber(message: bytes, seq: int) -> bytes:
    return message[:8] + struct.pack("=I", seq) + message[12:]


def _install_error(exc: NetlinkError, name: str) -> SockscopeError:
    if exc.errno == errno.EPERM:
        return PermissionNeeded(_NEED_ADMIN)
    if exc.errno == errno.EEXIST:
        return SockscopeError(f"cannot install the divert rules: a table named {name} exists already")
    if exc.errno == errno.ENOENT:
        return SockscopeError(
            "cannot install the divert rules: the kernel lacks nf_tables' iptables compatibility "
            "(nft_compat) or the xt_bpf / xt_NFQUEUE extensions"
        )
    return SockscopeError(f"cannot install the divert rules: {exc.strerror}")


def list_tables() -> list[nft.TableInfo]:
    """Every nf_tables table of this network namespace."""
    try:
        with NetlinkSocket(NETLINK_NETFILTER) as nl:
            return [nft.parse_table(m.payload) for m in nl.dump(nft.GETTABLE, nft.tables_request())]
    except PermissionError as exc:
        raise PermissionNeeded(_NEED_ADMIN) from exc
    except NetlinkError as exc:
        if exc.errno == errno.EPERM:
            raise PermissionNeeded(_NEED_ADMIN) from exc
        raise SockscopeError(f"cannot list the nf_tables tables: {exc.strerror}") from exc


def clean_leftovers() -> list[str]:
    """Remove divert tables whose owner process is gone ("ip6 sockscope_divert_..."
    names). Owned tables are never leftovers (the kernel removes them with their
    socket); tables of live processes are left alone."""
    removed = []
    for table in list_tables():
        m = _TABLE.fullmatch(table.name)
        if m is None or table.flags & nft.NFT_TABLE_F_OWNER:
            continue
        if process_start_time(int(m.group(1))) == int(m.group(2)):
            continue
        with NetlinkSocket(NETLINK_NETFILTER) as nl:
            try:
                _transact(nl, [nft.del_table(table.family, table.name, nl.next_seq())])
            except NetlinkError as exc:
                if exc.errno == errno.EPERM:
                    raise PermissionNeeded(_NEED_ADMIN) from exc
                if exc.errno != errno.ENOENT:  # gone meanwhile: another run cleaned it
                    raise SockscopeError(
                        f"cannot remove {table.family_name} {table.name}: {exc.strerror}"
                    ) from exc
        removed.append(f"{table.family_name} table {table.name}")
    return removed
