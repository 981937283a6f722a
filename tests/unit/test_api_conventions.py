"""The package follows the conventions a Python programmer expects (#13): errors are
the standard exceptions one would catch, and the lazy API is visible to dir()."""

from __future__ import annotations

import errno

import pytest

import sockscope
import sockscope.packets
import sockscope.probe
from sockscope.errors import PermissionNeeded, SockscopeError, UsageError


def test_usage_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="bad value"):
        raise UsageError("bad value")
    assert UsageError.exit_status == 2


def test_permission_needed_is_a_permission_error_with_its_message() -> None:
    exc = PermissionNeeded("capture needs CAP_NET_RAW (run as root)")
    assert isinstance(exc, PermissionError) and isinstance(exc, SockscopeError)
    assert str(exc) == "capture needs CAP_NET_RAW (run as root)"
    assert exc.errno is None or exc.errno == errno.EPERM
    assert exc.exit_status == 1


def test_errors_are_exported() -> None:
    for name in ("SockscopeError", "UsageError", "PermissionNeeded"):
        assert name in sockscope.__all__
        assert getattr(sockscope, name) is getattr(sockscope.errors, name)


@pytest.mark.parametrize("package", [sockscope, sockscope.probe, sockscope.packets])
def test_dir_lists_the_lazy_api(package: object) -> None:
    names = dir(package)
    exported = getattr(package, "__all__", None) or getattr(package, "_EXPORTS", {})
    missing = [name for name in exported if name not in names]
    assert not missing, f"dir({package!r}) lacks {missing}"
    assert names == sorted(names)


def test_every_name_in_all_resolves() -> None:
    for name in sockscope.__all__:
        assert getattr(sockscope, name) is not None, name
