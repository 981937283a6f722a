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
import ctypes.util
import socket
import threading
from dataclasses import dataclass, field

from sockscope.errors import SockscopeError, UsageError

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
