"""Endpoint addresses and the unix path limits (no root, no sockets needed)."""

from __future__ import annotations

import struct

import pytest

from sockscope.errors import UsageError
from sockscope.services.address import parse_endpoint
from sockscope.services.credentials import parse_xucred
from sockscope.services.unixpath import check_path_length, path_limit


@pytest.mark.parametrize(
    ("text", "kind", "host", "port", "path"),
    [
        ("tcp:127.0.0.1:80", "tcp", "127.0.0.1", 80, ""),
        ("tcp:[::1]:8080", "tcp", "::1", 8080, ""),
        ("tcp::8080", "tcp", "", 8080, ""),
        ("tcp:8080", "tcp", "", 8080, ""),
        ("udp:localhost:53", "udp", "localhost", 53, ""),
        ("unix:/run/x.sock", "unix", "", 0, "/run/x.sock"),
        ("unix:@abstract", "unix", "", 0, "@abstract"),
        ("unix-dgram:rel.sock", "unix-dgram", "", 0, "rel.sock"),
        ("unix-seqpacket:/tmp/s", "unix-seqpacket", "", 0, "/tmp/s"),
        ("tcp:host:http", "tcp", "host", 80, ""),  # service names, as the ls filter and nc take
        ("udp:[::1]:domain", "udp", "::1", 53, ""),
        ("tcp::ssh", "tcp", "", 22, ""),
    ],
)
def test_parse(text: str, kind: str, host: str, port: int, path: str) -> None:
    ep = parse_endpoint(text)
    assert (ep.kind, ep.host, ep.port, ep.path) == (kind, host, port, path)
    assert parse_endpoint(str(ep)) == ep


def test_abstract_address_and_types() -> None:
    import socket

    assert parse_endpoint("unix:@" + "a" * 107).unix_address() == b"\0" + b"a" * 107  # at the limit
    ep = parse_endpoint("unix-seqpacket:@name")
    assert ep.abstract and ep.unix_address() == b"\0name" and ep.socktype == socket.SOCK_SEQPACKET
    assert not parse_endpoint("unix-dgram:/x").stream


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sctp:1.2.3.4:5", "bad address"),
        ("tcp:1.2.3.4:99999", "bad port"),
        ("tcp:1.2.3.4:htttp", "neither a number"),
        ("tcp:::1:80", "IPv6 addresses go in brackets"),
        ("tcp:[::1]80", "want [IPv6]:PORT"),
        ("unix:", "no path"),
        ("unix:@" + "a" * 108, "abstract name too long"),
        ("/tmp/x.sock", "bad address"),
    ],
)
def test_bad_addresses(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("[", r"\[")):
        parse_endpoint(text)


@pytest.mark.parametrize(("platform", "limit"), [("linux", 107), ("freebsd14", 103), ("darwin", 103)])
def test_path_length_boundaries(platform: str, limit: int) -> None:
    assert path_limit(platform) == limit
    check_path_length("/" + "a" * (limit - 1), platform)  # exactly at the limit
    with pytest.raises(UsageError) as err:
        check_path_length("/" + "a" * limit, platform)  # one byte over
    text = str(err.value)
    assert f"{limit + 1} bytes, the limit is {limit} bytes plus the terminating NUL" in text
    assert "shorter directory" in text and "relative path" in text
    assert ("abstract name" in text) == (platform == "linux")
    # bytes, not characters, count
    with pytest.raises(UsageError):
        check_path_length("/" + "é" * (limit // 2 + 1), platform)


def test_xucred_bytes() -> None:
    # struct xucred as FreeBSD lays it out: version 0, uid 1001, 2 groups 20, 0
    raw = struct.pack("IIh2x16I", 0, 1001, 2, 20, 0, *([0] * 14))
    assert parse_xucred(raw) == (1001, 20)
