"""tcpdump filter expressions compiled to classic BPF by libpcap, through ctypes.

We deliberately do not compile filters ourselves: libpcap's compiler *is* the tcpdump
filter language, so delegating to it gives identical programs and identical error
messages. The compiled program is copied into Python so it outlives the pcap handle, and
can then be

- attached to a socket in the kernel (``attach``, SO_ATTACH_FILTER), or
- run in user space on frames read from a file (``matches``, libpcap's ``bpf_filter``).

    prog = compile_filter("udp port 53")
    prog.attach(sock)              # kernel filtering of a live AF_PACKET socket
    prog.matches(frame)            # same program over a frame from ``-r FILE``
    print(prog.dump())             # like ``tcpdump -d``
"""

from __future__ import annotations

import ctypes
import socket
import threading
from dataclasses import dataclass, field

from sockscope.errors import SockscopeError, UsageError
from sockscope.packets.sll import PACKET_OUTGOING

# <asm-generic/socket.h>; Python's socket module does not export these.
SO_ATTACH_FILTER = 26
SO_DETACH_FILTER = 27

# Sonames to try when find_library fails (it needs ldconfig/gcc, absent in slim images).
_SONAMES = ("libpcap.so.0.8", "libpcap.so.1")

# pcap files name link layers with LINKTYPE_* values; pcap_open_dead wants the
# platform's DLT_* value. They agree except for a few historical numbers, of which only
# these can reach us from a Linux capture file.
_LINKTYPE_TO_DLT = {100: 11, 101: 12}  # ATM_RFC1483, RAW (DLT_RAW is 12 on Linux)


class _BpfInsn(ctypes.Structure):
    """struct bpf_insn / struct sock_filter: the kernel and libpcap share this layout."""

    _fields_ = (
        ("code", ctypes.c_ushort),
        ("jt", ctypes.c_ubyte),
        ("jf", ctypes.c_ubyte),
        ("k", ctypes.c_uint32),
    )


class _BpfProgram(ctypes.Structure):
    """struct bpf_program, filled in by pcap_compile."""

    _fields_ = (("bf_len", ctypes.c_uint), ("bf_insns", ctypes.POINTER(_BpfInsn)))


class _SockFprog(ctypes.Structure):
    """struct sock_fprog; ctypes inserts the padding between the u16 and the pointer."""

    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_BpfInsn)))


_lib: ctypes.CDLL | None = None
_load_lock = threading.Lock()
# pcap_compile used a global lexer/parser before libpcap 1.8, so calls are serialised.
_compile_lock = threading.Lock()


def _libpcap() -> ctypes.CDLL:
    """Load libpcap on first use, so importing sockscope never requires it."""
    # Lock-free fast path: matches() calls this once per packet.
    return _lib if _lib is not None else _load()


def _load() -> ctypes.CDLL:
    global _lib
    with _load_lock:  # another thread may have loaded it while we waited
        if _lib is not None:
            return _lib
        import ctypes.util  # only here: it pulls in subprocess and shutil

        names = [n for n in (ctypes.util.find_library("pcap"),) if n] + list(_SONAMES)
        for name in names:
            try:
                lib = ctypes.CDLL(name)
            except OSError:
                continue
            _declare(lib)
            _lib = lib
            return lib
        raise SockscopeError("libpcap not found: install libpcap0.8")


def _declare(lib: ctypes.CDLL) -> None:
    # Explicit prototypes: without them ctypes truncates pointers to int on 64-bit.
    lib.pcap_open_dead.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.pcap_open_dead.restype = ctypes.c_void_p
    lib.pcap_compile.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(_BpfProgram),
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_uint32,
    ]
    lib.pcap_compile.restype = ctypes.c_int
    lib.pcap_geterr.argtypes = [ctypes.c_void_p]
    lib.pcap_geterr.restype = ctypes.c_char_p
    lib.pcap_freecode.argtypes = [ctypes.POINTER(_BpfProgram)]
    lib.pcap_freecode.restype = None
    lib.pcap_close.argtypes = [ctypes.c_void_p]
    lib.pcap_close.restype = None
    # c_char_p for the packet: bytes pass without a copy (the filter only reads them).
    lib.bpf_filter.argtypes = [ctypes.POINTER(_BpfInsn), ctypes.c_char_p, ctypes.c_uint, ctypes.c_uint]
    lib.bpf_filter.restype = ctypes.c_uint
    lib.bpf_image.argtypes = [ctypes.POINTER(_BpfInsn), ctypes.c_int]
    lib.bpf_image.restype = ctypes.c_char_p


