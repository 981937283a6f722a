"""Policy files: hosts_access(5) syntax, peer rules, first match wins, errors
with file:line:column, and the index agreeing with a plain in-order scan."""

from __future__ import annotations

import ipaddress
import os
import pwd
import random
from dataclasses import dataclass

import pytest

from sockscope.policy import Client, HostName, Policy, PolicyError


@dataclass(frozen=True)
class Peer:
    uid: int
    gid: int
    exe: str | None = None


def hosts(table: dict[str, tuple[str, bool]]):  # type: ignore[no-untyped-def]
    def resolve(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> HostName | None:
        entry = table.get(str(address))
        return HostName(*entry) if entry else None

    return resolve


def verdict(policy: Policy, daemon: str, client: object, **kw: object) -> tuple[bool, int | None]:
    decision = policy.decide(daemon, client, **kw)  # type: ignore[arg-type]
    return decision.allowed, decision.rule.line if decision.rule else None


def test_first_match_wins_and_default_refuses() -> None:
    policy = Policy.parse(
        "# comment\n"
        "sshd : 10.0.0.5 : deny\n"
        "sshd : 10.0.0.0/8 : allow\n"
        "ALL : 192.168. : allow\n"
        "\n"
        "ALL : ALL : deny\n",
        "p.conf",
    )
    assert verdict(policy, "sshd", "10.0.0.5") == (False, 2)
    assert verdict(policy, "sshd", "10.1.2.3") == (True, 3)
    assert verdict(policy, "SSHD", "192.168.7.7") == (True, 4)
    assert verdict(policy, "ftpd", "10.1.2.3") == (False, 6)
    assert Policy.parse("sshd: 10.0.0.0/8: allow\n").decide("sshd", "11.0.0.1").rule is None
    assert not Policy.parse("sshd: 10.0.0.0/8: allow\n").allows("sshd", "11.0.0.1")


def test_classic_pair_allow_then_deny_then_grant() -> None:
    policy = Policy.parse_pair("sshd: 10.0.0.0/255.0.0.0\n", "ALL: 10. 172.16.0.0/12\n")
    assert verdict(policy, "sshd", "10.9.9.9") == (True, 1)
    assert verdict(policy, "ftpd", "10.9.9.9") == (False, 1)
    assert verdict(policy, "ftpd", "8.8.8.8") == (True, None)
    decision = policy.decide("sshd", "172.20.0.1")
    assert not decision.allowed and decision.rule is not None and decision.rule.filename == "hosts.deny"
    # hosts_options' allow/deny also work inside the classic files
    policy = Policy.parse_pair("ALL: 10.1. : deny\n", "")
    assert verdict(policy, "x", "10.1.0.1") == (False, 1)


def test_except_in_both_lists() -> None:
    policy = Policy.parse(
        "ALL EXCEPT ftpd : 10.0.0.0/8 EXCEPT 10.0.0.0/24 EXCEPT 10.0.0.7 : allow\n"
        "ALL : ALL : deny\n"
    )
    assert verdict(policy, "sshd", "10.1.0.1") == (True, 1)
    assert verdict(policy, "sshd", "10.0.0.1") == (False, 2)
    assert verdict(policy, "sshd", "10.0.0.7") == (True, 1)  # EXCEPT nests to the right
    assert verdict(policy, "ftpd", "10.1.0.1") == (False, 2)


def test_ipv6_and_mapped_and_netmask() -> None:
    policy = Policy.parse(
        "ALL : [2001:db8::]/32, [::1] : allow\n"
        "ALL : 10.0.0.0/255.0.255.0 : allow\n"  # a non-contiguous mask is legal
        "ALL : 127.0.0.1 : allow\n"
    )
    assert verdict(policy, "d", "2001:db8:1::9") == (True, 1)
    assert verdict(policy, "d", "::1") == (True, 1)
    assert verdict(policy, "d", "2001:db9::1") == (False, None)
    assert verdict(policy, "d", "10.5.0.200") == (True, 2)
    assert verdict(policy, "d", "10.5.1.200") == (False, None)
    assert verdict(policy, "d", "::ffff:127.0.0.1") == (True, 3)


def test_names_need_forward_and_reverse_agreement() -> None:
    policy = Policy.parse(
        "ALL : .example.com : allow\n"
        "ALL : LOCAL : allow\n"
        "ALL : PARANOID : deny\n"
        "ALL : web?.test.org : allow\n"
    )
    resolve = hosts({
        "192.0.2.1": ("mail.example.com", True),
        "192.0.2.2": ("evil.example.com", False),  # forward lookup disagrees
        "192.0.2.3": ("printer", True),
        "192.0.2.4": ("web1.test.org", True),
    })
    assert verdict(policy, "d", "192.0.2.1", resolver=resolve) == (True, 1)
    assert verdict(policy, "d", "192.0.2.2", resolver=resolve) == (False, 3)
    assert verdict(policy, "d", "192.0.2.3", resolver=resolve) == (True, 2)
    assert verdict(policy, "d", "192.0.2.4", resolver=resolve) == (True, 4)
    assert verdict(policy, "d", "192.0.2.9", resolver=resolve) == (False, None)


def test_names_are_looked_up_only_when_needed() -> None:
    calls: list[str] = []

    def resolve(address: object) -> HostName | None:
        calls.append(str(address))
        return None

    policy = Policy.parse("ALL : 10. : allow\nALL : .example.com : allow\n")
    assert policy.decide("d", "10.0.0.1", resolver=resolve).allowed
    assert calls == []
    assert not policy.decide("d", "11.0.0.1", resolver=resolve).allowed
    assert calls == ["11.0.0.1"]


def test_peer_rules() -> None:
    root = pwd.getpwuid(0).pw_name
    policy = Policy.parse(
        f"api : user:{root} : allow\n"
        "api : uid:1234 gid:99 : allow\n"
        "api : exe:/usr/bin/env : allow\n"
        "api : group:nogroup : deny\n"
        "api : ALL : deny\n"
    )
    env = os.path.realpath("/usr/bin/env")
    assert verdict(policy, "api", Peer(0, 0)) == (True, 1)
    assert verdict(policy, "api", Peer(1234, 5)) == (True, 2)
    assert verdict(policy, "api", Peer(5, 99)) == (True, 2)
    assert verdict(policy, "api", Peer(5, 5, env)) == (True, 3)
    assert verdict(policy, "api", Peer(65534, 65534)) == (False, 4)
    assert verdict(policy, "api", Peer(7, 7)) == (False, 5)
    # address patterns never match a Unix peer, nor peer patterns an address
    assert verdict(Policy.parse("ALL: 10. : allow\n"), "api", Peer(0, 0)) == (False, None)
    assert verdict(Policy.parse("ALL: uid:0 : allow\n"), "api", "10.0.0.1") == (False, None)
    assert verdict(Policy.parse("ALL: LOCAL : allow\n"), "api", Client(peer=Peer(9, 9))) == (True, 1)


def test_continuation_lines_keep_positions() -> None:
    policy = Policy.parse("sshd : 10.0.0.1 \\\n   10.0.0.2 : allow\nftpd: ALL: allow\n", "f")
    assert verdict(policy, "sshd", "10.0.0.2") == (True, 1)
    assert verdict(policy, "ftpd", "1.1.1.1") == (True, 3)
    with pytest.raises(PolicyError) as err:
        Policy.parse("sshd : 10.0.0.1 \\\n   10.0.0.300 : allow\n", "f")
    assert str(err.value) == "f:2:4: bad IPv4 address '10.0.0.300'"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sshd 10.0.0.1 allow\n", "p:1:20: expected 'daemon_list : client_list'"),
        ("sshd : 10.0.0.1\n", "p:1:16: a rule must end in ': allow' or ': deny'"),
        ("sshd : 10.0.0.1 : spawn echo\n", "p:1:19: unsupported option 'spawn echo'"),
        (": 10.0.0.1 : allow\n", "p:1:1: empty daemon list"),
        ("sshd : : allow\n", "p:1:5: empty client list"),
        ("sshd : user:nosuchuserxyz : allow\n", "p:1:8: unknown user 'nosuchuserxyz'"),
        ("sshd : group:nosuchgroupxyz : allow\n", "p:1:8: unknown group 'nosuchgroupxyz'"),
        ("sshd : uid:root : allow\n", "p:1:8: uid: wants a number, got 'root'"),
        ("sshd : exe:bin/sh : allow\n", "p:1:8: exe: wants an absolute path"),
        ("sshd : [10.0.0.1] : allow\n", "p:1:8: 10.0.0.1 is an IPv4 address: write it without brackets"),
        ("sshd : 10.0.0.0/33 : allow\n", "p:1:8: IPv4 prefix length 33 is over 32"),
        ("sshd : [::1]/129 : allow\n", "p:1:8: IPv6 prefix length 129 is over 128"),
        ("sshd : 10.0.0.1/8 : allow\n", "p:1:8: 10.0.0.1/8 has host bits set (did you mean 10.0.0.0/8?)"),
        ("sshd : 10.0.0.1/255.0.0.0 : allow\n", "p:1:8: 10.0.0.1/255.0.0.0 has host bits set"),
        ("sshd : 10.0.0.0/255.0.0.x : allow\n", "p:1:8: bad netmask '255.0.0.x'"),
        ("sshd : 300. : allow\n", "p:1:8: bad address prefix '300.'"),
        ("sshd : EXCEPT 10. : allow\n", "p:1:8: EXCEPT needs a list before it"),
        ("sshd : 10. EXCEPT : allow\n", "p:1:12: EXCEPT needs a list after it"),
        ("sshd@host : ALL : allow\n", "p:1:1: daemon@host patterns are not supported"),
        ("sshd : fred@host : allow\n", "p:1:8: user@host and @netgroup patterns are not supported"),
        ("sshd : /etc/list : allow\n", "p:1:8: pattern files are not supported"),
        ("sshd : ALL : allow : deny\n", "p:1:22: more than one ': allow'/': deny'"),
        ("ok : ALL : allow\nsshd : [zz] : allow\n", "p:2:8: bad IPv6 address 'zz'"),
    ],
)
def test_malformed_policies(text: str, message: str) -> None:
    with pytest.raises(PolicyError) as err:
        Policy.parse(text, "p")
    assert str(err.value).startswith(message), str(err.value)


