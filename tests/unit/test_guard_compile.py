"""The nftables compiler of ``sockscope guard`` (text in, script out)."""

from __future__ import annotations

import pytest

from sockscope.errors import UsageError
from sockscope.policy import Policy
from sockscope.policy.nftables import GuardPort, compile_guard, parse_port


def decide_lines(script: str) -> list[str]:
    body = script.split("chain decide {\n", 1)[1].split("\n  }", 1)[0]
    return [line.strip() for line in body.splitlines()]


def test_runs_share_sets_and_order_is_kept() -> None:
    policy = Policy.parse(
        "web : 10.1.0.0/16 10.2. [2001:db8::]/32 : allow\n"
        "ALL : 10.3.0.0/16 : allow\n"  # same verdict: joins the run
        "ftp : 10.4.0.0/16 : allow\n"  # another daemon: left out
        "web : 10.0.0.0/8 : deny\n"
        "web : uid:0 : allow\n"  # peer rules cannot match addresses
        "web : 10.0.5.0/255.0.255.0 : allow\n"
    )
    script = compile_guard(policy, "web", [GuardPort(80, "tcp"), GuardPort(53, "udp")])
    assert "set r0_v4 { type ipv4_addr; flags interval; auto-merge; " \
           "elements = { 10.1.0.0/16, 10.2.0.0/16, 10.3.0.0/16 }; }" in script
    assert "set r0_v6 { type ipv6_addr; flags interval; auto-merge; elements = { 2001:db8::/32 }; }" in script
    assert "set ports_tcp { type inet_service; elements = { 80 }; }" in script
    assert "set ports_udp { type inet_service; elements = { 53 }; }" in script
    assert "10.4.0.0" not in script
    assert decide_lines(script) == [
        "ip saddr @r0_v4 accept",
        "ip6 saddr @r0_v6 accept",
        "ip saddr @r1_v4 drop",
        "ip saddr & 255.0.255.0 == 10.0.5.0 accept",
        "drop  # default: no rule matched",
    ]
    # one transaction that replaces an older guard
    assert script.startswith("table inet sockscope_guard {}\ndelete table inet sockscope_guard\n")


def test_all_ends_the_chain_and_pair_defaults_to_accept() -> None:
    policy = Policy.parse_pair("web : 10.1. : allow\n", "web : ALL\nweb : 10.9.\n")
    assert decide_lines(compile_guard(policy, "web", [GuardPort(80, "tcp")]))[-1] == "drop  # hosts.deny:1"
    policy = Policy.parse_pair("web : 10.1.\n", "")
    assert decide_lines(compile_guard(policy, "web", [GuardPort(80, "tcp")]))[-1].startswith("accept")


def test_except() -> None:
    policy = Policy.parse("ALL : 10.0.0.0/8 EXCEPT 10.1.0.0/16 [fd00::]/8 : allow\n"
                          "ALL : ALL EXCEPT [fd00::1] : deny\n")
    lines = decide_lines(compile_guard(policy, "x", [GuardPort(1, "tcp")]))
    assert lines == [
        "ip saddr @x0_in4 ip saddr != @x0_out4 accept",
        "meta nfproto ipv4 drop",
        "meta nfproto ipv6 ip6 saddr != @x1_out6 drop",
        "drop  # default: no rule matched",
    ]


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ("x : .example.com : allow\n", "<policy>:1: guard compiles addresses only; '.example.com'"),
        ("x : LOCAL : allow\n", "needs a host name lookup"),
        ("x : 10. EXCEPT 10.1. EXCEPT 10.1.1. : allow\n", "nested EXCEPT"),
    ],
)
def test_not_compilable(policy: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        compile_guard(Policy.parse(policy), "x", [GuardPort(1, "tcp")])


def test_ports_and_table() -> None:
    assert parse_port("22") == GuardPort(22, "tcp") and parse_port("53/UDP") == GuardPort(53, "udp")
    for bad in ("0", "65536", "22/sctp", "ssh/sctp"):
        with pytest.raises(UsageError):
            parse_port(bad)
    with pytest.raises(UsageError, match="bad table name"):
        compile_guard(Policy.parse("x: ALL: allow\n"), "x", [GuardPort(1, "tcp")], table="bad name;")
    with pytest.raises(UsageError, match="at least one --port"):
        compile_guard(Policy.parse("x: ALL: allow\n"), "x", [])


def test_ports_by_service_name() -> None:
    assert parse_port("ssh") == GuardPort(22, "tcp")
    assert parse_port("domain/udp") == GuardPort(53, "udp")
    for bad in ("0", "no-such-service", "ssh/sctp", "70000"):
        with pytest.raises(UsageError):
            parse_port(bad)


def test_a_daemon_no_rule_names_is_called_out() -> None:
    from sockscope.policy.nftables import daemon_problem

    named = Policy.parse("sshd : 10.0.0.0/8 : allow\nALL : ALL : deny\n")
    assert daemon_problem(named, "sshd") is None
    assert daemon_problem(named, "SSHD") is None  # daemon names are matched without case
    problem = daemon_problem(named, "shd")
    assert problem is not None and "the policy names sshd" in problem
    only_all = Policy.parse("ALL : 10.0.0.0/8 : allow\n")
    assert daemon_problem(only_all, "anything") is None  # nothing to misspell
    other = Policy.parse("web : 10.0.0.0/8 : allow\n")
    problem = daemon_problem(other, "sshd")
    assert problem is not None and "every client would get the default (drop)" in problem


def test_daemon_names_cannot_reach_the_script() -> None:
    policy = Policy.parse("ALL : 10.0.0.0/8 : allow\n")
    with pytest.raises(UsageError, match="bad daemon name"):
        compile_guard(policy, 'x"; delete table inet other #', [GuardPort(22, "tcp")])
