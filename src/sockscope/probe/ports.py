"""Port lists as users write them: ``22,80,8000-8100``, ``-`` or ``1-65535`` for all."""

from __future__ import annotations

from sockscope.errors import UsageError


def parse_ports(text: str) -> list[int]:
    """Sorted, de-duplicated ports; any part that does not parse is a usage error."""
    text = text.strip()
    if text == "-":
        return list(range(1, 65536))
    ports: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        low_text, dash, high_text = part.partition("-")
        try:
            low = int(low_text) if low_text else 1
            high = (int(high_text) if high_text else 65535) if dash else low
        except ValueError:
            raise UsageError(f"bad port list {text!r}: {part!r} is not a port or range") from None
        if not low_text and not dash:
            raise UsageError(f"bad port list {text!r}: empty entry")
        if not (1 <= low <= 65535 and 1 <= high <= 65535):
            raise UsageError(f"bad port list {text!r}: ports are 1-65535")
        if low > high:
            raise UsageError(f"bad port list {text!r}: range {part} runs backwards")
        ports.update(range(low, high + 1))
    return sorted(ports)