def test_load_files(tmp_path: object) -> None:
    from pathlib import Path

    from sockscope.errors import UsageError

    base = Path(str(tmp_path))
    (base / "allow").write_text("sshd: 10.\n")
    (base / "deny").write_text("ALL: ALL\n")
    policy = Policy.load(hosts_allow=base / "allow", hosts_deny=base / "deny")
    assert policy.allows("sshd", "10.0.0.1") and not policy.allows("sshd", "11.0.0.1")
    with pytest.raises(UsageError, match="no such file"):
        Policy.load(base / "missing")
    with pytest.raises(UsageError, match="not both"):
        Policy.load(base / "allow", hosts_deny=base / "deny")
    # no match in the pair: the reason names the files given, not "hosts.allow or hosts.deny"
    decision = Policy.load(hosts_allow=base / "allow", hosts_deny=base / "allow").decide("ftpd", "8.8.8.8")
    assert decision.allowed
    assert decision.reason == f"no rule matched in {base}/allow or {base}/allow (access is granted)"


def test_decide_takes_host_names_as_check_does() -> None:
    from sockscope.errors import UsageError
    from sockscope.policy.client_spec import client_from_spec

    policy = Policy.parse("ALL : 127.0.0.0/8 : allow\nALL : ALL : deny\n")
    decision = policy.decide("web", "localhost")  # /etc/hosts: no DNS needed
    assert decision.allowed and decision.rule is not None and decision.rule.line == 1
    assert decision.allowed == policy.decide("web", client_from_spec("localhost")).allowed
    with pytest.raises(UsageError, match="neither an address nor a host name"):
        policy.decide("web", "no-such-host.invalid")


