"""`Record`: the NamedTuple behaviour the result types keep without importing typing."""

from __future__ import annotations

from sockscope.packets.tcp import TCPOption, parse_options
from sockscope.probe.model import PortResult, TraceProbe
from sockscope.record import Record


class Pair(Record):
    _fields = ("second_name", "first_name")  # not alphabetical: order is the declared one
    __slots__ = _fields

    def __init__(self, second_name: int, first_name: str) -> None:
        self.second_name, self.first_name = second_name, first_name


def test_fields_keep_their_declared_order() -> None:
    pair = Pair(1, "a")
    a, b = pair
    assert (a, b) == (1, "a")
    assert pair._asdict() == {"second_name": 1, "first_name": "a"}
    assert list(pair._asdict()) == ["second_name", "first_name"]
    assert repr(pair) == "Pair(second_name=1, first_name='a')"


def test_equality_and_hash_by_value_and_type() -> None:
    assert Pair(1, "a") == Pair(1, "a")
    assert Pair(1, "a") != Pair(1, "b")
    assert Pair(1, "a") != (1, "a")  # a record is not a tuple
    assert len({Pair(1, "a"), Pair(1, "a"), Pair(2, "a")}) == 2


def test_no_instance_dict() -> None:
    assert not hasattr(Pair(1, "a"), "__dict__")


def test_result_types_unpack_in_field_order() -> None:
    kind, data = parse_options(bytes((2, 4, 5, 180)))[0]
    assert (kind, data) == (2, b"\x05\xb4")
    assert TCPOption(3, b"\x07")._asdict() == {"kind": 3, "data": b"\x07"}
    port, proto, state, reason, reason_from = PortResult(80, "tcp", "open", "syn-ack")
    assert (port, proto, state, reason, reason_from) == (80, "tcp", "open", "syn-ack", None)
    assert TraceProbe(3, "192.0.2.1", 0.5).notes == ()
    assert TraceProbe(3) == TraceProbe(3, None, None)


def test_replace_copies_with_changes() -> None:
    pair = Pair(1, "a")
    assert pair._replace(first_name="b") == Pair(1, "b")
    assert pair == Pair(1, "a")
