"""Sans-IO nf_tables messages: the few that divert's steering rules need.

nf_tables speaks nfnetlink (subsystem ``NFNL_SUBSYS_NFTABLES``): every message is an
nlmsghdr, a ``struct nfgenmsg`` (family, version, resource id) and attributes, which
are big-endian unless they hold host data (a mark, an interface name). Changes travel
in a batch, BATCH_BEGIN ... BATCH_END, which the kernel applies as one transaction:
all of it or nothing.

What divert builds: a table (``NFT_TABLE_F_OWNER``: it belongs to the netlink socket
that made it, and the kernel deletes it when that socket closes, however its process
ends), a base chain per hook, and rules made of native expressions (meta, cmp,
bitwise) and two iptables extensions run through nft_compat: the ``bpf`` match
(xt_bpf, a classic BPF program of at most 64 instructions) and the ``NFQUEUE``
target. Nothing here opens a socket; `divert.firewall` sends what these functions
build. Tested against what a kernel sent back (tests/unit/data/nftables).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from sockscope.netlink.codec import (
    NLA_F_NESTED,
    NLM_F_ACK,
    NLM_F_REQUEST,
    attr_str,
    build_attr,
    build_message,
    iter_attrs,
    parse_attrs,
)

NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN = 0x10
NFNL_MSG_BATCH_END = 0x11
NFT_MSG_NEWTABLE = 0
NFT_MSG_GETTABLE = 1
NFT_MSG_DELTABLE = 2
NFT_MSG_NEWCHAIN = 3
NFT_MSG_NEWRULE = 6
NFT_MSG_GETRULE = 7
NFT_MSG_DELRULE = 8

NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_APPEND = 0x800

NFPROTO_INET = 1
NFPROTO_IPV4 = 2
NFPROTO_IPV6 = 10
FAMILY_NAMES = {NFPROTO_INET: "inet", NFPROTO_IPV4: "ip", NFPROTO_IPV6: "ip6"}
HOOKS = {"prerouting": 0, "input": 1, "forward": 2, "output": 3, "postrouting": 4}

NFT_TABLE_F_OWNER = 0x2
# Table, chain, rule, expression attributes (linux/netfilter/nf_tables.h).
NFTA_TABLE_NAME, NFTA_TABLE_FLAGS, NFTA_TABLE_USE, NFTA_TABLE_HANDLE = 1, 2, 3, 4
NFTA_TABLE_USERDATA, NFTA_TABLE_OWNER = 6, 7
NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME, NFTA_CHAIN_HOOK, NFTA_CHAIN_POLICY, NFTA_CHAIN_TYPE = 1, 3, 4, 5, 7
NFTA_HOOK_HOOKNUM, NFTA_HOOK_PRIORITY = 1, 2
NFTA_RULE_TABLE, NFTA_RULE_CHAIN, NFTA_RULE_EXPRESSIONS = 1, 2, 4
NFTA_LIST_ELEM = 1
NFTA_EXPR_NAME, NFTA_EXPR_DATA = 1, 2
NFTA_DATA_VALUE = 1
NFTA_META_DREG, NFTA_META_KEY = 1, 2
NFTA_CMP_SREG, NFTA_CMP_OP, NFTA_CMP_DATA = 1, 2, 3
NFTA_BITWISE_SREG, NFTA_BITWISE_DREG, NFTA_BITWISE_LEN, NFTA_BITWISE_MASK, NFTA_BITWISE_XOR = 1, 2, 3, 4, 5
NFTA_MATCH_NAME, NFTA_MATCH_REV, NFTA_MATCH_INFO = 1, 2, 3  # the same numbers for targets
NFT_META_MARK, NFT_META_IIFNAME, NFT_META_OIFNAME = 3, 6, 7
NFT_CMP_EQ, NFT_CMP_NEQ = 0, 1
NFT_REG_1 = 1
NF_ACCEPT = 1
NFTNL_UDATA_TABLE_COMMENT = 0

IFNAMSIZ = 16
XT_BPF_MAX_NUM_INSTR = 64
NFQ_FLAG_BYPASS = 0x01
NFQ_FLAG_CPU_FANOUT = 0x02

_BE32 = struct.Struct("!I")
_BE32_SIGNED = struct.Struct("!i")
_U32 = struct.Struct("=I")
_INSN = struct.Struct("=HBBI")  # struct sock_filter: code, jt, jf, k (host order)
# struct xt_bpf_info (revision 0): u16 count, 2 bytes padding, 64 sock_filter, then a
# kernel-only pointer aligned to 8: 528 bytes, all zero past the program.
_XT_BPF_INFO_SIZE = 528
_XT_BPF_PROGRAM_OFFSET = 4
# struct xt_NFQ_info_v3: u16 queue number, u16 queues in total, u16 flags; 8 aligned.
_XT_NFQ_INFO_V3 = struct.Struct("=HHH2x")


def _be32(value: int) -> bytes:
    return _BE32.pack(value & 0xFFFFFFFF)


def _nest(attr_type: int, value: bytes) -> bytes:
    return build_attr(attr_type | NLA_F_NESTED, value)


def _str(text: str) -> bytes:
    return text.encode() + b"\0"


def _nfgen(family: int, res_id: int = 0) -> bytes:
    return struct.pack("!BBH", family, 0, res_id)  # NFNETLINK_V0


def _message(msg: int, family: int, attrs: bytes, seq: int, flags: int = 0) -> bytes:
    return build_message(
        NFNL_SUBSYS_NFTABLES << 8 | msg, NLM_F_REQUEST | NLM_F_ACK | flags, seq, _nfgen(family) + attrs
    )


def batch(messages: Sequence[bytes], begin_seq: int, end_seq: int) -> bytes:
    """``messages`` framed as one transaction (the batch markers carry no ACK)."""
    begin = build_message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, begin_seq, _nfgen(0, NFNL_SUBSYS_NFTABLES))
    end = build_message(NFNL_MSG_BATCH_END, NLM_F_REQUEST, end_seq, _nfgen(0, NFNL_SUBSYS_NFTABLES))
    return begin + b"".join(messages) + end


def new_table(family: int, name: str, seq: int, *, owner: bool, comment: str = "") -> bytes:
    """Create table ``name``; EEXIST if one of that name is there (never take it over)."""
    attrs = build_attr(NFTA_TABLE_NAME, _str(name))
    attrs += build_attr(NFTA_TABLE_FLAGS, _be32(NFT_TABLE_F_OWNER if owner else 0))
    if comment:
        text = comment.encode()[:250] + b"\0"  # userdata is at most 256 bytes, the TLV included
        attrs += build_attr(NFTA_TABLE_USERDATA, bytes([NFTNL_UDATA_TABLE_COMMENT, len(text)]) + text)
    return _message(NFT_MSG_NEWTABLE, family, attrs, seq, NLM_F_CREATE | NLM_F_EXCL)


def del_table(family: int, name: str, seq: int) -> bytes:
    return _message(NFT_MSG_DELTABLE, family, build_attr(NFTA_TABLE_NAME, _str(name)), seq)


def new_base_chain(family: int, table: str, name: str, hook: str, priority: int, seq: int) -> bytes:
    """A filter chain on ``hook`` at ``priority``, policy accept."""
    hook_attrs = build_attr(NFTA_HOOK_HOOKNUM, _be32(HOOKS[hook]))
    hook_attrs += build_attr(NFTA_HOOK_PRIORITY, _BE32_SIGNED.pack(priority))
    attrs = build_attr(NFTA_CHAIN_TABLE, _str(table)) + build_attr(NFTA_CHAIN_NAME, _str(name))
    attrs += _nest(NFTA_CHAIN_HOOK, hook_attrs)
    attrs += build_attr(NFTA_CHAIN_POLICY, _be32(NF_ACCEPT)) + build_attr(NFTA_CHAIN_TYPE, _str("filter"))
    return _message(NFT_MSG_NEWCHAIN, family, attrs, seq, NLM_F_CREATE | NLM_F_EXCL)


def new_rule(family: int, table: str, chain: str, expressions: Sequence[bytes], seq: int) -> bytes:
    """Append a rule of ``expressions`` (built below) to ``chain``."""
    attrs = build_attr(NFTA_RULE_TABLE, _str(table)) + build_attr(NFTA_RULE_CHAIN, _str(chain))
    attrs += _nest(NFTA_RULE_EXPRESSIONS, b"".join(expressions))
    return _message(NFT_MSG_NEWRULE, family, attrs, seq, NLM_F_CREATE | NLM_F_APPEND)


def del_rules(family: int, table: str, chain: str, seq: int) -> bytes:
    """Delete every rule of ``chain``, leaving the chain (and its hook) in place."""
    attrs = build_attr(NFTA_RULE_TABLE, _str(table)) + build_attr(NFTA_RULE_CHAIN, _str(chain))
    return _message(NFT_MSG_DELRULE, family, attrs, seq)


GETTABLE = NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETTABLE
GETRULE = NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETRULE


def tables_request() -> bytes:
    """The payload of a GETTABLE dump of every family's tables."""
    return _nfgen(0)


