"""The ``bpf()`` system call through ctypes: maps, program loading, raw
tracepoints, and reading a hash map in batches.

Each call packs its ``union bpf_attr`` member (linux/bpf.h) into a zeroed buffer
of the size the kernel is told; fields this module does not set stay zero.
"""

from __future__ import annotations

import ctypes
import os
import struct
from typing import Final

from sockscope.errors import PermissionNeeded, SockscopeError

_SYS_BPF: Final = {"x86_64": 321, "aarch64": 280, "armv7l": 386, "riscv64": 280}.get(os.uname().machine)
_ATTR_SIZE: Final = 160
_MAP_CREATE, _MAP_LOOKUP_ELEM, _MAP_DELETE_ELEM, _PROG_LOAD = 0, 1, 3, 5
_RAW_TRACEPOINT_OPEN, _MAP_LOOKUP_BATCH = 17, 24
MAP_TYPE_HASH: Final = 1
PROG_TYPE_RAW_TRACEPOINT: Final = 17
_LOG_SIZE: Final = 1 << 16

_libc: ctypes.CDLL | None = None


class BpfError(SockscopeError):
    """The kernel refused a bpf() call (the verifier's log, when there is one, says why)."""


def _call(cmd: int, attr: ctypes.Array[ctypes.c_char]) -> int:
    global _libc
    if _SYS_BPF is None:
        raise BpfError(f"bpf() is not known on {os.uname().machine}")
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    ret = _libc.syscall(ctypes.c_long(_SYS_BPF), ctypes.c_int(cmd), attr, ctypes.c_uint(len(attr)))
    if ret < 0:
        errno = ctypes.get_errno()
        if errno == 1:  # EPERM
            raise PermissionNeeded("eBPF needs CAP_BPF and CAP_PERFMON (or root)")
        raise OSError(errno, os.strerror(errno))
    return int(ret)


def _attr(fmt: str, *values: int | bytes) -> ctypes.Array[ctypes.c_char]:
    buf = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into(fmt, buf, 0, *values)
    return buf


def _address(buf: ctypes.Array[ctypes.c_char]) -> int:
    return ctypes.addressof(buf)


def map_create(map_type: int, key_size: int, value_size: int, max_entries: int) -> int:
    return _call(_MAP_CREATE, _attr("=IIIII", map_type, key_size, value_size, max_entries, 0))


def prog_load(prog_type: int, insns: bytes, name: str) -> int:
    """Load a program (GPL: the helpers tracing programs need ask for it)."""
    code = ctypes.create_string_buffer(insns, len(insns))
    license = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(_LOG_SIZE)
    attr = _attr("=IIQQIIQII16s", prog_type, len(insns) // 8, _address(code), _address(license),
                 1, _LOG_SIZE, _address(log), 0, 0, name.encode()[:15])
    try:
        return _call(_PROG_LOAD, attr)
    except OSError as exc:
        why = log.value.decode(errors="replace").strip().splitlines()
        raise BpfError(f"the kernel refused eBPF program {name}: {exc.strerror}"
                       + (f" ({why[-1]})" if why else "")) from None


def raw_tracepoint_open(name: str, prog_fd: int) -> int:
    """Attach a raw tracepoint program; closing the returned descriptor detaches it."""
    tracepoint = ctypes.create_string_buffer(name.encode())
    return _call(_RAW_TRACEPOINT_OPEN, _attr("=QI", _address(tracepoint), prog_fd))


def map_delete(map_fd: int, key: bytes) -> None:
    buf = ctypes.create_string_buffer(key, len(key))
    try:
        _call(_MAP_DELETE_ELEM, _attr("=IxxxxQ", map_fd, _address(buf)))
    except FileNotFoundError:
        pass


def map_items(map_fd: int, key_size: int, value_size: int, batch: int = 1024) -> list[tuple[bytes, bytes]]:
    """Every (key, value) of a hash map, ``batch`` entries per system call."""
    keys = ctypes.create_string_buffer(key_size * batch)
    values = ctypes.create_string_buffer(value_size * batch)
    token_in = ctypes.create_string_buffer(8)
    token_out = ctypes.create_string_buffer(8)
    found: list[tuple[bytes, bytes]] = []
    first = True
    while True:
        attr = _attr("=QQQQIIQQ", 0 if first else _address(token_in), _address(token_out),
                     _address(keys), _address(values), batch, map_fd, 0, 0)
        try:
            _call(_MAP_LOOKUP_BATCH, attr)
            done = False
        except FileNotFoundError:  # ENOENT: this was the last batch
            done = True
        count = struct.unpack_from("=I", attr, 32)[0]
        k, v = keys.raw, values.raw
        found += [(k[i * key_size:(i + 1) * key_size], v[i * value_size:(i + 1) * value_size])
                  for i in range(count)]
        if done:
            return found
        ctypes.memmove(token_in, token_out, 8)
        first = False


_PROG_GET_NEXT_ID, _PROG_GET_FD_BY_ID, _OBJ_GET_INFO_BY_FD = 11, 13, 15
_PROG_INFO_SIZE: Final = 232  # struct bpf_prog_info up to attach_btf_id
_INFO_NAME: Final = slice(64, 80)
_INFO_RUN_TIME: Final = struct.Struct("=QQ")  # run_time_ns, run_cnt
_INFO_RUN_TIME_AT: Final = 192


def program_stats(name_prefix: str) -> tuple[int, int]:
    """Kernel time (ns) and runs of every loaded program whose name starts with
    ``name_prefix``, summed (counted while sysctl kernel.bpf_stats_enabled is 1)."""
    prefix = name_prefix.encode()
    total_ns = runs = 0
    prog_id = 0
    while True:
        attr = _attr("=I", prog_id)
        try:
            _call(_PROG_GET_NEXT_ID, attr)
        except FileNotFoundError:
            return total_ns, runs
        prog_id = struct.unpack_from("=I", attr, 4)[0]
        try:
            fd = _call(_PROG_GET_FD_BY_ID, _attr("=I", prog_id))
        except FileNotFoundError:  # unloaded meanwhile
            continue
        try:
            info = ctypes.create_string_buffer(_PROG_INFO_SIZE)
            _call(_OBJ_GET_INFO_BY_FD, _attr("=IIQ", fd, _PROG_INFO_SIZE, _address(info)))
        finally:
            os.close(fd)
        if info.raw[_INFO_NAME].startswith(prefix):
            ns, count = _INFO_RUN_TIME.unpack_from(info.raw, _INFO_RUN_TIME_AT)
            total_ns += ns
            runs += count
