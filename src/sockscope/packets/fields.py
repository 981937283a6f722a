"""The declarative header machinery every layer class is built on.

A header class lists its fixed part as ``__hdr__``: ``(name, struct format, default)``
triples in wire order (network byte order is implied). From that table this module derives
one precompiled ``struct.Struct`` per class, and gives every instance:

* lazy decoding -- a decoded header only stores ``(buffer, offset, end)``; the first read
  of any fixed field unpacks the whole fixed part with one ``unpack_from`` and caches the
  values in the instance ``__dict__``, so later reads are plain attribute lookups.
  Variable parts (options...) are named in ``__extra__`` and computed by a
  ``_decode_<name>`` method on first read, then cached the same way;
* ``Cls.build(**fields)`` -- a header with defaults for everything not given. Address
  fields (``4s``/``16s``/``6s``) also accept their text form ("10.0.0.1", "::1",
  "aa:bb:cc:dd:ee:ff"). Fields named explicitly are remembered in ``given`` so that
  ``pack`` fills derived fields (lengths, checksums, next-protocol numbers) only when the
  caller did not choose a value -- a probe can send a deliberately wrong checksum;
* ``pack(payload, lower=None)`` -- wire bytes of header + payload. ``lower`` is the
  enclosing header (the IP header for a transport's pseudo-header checksum).

Headers met by the decoder's walk are built with ``_walked``, which unpacks at once: the
walk itself needs the fixed fields, and the ``Packet`` is what defers the walk.

The layer protocol used by the decoder (``sockscope.packets.packet``): ``_check`` (a fatal
reason or None), ``_extent`` (bytes the layer claims, header included, or None when it
runs to the end of what encloses it), ``header_len``, ``_starts_partial`` and ``_next``
(class of the next layer or None). Classes never touch the buffer outside ``[offset, end)``.
"""

from __future__ import annotations

# The C module under `socket`: the wrapper's enums cost every traceroute milliseconds
# of start-up, and inet_ntop/inet_pton are the same functions.
import _socket
import struct

TYPE_CHECKING = False  # not `from typing import ...`: see sockscope/__init__.py (start-up time)
if TYPE_CHECKING:
    from typing import Any, ClassVar, Self

    from sockscope.packets.packet import Packet

    Field = tuple[str, str, Any]
_NOTHING_GIVEN: frozenset[str] = frozenset()


def mac_to_bytes(text: str) -> bytes:
    """ "aa:bb:cc:dd:ee:ff" (or with '-') -> 6 bytes."""
    raw = bytes.fromhex(text.replace(":", "").replace("-", ""))
    if len(raw) != 6:
        raise ValueError(f"not a MAC address: {text!r}")
    return raw


def mac_to_text(raw: bytes) -> str:
    return raw.hex(":")


def ip_to_text(raw: bytes) -> str:
    """4 or 16 address bytes -> the usual text form (inet_ntop is C, so fast)."""
    return _socket.inet_ntop(_socket.AF_INET if len(raw) == 4 else _socket.AF_INET6, raw)


def ip_to_bytes(text: str) -> bytes:
    return _socket.inet_pton(_socket.AF_INET6 if ":" in text else _socket.AF_INET, text)


def coerce(fmt: str, value: Any) -> Any:
    """Accept text for address fields; everything else must already be the struct type."""
    if isinstance(value, str):
        if fmt == "6s":
            return mac_to_bytes(value)
        if fmt in ("4s", "16s"):
            return ip_to_bytes(value)
    return value


