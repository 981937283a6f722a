"""Bytes per socket and process from the kernel's send and receive tracepoints
(the ``bpf`` source of UDP, ICMP and raw traffic).

Two small eBPF programs, assembled here (``sockscope.ebpf``), run on the raw
tracepoints ``sock_send_length`` and ``sock_recv_length``: the kernel fires them
in ``sock_sendmsg``/``sock_recvmsg`` with the socket and the byte count the call
returned, in the context of the calling process. For an IPv4 or IPv6 socket that
is not TCP (TCP is counted from tcp_info, which also sees what never goes through
those calls), they add the bytes and a call count to a hash map entry keyed by
(socket, process); the first call of a pair records the socket's namespace
inode, protocol, type, addresses and the process's command name. User space reads
the map once per sample (``read``: batches) and keeps deltas.

Peeked receives (MSG_PEEK) are not counted: the bytes are read again.
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass
from typing import Final

from sockscope.ebpf import syscall
from sockscope.ebpf.asm import R0, R1, R2, R3, R4, R6, R7, R8, R9, R10, Program
from sockscope.ebpf.btf import Btf, vmlinux

_PROBE_READ_KERNEL, _GET_CURRENT_PID_TGID, _GET_CURRENT_COMM = 113, 14, 16
_MAP_LOOKUP, _MAP_UPDATE, _NOEXIST = 1, 2, 1
_MSG_PEEK: Final = 2
_TCP, _MPTCP = 6, 262  # MPTCP's subflows are TCP sockets: counted there
_MAX_ENTRIES: Final = 65536

# The map. Key: socket address (u64), tgid (u32), zero (u32).
_KEY: Final = struct.Struct("=QI4x")
# Value: sent, received, send calls, receive calls (u64); netns inode (u32), protocol,
# type (u16); comm[16]; the head of struct sock_common (addresses, ports, family).
_COUNTS: Final = struct.Struct("=QQQQIHH16s")
_COMMON_AT: Final = _COUNTS.size  # 56
_COMMON_MAX: Final = 96  # bytes of sock_common kept (enough for the IPv6 addresses)
_VALUE_SIZE: Final = _COMMON_AT + _COMMON_MAX
# The forwarded-frames map: namespace inode (u32, padded) -> bytes, frames (u64).
_NETNS_KEY: Final = struct.Struct("=I4x")
_FORWARDED: Final = struct.Struct("=QQ")
_FORWARDED_ENTRIES: Final = 4096


@dataclass(frozen=True, slots=True)
class Layout:
    """Offsets in the running kernel's structures (from BTF)."""

    sk_protocol: int
    sk_type: int
    skc_net: int
    net_inum: int
    skc_family: int
    skc_daddr: int
    skc_rcv_saddr: int
    skc_dport: int
    skc_num: int
    skc_v6_daddr: int
    skc_v6_rcv_saddr: int
    skb_sk: int
    skb_len: int
    dev_net: int

    @classmethod
    def from_btf(cls, btf: Btf) -> Layout:
        common = {name: btf.offset("sock_common", name) for name in (
            "skc_net", "skc_family", "skc_daddr", "skc_rcv_saddr", "skc_dport", "skc_num",
            "skc_v6_daddr", "skc_v6_rcv_saddr")}
        return cls(btf.offset("sock", "sk_protocol"), btf.offset("sock", "sk_type"),
                   net_inum=btf.offset("net", "ns.inum"), skb_sk=btf.offset("sk_buff", "sk"),
                   skb_len=btf.offset("sk_buff", "len"), dev_net=btf.offset("net_device", "nd_net.net"),
                   **common)

    @property
    def common_size(self) -> int:
        return max(self.skc_v6_rcv_saddr, self.skc_v6_daddr) + 16


@dataclass(slots=True)
class SocketBytes:
    """One (socket, process) pair's running totals, as the kernel counted them."""

    sk: int  # the socket's kernel address: an identity while it lives
    pid: int
    command: str
    netns: int  # namespace inode
    family: str  # "inet" or "inet6"
    protocol: int
    type: int
    local: str
    local_port: int
    remote: str | None
    remote_port: int | None
    tx: int
    rx: int
    tx_calls: int
    rx_calls: int


