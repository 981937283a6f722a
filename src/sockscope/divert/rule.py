"""What to divert: a tcpdump filter on some hooks, interfaces and a firewall mark.

The filter is tcpdump's language, compiled by libpcap for raw IP packets (DLT_RAW),
as for ``capture`` and ``divert --drop`` (`sockscope.capture.bpf`). It is compiled
once per family, as ``ip and (FILTER)`` and ``ip6 and (FILTER)``: each program is
shorter than the whole, and a family that the filter cannot match gets no firewall
rule at all. The kernel runs each program in iptables' ``bpf`` match (xt_bpf), which
takes at most 64 instructions. A family whose program is longer gets a broader kernel
rule (every packet on the hooks, interfaces and mark) and the exact filter runs in
user space, where a packet it does not match is accepted at once, unseen by the
handler (`Rule.user_filter`; `Rule.notes` says so).

What packet bytes cannot express are separate settings: hooks (input, output,
forward; default input and output), the input and output interface (``!`` in front
negates, a trailing ``+`` or ``*`` matches a prefix) and the mark (``[!]N[/MASK]``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from sockscope.capture.bpf import BpfProgram, compile_filter
from sockscope.errors import UsageError

HOOKS = ("input", "output", "forward")
DEFAULT_HOOKS = ("input", "output")
KERNEL_LIMIT = 64  # XT_BPF_MAX_NUM_INSTR
FAMILIES = {4: "ip", 6: "ip6"}
_IFNAME = re.compile(r"[A-Za-z0-9_.:@-]{1,15}[+*]?|[A-Za-z0-9_.:@-]{0,14}[+*]")
_LINKTYPE_RAW = 101
_REJECTS_ALL = "expression rejects all packets"


@dataclass(frozen=True)
class Interface:
    """An interface name to match (iifname/oifname); ``prefix``: name ends in + or *."""

    name: str
    negate: bool = False

    @property
    def text(self) -> str:
        return ("!" if self.negate else "") + self.name


@dataclass(frozen=True)
class Mark:
    value: int
    mask: int = 0xFFFFFFFF
    negate: bool = False

    @property
    def text(self) -> str:
        mask = "" if self.mask == 0xFFFFFFFF else f"/{self.mask:#x}"
        return f"{'!' if self.negate else ''}{self.value:#x}{mask}"


@dataclass(frozen=True)
class Rule:
    """A compiled ``--rule``: per family the kernel's program (None: the broader rule
    without one; a family left out: nothing of it to divert) and, when a program was
    too long for the kernel, the exact filter for user space."""

    text: str
    hooks: tuple[str, ...] = DEFAULT_HOOKS
    in_interface: Interface | None = None
    out_interface: Interface | None = None
    mark: Mark | None = None
    programs: dict[int, BpfProgram | None] = field(default_factory=dict)
    user_filter: BpfProgram | None = None
    lengths: dict[int, int] = field(default_factory=dict)  # family -> instructions compiled

    @property
    def families(self) -> tuple[int, ...]:
        return tuple(sorted(self.programs))

    @property
    def notes(self) -> list[str]:
        """What the user should know about how the rule is matched (the long filter case)."""
        broad = [f for f, prog in self.programs.items() if prog is None and self.text.strip()]
        if not broad:
            return []
        sizes = ", ".join(f"{self.lengths[f]} for {'IPv4' if f == 4 else 'IPv6'}" for f in sorted(broad))
        return [
            f"--rule compiles to more BPF instructions than the kernel's bpf match takes "
            f"({sizes}; at most {KERNEL_LIMIT}): every "
            f"{'/'.join('IPv4' if f == 4 else 'IPv6' for f in sorted(broad))} packet on "
            f"{self.scope} is diverted and the filter runs in user space, where packets it does "
            "not match are accepted at once"
        ]

    @property
    def scope(self) -> str:
        """The hooks, interfaces and mark in words."""
        parts = [f"hook{'s' if len(self.hooks) > 1 else ''} {', '.join(self.hooks)}"]
        if self.in_interface:
            parts.append(f"in {self.in_interface.text}")
        if self.out_interface:
            parts.append(f"out {self.out_interface.text}")
        if self.mark:
            parts.append(f"mark {self.mark.text}")
        return " ".join(parts)


def compile_rule(
    text: str,
    hooks: Iterable[str] | None = None,
    in_interface: str | None = None,
    out_interface: str | None = None,
    mark: str | int | None = None,
) -> Rule:
    """Compile ``text`` (a tcpdump filter; "" matches every packet) with its settings.

    UsageError: libpcap's own message for a filter it refuses (or, for divert's old
    rule language, how to write the same in the new one), or a bad setting.
    """
    iif = parse_interface(in_interface, "-i") if in_interface is not None else None
    oif = parse_interface(out_interface, "-o") if out_interface is not None else None
    chosen = _choose_hooks(hooks, iif, oif)
    mark_spec = parse_mark(mark) if mark is not None else None
    exact = _compile(text, None) if text.strip() else None
    programs: dict[int, BpfProgram | None] = {}
    lengths: dict[int, int] = {}
    for family, word in FAMILIES.items():
        if not text.strip():
            programs[family] = None  # everything: no program needed, and exact
            continue
        program = _compile(text, word, exact)
        if program is None:
            continue  # the filter cannot match this family
        lengths[family] = len(program)
        programs[family] = program if len(program) <= KERNEL_LIMIT else None
    if not programs:
        raise UsageError(f"--rule {text!r}: the filter matches no IPv4 or IPv6 packet")
    broad = text.strip() and any(p is None for p in programs.values())
    return Rule(
        text=text,
        hooks=chosen,
        in_interface=iif,
        out_interface=oif,
        mark=mark_spec,
        programs=programs,
        user_filter=exact if broad else None,
        lengths=lengths,
    )


def _compile(text: str, family: str | None, exact: BpfProgram | None = None) -> BpfProgram | None:
    """The program for ``text`` (within ``family``); None when it rejects every packet.
    If only the family's variant fails to compile, the exact program serves for it."""
    expression = text if family is None else f"{family} and ({text})"
    try:
        return compile_filter(expression, _LINKTYPE_RAW)
    except UsageError as exc:
        if family is not None:
            return None if str(exc) == _REJECTS_ALL else exact
        from sockscope.divert.legacy import suggest

        hint = suggest(text)
        if hint is not None:
            raise UsageError(
                f"--rule {text!r} is divert's old rule language; --rule now takes a tcpdump "
                f"filter (as capture does): {hint}"
            ) from None
        raise UsageError(f"--rule {text!r}: {exc}") from None


