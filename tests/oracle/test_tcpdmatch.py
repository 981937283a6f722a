"""``check`` and ``Policy.decide`` against tcpdmatch (Debian's tcpd), side by side on
generated hosts_access rule files and addresses (#14).

Each seed makes a policy in both styles sockscope reads -- the classic
hosts.allow/hosts.deny pair, and one file whose rules end in ``: allow`` or
``: deny`` (hosts_options(5); tcpdmatch reads it as hosts.allow with hosts.deny
"ALL : ALL", which is that style's default) -- out of address patterns (exact
addresses, ``10.1.`` prefixes, ``a.b.c.d/m.m.m.m`` masks, CIDR, ``[v6]/len``,
wildcards), ``ALL``, ``KNOWN``, ``UNKNOWN``, ``PARANOID``, ``LOCAL``, ``EXCEPT``
in daemon and client lists. Every daemon and client of the case is asked of
tcpdmatch and of ``Policy.decide``; a few of them of ``sockscope check`` too.

Host names get cases of their own: a hosts file bind-mounted over /etc/hosts in a
mount namespace, names and name patterns (``.domain``, wildcards, a name whose
address has another name first, LOCAL's dotless name) asked by name, the way
``sockscope check NAME`` and ``decide(daemon, "NAME")`` take them.

Normalised, as docs/differences.md ("check and tcpdmatch") lists: tcpdmatch does
not look an address up ("we simulate the effect of client hostname lookup
failure"), so decide() is given a resolver that finds no name either for an
address. Everything runs inside a namespace of its own with no route, so no lookup
ever leaves the host. A failure prints the seed, the files and the question.
"""

from __future__ import annotations

import ipaddress
import os
import random
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from sockscope.policy import Policy
from topology import Netns, Topology

TCPDMATCH = shutil.which("tcpdmatch") or shutil.which("tcpdmatch", path="/usr/sbin:/sbin")
CLI = [sys.executable, "-m", "sockscope"]
BASE_SEED = int(os.environ.get("SOCKSCOPE_ORACLE_SEED", "1300"))
DAEMONS = ("sshd", "ftpd", "web")

pytestmark = [
    pytest.mark.needs_root,
    pytest.mark.skipif(TCPDMATCH is None, reason="tcpdmatch (Debian's tcpd) not installed"),
]


def _v4(rng: random.Random) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(f"10.{rng.randrange(3)}.{rng.randrange(3)}.{rng.choice((1, 2, 9, 200))}")


def _v6(rng: random.Random) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address(f"fd00:{rng.randrange(3)}::{rng.choice((1, 2, 0x9a))}")


def _pattern(rng: random.Random) -> str:
    kind = rng.choice(("addr", "addr", "prefix", "prefix", "mask", "oddmask", "cidr", "v6", "v6net",
                       "wild", "ALL", "KNOWN", "UNKNOWN", "PARANOID", "LOCAL"))
    a = _v4(rng)
    octets = str(a).split(".")
    if kind == "addr":
        return str(a)
    if kind == "prefix":
        return ".".join(octets[: rng.choice((1, 2, 3))]) + "."
    if kind == "mask":
        length = rng.choice((8, 16, 24))
        net = ipaddress.IPv4Network(f"{a}/{length}", strict=False)
        return f"{net.network_address}/{net.netmask}"
    if kind == "oddmask":
        return f"10.0.{octets[2]}.0/255.0.255.0"
    if kind == "cidr":
        return str(ipaddress.IPv4Network(f"{a}/{rng.choice((8, 16, 24, 30))}", strict=False))
    if kind == "v6":
        return f"[{_v6(rng)}]"
    if kind == "v6net":
        net = ipaddress.IPv6Network(f"{_v6(rng)}/{rng.choice((16, 32, 64))}", strict=False)
        return f"[{net.network_address}]/{net.prefixlen}"
    if kind == "wild":
        return rng.choice((f"10.{octets[1]}.*", f"10.?.{octets[2]}.*", f"*.{octets[3]}"))
    return kind


def _clients(rng: random.Random) -> str:
    text = " ".join(dict.fromkeys(_pattern(rng) for _ in range(rng.randint(1, 3))))
    if rng.random() < 0.3:
        text += " EXCEPT " + " ".join(dict.fromkeys(_pattern(rng) for _ in range(rng.randint(1, 2))))
    return text


