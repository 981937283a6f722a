"""Divert: take packets out of the firewall path, change them, put them back (NFQUEUE).

    with sockscope.divert("udp and dst port 5000") as d:
        for pkt in d:
            pkt.accept()

Modules: ``rule`` (the tcpdump filter, hooks, interfaces, mark -> per-family BPF
programs), ``firewall`` (the process's own nft tables and their removal),
``process`` (forked children let go; pid reuse), ``engine`` (the nfnetlink_queue
socket, batch verdicts, counters), ``packet`` (`DivertPacket`, `Verdict`, checksum
repair), ``session`` (`Divert`), ``workers`` (several processes), ``legacy`` (the
old rule language's translation, old versions' iptables leftovers).
"""

from sockscope.divert.engine import DivertStats
from sockscope.divert.packet import DivertPacket, InvalidPayload, Verdict, fix_packet
from sockscope.divert.rule import Rule, compile_rule
from sockscope.divert.session import Divert, HandlerInterrupted, apply_result, divert
from sockscope.divert.workers import Workers

__all__ = [
    "Divert",
    "DivertPacket",
    "DivertStats",
    "HandlerInterrupted",
    "InvalidPayload",
    "Rule",
    "Verdict",
    "Workers",
    "apply_result",
    "compile_rule",
    "divert",
    "fix_packet",
]