def _choose_hooks(
    hooks: Iterable[str] | None, iif: Interface | None, oif: Interface | None
) -> tuple[str, ...]:
    if hooks is not None and not isinstance(hooks, str):
        chosen = tuple(dict.fromkeys(hooks))
    elif hooks is not None:
        chosen = (hooks,)
    else:
        chosen = ()
    for hook in chosen:
        if hook not in HOOKS:
            raise UsageError(f"bad --hook {hook!r}: want input, output or forward")
    if chosen:
        if iif is not None and "output" in chosen:
            raise UsageError("-i (input interface) does not apply to the output hook")
        if oif is not None and "input" in chosen:
            raise UsageError("-o (output interface) does not apply to the input hook")
        return chosen
    default = [h for h in DEFAULT_HOOKS if not (h == "output" and iif) and not (h == "input" and oif)]
    if not default:
        raise UsageError("-i and -o together apply only to forwarded packets: add --hook forward")
    return tuple(default)


def parse_interface(text: str, flag: str) -> Interface:
    negate = text.startswith("!")
    name = text[1:] if negate else text
    if not _IFNAME.fullmatch(name) or name in ("+", "*"):
        raise UsageError(
            f"bad {flag} {text!r}: want an interface name, '!' in front negates, + at the end a prefix"
        )
    return Interface(name, negate)


def parse_mark(value: str | int) -> Mark:
    if isinstance(value, int):
        if not 0 <= value <= 0xFFFFFFFF:
            raise UsageError(f"bad --mark {value}: 32 bits")
        return Mark(value)
    text = value.strip()
    negate = text.startswith("!")
    try:
        parts = [int(p, 0) for p in text.lstrip("!").split("/")]
    except ValueError:
        parts = []
    if not 1 <= len(parts) <= 2 or any(not 0 <= p <= 0xFFFFFFFF for p in parts):
        raise UsageError(f"bad --mark {value!r}: want [!]NUMBER[/MASK], 32 bits, e.g. 7, 0x10/0xff, '!1'")
    mask = parts[1] if len(parts) == 2 else 0xFFFFFFFF
    return Mark(parts[0] & mask, mask, negate)


def as_rule(
    rule: str | Rule | None,
    hooks: Iterable[str] | None = None,
    in_interface: str | None = None,
    out_interface: str | None = None,
    mark: str | int | None = None,
) -> Rule | None:
    """``rule`` compiled with its settings (a `Rule` as it is; None: no firewall rule)."""
    settings = (hooks, in_interface, out_interface, mark)
    if isinstance(rule, str):
        return compile_rule(rule, hooks, in_interface, out_interface, mark)
    if any(s is not None for s in settings):
        raise UsageError("hooks, interfaces and mark go with a rule given as text (compile_rule takes them)")
    return rule