def _daemons(rng: random.Random) -> str:
    choice = rng.random()
    if choice < 0.25:
        return "ALL"
    if choice < 0.35:
        return f"ALL EXCEPT {rng.choice(DAEMONS)}"
    return ", ".join(dict.fromkeys(rng.choice(DAEMONS) for _ in range(rng.randint(1, 2))))


@dataclass(frozen=True)
class Case:
    seed: int
    allow: str  # hosts.allow of the pair, rules without options
    deny: str
    policy: str  # the one-file style
    clients: tuple[str, ...]

    def describe(self) -> str:
        return (f"seed {self.seed} (SOCKSCOPE_ORACLE_SEED={BASE_SEED})\nhosts.allow:\n{self.allow}"
                f"hosts.deny:\n{self.deny}policy:\n{self.policy}")


def generate(seed: int) -> Case:
    rng = random.Random(seed)

    def rules(count: int, action: bool) -> str:
        lines = []
        for _ in range(count):
            line = f"{_daemons(rng)} : {_clients(rng)}"
            lines.append(line + (f" : {rng.choice(('allow', 'deny'))}" if action else ""))
        return "".join(f"{line}\n" for line in lines)

    clients = {str(_v4(rng)) for _ in range(14)} | {str(_v6(rng)) for _ in range(5)}
    clients |= {f"::ffff:{_v4(rng)}" for _ in range(2)}
    return Case(seed, rules(rng.randint(1, 5), False), rules(rng.randint(0, 4), False),
                rules(rng.randint(1, 7), True), tuple(sorted(clients)))


def _tcpdmatch(topology: Topology, ns: Netns, directory: Path, questions: list[tuple[str, str]]
               ) -> list[bool]:
    """tcpdmatch -d (the files in directory) for each (daemon, client), in one shell."""
    script = "".join(f"{TCPDMATCH} -d {daemon} {client} 2>/dev/null | grep '^access:' || echo access: none\n"
                     for daemon, client in questions)
    out = topology.run(ns, "sh", "-c", f"cd {directory} && {script}").stdout.splitlines()
    assert len(out) == len(questions), out
    verdicts = []
    for line in out:
        word = line.split()[1]
        assert word in ("granted", "denied"), line
        verdicts.append(word == "granted")
    return verdicts


def _ours(policy: Policy, daemon: str, client: str) -> bool:
    return policy.decide(daemon, client, resolver=lambda address: None).allowed


@pytest.mark.parametrize("seed", range(BASE_SEED, BASE_SEED + 12))
def test_decisions_agree_with_tcpdmatch(topology: Topology, tmp_path: Path, seed: int) -> None:
    case = generate(seed)
    ns = topology.add_netns("tcpd")
    tmp_path.chmod(0o755)
    pair, single = tmp_path / "pair", tmp_path / "single"
    for directory, allow, deny in ((pair, case.allow, case.deny), (single, case.policy, "ALL : ALL\n")):
        directory.mkdir()
        (directory / "hosts.allow").write_text(allow)
        (directory / "hosts.deny").write_text(deny)
    ours_pair = Policy.load(hosts_allow=pair / "hosts.allow", hosts_deny=pair / "hosts.deny")
    ours_single = Policy.parse(case.policy, "policy")
    questions = [(daemon, client) for daemon in (*DAEMONS, "other") for client in case.clients]
    for directory, policy in ((pair, ours_pair), (single, ours_single)):
        theirs = _tcpdmatch(topology, ns, directory, questions)
        for (daemon, client), granted in zip(questions, theirs, strict=True):
            ours = _ours(policy, daemon, client)
            assert ours == granted, (f"{case.describe()}question: {directory.name}: {daemon} {client}: "
                                     f"tcpdmatch {'granted' if granted else 'denied'}, "
                                     f"sockscope {'granted' if ours else 'denied'}")
    # the CLI says the same (a few questions: a process each)
    rng = random.Random(seed)
    for daemon, client in rng.sample(questions, 2):
        proc = topology.run(ns, *CLI, "check", "--hosts-allow", str(pair / "hosts.allow"), "--hosts-deny",
                            str(pair / "hosts.deny"), daemon, client, check=False)
        assert proc.returncode == (0 if _ours(ours_pair, daemon, client) else 1), (case.describe(), proc)