@dataclass(frozen=True)
class BpfProgram:
    """A compiled classic BPF program: ``instructions`` are (code, jt, jf, k) tuples."""

    instructions: tuple[tuple[int, int, int, int], ...]
    # The same instructions as a C array, built once: attach and matches hand it to C.
    _array: ctypes.Array[_BpfInsn] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.instructions:
            raise ValueError("a BPF program needs at least one instruction")
        if len(self.instructions) > 0xFFFF:  # sock_fprog.len is a u16
            raise ValueError(f"BPF program too long: {len(self.instructions)} instructions")
        array = (_BpfInsn * len(self.instructions))(*(_BpfInsn(*insn) for insn in self.instructions))
        object.__setattr__(self, "_array", array)

    def __len__(self) -> int:
        return len(self.instructions)

    def attach(self, sock: socket.socket) -> None:
        """Install the program on ``sock`` (SO_ATTACH_FILTER); the kernel copies it."""
        fprog = _SockFprog(len(self.instructions), ctypes.cast(self._array, ctypes.POINTER(_BpfInsn)))
        # bytes(fprog) embeds the array's address; self._array keeps that memory alive
        # through the call, and the kernel copies the instructions before returning.
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(fprog))

    def matches(self, packet: bytes, wirelen: int | None = None) -> bool:
        """Run the program over ``packet`` in user space, as the kernel would.

        ``wirelen`` is the original length when ``packet`` was truncated by the snaplen
        (``len`` in BPF reads it); it defaults to ``len(packet)``.
        """
        caplen = len(packet)
        result: int = _libpcap().bpf_filter(
            self._array, packet, caplen if wirelen is None else wirelen, caplen
        )
        return result != 0

    def dump(self) -> str:
        """A listing in the format of ``tcpdump -d`` (one instruction per line)."""
        lib = _libpcap()
        lines = []
        for n in range(len(self.instructions)):
            insn = ctypes.cast(ctypes.byref(self._array[n]), ctypes.POINTER(_BpfInsn))
            image: bytes = lib.bpf_image(insn, n)
            lines.append(image.decode("ascii", "replace"))
        return "\n".join(lines)


def reject_all() -> BpfProgram:
    """``ret #0``: attach it before binding, drain the queue, then attach the real
    filter, so no frame that arrived before filtering began is ever returned."""
    return BpfProgram(((0x06, 0, 0, 0),))  # BPF_RET | BPF_K


def compile_filter(
    expression: str,
    linktype: int = 1,
    snaplen: int = 262144,
    optimize: bool = True,
    netmask: int = 0xFFFFFFFF,
) -> BpfProgram:
    """Compile a tcpdump filter for frames of ``linktype`` (a pcap LINKTYPE_* value).

    An expression libpcap rejects raises UsageError with libpcap's own message. The
    empty expression accepts everything (``ret #snaplen``), as in tcpdump.
    """
    lib = _libpcap()
    try:
        text = expression.encode("ascii")
    except UnicodeEncodeError as exc:
        raise UsageError(f"filter expression is not ASCII: {expression!r}") from exc
    dlt = _LINKTYPE_TO_DLT.get(linktype, linktype)
    with _compile_lock:
        handle = lib.pcap_open_dead(dlt, snaplen)
        if not handle:
            raise SockscopeError(f"pcap_open_dead failed for link type {linktype}")
        try:
            program = _BpfProgram()
            if lib.pcap_compile(handle, ctypes.byref(program), text, int(optimize), netmask) != 0:
                message: bytes = lib.pcap_geterr(handle)
                raise UsageError(" ".join(message.decode("utf-8", "replace").split()))
            try:
                insns = tuple(
                    (i.code, i.jt, i.jf, i.k) for i in (program.bf_insns[n] for n in range(program.bf_len))
                )
            finally:
                lib.pcap_freecode(ctypes.byref(program))
        finally:
            lib.pcap_close(handle)
    return BpfProgram(insns)


