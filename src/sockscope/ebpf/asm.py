"""A small eBPF assembler: a program written as method calls, assembled to the
kernel's instruction encoding (linux/bpf.h: ``struct bpf_insn``, 8 bytes each:
opcode, dst and src registers, a signed 16-bit offset, a signed 32-bit immediate).

Only what sockscope's programs use: 64-bit ALU with an immediate or a register,
loads and stores (also of an immediate), atomic add, jumps to labels, helper
calls, map file descriptors (a two-slot 64-bit immediate) and exit.
"""

from __future__ import annotations

import struct
from typing import Final

R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10 = range(11)  # R10: the frame pointer (read-only)

_INSN: Final = struct.Struct("<BBhi")
_SIZE: Final = {1: 0x10, 2: 0x08, 4: 0x00, 8: 0x18}  # BPF_B, BPF_H, BPF_W, BPF_DW
_ALU: Final = {"+": 0x00, "-": 0x10, "*": 0x20, "|": 0x40, "&": 0x50, "<<": 0x60, ">>": 0x70,
               "=": 0xB0}
_JUMP: Final = {"==": 0x10, ">": 0x20, ">=": 0x30, "&": 0x40, "!=": 0x50, "s>": 0x60, "s>=": 0x70,
                "<": 0xA0, "<=": 0xB0, "s<": 0xC0, "s<=": 0xD0}
_ALU64, _JMP, _LDX_MEM, _STX_MEM, _ST_MEM = 0x07, 0x05, 0x61, 0x63, 0x62
_FROM_REGISTER: Final = 0x08  # BPF_X
_STX_ATOMIC_DW: Final = 0xDB  # BPF_STX | BPF_ATOMIC | BPF_DW; imm BPF_ADD
_LD_IMM64: Final = 0x18
_PSEUDO_MAP_FD: Final = 1
_CALL, _EXIT = 0x85, 0x95


class Program:
    """Instructions in order; ``label`` marks a place that ``jump`` goes to."""

    def __init__(self) -> None:
        self._insns: list[list[int]] = []
        self._labels: dict[str, int] = {}
        self._jumps: list[tuple[int, str]] = []

    def _emit(self, code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> None:
        self._insns.append([code, dst, src, off, imm])

    def alu(self, dst: int, op: str, value: int, *, register: bool = False) -> None:
        """``dst op= value`` (64-bit); ``register``: value is a register number."""
        if register:
            self._emit(_ALU64 | _ALU[op] | _FROM_REGISTER, dst, value)
        else:
            self._emit(_ALU64 | _ALU[op], dst, imm=value)

    def mov(self, dst: int, src: int) -> None:
        self.alu(dst, "=", src, register=True)

    def load(self, dst: int, src: int, offset: int, size: int) -> None:
        """``dst = *(size *)(src + offset)``"""
        self._emit(_LDX_MEM | _SIZE[size], dst, src, offset)

    def store(self, dst: int, offset: int, src: int, size: int) -> None:
        """``*(size *)(dst + offset) = src``"""
        self._emit(_STX_MEM | _SIZE[size], dst, src, offset)

    def store_imm(self, dst: int, offset: int, value: int, size: int) -> None:
        self._emit(_ST_MEM | _SIZE[size], dst, 0, offset, value)

    def atomic_add(self, dst: int, offset: int, src: int) -> None:
        """``*(u64 *)(dst + offset) += src``, atomically."""
        self._emit(_STX_ATOMIC_DW, dst, src, offset)

    def map_fd(self, dst: int, fd: int) -> None:
        """``dst`` = the map whose descriptor is ``fd`` (resolved by the kernel at load)."""
        self._emit(_LD_IMM64, dst, _PSEUDO_MAP_FD, imm=fd)
        self._emit(0)

    def call(self, helper: int) -> None:
        self._emit(_CALL, imm=helper)

    def exit(self) -> None:
        self._emit(_EXIT)

    def jump(self, label: str, dst: int | None = None, op: str = "", value: int = 0) -> None:
        """Go to ``label``: always, or if ``dst op value`` (an immediate)."""
        self._jumps.append((len(self._insns), label))
        if dst is None:
            self._emit(_JMP)
        else:
            self._emit(_JMP | _JUMP[op], dst, imm=value)

    def label(self, name: str) -> None:
        if name in self._labels:
            raise ValueError(f"label {name!r} defined twice")
        self._labels[name] = len(self._insns)

    def assemble(self) -> bytes:
        insns = [list(insn) for insn in self._insns]
        for at, label in self._jumps:
            insns[at][3] = self._labels[label] - at - 1
        return b"".join(_INSN.pack(code, dst | src << 4, off, imm) for code, dst, src, off, imm in insns)
