"""The inventory's Python API as a script author uses it (issue #13): real
signatures, UsageError for arguments of the wrong kind, notes instead of silence."""

from __future__ import annotations

import inspect
import os
import subprocess
import warnings

import pytest

import sockscope
from privileges import as_nobody
from topology import Topology


def test_sockets_has_a_real_typed_signature() -> None:
    params = inspect.signature(sockscope.sockets).parameters
    assert not any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params.values())
    assert {"proto", "family", "filter", "netns", "all_netns", "pid", "info"} <= set(params)
    assert "filter" in (sockscope.sockets.__doc__ or "")


@pytest.mark.parametrize("bad", [
    {"pid": "abc"}, {"pid": [1, "x"]}, {"pid": 0}, {"pid": True}, {"proto": 5}, {"proto": ["tcp", 6]},
    {"family": 4}, {"states": 3}, {"netns": 5}, {"filter": 5}, {"user": 1.5}, {"command": 3},
])
def test_arguments_of_the_wrong_kind_are_usage_errors(bad: dict[str, object]) -> None:
    with pytest.raises(sockscope.UsageError):
        sockscope.sockets(**bad)  # type: ignore[arg-type]


def test_one_state_name_is_not_read_letter_by_letter() -> None:
    socks = sockscope.sockets("tcp", states="LISTEN")
    assert all(s.state == "LISTEN" for s in socks)


def test_all_netns_without_root_says_what_it_could_not_see(topology: Topology) -> None:
    a = topology.add_netns("a")  # a namespace nobody cannot enter
    sockscope.sockets("tcp", netns=a.name)  # imports what the child needs (privileges.py)
    assert sockscope.InventoryWarning

    def child() -> int:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            found = sockscope.sockets("tcp", all_netns=True, owners=False)
        notes_ok = any("could not be read" in n or "need root" in n for n in found.notes)
        warned = any(issubclass(w.category, sockscope.InventoryWarning) for w in caught)
        return 0 if notes_ok and warned else 1

    assert as_nobody(child) == 0


def unreadable_namespaces() -> int:
    count = 0
    for entry in os.listdir("/proc"):
        try:
            os.stat(f"/proc/{entry}/ns/net") if entry.isdigit() else None
        except PermissionError:
            count += 1
        except OSError:
            pass
    return count


def test_notes_as_root_name_only_what_could_not_be_read() -> None:
    # Root sees every namespace, except where a sandbox hides processes (pid 1 here).
    assert os.geteuid() == 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = sockscope.sockets("tcp", all_netns=True)
    assert isinstance(found, list)
    if unreadable_namespaces() == 0:
        assert found.notes == [] and caught == []
    else:
        assert len(found.notes) == 1 and "could not be read" in found.notes[0]


def test_all_netns_skips_a_namespace_deleted_after_it_was_listed(
        topology: Topology, monkeypatch: pytest.MonkeyPatch) -> None:
    from sockscope.platform import linux

    gone = topology.add_netns("gone")
    listed = linux.scan_all_netns()
    assert any(ref.path == gone.path for ref in listed[0])
    subprocess.run(["ip", "netns", "delete", gone.name], check=True)  # as another tool would
    monkeypatch.setattr(linux, "scan_all_netns", lambda: listed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sockscope.InventoryWarning)  # pid 1 in a sandbox
        assert isinstance(sockscope.sockets("tcp", all_netns=True, owners=False), list)
    with pytest.raises(sockscope.SockscopeError, match="has gone"):
        with linux.in_netns(next(ref for ref in listed[0] if ref.path == gone.path)):
            pass