def rules_request(family: int, table: str) -> bytes:
    """The payload of a GETRULE dump of one table's rules."""
    return _nfgen(family) + build_attr(NFTA_RULE_TABLE, _str(table))


# -- expressions ----------------------------------------------------------------------
def _expr(name: str, data: bytes) -> bytes:
    return _nest(NFTA_LIST_ELEM, build_attr(NFTA_EXPR_NAME, _str(name)) + _nest(NFTA_EXPR_DATA, data))


def meta_load(key: int) -> bytes:
    return _expr("meta", build_attr(NFTA_META_DREG, _be32(NFT_REG_1)) + build_attr(NFTA_META_KEY, _be32(key)))


def compare(op: int, data: bytes) -> bytes:
    value = _nest(NFTA_CMP_DATA, build_attr(NFTA_DATA_VALUE, data))
    return _expr(
        "cmp", build_attr(NFTA_CMP_SREG, _be32(NFT_REG_1)) + build_attr(NFTA_CMP_OP, _be32(op)) + value
    )


def bitwise_and(mask: bytes) -> bytes:
    """register 1 = register 1 & mask (the xor half of nft's mask-and-xor is zero)."""
    attrs = build_attr(NFTA_BITWISE_SREG, _be32(NFT_REG_1)) + build_attr(NFTA_BITWISE_DREG, _be32(NFT_REG_1))
    attrs += build_attr(NFTA_BITWISE_LEN, _be32(len(mask)))
    attrs += _nest(NFTA_BITWISE_MASK, build_attr(NFTA_DATA_VALUE, mask))
    attrs += _nest(NFTA_BITWISE_XOR, build_attr(NFTA_DATA_VALUE, bytes(len(mask))))
    return _expr("bitwise", attrs)


