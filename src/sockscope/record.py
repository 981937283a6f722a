"""`Record`: what ``typing.NamedTuple`` gives small result types (equality, repr,
unpacking, ``_asdict``) without importing typing and collections, which cost every
start-up milliseconds: ``sockscope trace`` must start about as fast as traceroute.

A subclass lists its fields, in order, in ``_fields`` (and sets ``__slots__ =
_fields``: a literal ``__slots__`` gets sorted by the linter), and writes its own
``__init__``."""

from __future__ import annotations

TYPE_CHECKING = False  # not `from typing import ...`: see sockscope/__init__.py (start-up time)
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any, Self


class Record:
    __slots__ = ()
    _fields: tuple[str, ...] = ()

    def __iter__(self) -> Iterator[Any]:
        return (getattr(self, name) for name in self._fields)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and tuple(self) == tuple(other)

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__name__}({inner})"

    def _asdict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._fields}

    def _replace(self, **changes: Any) -> Self:
        """A copy with ``changes`` (``__init__`` takes the fields by their names)."""
        return type(self)(**{**self._asdict(), **changes})
