"""The probing API as a Python programmer meets it (#13): results are dataclasses,
every option is in the signature (help() lists it, a misspelt one is a TypeError a
type checker sees), and wrong types are a UsageError, raised before anything is sent."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import pytest

import sockscope
from sockscope.errors import UsageError
from sockscope.probe import aping, ascan, atrace
from sockscope.probe.model import PingResult, ScanResult, TraceResult


@pytest.mark.parametrize("cls", [PingResult, TraceResult, ScanResult])
def test_results_are_dataclasses(cls: type) -> None:
    assert dataclasses.is_dataclass(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    assert {"address", "elapsed_ms"} <= names


def test_a_scan_result_repr_does_not_list_every_port() -> None:
    result = ScanResult("h", "192.0.2.1", "syn")
    result.ports = [sockscope.probe.PortResult(p, "tcp", "closed", "reset") for p in range(1, 1000)]
    assert len(repr(result)) < 200 and "192.0.2.1" in repr(result)


EXPECTED = {
    "ping": {"count", "interval", "timeout", "size", "ttl", "family"},
    "trace": {"method", "port", "queries", "first_ttl", "max_ttl", "wait", "packet_len", "tos", "family"},
    "scan": {"ports", "method", "rate", "retries", "timeout", "family"},
}


@pytest.mark.parametrize(
    ("name", "function"),
    [
        ("ping", sockscope.ping),
        ("ping", aping),
        ("trace", sockscope.trace),
        ("trace", atrace),
        ("scan", sockscope.scan),
        ("scan", ascan),
    ],
)
def test_every_option_is_in_the_signature(name: str, function: Any) -> None:
    params = inspect.signature(function).parameters
    assert EXPECTED[name] <= set(params), set(params)
    assert all(p.kind is not inspect.Parameter.VAR_KEYWORD for p in params.values())
    assert all(p.annotation is not inspect.Parameter.empty for p in params.values())
    for option in EXPECTED[name]:
        assert option in (function.__doc__ or "") or function in (aping, atrace, ascan), option


def test_a_misspelt_option_is_a_type_error_before_anything_happens() -> None:
    with pytest.raises(TypeError, match="metod"):
        sockscope.trace("192.0.2.1", metod="icmp")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="rates"):
        sockscope.scan("192.0.2.1", "80", rates=5)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda: sockscope.ping(1234), "host must be a name or address (str), not int"),  # type: ignore[arg-type]
        (lambda: sockscope.ping(None), "not NoneType"),  # type: ignore[arg-type]
        (lambda: sockscope.ping("::1", count="3"), "count must be an integer, not str"),  # type: ignore[arg-type]
        (lambda: sockscope.ping("::1", interval="1"), "interval must be a number"),  # type: ignore[arg-type]
        (lambda: sockscope.ping("::1", size=5.5), "size must be an integer"),  # type: ignore[arg-type]
        (lambda: sockscope.ping("::1", family="inet6"), "family must be AF_INET"),  # type: ignore[arg-type]
        (lambda: sockscope.trace(b"::1"), "not bytes"),  # type: ignore[arg-type]
        (lambda: sockscope.trace("::1", max_ttl="30"), "max TTL must be an integer"),  # type: ignore[arg-type]
        (lambda: sockscope.trace("::1", here="3"), "wait factor must be a number"),  # type: ignore[arg-type]
        (lambda: sockscope.trace("::1", packet_len=1.5), "packet length must be"),  # type: ignore[arg-type]
        (lambda: sockscope.trace("::1", method=None), "unknown method None"),  # type: ignore[arg-type]
        (lambda: sockscope.scan(1234, "80"), "host must be"),  # type: ignore[arg-type]
        (lambda: sockscope.scan("::1", 80), "ports must be text or port numbers, not int"),  # type: ignore[arg-type]
        (lambda: sockscope.scan("::1", ["80"]), "port must be an integer"),  # type: ignore[list-item]
        (lambda: sockscope.scan("::1", "80", rate="fast"), "rate must be a number"),  # type: ignore[arg-type]
        (lambda: sockscope.scan("::1", "80", retries=None), "retries must be an integer"),  # type: ignore[arg-type]
    ],
)
def test_wrong_types_are_usage_errors(call: Any, words: str) -> None:
    with pytest.raises(UsageError) as raised:
        call()
    assert words in str(raised.value)
