"""ss's filter language (``man ss``: STATE-FILTER, EXPRESSION, HOST SYNTAX).

The expression is parsed once into closures, so that matching a dump of
20,000 sockets costs a few milliseconds. Grammar, loosest binding first:

    expr      := conj ( ('or' | '|' | '||') conj )*
    conj      := unary ( ['and' | '&' | '&&'] unary )*    adjacent terms are and-ed
    unary     := ('not' | '!') unary | '(' expr ')' | states | predicate
    states    := ( ('state' | 'exclude' | 'excl') NAME )+  adjacent clauses merge, as in ss
    predicate := ('sport' | 'dport') [OP] PORT | ('src' | 'dst') [= | !=] HOST
               | 'dev' [= | !=] DEV | 'fwmark' [= | !=] MARK[/MASK]
               | 'cgroup' [= | !=] PATH | 'autobound'

The precedence (not > and > or) is the one ss documents; its yacc grammar
actually reads and/or left to right, a quirk we don't copy.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import operator
import os
import re
import socket
from collections.abc import Callable, Sequence
from functools import lru_cache, reduce
from typing import NamedTuple, NoReturn

from ..errors import UsageError
from .model import ALL_STATES_MASK, STATE_NUMBERS, InetAddress, Socket, UnixAddress

Matcher = Callable[[Socket], bool]
INET = frozenset({"inet", "inet6"})


def _bits(*names: str) -> int:
    return sum(1 << STATE_NUMBERS[n] for n in names)


_SYN_RECV, _NEW_SYN_RECV = _bits("SYN_RECV"), _bits("NEW_SYN_RECV")
_NOT_CONNECTED, _BUCKET = _bits("LISTEN", "UNCONN"), _bits("SYN_RECV", "TIME_WAIT")
# ss's names (scan_state in ss.c), plus the spellings our own output prints.
_STATE_WORDS: dict[str, int] = {
    "established": _bits("ESTABLISHED"), "estab": _bits("ESTABLISHED"),
    "syn-sent": _bits("SYN_SENT"), "syn-recv": _SYN_RECV, "syn-rcv": _SYN_RECV,
    "fin-wait-1": _bits("FIN_WAIT1"), "fin-wait1": _bits("FIN_WAIT1"),
    "fin-wait-2": _bits("FIN_WAIT2"), "fin-wait2": _bits("FIN_WAIT2"),
    "time-wait": _bits("TIME_WAIT"), "closed": _bits("UNCONN"), "close": _bits("UNCONN"),
    "unconnected": _bits("UNCONN"), "unconn": _bits("UNCONN"), "close-wait": _bits("CLOSE_WAIT"),
    "last-ack": _bits("LAST_ACK"), "listening": _bits("LISTEN"), "listen": _bits("LISTEN"),
    "closing": _bits("CLOSING"), "bound-inactive": 1 << 13,  # TCP_BOUND_INACTIVE, Linux 6.7
    "all": ALL_STATES_MASK, "connected": ALL_STATES_MASK & ~_NOT_CONNECTED,
    "synchronized": ALL_STATES_MASK & ~(_NOT_CONNECTED | _bits("SYN_SENT")),
    "bucket": _BUCKET, "big": ALL_STATES_MASK & ~_BUCKET,
}
_KNOWN_STATES = ("expected established, syn-sent, syn-recv, fin-wait-1, fin-wait-2, time-wait, closed, "
                 "close-wait, last-ack, listening, closing, all, connected, synchronized, bucket or big")
_OPS = {"=": "eq", "==": "eq", "eq": "eq", "!=": "ne", "ne": "ne", "neq": "ne", "<": "lt", "lt": "lt",
        ">": "gt", "gt": "gt", "<=": "le", "le": "le", "leq": "le", ">=": "ge", "ge": "ge", "geq": "ge"}
_CMP: dict[str, Callable[[int, int], bool]] = {
    "eq": operator.eq, "ne": operator.ne, "lt": operator.lt,
    "gt": operator.gt, "le": operator.le, "ge": operator.ge}
_OR, _AND, _NOT = frozenset({"or", "|", "||"}), frozenset({"and", "&", "&&"}), frozenset({"not", "!"})
_STATE_KW = frozenset({"state", "exclude", "excl"})
_MAX_DEPTH = 100  # nested 'not's and parentheses
# A host name we may hand to the resolver; anything else is a typo, refused without a lookup.
_HOSTNAME = re.compile(r"(?=.*[a-z])[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*\.?",
                       re.IGNORECASE | re.ASCII)
# An unconnected inet socket has no remote; ss compares it as the zero address, port 0.
_UNCONNECTED = {"inet": InetAddress("0.0.0.0", 0), "inet6": InetAddress("::", 0)}


def _always(sock: Socket) -> bool:
    return True


def _local(sock: Socket) -> InetAddress | None:
    a = sock.local
    return a if type(a) is InetAddress else None


def _remote(sock: Socket) -> InetAddress | None:
    a = sock.remote
    if type(a) is InetAddress:
        return a
    return _UNCONNECTED.get(sock.family) if a is None else None


@lru_cache(maxsize=1 << 16)
def _addr_ints(text: str) -> tuple[int, int]:
    """(IPv4 value, IPv6 value) of an address, -1 where it has none. A v4-mapped
    IPv6 address has both: ss lets an IPv4 prefix match it."""
    try:
        if ":" in text:
            v6 = int.from_bytes(socket.inet_pton(socket.AF_INET6, text), "big")
            return (v6 & 0xFFFFFFFF if v6 >> 32 == 0xFFFF else -1, v6)
        return (int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big"), -1)
    except (OSError, ValueError):
        return (-1, -1)


def _c_int(text: str) -> int:
    """An unsigned integer as C's strtol(..., 0) reads it: 0x hex, leading-0 octal."""
    t = text.lower()
    if re.fullmatch(r"0x[0-9a-f]+", t):
        return int(t, 16)
    if re.fullmatch(r"0[0-7]+", t):
        return int(t, 8)
    if re.fullmatch(r"[0-9]+", t):
        return int(t)
    raise ValueError(text)