def accept_all(snaplen: int) -> BpfProgram:
    """``ret #snaplen``: keeps every packet, cut to ``snaplen`` bytes (a TPACKET_V3
    ring copies as many bytes as the socket filter returns)."""
    return BpfProgram(((0x06, 0, 0, snaplen),))


# Classic BPF's ancillary load of skb->pkt_type (<linux/filter.h>: SKF_AD_OFF + SKF_AD_PKTTYPE).
_LD_PKTTYPE = (0x30, 0, 0, 0xFFFFF000 + 4)  # BPF_LD | BPF_B | BPF_ABS
_LD_IFINDEX = (0x20, 0, 0, 0xFFFFF000 + 8)  # BPF_LD | BPF_W | BPF_ABS, SKF_AD_IFINDEX


def with_direction(
    program: BpfProgram, keep_incoming: bool, keep_outgoing: bool, loopback_index: int | None = None
) -> BpfProgram:
    """``program`` behind a kernel-only test of the packet's direction (tcpdump -Q).

    Jumps in classic BPF are relative and forward, so instructions put in front leave
    the program's own jumps intact. The prefix reads skb->pkt_type, which exists only
    in the kernel: the result is for ``attach``, not for ``matches``.
    """
    if keep_incoming and keep_outgoing:
        if loopback_index is None:
            return program
        # Every interface (-i any): loopback shows each packet leaving and arriving;
        # drop the leaving copy there only, as libpcap does.
        prefix = (
            _LD_PKTTYPE,
            (0x15, 0, 3, PACKET_OUTGOING),  # outgoing? check the interface : program
            _LD_IFINDEX,
            (0x15, 0, 1, loopback_index),  # loopback? drop : program
            (0x06, 0, 0, 0),
        )
        return BpfProgram(prefix + program.instructions)
    if not keep_incoming and not keep_outgoing:
        return reject_all()
    # jeq #OUTGOING: to "ret #0" (index 2) or over it to the program (index 3).
    jt, jf = (1, 0) if keep_outgoing else (0, 1)
    test = (_LD_PKTTYPE, (0x15, jt, jf, PACKET_OUTGOING), (0x06, 0, 0, 0))
    return BpfProgram(test + program.instructions)


_SLL_HDR_LEN = 16
_SKF_AD_PROTOCOL = 0xFFFFF000 + 0
_SKF_AD_PKTTYPE = 0xFFFFF000 + 4
_BPF_LD, _BPF_LDX, _BPF_RET = 0x00, 0x01, 0x06
_BPF_ABS, _BPF_IND, _BPF_MSH, _BPF_H, _BPF_K = 0x20, 0x40, 0xA0, 0x08, 0x00


def for_cooked_socket(program: BpfProgram) -> BpfProgram | None:
    """A LINUX_SLL program rewritten for a SOCK_DGRAM packet socket, or None.

    The kernel runs socket filters on a cooked socket's packet from the network
    header on: the 16-byte SLL header the program expects is not there. Loads past it
    move back 16 bytes; the two SLL fields a filter can test map to the kernel's
    ancillary loads (packet type at 0, protocol at 14); snapshot lengths shrink by the
    header we add in user space. Any other load inside the header cannot be
    translated: None, and the caller filters in user space instead.
    """
    out = []
    for code, jt, jf, k in program.instructions:
        cls, mode, size = code & 0x07, code & 0xE0, code & 0x18
        if cls in (_BPF_LD, _BPF_LDX) and mode in (_BPF_ABS, _BPF_IND, _BPF_MSH):
            if k >= _SLL_HDR_LEN:
                k -= _SLL_HDR_LEN
            elif mode == _BPF_ABS and cls == _BPF_LD and size == _BPF_H and k in (0, 14):
                k = _SKF_AD_PKTTYPE if k == 0 else _SKF_AD_PROTOCOL
            else:
                return None
        elif cls == _BPF_RET and (code & 0x18) == _BPF_K and k:
            k = max(k - _SLL_HDR_LEN, 1)
        out.append((code, jt, jf, k))
    return BpfProgram(tuple(out))
