"""The kernel's own socket counters: /proc/net/netstat (listen-queue overflows
and drops), /proc/net/sockstat (TIME_WAIT, socket memory) and the tcp_mem /
udp_mem limits.

``parse_netstat`` and ``parse_sockstat`` are sans-IO (text in, numbers out);
``read_namespace`` reads them for the namespace the calling thread is in
(/proc/thread-self/net follows the thread, as ``platform.linux.in_netns`` sets it).

What the kernel keeps per namespace and what it keeps host-wide: ListenOverflows,
ListenDrops and the TIME_WAIT count are per namespace; socket memory (the pages
counted against tcp_mem / udp_mem) is host-wide.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


def parse_netstat(text: str) -> dict[str, dict[str, int]]:
    """``/proc/net/netstat`` (or ``snmp``): {"TcpExt": {"ListenOverflows": 3, ...}, ...}.

    The file is pairs of lines, names then values, each starting with the same
    ``Group:``; a pair whose lengths differ or whose values are not numbers is
    skipped rather than misread."""
    out: dict[str, dict[str, int]] = {}
    lines = text.splitlines()
    for names_line, values_line in zip(lines[::2], lines[1::2], strict=False):
        group, _, names = names_line.partition(":")
        group2, _, values = values_line.partition(":")
        if group != group2:
            continue
        keys, numbers = names.split(), values.split()
        if len(keys) != len(numbers):
            continue
        try:
            out[group.strip()] = {k: int(v) for k, v in zip(keys, numbers, strict=True)}
        except ValueError:
            continue
    return out


def parse_sockstat(text: str) -> dict[str, dict[str, int]]:
    """``/proc/net/sockstat``: {"TCP": {"inuse": 5, "orphan": 0, "tw": 2, ...}, ...}."""
    out: dict[str, dict[str, int]] = {}
    for line in text.splitlines():
        group, _, rest = line.partition(":")
        words = rest.split()
        fields: dict[str, int] = {}
        for key, value in zip(words[::2], words[1::2], strict=False):
            try:
                fields[key] = int(value)
            except ValueError:
                continue
        out[group.strip()] = fields
    return out


def parse_limits(text: str) -> tuple[int, int, int] | None:
    """``tcp_mem`` / ``udp_mem``: (min, pressure, max) in pages, None if unreadable."""
    parts = text.split()
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return None
    low, pressure, high = (int(p) for p in parts)
    return low, pressure, high


@dataclass(slots=True)
class NamespaceCounters:
    """One namespace's counters as the kernel keeps them."""

    listen_overflows: int
    listen_drops: int
    time_wait: int


@dataclass(slots=True)
class HostMemory:
    """Socket memory the kernel accounts host-wide, in bytes: in use and the limits."""

    used: dict[str, int]  # proto -> bytes ("tcp", "udp")
    limits: dict[str, tuple[int, int, int]]  # proto -> (min, pressure, max) bytes


def read_namespace() -> NamespaceCounters:
    """The counters of the namespace the calling thread is in."""
    netstat = parse_netstat(_read("/proc/thread-self/net/netstat"))
    sockstat = parse_sockstat(_read("/proc/thread-self/net/sockstat"))
    tcp_ext = netstat.get("TcpExt", {})
    return NamespaceCounters(tcp_ext.get("ListenOverflows", 0), tcp_ext.get("ListenDrops", 0),
                             sockstat.get("TCP", {}).get("tw", 0))


def read_host_memory() -> HostMemory:
    page = os.sysconf("SC_PAGE_SIZE")
    sockstat = parse_sockstat(_read("/proc/thread-self/net/sockstat"))
    used = {proto.lower(): sockstat[proto]["mem"] * page
            for proto in ("TCP", "UDP") if "mem" in sockstat.get(proto, {})}
    limits: dict[str, tuple[int, int, int]] = {}
    for proto in ("tcp", "udp"):
        try:
            found = parse_limits(_read(f"/proc/sys/net/ipv4/{proto}_mem"))
        except OSError:
            found = None
        if found is not None:
            low, pressure, high = found
            limits[proto] = (low * page, pressure * page, high * page)
    return HostMemory(used, limits)


def _read(path: str) -> str:
    with open(path, encoding="ascii", errors="replace") as f:
        return f.read()