def _state_names(mask: int) -> frozenset[str]:
    # Socket.state is a name, or the number as text for a state we have no name for.
    return frozenset([n for n, num in STATE_NUMBERS.items() if mask >> num & 1]
                     + [str(num) for num in range(32) if mask >> num & 1])


def _with_new_syn_recv(mask: int) -> int:
    # Request sockets sit in NEW_SYN_RECV in the kernel but are SYN_RECV to users.
    return mask | _NEW_SYN_RECV if mask & _SYN_RECV else mask & ~_NEW_SYN_RECV


class _Node(NamedTuple):
    match: Matcher
    states: int  # every kernel state a matching socket can be in
    families: frozenset[str] | None  # None: any family may match
    state_only: bool  # a pure state test, so `states` is exact and its negation narrows too
    depth: int = 1  # closures nested in `match`, bounded so that matching cannot overflow the stack


def _leaf(match: Matcher, families: frozenset[str] | None = None) -> _Node:
    return _Node(match, ALL_STATES_MASK, families, False)


def _join(nodes: list[_Node], conj: bool) -> _Node:
    """The and (conj) or the or of the nodes. Calls nest as a balanced tree of
    two-way closures: faster than all()/any() over a generator, and a long
    chain stays shallow enough for Python's recursion limit."""
    if len(nodes) == 1:
        return nodes[0]

    def tree(ns: Sequence[_Node]) -> tuple[Matcher, int]:
        if len(ns) == 1:
            return ns[0].match, ns[0].depth
        (a, da), (b, db) = tree(ns[:len(ns) // 2]), tree(ns[len(ns) // 2:])
        return (lambda s: a(s) and b(s)) if conj else (lambda s: a(s) or b(s)), max(da, db) + 1
    match, depth = tree(nodes)
    known = [n.families for n in nodes if n.families is not None]
    if conj:
        fams = frozenset.intersection(*known) if known else None
        states = reduce(operator.and_, (n.states for n in nodes))
    else:
        fams = frozenset().union(*known) if len(known) == len(nodes) else None
        states = reduce(operator.or_, (n.states for n in nodes))
    return _Node(match, states, fams, all(n.state_only for n in nodes), depth)


def _not(a: _Node) -> _Node:
    f = a.match
    states = _with_new_syn_recv(ALL_STATES_MASK & ~a.states) if a.state_only else ALL_STATES_MASK
    return _Node(lambda s: not f(s), states, None, a.state_only, a.depth + 1)


class SocketFilter:
    """A parsed filter expression. ``match(sock)`` tells whether a socket passes.

    ``kernel_states``: bitmask (1 << state number) a dump must ask for;
    ``families``: the only families that can match, or None; ``needs_extended``:
    the expression tests fwmark or cgroup, which the dump must then request.
    """

    __slots__ = ("families", "kernel_states", "match", "needs_extended", "text")
    match: Matcher  # the compiled closure itself, to spare a call per socket

    def __init__(self, text: str, node: _Node | None, needs_extended: bool = False) -> None:
        self.text = text
        self.match = node.match if node is not None else _always
        self.kernel_states = node.states if node is not None else ALL_STATES_MASK
        self.families = node.families if node is not None else None
        self.needs_extended = needs_extended

    def is_empty(self) -> bool:
        return not self.text

    def __repr__(self) -> str:
        return f"SocketFilter({self.text!r})"


def parse_filter(words: str | Sequence[str]) -> SocketFilter:
    """Parse an ss filter given as one string or as argv words; UsageError if invalid."""
    tokens, parens = _tokenise([words] if isinstance(words, str) else list(words))
    parser = _Parser(tokens, parens)
    return SocketFilter(" ".join(tokens), parser.parse(), parser.needs_extended)


def _tokenise(words: list[str]) -> tuple[list[str], set[int]]:
    """Split words on blanks and around parentheses (so "(sport" works); a
    backslash makes the next character literal. Returns the tokens and the
    positions of the structural parentheses."""
    tokens: list[str] = []
    parens: set[int] = set()
    for word in words:
        cur: list[str] = []
        i = 0
        while i < len(word):
            c = word[i]
            if c == "\\" and i + 1 < len(word):
                cur.append(word[i + 1])
                i += 1
            elif c.isspace() or c in "()":
                if cur:
                    tokens.append("".join(cur))
                    cur = []
                if c in "()":
                    parens.add(len(tokens))
                    tokens.append(c)
            else:
                cur.append(c)
            i += 1
        if cur:
            tokens.append("".join(cur))
    return tokens, parens


class _Parser:
    def __init__(self, tokens: list[str], parens: set[int]) -> None:
        self.toks, self.parens, self.pos = tokens, parens, 0
        self.needs_extended = False
        self.depth = 0
        self.predicates: dict[str, Callable[[str], _Node]] = {
            "sport": self._port_pred, "dport": self._port_pred, "src": self._host_pred,
            "dst": self._host_pred, "dev": self._dev_pred, "fwmark": self._mark_pred,
            "cgroup": self._cgroup_pred, "autobound": self._autobound}

    def fail(self, at: int, why: str, head: str | None = None) -> NoReturn:
        text = repr(" ".join(self.toks))[1:-1]
        if at < len(self.toks):
            head = head or f"unexpected {self.toks[at]!r}"
            where = f"word {at + 1} of \"{text}\""
        else:
            head = f"nothing after {self.toks[-1]!r}"
            where = f"word {len(self.toks)} of \"{text}\""
        raise UsageError(f"cannot parse filter: {head} ({where}): {why}")

    def word(self) -> str | None:
        """The next token as a plain word (None at the end or on a parenthesis)."""
        if self.pos >= len(self.toks) or self.pos in self.parens:
            return None
        return self.toks[self.pos]

    def at_paren(self, p: str) -> bool:
        return self.pos in self.parens and self.toks[self.pos] == p

    def take(self, why: str) -> tuple[int, str]:
        w = self.word()
        if w is None:
            self.fail(self.pos, why)
        self.pos += 1
        return self.pos - 1, w

    def parse(self) -> _Node | None:
        if not self.toks:
            return None
        node = self.expr()
        if self.pos < len(self.toks):  # expr() stops only at the end or at a ')'
            self.fail(self.pos, "no '(' to close")
        if node.depth > _MAX_DEPTH * 3:
            self.fail(0, "simplify it", head="expression too complex")
        return node

    def expr(self) -> _Node:
        nodes = [self.conj()]
        while (w := self.word()) is not None and w.lower() in _OR:
            self.pos += 1
            nodes.append(self.conj())
        return _join(nodes, conj=False)

    def conj(self) -> _Node:
        nodes = [self.unary()]
        while self.pos < len(self.toks) and not self.at_paren(")"):
            w = self.word()
            if w is not None and w.lower() in _OR:
                break
            if w is not None and w.lower() in _AND:
                self.pos += 1
            nodes.append(self.unary())
        return _join(nodes, conj=True)

    def unary(self) -> _Node:
        # Parsing and matching both recurse once per level: bound it well
        # below Python's recursion limit, so no input can raise RecursionError.
        if self.depth >= _MAX_DEPTH:
            self.fail(self.pos, f"nested more than {_MAX_DEPTH} deep", head="too deep")
        self.depth += 1
        try:
            return self.unary_inner()
        finally:
            self.depth -= 1

    def unary_inner(self) -> _Node:
        if self.at_paren("("):
            opened = self.pos
            self.pos += 1
            node = self.expr()
            if not self.at_paren(")"):
                self.fail(opened, "it has no matching ')'", head="unclosed '('")
            self.pos += 1
            return node
        w = self.word()
        kw = w.lower() if w is not None else ""
        if kw in _NOT:
            self.pos += 1
            return _not(self.unary())
        if kw in _STATE_KW:
            return self.states()
        if kw in self.predicates:
            self.pos += 1
            return self.predicates[kw](kw)
        self.fail(self.pos, "expected a condition: state, exclude, sport, dport, src, dst, dev, "
                            "fwmark, cgroup, autobound, 'not' or '('")

    def states(self) -> _Node:
        mask: int | None = None
        while (kw := (self.word() or "").lower()) in _STATE_KW:
            self.pos += 1
            at, name = self.take(f"expected a state name after {kw!r}")
            bits = _STATE_WORDS.get(name.lower().replace("_", "-"))
            if bits is None:
                self.fail(at, _KNOWN_STATES, head=f"unknown state {name!r}")
            if kw == "state":
                mask = (mask or 0) | bits
            else:
                mask = (ALL_STATES_MASK if mask is None else mask) & ~bits
        mask = _with_new_syn_recv(mask or 0)
        names = _state_names(mask)
        return _Node(lambda s: s.state in names, mask, None, True)

    def op(self, kw: str, comparisons: bool = False) -> str:
        w = self.word()
        op = _OPS.get(w.lower()) if w is not None else None
        if op is None:
            return "eq"  # ss reads a missing operator as '='
        if op not in ("eq", "ne") and not comparisons:
            self.fail(self.pos, f"{kw} takes only = or !=")
        self.pos += 1
        return op

    def _port_pred(self, kw: str) -> _Node:
        op = self.op(kw, comparisons=True)
        at, word = self.take("expected a port, like :22 or :https")
        fams, rest = self.family_prefix(word, at)
        rest = rest.removeprefix(":")
        get = _local if kw == "sport" else _remote
        if rest in ("", "*"):  # any port: true of every inet socket, and '!=' of none
            if op not in ("eq", "ne"):
                self.fail(at, "'*' (any port) goes only with = or !=")
            node = _leaf(lambda s: op == "eq" and get(s) is not None, INET)
        else:
            port, cmp = self.port(rest, at), _CMP[op]

            def match(s: Socket) -> bool:
                a = get(s)
                return a is not None and cmp(a.port, port)
            node = _leaf(match, INET)
        return self.restrict(node, fams)

    def port(self, text: str, at: int) -> int:
        try:
            port = _c_int(text)
        except ValueError:
            found: set[int] = set()
            for proto in ("tcp", "udp"):
                try:
                    found.add(socket.getservbyname(text, proto))
                except (OSError, ValueError):  # not a service; ValueError: NUL or surrogate in it
                    pass
            if len(found) != 1:
                self.fail(at, "ambiguous service name: it differs for tcp and udp" if found
                          else "expected a port: a number or a service name from /etc/services")
            port = found.pop()
        if port > 0xFFFF:
            self.fail(at, "a port is at most 65535")
        return port

    def family_prefix(self, word: str, at: int) -> tuple[frozenset[str] | None, str]:
        low = word.lower()
        for prefix in ("link:", "netlink:", "vsock:"):
            if low.startswith(prefix):
                self.fail(at, f"{prefix[:-1]} addresses are not supported in filters")
        if low.startswith("inet6:"):
            return frozenset({"inet6"}), word[6:]
        if low.startswith("inet:"):
            return frozenset({"inet"}), word[5:]
        return None, word

    @staticmethod
    def restrict(node: _Node, fams: frozenset[str] | None) -> _Node:
        if fams is None:
            return node
        f = node.match
        return _Node(lambda s: s.family in fams and f(s), ALL_STATES_MASK,
                     fams & (node.families or fams), False, node.depth + 1)

    def _host_pred(self, kw: str) -> _Node:
        op = self.op(kw)
        at, word = self.take("expected an address, like 10.0.0.0/8, [::1]:22, *:80 or /run/*.sock")
        if word.lower().startswith("unix:") or word[:1] in ("/", "@"):
            node = self.unix(word[5:] if word.lower().startswith("unix:") else word, kw == "src")
        else:
            node = self.inet_host(word, at, kw == "src")
        return _not(node) if op == "ne" else node

    def unix(self, pattern: str, local: bool) -> _Node:
        # ss matches unix names with fnmatch(FNM_CASEFOLD); abstract names read as "@name".
        rx = re.compile(fnmatch.translate(pattern), re.IGNORECASE).match

        def match(s: Socket) -> bool:
            if s.family != "unix":
                return False
            a = s.local if local else s.remote
            return rx(str(a) if type(a) is UnixAddress else "") is not None
        return _leaf(match, frozenset({"unix"}))

    def inet_host(self, word: str, at: int, local: bool) -> _Node:
        fams, text = self.family_prefix(word, at)
        port_text = ""
        if text.startswith("["):  # [v6], [v6]:port, [v6/len]:port, [v6]/len:port
            addr, close, rest = text[1:].partition("]")
            if not close:
                self.fail(at, "no ']' after the IPv6 address")
            if rest.startswith("/"):
                plen, _, port_text = rest[1:].partition(":")
                addr += "/" + plen
            elif rest.startswith(":"):
                port_text = rest[1:]
            elif rest:
                self.fail(at, "expected ':PORT' after ']'")
        elif text.count(":") >= 2 and ":" not in text.partition("/")[2] \
                and self.is_ipv6(text.partition("/")[0]):
            addr = text  # bare IPv6: every colon belongs to the address, so no port
        else:  # as ss: the port follows the last ':' after any /prefix
            colon = text.rfind(":", max(text.find("/"), 0))
            addr, port_text = (text[:colon], text[colon + 1:]) if colon >= 0 else (text, "")
        port = None if port_text in ("", "*") else self.port(port_text, at)
        nets = None if addr in ("", "*") else self.networks(addr, at, fams)
        # An IPv4 prefix also matches v4-mapped addresses of inet6 sockets.
        versions = {v for v, _, _ in nets} if nets is not None else {0, 1}
        node_fams = frozenset(["inet6"] + (["inet"] if 0 in versions else []))
        get = _local if local else _remote

        def match(s: Socket) -> bool:
            a = get(s)
            if a is None or (port is not None and a.port != port):
                return False
            if nets is None:
                return True
            ints = _addr_ints(a.address)
            for v, net, mask in nets:  # several only for a host name with several addresses
                if ints[v] >= 0 and ints[v] & mask == net:
                    return True
            return False
        return self.restrict(_leaf(match, node_fams), fams)

    @staticmethod
    def is_ipv6(text: str) -> bool:
        try:
            ipaddress.IPv6Address(text)
        except ValueError:
            return False
        return True

    def networks(self, addr: str, at: int,
                 fams: frozenset[str] | None) -> tuple[tuple[int, int, int], ...] | None:
        """(0 for IPv4 / 1 for IPv6, network, netmask) for each network the address
        names; None when one has length 0, which ss reads as "any address"."""
        try:
            nets = [ipaddress.ip_network(addr, strict=False)]
        except ValueError:
            if not _HOSTNAME.fullmatch(addr):
                self.fail(at, "expected an IP address or prefix (IPv6 as [addr]:port)")
            family = {"inet": socket.AF_INET, "inet6": socket.AF_INET6}.get(
                next(iter(fams)) if fams else "", socket.AF_UNSPEC)
            try:
                infos = socket.getaddrinfo(addr, None, family, socket.SOCK_STREAM)
            except (OSError, UnicodeError) as e:  # gaierror is an OSError
                self.fail(at, f"cannot resolve host name: {getattr(e, 'strerror', None) or e}")
            nets = [ipaddress.ip_network(str(info[4][0]).partition("%")[0]) for info in infos]
        if fams is not None and "inet6" not in fams and any(n.version == 6 for n in nets):
            self.fail(at, "an IPv6 address cannot match an inet (IPv4) socket")
        if any(n.prefixlen == 0 for n in nets):
            return None
        return tuple((0 if n.version == 4 else 1, int(n.network_address), int(n.netmask)) for n in nets)

    def _dev_pred(self, kw: str) -> _Node:
        op = self.op(kw)
        _, dev = self.take("expected an interface name or index")
        # Names are not checked: the filter may be applied in another network namespace.
        if re.fullmatch(r"[0-9]{1,10}", dev):
            index = int(dev)
            node = _leaf(lambda s: s.bound_ifindex == index)
        else:
            node = _leaf(lambda s: s.interface == dev)
        return _not(node) if op == "ne" else node

    def _mark_pred(self, kw: str) -> _Node:
        op = self.op(kw)
        at, word = self.take("expected a mark, like 0x10 or 0x10/0xff")
        value, slash, mask_text = word.partition("/")
        try:
            mark, mask = _c_int(value), _c_int(mask_text) if slash else 0xFFFFFFFF
        except ValueError:
            self.fail(at, "expected a mark, like 0x10 or 0x10/0xff")
        if max(mark, mask) > 0xFFFFFFFF:
            self.fail(at, "a mark is 32 bits")
        self.needs_extended = True
        # No mark reported reads as 0, as in ss.
        node = _leaf(lambda s: ((s.mark or 0) & mask) == mark)
        return _not(node) if op == "ne" else node

    def _cgroup_pred(self, kw: str) -> _Node:
        op = self.op(kw)
        at, path = self.take("expected a cgroup path, like /system.slice/ssh.service")
        # A cgroup v2 id is its directory's inode number. Like ss, a path outside
        # the cgroup2 mount is taken as relative to it.
        mount = _cgroup2_mount()
        if mount is None:
            self.fail(at, "no cgroup2 file system is mounted")
        full = path if path == mount or path.startswith(mount + "/") else \
            os.path.join(mount, path.lstrip("/"))
        try:
            cgroup_id = os.stat(full).st_ino
        except (OSError, ValueError) as e:
            self.fail(at, f"no such cgroup: {getattr(e, 'strerror', None) or e}")
        self.needs_extended = True
        node = _leaf(lambda s: s.cgroup_id == cgroup_id)
        return _not(node) if op == "ne" else node

    def _autobound(self, kw: str) -> _Node:
        low, high = _ephemeral_ports()
        hex5 = re.compile(r"[0-9a-f]{5}").fullmatch

        def match(s: Socket) -> bool:
            a = s.local
            if type(a) is InetAddress:
                return low <= a.port <= high
            if s.family == "unix":  # unnamed, or the kernel's autobind name: 5 hex digits
                return a is None or (type(a) is UnixAddress and a.abstract and hex5(a.path) is not None)
            return False
        return _leaf(match)


def _cgroup2_mount() -> str | None:
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 2 and fields[2] == "cgroup2":
                    return fields[1]
    except OSError:
        pass
    return None


def _ephemeral_ports() -> tuple[int, int]:
    # Read in the caller's namespace; the sysctl is per namespace but rarely differs.
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as f:
            low, high = (int(x) for x in f.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999  # the kernel's default