class Header:
    """Base of every layer; subclasses declare ``__hdr__`` and (optionally) ``__extra__``."""

    __hdr__: ClassVar[tuple[Field, ...]] = ()
    # Variable-part attributes: (name, default used by build()).
    __extra__: ClassVar[tuple[tuple[str, Any], ...]] = ()
    name: ClassVar[str] = "header"
    # Numbers under which an enclosing header announces this one (None: not applicable).
    ETHERTYPE: ClassVar[int | None] = None
    IP_PROTO: ClassVar[int | None] = None

    hdr_len: ClassVar[int] = 0
    _struct: ClassVar[struct.Struct] = struct.Struct("!")
    _names: ClassVar[tuple[str, ...]] = ()
    _fmts: ClassVar[dict[str, str]] = {}
    _defaults: ClassVar[dict[str, Any]] = {}
    _extras: ClassVar[dict[str, Any]] = {}

    _buf: bytes | None
    _off: int
    _end: int
    _packet: Packet | None
    _index: int
    given: frozenset[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        hdr = cls.__dict__.get("__hdr__", cls.__hdr__)
        cls._struct = struct.Struct("!" + "".join(fmt for _, fmt, _ in hdr))
        cls.hdr_len = cls._struct.size
        cls._names = tuple(name for name, _, _ in hdr)
        cls._fmts = {name: fmt for name, fmt, _ in hdr}
        cls._defaults = {name: default for name, _, default in hdr}
        cls._extras = dict(cls.__extra__)

    def __init__(
        self, buf: bytes, off: int = 0, end: int | None = None, packet: Packet | None = None, index: int = 0
    ) -> None:
        """A lazily decoded view of ``buf[off:end]``, layer ``index`` of ``packet``.

        Nothing is parsed here. The caller guarantees ``end - off >= hdr_len`` (the
        decoder checks it). Writes go straight to ``__dict__``: this is the hot path."""
        d = self.__dict__
        d["_buf"] = buf
        d["_off"] = off
        d["_end"] = len(buf) if end is None else end
        d["_packet"] = packet
        d["_index"] = index
        d["given"] = _NOTHING_GIVEN

    @classmethod
    def _walked(cls, buf: bytes, off: int, end: int, packet: Packet, index: int) -> Self:
        """A layer met by the decoder's walk, which needs its fixed fields at once (to
        check them and find the next layer): unpack now and skip the lazy path."""
        self = cls.__new__(cls)
        d = self.__dict__
        d["_buf"] = buf
        d["_off"] = off
        d["_end"] = end
        d["_packet"] = packet
        d["_index"] = index
        d["given"] = _NOTHING_GIVEN
        # strict=False: the struct is built from the same field list, so the lengths
        # always agree, and the check costs a third of this hot line.
        d.update(zip(cls._names, cls._struct.unpack_from(buf, off), strict=False))
        return self

    def __getattr__(self, name: str) -> Any:
        # Only reached when ``name`` is not cached yet: this is the lazy parse.
        cls = type(self)
        d = self.__dict__
        buf = d.get("_buf")
        if buf is not None:
            if name in cls._fmts:
                d.update(zip(cls._names, cls._struct.unpack_from(buf, d["_off"]), strict=False))
                return d[name]
            if name in cls._extras:
                value = getattr(self, "_decode_" + name)()
                d[name] = value
                return value
        raise AttributeError(f"{cls.__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        # Writing one fixed field of a not-yet-parsed header must not be undone by the
        # lazy parse later overwriting it, so parse first (writes are rare; reads are not).
        cls = type(self)
        if name in cls._fmts and cls._names[0] not in self.__dict__ and self.__dict__.get("_buf") is not None:
            getattr(self, cls._names[0])
        object.__setattr__(self, name, value)

    @classmethod
    def build(cls, **values: Any) -> Self:
        """A header for sending: defaults from ``__hdr__``/``__extra__``, then ``values``."""
        self = cls.__new__(cls)
        d = self.__dict__
        d.update(_buf=None, _off=0, _end=0, _packet=None, _index=0)
        d.update(cls._defaults)
        d.update(cls._extras)
        for key, value in values.items():
            if key in cls._fmts:
                d[key] = coerce(cls._fmts[key], value)
            elif key in cls._extras:
                d[key] = value
            else:
                raise TypeError(f"{cls.__name__}.build() got an unknown field {key!r}")
        d["given"] = frozenset(values)
        return self

    # -- layer protocol (overridden where the header is not fixed-size) -------------
    @property
    def header_len(self) -> int:
        return self.hdr_len

    def _check(self) -> str | None:
        return None

    def _extent(self) -> int | None:
        return None

    def _next(self) -> type[Header] | None:
        return None

    def _starts_partial(self) -> bool:
        """True when what follows is knowingly incomplete (e.g. a first IP fragment)."""
        return False

    # -- navigation ----------------------------------------------------------------
    @property
    def payload(self) -> bytes:
        """The bytes after this header, up to the end of this layer (decoded headers)."""
        if self._buf is None:
            return b""
        return self._buf[self._off + self.header_len : self._end]

    @property
    def raw(self) -> bytes:
        """This layer's bytes, header and payload (decoded headers)."""
        return b"" if self._buf is None else self._buf[self._off : self._end]

    @property
    def next_layer(self) -> Header | None:
        if self._packet is None:
            return None
        layers = self._packet.layers
        return layers[self._index + 1] if self._index + 1 < len(layers) else None

    @property
    def prev_layer(self) -> Header | None:
        if self._packet is None or self._index == 0:
            return None
        return self._packet.layers[self._index - 1]

    def fields(self) -> dict[str, Any]:
        """Every fixed and variable field, decoded (for display and tests)."""
        out = {name: getattr(self, name) for name in self._names}
        out.update((name, getattr(self, name)) for name in self._extras)
        return out

    # -- building --------------------------------------------------------------------
    def _bind(self, inner: Header) -> None:
        """Set the next-protocol field from the header that will follow, unless given."""

    def _pack_extras(self) -> bytes:
        return b""

    def pack_header(self) -> bytes:
        return self._struct.pack(*[getattr(self, name) for name in self._names]) + self._pack_extras()

    def pack(self, payload: bytes = b"", lower: Header | None = None) -> bytes:
        return self.pack_header() + payload

    def __repr__(self) -> str:
        try:
            shown = ", ".join(f"{k}={v!r}" for k, v in self.fields().items())
        except Exception as exc:  # a repr must never raise, even on a broken header
            shown = f"<undecodable: {exc}>"
        return f"{type(self).__name__}({shown})"
