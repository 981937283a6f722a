"""Which container a process runs in, read from its cgroup (/proc/PID/cgroup).

Container runtimes and systemd name their cgroups after what they run:
``docker-<64 hex>.scope`` or ``/docker/<64 hex>`` (Docker), ``libpod-<id>``
(Podman), ``cri-containerd-<id>`` or ``/containerd/…`` (containerd), ``crio-<id>``
(CRI-O), ``/lxc.payload.NAME`` or ``/lxc/NAME`` (LXC), ``machine-NAME.scope``
(systemd-nspawn, libvirt), and other systemd scopes (``systemd-run --scope``).
Ids are shown short, as ``docker ps`` does (12 characters). Sans-IO apart from
``process_cgroup``.
"""

from __future__ import annotations

import re
from typing import Final

_RUNTIME_ID: Final = re.compile(
    r"(?:^|[/-])(docker|libpod|cri-containerd|containerd|crio|cri-o)[-/]([0-9a-f]{12,64})(?:\.scope)?(?:/|$)")
_LXC: Final = re.compile(r"/lxc(?:\.payload)?[./]([^/]+)")
_MACHINE: Final = re.compile(r"/machine-([^/]+)\.scope(?:/|$)")
_SCOPE: Final = re.compile(r"/([^/]+)\.scope(?:/|$)")
_RUNTIME_NAMES: Final = {"docker": "docker", "libpod": "podman", "cri-containerd": "containerd",
                         "containerd": "containerd", "crio": "crio", "cri-o": "crio"}
# Scopes that are not containers: login sessions, systemd's own.
_NOT_CONTAINERS: Final = re.compile(r"^(session-\d+|init)$")


def cgroup_path(text: str) -> str | None:
    """The process's cgroup from the text of /proc/PID/cgroup: the v2 path
    (``0::/…``) when it says more than ``/``, else the first v1 hierarchy's
    path that does; None when every line says ``/``."""
    v2: str | None = None
    v1: str | None = None
    for line in text.splitlines():
        hierarchy, _, rest = line.partition(":")
        _controllers, _, path = rest.partition(":")
        if not path or path == "/":
            continue
        if hierarchy == "0":
            v2 = path
        elif v1 is None:
            v1 = path
    return v2 or v1


def container_of(path: str | None) -> str | None:
    """``runtime:shortid`` (or ``machine:NAME``, ``lxc:NAME``, ``scope:NAME``) for
    a cgroup path, None for a process in no container."""
    if not path:
        return None
    found = _RUNTIME_ID.search(path)
    if found:
        return f"{_RUNTIME_NAMES[found.group(1)]}:{found.group(2)[:12]}"
    found = _LXC.search(path)
    if found:
        return f"lxc:{found.group(1)}"
    found = _MACHINE.search(path)
    if found:
        return f"machine:{found.group(1)}"
    scopes = [name for name in _SCOPE.findall(path) if not _NOT_CONTAINERS.match(name)]
    if scopes:
        return f"scope:{scopes[-1]}"
    return None


def process_cgroup(pid: int) -> tuple[str | None, str | None]:
    """(cgroup path, container) of a running process; (None, None) when it has gone."""
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8", errors="replace") as f:
            path = cgroup_path(f.read())
    except OSError:
        return None, None
    return path, container_of(path)