def build(map_fd: int, layout: Layout, receive: bool) -> bytes:
    """The program for one tracepoint. Its context is the tracepoint's arguments
    as u64s: (struct sock *sk, int ret[, int flags])."""
    p = Program()
    counter = 8 if receive else 0  # rx or tx
    calls = counter + 16
    key, scratch, net = -16, -24, -32
    value = net - _VALUE_SIZE
    p.mov(R6, R1)
    p.load(R7, R6, 0, 8)  # sk
    p.load(R8, R6, 8, 8)  # the call's return value: bytes, or an error
    p.jump("out", R8, "s<=", 0)
    if receive:
        p.load(R9, R6, 16, 8)
        p.jump("out", R9, "&", _MSG_PEEK)
    _read(p, scratch, 2, R7, layout.skc_family)
    p.load(R1, R10, scratch, 2)
    p.jump("inet", R1, "==", socket.AF_INET)
    p.jump("out", R1, "!=", socket.AF_INET6)
    p.label("inet")
    _read(p, scratch, 2, R7, layout.sk_protocol)
    p.load(R1, R10, scratch, 2)
    p.jump("out", R1, "==", _TCP)
    p.jump("out", R1, "==", _MPTCP)
    p.store(R10, key, R7, 8)
    p.call(_GET_CURRENT_PID_TGID)
    p.alu(R0, ">>", 32)
    p.store(R10, key + 8, R0, 4)
    p.store_imm(R10, key + 12, 0, 4)
    _lookup(p, map_fd, key)
    p.jump("new", R0, "==", 0)
    p.label("add")
    p.atomic_add(R0, counter, R8)
    p.alu(R1, "=", 1)
    p.atomic_add(R0, calls, R1)
    p.jump("out")
    p.label("new")  # first call of this socket and process: describe them
    for at in range(0, _VALUE_SIZE, 8):
        p.store_imm(R10, value + at, 0, 8)
    p.store(R10, value + counter, R8, 8)
    p.store_imm(R10, value + calls, 1, 8)
    p.load(R1, R10, scratch, 2)
    p.store(R10, value + 36, R1, 2)
    _read(p, value + 38, 2, R7, layout.sk_type)
    p.mov(R1, R10)
    p.alu(R1, "+", value + 40)
    p.alu(R2, "=", 16)
    p.call(_GET_CURRENT_COMM)
    _read(p, value + _COMMON_AT, layout.common_size, R7, 0)
    _read(p, net, 8, R7, layout.skc_net)
    p.load(R3, R10, net, 8)
    p.alu(R3, "+", layout.net_inum)
    p.mov(R1, R10)
    p.alu(R1, "+", value + 32)
    p.alu(R2, "=", 4)
    p.call(_PROBE_READ_KERNEL)
    p.map_fd(R1, map_fd)
    p.mov(R2, R10)
    p.alu(R2, "+", key)
    p.mov(R3, R10)
    p.alu(R3, "+", value)
    p.alu(R4, "=", _NOEXIST)
    p.call(_MAP_UPDATE)
    p.jump("out", R0, "==", 0)
    _lookup(p, map_fd, key)  # another CPU made the entry first: add to it
    p.jump("add", R0, "!=", 0)
    p.label("out")
    p.alu(R0, "=", 0)
    p.exit()
    return p.assemble()


def build_forwarded(map_fd: int, layout: Layout) -> bytes:
    """The program on ``net_dev_start_xmit`` (struct sk_buff *skb, struct net_device
    *dev): a frame about to leave an interface that no socket sent (forwarded,
    bridged, or made by the kernel itself, as ARP) adds its length to its
    namespace's entry."""
    p = Program()
    key, scratch, net = -8, -16, -24
    value = net - _FORWARDED.size
    p.mov(R6, R1)
    p.load(R7, R6, 0, 8)  # skb
    p.load(R8, R6, 8, 8)  # dev
    _read(p, scratch, 8, R7, layout.skb_sk)
    p.load(R1, R10, scratch, 8)
    p.jump("out", R1, "!=", 0)  # a socket's own frame: counted on its socket
    _read(p, scratch, 4, R7, layout.skb_len)
    p.load(R9, R10, scratch, 4)
    _read(p, net, 8, R8, layout.dev_net)
    p.load(R3, R10, net, 8)
    p.alu(R3, "+", layout.net_inum)
    p.mov(R1, R10)
    p.alu(R1, "+", key)
    p.alu(R2, "=", 4)
    p.call(_PROBE_READ_KERNEL)
    p.store_imm(R10, key + 4, 0, 4)
    _lookup(p, map_fd, key)
    p.jump("new", R0, "==", 0)
    p.label("add")
    p.atomic_add(R0, 0, R9)
    p.alu(R1, "=", 1)
    p.atomic_add(R0, 8, R1)
    p.jump("out")
    p.label("new")
    p.store(R10, value, R9, 8)
    p.store_imm(R10, value + 8, 1, 8)
    p.map_fd(R1, map_fd)
    p.mov(R2, R10)
    p.alu(R2, "+", key)
    p.mov(R3, R10)
    p.alu(R3, "+", value)
    p.alu(R4, "=", _NOEXIST)
    p.call(_MAP_UPDATE)
    p.jump("out", R0, "==", 0)
    _lookup(p, map_fd, key)
    p.jump("add", R0, "!=", 0)
    p.label("out")
    p.alu(R0, "=", 0)
    p.exit()
    return p.assemble()


def _read(p: Program, stack_offset: int, size: int, base: int, offset: int) -> None:
    """bpf_probe_read_kernel(fp + stack_offset, size, base + offset)"""
    p.mov(R1, R10)
    p.alu(R1, "+", stack_offset)
    p.alu(R2, "=", size)
    p.mov(R3, base)
    if offset:
        p.alu(R3, "+", offset)
    p.call(_PROBE_READ_KERNEL)