def _reference(policy: Policy, daemon: str, client: Client) -> int | None:
    for rule in policy.rules:
        if rule.daemons.matches(daemon) and rule.clients.matches(client):
            return rule.line
    return None


def test_index_agrees_with_in_order_scan() -> None:
    rng = random.Random(7)
    lines = []
    for _ in range(400):
        daemon = rng.choice(["ALL", "sshd", "ftpd", "sshd,ftpd", "ALL EXCEPT ftpd"])
        kind = rng.randrange(6)
        if kind == 0:
            client = f"10.{rng.randrange(4)}."
        elif kind == 1:
            plen = rng.randrange(8, 33)
            text = f"10.{rng.randrange(4)}.{rng.randrange(4)}.{rng.randrange(256)}/{plen}"
            net = ipaddress.ip_network(text, strict=False)
            client = str(net)
        elif kind == 2:
            net6 = ipaddress.ip_network(f"fd00:{rng.randrange(4):x}::/{rng.choice([16, 32, 48, 64])}",
                                        strict=False)
            client = f"[{net6.network_address}]/{net6.prefixlen}"
        elif kind == 3:
            client = f"uid:{rng.randrange(5)} gid:{rng.randrange(5)}"
        elif kind == 4:
            client = f"10.{rng.randrange(4)}. EXCEPT 10.{rng.randrange(4)}.{rng.randrange(4)}."
        else:
            client = rng.choice(["ALL", "LOCAL", "KNOWN"]) if rng.random() < 0.05 else "10.3.3.3"
        lines.append(f"{daemon} : {client} : {rng.choice(['allow', 'deny'])}")
    policy = Policy.parse("\n".join(lines) + "\n")
    for _ in range(600):
        daemon = rng.choice(["sshd", "ftpd", "httpd"])
        if rng.random() < 0.6:
            address = ipaddress.ip_address(f"10.{rng.randrange(4)}.{rng.randrange(4)}.{rng.randrange(256)}")
        elif rng.random() < 0.5:
            address = ipaddress.ip_address(f"fd00:{rng.randrange(4):x}::{rng.randrange(9)}")
        else:
            peer = Peer(rng.randrange(6), rng.randrange(6))
            c = Client(peer=peer, resolver=lambda a: None)
            decision = policy.decide(daemon, Client(peer=peer, resolver=lambda a: None))
            assert (decision.rule.line if decision.rule else None) == _reference(policy, daemon, c)
            continue
        decision = policy.decide(daemon, Client(address=address, resolver=lambda a: None))
        expected = _reference(policy, daemon, Client(address=address, resolver=lambda a: None))
        assert (decision.rule.line if decision.rule else None) == expected, (daemon, address)