def interface_match(key: int, name: str, negate: bool = False) -> list[bytes]:
    """``iifname``/``oifname`` equal to ``name``; a trailing ``*`` (or iptables' ``+``)
    matches every name that starts with the rest (the comparison stops before the NUL)."""
    if name.endswith(("*", "+")):
        data = name[:-1].encode()
    else:
        data = name.encode().ljust(IFNAMSIZ, b"\0")
    if not data or len(data) > IFNAMSIZ:
        raise ValueError(f"bad interface name {name!r}")
    return [meta_load(key), compare(NFT_CMP_NEQ if negate else NFT_CMP_EQ, data)]


def mark_match(value: int, mask: int = 0xFFFFFFFF, negate: bool = False) -> list[bytes]:
    """The packet mark (host order in the register), under ``mask``."""
    exprs = [meta_load(NFT_META_MARK)]
    if mask != 0xFFFFFFFF:
        exprs.append(bitwise_and(_U32.pack(mask)))
    exprs.append(compare(NFT_CMP_NEQ if negate else NFT_CMP_EQ, _U32.pack(value & mask)))
    return exprs


def bpf_match_info(instructions: Sequence[tuple[int, int, int, int]]) -> bytes:
    """``struct xt_bpf_info`` for a classic BPF program (at most 64 instructions)."""
    if not 0 < len(instructions) <= XT_BPF_MAX_NUM_INSTR:
        raise ValueError(f"xt_bpf takes 1 to {XT_BPF_MAX_NUM_INSTR} instructions, not {len(instructions)}")
    program = b"".join(_INSN.pack(*insn) for insn in instructions)
    info = struct.pack("=H2x", len(instructions)) + program
    return info.ljust(_XT_BPF_INFO_SIZE, b"\0")


