"""Divert: take packets out of the firewall path, change them, put them back (NFQUEUE).

    with sockscope.divert("udp dport 5000") as d:
        for pkt in d:
            pkt.accept()

Modules: ``rule`` (the ``--rule`` language), ``firewall`` (steering rules and their
cleanup), ``engine`` (the nfnetlink_queue socket, batch verdicts, counters),
``packet`` (`DivertPacket`, `Verdict`, checksum repair), ``session`` (`Divert`).
"""

from sockscope.divert.engine import DivertStats
from sockscope.divert.packet import DivertPacket, InvalidPayload, Verdict, fix_packet
from sockscope.divert.rule import Rule, parse_rule
from sockscope.divert.session import Divert, apply_result, divert
from sockscope.divert.workers import Workers

__all__ = [
    "Divert",
    "DivertPacket",
    "DivertStats",
    "InvalidPayload",
    "Rule",
    "Verdict",
    "Workers",
    "apply_result",
    "divert",
    "fix_packet",
    "parse_rule",
]
