"""sockscope.ebpf's assembler and BTF reader, and the map entries of the traffic
programs (traffic/socktrace.py), on bytes built here."""

from __future__ import annotations

import socket
import struct

import pytest

from sockscope.ebpf.asm import R0, R1, R6, R8, R10, Program
from sockscope.ebpf.btf import Btf, BtfError
from sockscope.traffic.datagrams import proto_name
from sockscope.traffic.socktrace import Layout, decode


def test_instructions_are_encoded_as_the_kernel_reads_them() -> None:
    p = Program()
    p.mov(R6, R1)  # BPF_ALU64 | BPF_MOV | BPF_X
    p.jump("out", R8, "s<=", 0)  # BPF_JMP | BPF_JSLE | BPF_K, forward over 4 slots
    p.store_imm(R10, -16, 7, 4)  # BPF_ST | BPF_MEM | BPF_W
    p.map_fd(R1, 5)  # BPF_LD | BPF_DW | BPF_IMM, src BPF_PSEUDO_MAP_FD; two slots
    p.atomic_add(R0, 8, R1)  # BPF_STX | BPF_ATOMIC | BPF_DW, imm BPF_ADD
    p.label("out")
    p.alu(R0, "=", 0)  # BPF_ALU64 | BPF_MOV | BPF_K
    p.exit()
    assert p.assemble().hex(" ", 8).split() == [
        "bf16000000000000",
        "d508040000000000",
        "620af0ff07000000",
        "1811000005000000",
        "0000000000000000",
        "db10080000000000",
        "b700000000000000",
        "9500000000000000",
    ]


def test_a_label_defined_twice_is_refused() -> None:
    p = Program()
    p.label("x")
    with pytest.raises(ValueError, match="twice"):
        p.label("x")


def _btf(types: list[bytes], strings: bytes) -> bytes:
    body = b"".join(types)
    return struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(body), len(body), len(strings)) + body + strings


def _type(name_off: int, kind: int, vlen: int, size: int, kind_flag: int = 0) -> bytes:
    return struct.pack("<III", name_off, kind_flag << 31 | kind << 24 | vlen, size)


def test_member_offsets_through_anonymous_unions_and_typedefs() -> None:
    strings = b"\0int\0inner\0a\0b\0outer\0x\0in\0inner_t\0"
    name = {s: strings.index(s.encode() + b"\0")
            for s in ("int", "inner", "a", "b", "outer", "x", "in", "inner_t")}
    types = [
        _type(name["int"], 1, 0, 4) + struct.pack("<I", 32),  # 1: int
        _type(name["inner"], 4, 2, 8) + struct.pack("<III", name["a"], 1, 0)
        + struct.pack("<III", name["b"], 1, 32),  # 2: struct inner { int a; int b; }
        _type(name["inner_t"], 8, 0, 2),  # 3: typedef struct inner inner_t
        _type(0, 5, 1, 8) + struct.pack("<III", name["in"], 3, 0),  # 4: union { inner_t in; }
        _type(name["outer"], 4, 2, 16, kind_flag=1) + struct.pack("<III", name["x"], 1, 0)
        + struct.pack("<III", 0, 4, 64),  # 5: struct outer { int x; union {...}; } (bitfield form)
    ]
    btf = Btf(_btf(types, strings))
    assert btf.offset("outer", "x") == 0
    assert btf.offset("outer", "in") == 8
    assert btf.offset("outer", "in.b") == 12
    assert btf.offset("inner", "b") == 4
    with pytest.raises(BtfError, match="no member"):
        btf.offset("outer", "y")
    with pytest.raises(BtfError, match="struct missing"):
        btf.offset("missing", "x")
    with pytest.raises(BtfError, match="magic"):
        Btf(b"\0" * 24)


# The layout of Linux 6.18 x86_64 (struct sock_common's head; sock's protocol and type; sk_buff, net_device).
LAYOUT = Layout(sk_protocol=532, sk_type=534, skc_net=48, net_inum=176, skc_family=16, skc_daddr=0,
                skc_rcv_saddr=4, skc_dport=12, skc_num=14, skc_v6_daddr=56, skc_v6_rcv_saddr=72,
                skb_sk=24, skb_len=112, dev_net=264)


def _entry(family: int, local: bytes, remote: bytes, local_port: int,
           remote_port: int) -> tuple[bytes, bytes]:
    key = struct.pack("=QI4x", 0xFFFF888012345678, 4242)
    counts = struct.pack("=QQQQIHH16s", 1000, 64, 10, 1, 4026531840, 17, socket.SOCK_DGRAM, b"iperf3")
    common = bytearray(96)
    struct.pack_into("=H", common, 16, family)
    struct.pack_into("=H", common, 14, local_port)  # skc_num: host order
    struct.pack_into("!H", common, 12, remote_port)  # skc_dport: network order
    if family == socket.AF_INET:
        common[4:8], common[0:4] = local, remote
    else:
        common[72:88], common[56:72] = local, remote
    return key, counts + bytes(common)


def test_a_map_entry_decodes_to_the_socket_and_process() -> None:
    key, value = _entry(socket.AF_INET, bytes([198, 51, 100, 1]), bytes([198, 51, 100, 2]), 40000, 5201)
    e = decode(key, value, LAYOUT)
    assert (e.pid, e.command, e.netns, e.protocol, e.type) == (4242, "iperf3", 4026531840, 17, 2)
    assert (e.family, e.local, e.local_port, e.remote, e.remote_port) == (
        "inet", "198.51.100.1", 40000, "198.51.100.2", 5201)
    assert (e.tx, e.rx, e.tx_calls, e.rx_calls) == (1000, 64, 10, 1)
    unconnected = decode(*_entry(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, "2001:db8::1"),
                                 bytes(16), 53, 0), LAYOUT)
    assert (unconnected.family, unconnected.local, unconnected.remote, unconnected.remote_port) == (
        "inet6", "2001:db8::1", None, None)
    mapped = decode(*_entry(socket.AF_INET6, b"\0" * 10 + b"\xff\xff" + bytes([127, 0, 0, 1]),
                            b"\0" * 10 + b"\xff\xff" + bytes([127, 0, 0, 2]), 9, 10), LAYOUT)
    assert (mapped.local, mapped.remote) == ("127.0.0.1", "127.0.0.2")


def test_protocol_names() -> None:
    assert proto_name(socket.IPPROTO_UDP, socket.SOCK_DGRAM) == "udp"
    assert proto_name(136, socket.SOCK_DGRAM) == "udp"  # UDP-Lite
    assert proto_name(socket.IPPROTO_ICMP, socket.SOCK_DGRAM) == "icmp"  # ping socket
    assert proto_name(socket.IPPROTO_ICMPV6, socket.SOCK_RAW) == "icmp"
    assert proto_name(socket.IPPROTO_UDP, socket.SOCK_RAW) == "raw"
    assert proto_name(47, socket.SOCK_RAW) == "raw"  # GRE
    assert proto_name(132, socket.SOCK_STREAM) == "sctp"