# Host names for the cases that need lookups: a hosts file of their own, bind-mounted
# over /etc/hosts in a mount namespace (nothing on the host changes), and a
# resolv.conf whose server is this namespace's loopback, where nothing answers.
HOSTS = """\
10.0.0.1 alpha.example.test alpha
10.0.1.2 beta.example.test
10.1.0.9 gamma.other.test
10.1.1.1 shorty
10.2.0.5 rev.example.test
10.2.0.5 fwd.example.test
fd00:1::1 six.example.test
"""
NAMES = ("alpha.example.test", "alpha", "beta.example.test", "gamma.other.test", "shorty", "fwd.example.test",
         "six.example.test")
NAME_PATTERNS = (".example.test", ".test", ".other.test", "alpha.example.test", "rev.example.test",
                 "fwd.example.test", "*.example.test", "?eta.example.test", "shorty", "KNOWN", "UNKNOWN",
                 "PARANOID", "LOCAL", "ALL", "10.0.", "10.2.0.5", "[fd00:1::]/32")

# Runs inside the namespace: Policy.decide for each question on stdin (JSON), with the
# real resolver for names and none for addresses (as tcpdmatch).
_DECIDE = r"""
import ipaddress, json, sys
from sockscope.policy import Policy
allow, deny, questions = json.load(sys.stdin)
policy = Policy.parse_pair(allow, deny)
def ours(daemon, client):
    try:
        ipaddress.ip_address(client)
    except ValueError:
        return policy.decide(daemon, client).allowed
    return policy.decide(daemon, client, resolver=lambda address: None).allowed
print(json.dumps([ours(d, c) for d, c in questions]))
"""


@pytest.mark.parametrize("seed", range(BASE_SEED + 100, BASE_SEED + 108))
def test_host_name_decisions_agree_with_tcpdmatch(topology: Topology, tmp_path: Path, seed: int) -> None:
    import json

    rng = random.Random(seed)

    def clients() -> str:
        text = " ".join(dict.fromkeys(rng.choice(NAME_PATTERNS) for _ in range(rng.randint(1, 3))))
        if rng.random() < 0.3:
            text += " EXCEPT " + rng.choice(NAME_PATTERNS)
        return text

    allow = "".join(f"{_daemons(rng)} : {clients()}\n" for _ in range(rng.randint(1, 4)))
    deny = "".join(f"{_daemons(rng)} : {clients()}\n" for _ in range(rng.randint(1, 3)))
    tmp_path.chmod(0o755)
    (tmp_path / "hosts.allow").write_text(allow)
    (tmp_path / "hosts.deny").write_text(deny)
    (tmp_path / "hosts").write_text(HOSTS)
    (tmp_path / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
    questions = [(daemon, client) for daemon in DAEMONS for client in (*NAMES, "10.0.0.1", "10.9.9.9")]
    setup = (f"mount --bind {tmp_path}/hosts /etc/hosts && mount --bind {tmp_path}/resolv.conf "
             f"/etc/resolv.conf && cd {tmp_path}")
    ns = topology.add_netns("names")
    script = "".join(f"{TCPDMATCH} -d {d} {c} 2>/dev/null | grep -m1 '^access:' || echo access: none\n"
                     for d, c in questions)
    theirs_out = topology.run(ns, "unshare", "--mount", "sh", "-c", f"{setup} && {script}").stdout.split("\n")
    theirs = [line.split()[1] == "granted" for line in theirs_out if line]
    ours_out = topology.run(ns, "unshare", "--mount", "sh", "-c",
                            f"{setup} && {sys.executable} -c '{_DECIDE}'",
                            input=json.dumps([allow, deny, questions])).stdout
    ours = json.loads(ours_out)
    assert len(theirs) == len(ours) == len(questions)
    for (daemon, client), granted, mine in zip(questions, theirs, ours, strict=True):
        verdicts = (f"tcpdmatch {'granted' if granted else 'denied'}, "
                    f"sockscope {'granted' if mine else 'denied'}")
        assert mine == granted, (f"seed {seed}\nhosts.allow:\n{allow}hosts.deny:\n{deny}hosts:\n{HOSTS}"
                                 f"question: {daemon} {client}: {verdicts}")
