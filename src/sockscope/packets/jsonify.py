"""Decoded layers as JSON-ready dicts (``capture --json -v``, divert and probe output).

Address fields become their text form (decided by the field's declared format, so a
4-byte option value is never mistaken for an address); other bytes become hex.
"""

from __future__ import annotations

from typing import Any

from sockscope.packets.fields import Header, ip_to_text, mac_to_text

_ADDRESS_FORMATS = {"4s": ip_to_text, "16s": ip_to_text, "6s": mac_to_text}
# Variable parts that hold addresses (ARP's are declared as extras, not fixed fields).
_ADDRESS_EXTRAS = {"sha": mac_to_text, "tha": mac_to_text, "spa": ip_to_text, "tpa": ip_to_text}


def jsonable(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    if hasattr(value, "_asdict"):  # NamedTuple (e.g. TCP options)
        return jsonable(value._asdict())
    return str(value)


def layer_dict(layer: Header) -> dict[str, Any]:
    """``{"name": ..., field: value, ...}`` for one decoded layer."""
    out: dict[str, Any] = {"name": layer.name}
    try:
        values = layer.fields()
    except Exception as exc:  # a lying header must not break the whole packet's output
        out["error"] = str(exc)
        return out
    fmts = type(layer)._fmts
    for key, value in values.items():
        convert = _ADDRESS_FORMATS.get(fmts.get(key, "")) or _ADDRESS_EXTRAS.get(key)
        if convert is not None and isinstance(value, bytes) and len(value) in (4, 6, 16):
            out[key] = convert(value)
        else:
            out[key] = jsonable(value)
    return out
