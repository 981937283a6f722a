"""nf_tables codec against messages recorded from a real kernel.

data/nftables/record.py installed a divert for ``--rule 'udp and dst port 5000'
--hook input --hook forward -i 'eth+' --mark '!0x1/0xff'`` on queues 3-4 (bypass),
then dumped the tables and the ip table's rules. What the kernel sends back is what
it understood: each expression we build must come back attribute for attribute.
"""

from __future__ import annotations

import struct
from pathlib import Path

from sockscope.divert.firewall import PRIORITY, _messages, msg_seq
from sockscope.divert.rule import Rule, compile_rule
from sockscope.netlink import nftables as nft
from sockscope.netlink.codec import iter_messages, parse_attrs

DATA = Path(__file__).parent / "data" / "nftables"
NEWRULE = nft.NFNL_SUBSYS_NFTABLES << 8 | nft.NFT_MSG_NEWRULE
NEWTABLE = nft.NFNL_SUBSYS_NFTABLES << 8 | nft.NFT_MSG_NEWTABLE


def recorded(name: str, msg_type: int) -> list[memoryview]:
    return [m.payload for m in iter_messages((DATA / name).read_bytes()) if m.type == msg_type]


def rule() -> Rule:
    return compile_rule("udp and dst port 5000", ["input", "forward"], in_interface="eth+", mark="!0x1/0xff")


def test_tables_are_owned_and_say_what_they_are() -> None:
    tables = [nft.parse_table(p) for p in recorded("tables.bin", NEWTABLE)]
    assert [t.family_name for t in tables] == ["ip", "ip6"]
    for table in tables:
        assert table.name.startswith("sockscope_divert_3_") and table.flags == nft.NFT_TABLE_F_OWNER
        assert table.owner == int(table.name.split("_")[3])  # our netlink port id is our pid
        assert table.comment.endswith(
            "'udp and dst port 5000' hooks input, forward in eth+ mark !0x1/0xff -> queue 3-4"
        )


class FakeSocket:
    """What `_messages` needs of a NetlinkSocket: sequence numbers."""

    def __init__(self) -> None:
        self.seq = 0

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq


def built_rules(family: int) -> list[list[tuple[str, bytes]]]:
    messages = _messages(FakeSocket(), rule(), "t", [3, 4], True, True, "c")  # type: ignore[arg-type]
    out = []
    for message in messages:
        for msg in iter_messages(message):
            if msg.type == NEWRULE and msg.payload[0] == family:
                out.append(nft.rule_expressions(msg.payload))
    return out


def test_the_kernel_understood_every_expression_as_built() -> None:
    kernel = [nft.rule_expressions(p) for p in recorded("rules_ip.bin", NEWRULE)]
    ours = built_rules(nft.NFPROTO_IPV4)
    assert len(kernel) == len(ours) == 2  # input and forward
    for theirs, mine in zip(kernel, ours, strict=True):
        assert (
            [name for name, _ in theirs]
            == [name for name, _ in mine]
            == [
                "meta",
                "cmp",
                "meta",
                "bitwise",
                "cmp",
                "match",
                "target",
            ]
        )
        for (name, their_data), (_, my_data) in zip(theirs, mine, strict=True):
            their_attrs, my_attrs = parse_attrs(their_data), parse_attrs(my_data)
            for key, value in my_attrs.items():  # the kernel adds some (bitwise's op)
                assert bytes(their_attrs[key]) == bytes(value), (name, key)


def test_the_expressions_mean_what_the_options_said() -> None:
    [input_rule, _] = built_rules(nft.NFPROTO_IPV4)
    cmp_iif = parse_attrs(input_rule[1][1])
    assert struct.unpack("!I", cmp_iif[nft.NFTA_CMP_OP])[0] == nft.NFT_CMP_EQ
    assert bytes(parse_attrs(cmp_iif[nft.NFTA_CMP_DATA])[nft.NFTA_DATA_VALUE]) == b"eth"  # a prefix: no NUL
    cmp_mark = parse_attrs(input_rule[4][1])
    assert struct.unpack("!I", cmp_mark[nft.NFTA_CMP_OP])[0] == nft.NFT_CMP_NEQ
    match = parse_attrs(input_rule[5][1])
    info = bytes(match[nft.NFTA_MATCH_INFO])
    program = rule().programs[4]
    assert program is not None
    assert struct.unpack_from("=H", info)[0] == len(program.instructions)
    assert struct.unpack_from("=HBBI", info, 4) == program.instructions[0]
    target = parse_attrs(input_rule[6][1])
    assert bytes(target[nft.NFTA_MATCH_NAME]) == b"NFQUEUE\0"
    assert struct.unpack("=HHH", bytes(target[nft.NFTA_MATCH_INFO])[:6]) == (
        3,
        2,
        nft.NFQ_FLAG_BYPASS | nft.NFQ_FLAG_CPU_FANOUT,
    )


def test_chains_hook_before_the_filter_priority_and_the_batch_frames_them() -> None:
    sock = FakeSocket()
    messages = _messages(sock, rule(), "t", [3], False, True, "c")  # type: ignore[arg-type]
    chains = [m for m in messages if struct.unpack_from("=H", m, 4)[0] & 0xFF == nft.NFT_MSG_NEWCHAIN]
    assert len(chains) == 4  # two hooks, two families
    hook = parse_attrs(parse_attrs(memoryview(chains[0])[20:])[nft.NFTA_CHAIN_HOOK])
    assert struct.unpack("!i", hook[nft.NFTA_HOOK_PRIORITY])[0] == PRIORITY < 0
    assert struct.unpack("!I", hook[nft.NFTA_HOOK_HOOKNUM])[0] == nft.HOOKS["input"]
    framed = list(iter_messages(nft.batch(messages, 100, 101)))
    assert [framed[0].type, framed[-1].type] == [nft.NFNL_MSG_BATCH_BEGIN, nft.NFNL_MSG_BATCH_END]
    assert (
        [m.seq for m in framed[1:-1]] == [msg_seq(m) for m in messages] == list(range(1, len(messages) + 1))
    )


def test_an_ipv6_only_filter_builds_no_ipv4_table() -> None:
    messages = _messages(FakeSocket(), compile_rule("ip6 and udp"), "t", [0], True, True, "c")  # type: ignore[arg-type]
    families = {next(iter_messages(m)).payload[0] for m in messages}
    assert families == {nft.NFPROTO_IPV6}
