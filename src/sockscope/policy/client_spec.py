"""``CLIENT`` as ``sockscope check`` takes it: an address, a host name,
``user:NAME``, ``uid:N`` or ``pid:N``."""

from __future__ import annotations

import ipaddress
import pwd
from dataclasses import dataclass

from sockscope.errors import UsageError

from .patterns import Client
from .policy import host_address


@dataclass(frozen=True)
class SpecPeer:
    uid: int
    gid: int
    exe: str | None = None


def client_from_spec(spec: str) -> Client:
    keyword, sep, value = spec.partition(":")
    keyword = keyword.lower()
    if sep and keyword in ("user", "uid"):
        try:
            entry = pwd.getpwnam(value) if keyword == "user" else pwd.getpwuid(int(value))
        except (KeyError, ValueError):
            if keyword == "uid" and value.isdigit():
                return Client(peer=SpecPeer(int(value), int(value)))
            raise UsageError(f"unknown user {value!r}") from None
        return Client(peer=SpecPeer(entry.pw_uid, entry.pw_gid))
    if sep and keyword == "pid":
        if not value.isdigit():
            raise UsageError(f"pid: wants a number, got {value!r}")
        from sockscope.services.credentials import process_credentials

        return Client(peer=process_credentials(int(value)))
    try:
        return Client(address=ipaddress.ip_address(spec.strip("[]")))
    except ValueError:
        return Client(address=host_address(spec))