def bpf_match(instructions: Sequence[tuple[int, int, int, int]]) -> bytes:
    return _xt("match", "bpf", 0, bpf_match_info(instructions))


def nfqueue_target(first: int, total: int = 1, *, bypass: bool = False, fanout: bool = False) -> bytes:
    """NFQUEUE (revision 3): queue ``first`` or a balance over ``total`` queues from it."""
    flags = (NFQ_FLAG_BYPASS if bypass else 0) | (NFQ_FLAG_CPU_FANOUT if fanout else 0)
    return _xt("target", "NFQUEUE", 3, _XT_NFQ_INFO_V3.pack(first, total, flags))


def _xt(kind: str, name: str, revision: int, info: bytes) -> bytes:
    attrs = build_attr(NFTA_MATCH_NAME, _str(name)) + build_attr(NFTA_MATCH_REV, _be32(revision))
    return _expr(kind, attrs + build_attr(NFTA_MATCH_INFO, info))


# -- parsing what the kernel sends ------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TableInfo:
    """One table of a GETTABLE dump."""

    family: int
    name: str
    flags: int
    owner: int | None  # netlink port id of the owning socket (NFT_TABLE_F_OWNER)
    comment: str

    @property
    def family_name(self) -> str:
        return FAMILY_NAMES.get(self.family, str(self.family))


def parse_table(payload: bytes | memoryview) -> TableInfo:
    """An NFT_MSG_NEWTABLE message's payload (nfgenmsg onwards)."""
    view = memoryview(payload)
    family = view[0]
    attrs = parse_attrs(view, 4)
    flags = attrs.get(NFTA_TABLE_FLAGS)
    owner = attrs.get(NFTA_TABLE_OWNER)
    comment = ""
    userdata = attrs.get(NFTA_TABLE_USERDATA)
    if userdata is not None:
        raw = bytes(userdata)
        while len(raw) >= 2:  # TLVs: type, length, value
            kind, length = raw[0], raw[1]
            if kind == NFTNL_UDATA_TABLE_COMMENT:
                comment = raw[2 : 2 + length].rstrip(b"\0").decode("utf-8", "replace")
            raw = raw[2 + length :]
    return TableInfo(
        family=family,
        name=attr_str(attrs[NFTA_TABLE_NAME]) if NFTA_TABLE_NAME in attrs else "",
        flags=_BE32.unpack_from(flags)[0] if flags is not None else 0,
        owner=_BE32.unpack_from(owner)[0] if owner is not None else None,
        comment=comment,
    )


def rule_expressions(payload: bytes | memoryview) -> list[tuple[str, bytes]]:
    """(name, data attributes) of each expression of an NFT_MSG_NEWRULE message."""
    attrs = parse_attrs(memoryview(payload), 4)
    out = []
    for _type, elem in iter_attrs(attrs.get(NFTA_RULE_EXPRESSIONS, memoryview(b""))):
        expr = parse_attrs(elem)
        out.append((attr_str(expr[NFTA_EXPR_NAME]), bytes(expr.get(NFTA_EXPR_DATA, b""))))
    return out
