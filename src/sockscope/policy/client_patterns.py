"""One client pattern of a policy rule, checked as it is parsed: addresses and
networks of the right family, users and groups that exist, absolute paths."""

from __future__ import annotations

import grp
import ipaddress
import os
import pwd
import re
from collections.abc import Callable

from .patterns import (
    All,
    DomainSuffix,
    Exe,
    Gid,
    HostNamePattern,
    Known,
    Local,
    Netmask,
    Network,
    Pattern,
    Uid,
)
from .syntax_errors import PEER_KEYWORDS, PolicyError

Fail = Callable[[str], PolicyError]
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9_*?][A-Za-z0-9_.*?-]*")
_DOTTED_PREFIX_RE = re.compile(r"(\d{1,3}\.){1,3}")


def client_pattern(text: str, filename: str = "<pattern>", line: int = 1, column: int = 1) -> Pattern:
    """One client pattern, checked: unknown users, bad addresses and the like raise PolicyError."""

    def fail(message: str) -> PolicyError:
        return PolicyError(filename, line, column, message)

    upper = text.upper()
    if upper == "ALL":
        return All()
    if upper == "LOCAL":
        return Local()
    if upper in ("KNOWN", "UNKNOWN", "PARANOID"):
        return Known(upper)
    keyword, sep, value = text.partition(":")
    if sep and keyword.lower() in PEER_KEYWORDS:
        return _peer_pattern(keyword.lower(), value, text, fail)
    if text.startswith("["):
        return _v6_pattern(text, fail)
    if "/" in text:
        if text.startswith("/"):
            raise fail(f"pattern files are not supported: {text!r}")
        return _v4_net_pattern(text, fail)
    if "@" in text:
        raise fail(f"user@host and @netgroup patterns are not supported: {text!r}")
    if _DOTTED_PREFIX_RE.fullmatch(text):
        octets = [int(o) for o in text.rstrip(".").split(".")]
        if any(o > 255 for o in octets):
            raise fail(f"bad address prefix {text!r}")
        plen = 8 * len(octets)
        base = ".".join(str(o) for o in octets + [0] * (4 - len(octets)))
        return Network(text, ipaddress.IPv4Network(f"{base}/{plen}"))
    if re.fullmatch(r"[\d.]+", text):
        try:
            return Network(text, ipaddress.IPv4Network(f"{ipaddress.IPv4Address(text)}/32"))
        except ValueError:
            raise fail(f"bad IPv4 address {text!r}") from None
    if ":" in text:
        raise fail(f"IPv6 addresses go in brackets: [{text}]")
    if text.startswith("."):
        if not _HOSTNAME_RE.fullmatch(text[1:]):
            raise fail(f"bad domain {text!r}")
        return DomainSuffix(text)
    if not _HOSTNAME_RE.fullmatch(text):
        raise fail(f"bad host pattern {text!r}")
    return HostNamePattern(text)


def _peer_pattern(keyword: str, value: str, text: str, fail: Fail) -> Pattern:
    err = fail
    if not value:
        raise err(f"{keyword}: needs a value")
    if keyword in ("uid", "gid"):
        if not value.isdigit():
            raise err(f"{keyword}: wants a number, got {value!r}")
        return Uid(text, int(value)) if keyword == "uid" else Gid(text, int(value))
    if keyword == "user":
        try:
            return Uid(text, pwd.getpwnam(value).pw_uid)
        except KeyError:
            raise err(f"unknown user {value!r}") from None
    if keyword == "group":
        try:
            group = grp.getgrnam(value)
        except KeyError:
            raise err(f"unknown group {value!r}") from None
        members = set()
        for name in group.gr_mem:
            try:
                members.add(pwd.getpwnam(name).pw_uid)
            except KeyError:
                continue  # a member without a passwd entry cannot connect as anyone
        return Gid(text, group.gr_gid, frozenset(members))
    if not value.startswith("/"):
        raise err(f"exe: wants an absolute path, got {value!r}")
    # The kernel reports the resolved path of a running executable.
    return Exe(text, os.path.realpath(value))


def _v6_pattern(text: str, fail: Fail) -> Pattern:
    m = re.fullmatch(r"\[([^\]]*)\](?:/(\d+))?", text)
    if m is None:
        raise fail(f"bad IPv6 pattern {text!r} (want [addr] or [addr]/len)")
    try:
        address = ipaddress.IPv6Address(m.group(1))
    except ValueError:
        try:
            ipaddress.IPv4Address(m.group(1))
        except ValueError:
            raise fail(f"bad IPv6 address {m.group(1)!r}") from None
        raise fail(f"{m.group(1)} is an IPv4 address: write it without brackets") from None
    plen = int(m.group(2)) if m.group(2) is not None else 128
    if plen > 128:
        raise fail(f"IPv6 prefix length {plen} is over 128")
    return Network(text, _network(address, plen, text, fail))


def _v4_net_pattern(text: str, fail: Fail) -> Pattern:
    addr_text, _, mask_text = text.partition("/")
    try:
        address = ipaddress.IPv4Address(addr_text)
    except ValueError:
        if ":" in addr_text:
            raise fail(f"IPv6 networks go in brackets: [{addr_text}]/{mask_text}") from None
        raise fail(f"bad IPv4 address {addr_text!r}") from None
    if mask_text.isdigit():
        plen = int(mask_text)
        if plen > 32:
            raise fail(f"IPv4 prefix length {plen} is over 32")
        return Network(text, _network(address, plen, text, fail))
    try:
        mask = int(ipaddress.IPv4Address(mask_text))
    except ValueError:
        raise fail(f"bad netmask {mask_text!r}") from None
    if int(address) & ~mask & 0xFFFFFFFF:
        raise fail(f"{text} has host bits set outside the mask")
    inverted = ~mask & 0xFFFFFFFF
    if inverted & (inverted + 1) == 0:  # contiguous: an ordinary prefix
        return Network(text, ipaddress.IPv4Network(f"{address}/{32 - inverted.bit_length()}"))
    return Netmask(text, int(address), mask)


def _network(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, plen: int, text: str, fail: Fail
) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(f"{address}/{plen}")
    except ValueError:
        net = ipaddress.ip_network(f"{address}/{plen}", strict=False)
        raise fail(f"{text} has host bits set (did you mean {net}?)") from None
