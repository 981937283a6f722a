"""Re-record the nf_tables messages used by tests/unit/test_nftables.py.

Run as root: ``.venv/bin/python tests/unit/data/nftables/record.py``. It moves itself
into a new, private network namespace (gone when it exits), installs a divert's
steering tables with `sockscope.divert.firewall.install` for

    --rule 'udp and dst port 5000' --hook input --hook forward -i 'eth+' --mark '!0x1/0xff'

on queues 3-4 (balanced, bypass on) and writes what the kernel sends back:

* ``tables.bin``: the GETTABLE dump (the ip and ip6 tables, owner flag and comment);
* ``rules_ip.bin``: the GETRULE dump of the ip table (one rule per hook: iifname
  prefix, masked mark, the bpf match, NFQUEUE).

test_nftables.py asserts the values set up here, so keep the two in step.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from sockscope.divert.firewall import install
from sockscope.divert.rule import compile_rule
from sockscope.netlink import nftables as nft
from sockscope.netlink.codec import NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, build_message, iter_messages
from sockscope.netlink.socket import NETLINK_NETFILTER, NetlinkSocket

HERE = Path(__file__).parent
CLONE_NEWNET = 0x40000000
RULE = "udp and dst port 5000"


def unshare_net() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def dump(nl: NetlinkSocket, msg_type: int, payload: bytes) -> bytes:
    """The raw reply to a dump request, every message up to and with NLMSG_DONE."""
    seq = nl.next_seq()
    nl.sock.send(build_message(msg_type, NLM_F_REQUEST | NLM_F_DUMP, seq, payload))
    out = b""
    while not any(m.type == NLMSG_DONE for m in iter_messages(out)):
        out += nl.sock.recv(1 << 16)
    return out


def main() -> None:
    unshare_net()
    rule = compile_rule(RULE, ["input", "forward"], in_interface="eth+", mark="!0x1/0xff")
    steering = install(rule, [3, 4], bypass=True)
    with NetlinkSocket(NETLINK_NETFILTER) as nl:
        (HERE / "tables.bin").write_bytes(dump(nl, nft.GETTABLE, nft.tables_request()))
        rules = dump(nl, nft.GETRULE, nft.rules_request(nft.NFPROTO_IPV4, steering.name))
        (HERE / "rules_ip.bin").write_bytes(rules)
    steering.remove()
    print(f"recorded {steering.name}")


if __name__ == "__main__":
    main()
