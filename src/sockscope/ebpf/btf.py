"""Struct member offsets from the kernel's BTF (``/sys/kernel/btf/vmlinux``).

A program that reads kernel structures (``bpf_probe_read_kernel``) needs their
layout for the running kernel; BTF describes every type. Sans-IO: ``Btf`` takes
the bytes. The format (linux/btf.h): a header, variable-length type records
(type ids count from 1) made of 32-bit words, and a string table.

vmlinux has over 100,000 types and the few structs asked for come early, so
records are indexed lazily, as far as a lookup needs: a full pass in Python
would cost a quarter of a second at every start.
"""

from __future__ import annotations

import struct
import sys
from array import array
from typing import Final

VMLINUX: Final = "/sys/kernel/btf/vmlinux"

_HEADER: Final = struct.Struct("<HBBIIIII")
_MAGIC: Final = 0xEB9F
_STRUCT, _UNION = 4, 5
# Kinds that only qualify or rename another type: typedef, volatile, const, restrict, type tag.
_QUALIFIERS: Final = frozenset({8, 9, 10, 11, 18})
# Words after a record's three: per kind a fixed part, and per member (vlen) for some kinds.
_EXTRA: Final = [0] * 32
_PER_MEMBER: Final = [0] * 32
for _kind, _words in {1: 1, 3: 3, 14: 1, 17: 1}.items():  # int, array, var, decl tag
    _EXTRA[_kind] = _words
# struct, union, enum, func proto, datasec, enum64
for _kind, _words in {4: 3, 5: 3, 6: 2, 13: 2, 15: 3, 19: 3}.items():
    _PER_MEMBER[_kind] = _words


class BtfError(ValueError):
    """Not BTF, or the type or member asked for is not in it."""


class Btf:
    """The types of one BTF blob (in this machine's byte order), by id."""

    def __init__(self, data: bytes) -> None:
        if len(data) < _HEADER.size or sys.byteorder != "little":
            raise BtfError("BTF data too short, or not in this machine's byte order")
        magic, _version, _flags, hdr_len, type_off, type_len, str_off, _str_len = _HEADER.unpack_from(data)
        if magic != _MAGIC:
            raise BtfError("not BTF data (bad magic)")
        start = hdr_len + type_off
        if type_len % 4 or start + type_len > len(data):
            raise BtfError("BTF type section is not whole words")
        self._data = data
        self._strings: int = hdr_len + str_off
        self._words = memoryview(data)[start:start + type_len].cast("I")
        self._records = array("I", [0])  # type id -> word index of its record (id 0: void)
        self._next = 0  # word index of the first record not indexed yet
        self._structs: dict[str, int] = {}

    def _record(self, type_id: int) -> int:
        """The word index of a type's record, indexing as far as it."""
        records, words = self._records, self._words
        pos, end = self._next, len(words)
        while len(records) <= type_id:
            if pos >= end:
                raise BtfError(f"no BTF type {type_id}")
            records.append(pos)
            info = words[pos + 1]
            kind = info >> 24 & 0x1F
            pos += 3 + _EXTRA[kind] + (info & 0xFFFF) * _PER_MEMBER[kind]
        self._next = pos
        return records[type_id]

    def _name_offset(self, name: str) -> int:
        """The offset of ``name`` in the string table (strings are not repeated there)."""
        at = self._data.find(b"\0" + name.encode() + b"\0", self._strings)
        if at < 0:
            raise BtfError(f"struct {name} is not in the kernel's BTF")
        return at + 1 - self._strings

    def _name(self, offset: int) -> str:
        start = self._strings + offset
        return self._data[start:self._data.index(b"\0", start)].decode()

    def find_struct(self, name: str) -> int:
        """The id of ``struct name``."""
        if name in self._structs:
            return self._structs[name]
        wanted = self._name_offset(name)
        words = self._words
        type_id = 1
        while True:
            try:
                pos = self._record(type_id)
            except BtfError:
                raise BtfError(f"struct {name} is not in the kernel's BTF") from None
            if words[pos] == wanted and words[pos + 1] >> 24 & 0x1F == _STRUCT:
                self._structs[name] = type_id
                return type_id
            type_id += 1

    def offset(self, struct_name: str, path: str) -> int:
        """Byte offset of ``path`` ("a.b.c": members, looking through anonymous
        structs and unions) in ``struct struct_name``."""
        type_id, bits = self.find_struct(struct_name), 0
        for part in path.split("."):
            found = self._member(type_id, part)
            if found is None:
                raise BtfError(f"struct {struct_name} has no member {path}")
            type_id = found[1]
            bits += found[0]
        return bits // 8

    def _member(self, type_id: int, name: str) -> tuple[int, int] | None:
        """(bit offset, type id) of member ``name`` of a struct or union."""
        pos = self._record(self._resolve(type_id))
        words = self._words
        info = words[pos + 1]
        if info >> 24 & 0x1F not in (_STRUCT, _UNION):
            return None
        bitfields = info >> 31
        for member in range(pos + 3, pos + 3 + 3 * (info & 0xFFFF), 3):
            name_off, member_type, offset = words[member], words[member + 1], words[member + 2]
            bit = offset & 0xFFFFFF if bitfields else offset
            if name_off and self._name(name_off) == name:
                return bit, member_type
            if not name_off:  # an anonymous struct or union: its members are ours
                inner = self._member(member_type, name)
                if inner is not None:
                    return bit + inner[0], inner[1]
        return None

    def _resolve(self, type_id: int) -> int:
        while True:
            pos = self._record(type_id)
            if self._words[pos + 1] >> 24 & 0x1F not in _QUALIFIERS:
                return type_id
            type_id = self._words[pos + 2]


def vmlinux() -> Btf:
    """The running kernel's BTF (OSError if it has none)."""
    with open(VMLINUX, "rb") as f:
        return Btf(f.read())