def _lookup(p: Program, map_fd: int, key: int) -> None:
    p.map_fd(R1, map_fd)
    p.mov(R2, R10)
    p.alu(R2, "+", key)
    p.call(_MAP_LOOKUP)


_layout: Layout | None = None


def kernel_layout() -> Layout:
    """The running kernel's offsets (BTF read once per process)."""
    global _layout
    if _layout is None:
        _layout = Layout.from_btf(vmlinux())
    return _layout


class SockTrace:
    """The three programs attached, and their maps. ``close()`` detaches them.

    Raises OSError (no BTF, no raw tracepoints), PermissionNeeded (no CAP_BPF /
    CAP_PERFMON) or BpfError (the verifier refused) when eBPF cannot run here.
    """

    def __init__(self) -> None:
        self._fds: list[int] = []
        layout = self.layout = kernel_layout()
        if layout.common_size > _COMMON_MAX:
            raise OSError(f"struct sock_common is larger here than expected ({layout.common_size})")
        try:
            self.map_fd = syscall.map_create(syscall.MAP_TYPE_HASH, _KEY.size, _VALUE_SIZE, _MAX_ENTRIES)
            self._fds.append(self.map_fd)
            self.forwarded_fd = syscall.map_create(syscall.MAP_TYPE_HASH, _NETNS_KEY.size,
                                                   _FORWARDED.size, _FORWARDED_ENTRIES)
            self._fds.append(self.forwarded_fd)
            for tracepoint, name, insns in (
                    ("sock_send_length", "ssc_send", build(self.map_fd, layout, False)),
                    ("sock_recv_length", "ssc_recv", build(self.map_fd, layout, True)),
                    ("net_dev_start_xmit", "ssc_fwd", build_forwarded(self.forwarded_fd, layout))):
                prog = syscall.prog_load(syscall.PROG_TYPE_RAW_TRACEPOINT, insns, name)
                self._fds.append(prog)
                self._fds.append(syscall.raw_tracepoint_open(tracepoint, prog))
        except BaseException:
            self.close()
            raise

    def read(self) -> list[SocketBytes]:
        """Every (socket, process) pair the programs have seen, with its totals."""
        return [decode(key, value, self.layout)
                for key, value in syscall.map_items(self.map_fd, _KEY.size, _VALUE_SIZE)]

    def read_forwarded(self) -> dict[int, int]:
        """Namespace inode -> bytes of frames it passed on that no socket sent (running totals)."""
        return {_NETNS_KEY.unpack(key)[0]: _FORWARDED.unpack(value)[0]
                for key, value in syscall.map_items(self.forwarded_fd, _NETNS_KEY.size, _FORWARDED.size)}

    def forget(self, entries: list[SocketBytes]) -> None:
        """Drop these pairs from the map (quiet ones: the map must not fill up)."""
        for e in entries:
            syscall.map_delete(self.map_fd, _KEY.pack(e.sk, e.pid))

    def close(self) -> None:
        for fd in reversed(self._fds):
            os.close(fd)
        self._fds.clear()


def decode(key: bytes, value: bytes, layout: Layout) -> SocketBytes:
    """One map entry (sans-IO)."""
    sk, pid = _KEY.unpack(key)
    tx, rx, tx_calls, rx_calls, netns, protocol, sock_type, comm = _COUNTS.unpack_from(value)
    common = value[_COMMON_AT:]
    family_number = struct.unpack_from("=H", common, layout.skc_family)[0]
    local_port = struct.unpack_from("=H", common, layout.skc_num)[0]
    remote_port = struct.unpack_from("!H", common, layout.skc_dport)[0]
    if family_number == socket.AF_INET6:
        family = "inet6"
        local = _address6(common[layout.skc_v6_rcv_saddr:layout.skc_v6_rcv_saddr + 16])
        remote = _address6(common[layout.skc_v6_daddr:layout.skc_v6_daddr + 16])
    else:
        family = "inet"
        local = socket.inet_ntop(socket.AF_INET, common[layout.skc_rcv_saddr:layout.skc_rcv_saddr + 4])
        remote = socket.inet_ntop(socket.AF_INET, common[layout.skc_daddr:layout.skc_daddr + 4])
    connected = remote_port != 0
    return SocketBytes(sk, pid, comm.rstrip(b"\0").decode("utf-8", "replace"), netns, family,
                       protocol, sock_type, local, local_port, remote if connected else None,
                       remote_port if connected else None, tx, rx, tx_calls, rx_calls)


def _address6(raw: bytes) -> str:
    if raw[:12] == b"\0" * 10 + b"\xff\xff":  # v4-mapped: shown as IPv4, as ss does
        return socket.inet_ntop(socket.AF_INET, raw[12:])
    return socket.inet_ntop(socket.AF_INET6, raw)
