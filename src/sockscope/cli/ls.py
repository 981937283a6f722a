"""``sockscope ls``: the socket inventory, with ss's flags and filter language."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from sockscope.inventory.model import InetAddress, Owner, Socket, UnixAddress
from sockscope.inventory.query import Listing, Query

from . import output

if TYPE_CHECKING:
    from sockscope.inventory.unixnames import UnixNames

RAW_PROTOCOLS = {1: "icmp", 2: "igmp", 6: "tcp", 17: "udp", 58: "ipv6-icmp", 255: "raw"}
NETIDS = {
    ("unix", "stream"): "u_str", ("unix", "dgram"): "u_dgr", ("unix", "seqpacket"): "u_seq",
    ("packet", "raw"): "p_raw", ("packet", "dgram"): "p_dgr",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.usage = "sockscope ls [options] [FILTER ...]"
    p.description = ("List sockets with the processes that hold them (all kinds and states "
                     "unless narrowed). FILTER is an ss filter expression, e.g. "
                     "'state established and dport = :443'.")
    kinds = p.add_argument_group("socket kinds (default: all)")
    kinds.add_argument("-t", "--tcp", action="store_true", help="TCP sockets")
    kinds.add_argument("-u", "--udp", action="store_true", help="UDP sockets")
    kinds.add_argument("-w", "--raw", action="store_true", help="raw sockets (incl. ICMP)")
    kinds.add_argument("--icmp", action="store_true",
                       help="ICMP datagram (unprivileged ping) sockets, which ss does not list")
    kinds.add_argument("-x", "--unix", action="store_true",
                       help="unix sockets; shows whether each socket file still exists")
    kinds.add_argument("-0", "--packet", action="store_true", help="packet sockets (AF_PACKET)")
    kinds.add_argument("--netlink", action="store_true", help="netlink sockets")
    kinds.add_argument("-4", "--ipv4", action="store_true", help="IPv4 only")
    kinds.add_argument("-6", "--ipv6", action="store_true", help="IPv6 only")
    sel = p.add_argument_group("selection")
    sel.add_argument("-l", "--listening", action="store_true", help="listening sockets only")
    sel.add_argument("-a", "--all", action="store_true", help="all states (the default)")
    sel.add_argument("--pid", type=int, action="append", metavar="PID",
                     help="sockets held by this process (repeatable)")
    sel.add_argument("--user", metavar="USER", help="sockets held by processes of this user")
    sel.add_argument("--command", metavar="NAME", help="sockets held by processes named NAME")
    sel.add_argument("-N", "--netns", action="append", metavar="NAME|PATH|PID",
                     help="look in this network namespace (repeatable)")
    sel.add_argument("--all-netns", action="store_true", help="every network namespace on the host")
    sel.add_argument("--stale", nargs="*", metavar="DIR",
                     help="list socket files under DIR (default /tmp /run) that no socket is bound to")
    det = p.add_argument_group("details")
    det.add_argument("-p", "--processes", action="store_true",
                     help="show owning processes (the default)")
    det.add_argument("--no-owners", action="store_true", help="skip the owner lookup")
    det.add_argument("-n", "--numeric", action="store_true", help="numeric output (the default)")
    det.add_argument("-r", "--resolve", action="store_true", help="resolve host and service names")
    det.add_argument("-i", "--info", action="store_true", help="TCP internals (tcp_info)")
    det.add_argument("-m", "--memory", action="store_true", help="socket memory")
    det.add_argument("-e", "--extended", action="store_true", help="uid, inode, cookie, cgroup")
    det.add_argument("--procfs", action="store_true",
                     help="read /proc/net instead of sock_diag (the fallback path)")
    out = p.add_argument_group("output")
    fmt = out.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="one JSON array")
    fmt.add_argument("--jsonl", action="store_true", help="one JSON object per line")
    fmt.add_argument("--csv", action="store_true", help="CSV with a header row")
    out.add_argument("-H", "--no-header", action="store_true", help="no table header")
    out.add_argument("--no-align", action="store_true",
                     help="write table rows as they are found (columns padded to the widest "
                          "seen so far, as ss does): memory stays flat however many sockets")
    p.add_argument("filter", nargs=argparse.REMAINDER, metavar="FILTER",
                   help="ss filter expression")


def run(args: argparse.Namespace) -> int:
    if args.stale is not None:
        return _run_stale(args)
    protos = [name for flag, name in (("tcp", "tcp"), ("udp", "udp"), ("raw", "raw"), ("icmp", "icmp"),
                                      ("unix", "unix"), ("packet", "packet"),
                                      ("netlink", "netlink")) if getattr(args, flag)]
    families: list[str] | None = None
    if args.ipv4 or args.ipv6:
        families = (["inet"] if args.ipv4 else []) + (["inet6"] if args.ipv6 else [])
        if not protos:
            protos = ["tcp", "udp", "raw", "icmp"]
    query = Query(
        protos or None, families,
        listening=True if args.listening else None,
        filter=args.filter or None,
        netns=args.netns, all_netns=args.all_netns,
        owners=not args.no_owners,
        info=args.info, memory=args.memory, extended=args.extended,
        check_paths=args.unix,
        pid=args.pid, user=args.user, command=args.command,
        procfs=args.procfs,
    )
    if args.json or args.jsonl or args.csv:
        # Each socket is written as it is parsed, with its owners: memory stays flat.
        with query.listing() as listing:
            output.write_lines(_record_lines(listing, args))
    elif args.no_align:
        listing = _write_streamed_table(query, args)
    else:
        listing = _write_table(query, args)
    _notes(listing)
    return 0


def _record_lines(socks: Iterator[Socket], args: argparse.Namespace) -> Iterator[str]:
    if args.json:
        return output.json_array_lines(s.to_dict() for s in socks)
    if args.jsonl:
        return output.jsonl_lines(s.to_dict() for s in socks)
    return output.csv_lines(CSV_HEADERS, (csv_row(s) for s in socks))


def _notes(listing: Listing) -> None:
    for note in listing.notes:
        sys.stderr.write(f"sockscope ls: {note}\n")


def _run_stale(args: argparse.Namespace) -> int:
    from sockscope.inventory.stale import DEFAULT_DIRS, stale_socket_files

    files = stale_socket_files(args.stale or DEFAULT_DIRS)
    if args.json or args.jsonl:
        items = [f.to_dict() for f in files]
        output.write(output.dump_json(items) if args.json else output.dump_jsonl(items))
    elif args.csv:
        output.write(output.dump_csv(["path", "uid", "mode", "mtime"],
                                     ([f.path, f.uid, oct(f.mode), f.mtime] for f in files)))
    else:
        from .main import user_label

        rows = [(f.path, user_label(f.uid), oct(f.mode)[2:]) for f in files]
        output.write(output.table(("Path", "Owner", "Mode"), rows, header=not args.no_header))
    return 0


# --- formatting --------------------------------------------------------------

class _Names:
    """Reverse lookups for -r, cached (a table repeats the same few addresses)."""

    def __init__(self) -> None:
        self.hosts: dict[str, str] = {}
        self.services: dict[tuple[int, str], str] = {}

    def host(self, addr: str) -> str:
        name = self.hosts.get(addr)
        if name is None:
            import socket

            try:
                name = socket.gethostbyaddr(addr)[0]
            except OSError:
                name = addr
            self.hosts[addr] = name
        return name

    def service(self, port: int, proto: str) -> str:
        key = (port, proto)
        name = self.services.get(key)
        if name is None:
            import socket

            try:
                name = socket.getservbyport(port, proto if proto in ("tcp", "udp") else "tcp")
            except OSError:
                name = str(port)
            self.services[key] = name
        return name


_HOST_TEXT: dict[str, str] = {"0.0.0.0": "*", "::": "*"}
_HOST_TEXT_MAX = 4096  # a proxy's peers are many: the cache must not grow with them


def inet_text(addr: InetAddress, proto: str, names: _Names | None = None) -> str:
    """host:port as ss prints it (wildcards as *, IPv6 in brackets)."""
    if names is None:
        # A table repeats a few addresses many times: format each once.
        host = _HOST_TEXT.get(addr.address)
        if host is None:
            if len(_HOST_TEXT) >= _HOST_TEXT_MAX:
                _HOST_TEXT.clear()
                _HOST_TEXT.update({"0.0.0.0": "*", "::": "*"})
            host = _HOST_TEXT[addr.address] = (
                f"[{addr.address}]" if ":" in addr.address else addr.address)
        return f"{host}:{addr.port}" if addr.port else f"{host}:*"
    host = addr.address
    if host in ("0.0.0.0", "::"):
        host = "*"
    else:
        host = names.host(host)
    if ":" in host and host != "*":
        host = f"[{host}]"
    port = names.service(addr.port, proto) if addr.port else "*"
    return f"{host}:{port}"


def owners_text(owners: Sequence[Owner]) -> str:
    """command[pid]:fd for each holder, comma-separated."""
    if len(owners) == 1:  # the common case, without a generator
        o = owners[0]
        return f"{o.command}[{o.pid}]:{o.fd}"
    return ",".join(f"{o.command}[{o.pid}]:{o.fd}" for o in owners)


def process_cell(owners: Sequence[Owner], peer_owners: Sequence[Owner] | None) -> str:
    """The Process column: the holders, and for a unix socket those of the other end."""
    proc = owners_text(owners) if owners else ""
    if peer_owners:
        proc = f"{proc} -> {owners_text(peer_owners)}" if proc else f"-> {owners_text(peer_owners)}"
    return proc


class TableRows:
    """The cells of one socket's table row (and its detail line), as ``ls`` prints them."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.names = _Names() if args.resolve else None
        self.show_ns = bool(args.all_netns or (args.netns and len(args.netns) > 1))
        self.extended = args.extended
        self.info, self.memory = args.info, args.memory
        self.headers = ["Netid", "State", "Recv-Q", "Send-Q", "Local", "Peer"]
        if self.show_ns:
            self.headers.insert(0, "Netns")
        if args.extended:
            self.headers += ["UID", "Inode", "Cookie", "Cgroup"]
        self.headers.append("Process")
        self.right = [2, 3] if not self.show_ns else [3, 4]

    def cells(self, s: Socket, unix_names: UnixNames | None) -> list[str]:
        """Every cell but the Process column."""
        return _row(s, self.names, unix_names, self.show_ns, self.extended)

    def detail(self, s: Socket) -> str:
        return _details(s, self.info, self.memory) if self.info or self.memory else ""


def _write_table(query: Query, args: argparse.Namespace) -> Listing:
    """The aligned table. Rows are kept compactly (output.Table) with each socket's
    inode and peer inode; the owner scan runs beside the dump, and the Process
    column is filled from the owner map as the table is written."""
    from array import array

    rows = TableRows(args)
    table = output.Table(rows.headers, rows.right, header=not args.no_header)
    inodes, peers = array("Q"), array("Q")
    with query.listing(owners_first=False, unix_peer_names=True) as listing:
        for s in listing:
            table.add(rows.cells(s, listing.unix_names), rows.detail(s))
            inodes.append(s.inode)
            peers.append(s.peer_inode or 0)
        omap = listing.owner_map()
    if omap is None:
        output.write_lines(table.lines())
        return listing
    holders = omap.holders

    def process(row: int) -> str:
        peer = peers[row]
        return process_cell(holders(inodes[row]), holders(peer) if peer else None)

    output.write_lines(table.lines(process))
    return listing


def _write_streamed_table(query: Query, args: argparse.Namespace) -> Listing:
    """--no-align: each row written (a block at a time) as its socket is parsed."""
    rows = TableRows(args)
    table = output.StreamedTable(rows.headers, rows.right, header=not args.no_header)
    with query.listing(unix_peer_names=True) as listing:
        for s in listing:
            cells = rows.cells(s, listing.unix_names)
            cells.append(process_cell(s.owners, s.peer_owners))
            table.add(cells, rows.detail(s))
        table.flush()
    return listing


def _row(s: Socket, names: _Names | None, unix_names: UnixNames | None, show_ns: bool,
         extended: bool) -> list[str]:
    local = s.local
    remote = s.remote
    if isinstance(local, InetAddress):
        netid = s.proto
        lo = inet_text(local, netid, names)
        if netid == "raw" and s.protocol_number is not None:
            # A raw socket's "port" is its IP protocol; ss prints it by name too.
            lo = f"{lo.rpartition(':')[0]}:{RAW_PROTOCOLS.get(s.protocol_number, s.protocol_number)}"
        if s.interface:
            host, _, port = lo.rpartition(":")
            lo = f"{host}%{s.interface}:{port}"
        re = "*:*" if remote is None else inet_text(remote, netid, names)  # type: ignore[arg-type]
    else:
        netid = "nl" if s.proto == "netlink" else NETIDS.get((s.family, s.type), s.proto)
        lo = "*" if local is None else str(local)
        if isinstance(local, UnixAddress) and local.exists is False:
            lo += " (gone)"
        re = "*"
        if s.family == "unix":
            lo = f"{lo} {s.inode}"
            if s.peer_inode:
                peer_name = unix_names.get(s.peer_inode) if unix_names is not None else None
                re = f"{peer_name or '*'} {s.peer_inode}"
        elif remote is not None:
            re = str(remote)
    row = [netid, s.state, str(s.recv_q), str(s.send_q), lo, re]
    if show_ns:
        row.insert(0, s.netns)
    if extended:
        from .main import user_label

        row += [user_label(s.uid) if s.uid is not None else "-", str(s.inode),
                str(s.cookie) if s.cookie is not None else "-",
                str(s.cgroup_id) if s.cgroup_id is not None else "-"]
    return row


def _details(s: Socket, info: bool, memory: bool) -> str:
    parts: list[str] = []
    if info and s.tcp_info is not None:
        t = s.tcp_info
        parts.append(
            f"{t.congestion or '-'} rtt:{t.rtt_ms:g}/{t.rttvar_ms:g} rto:{t.rto_ms:g} "
            f"mss:{t.snd_mss} cwnd:{t.snd_cwnd}"
            + (f" ssthresh:{t.snd_ssthresh}" if t.snd_ssthresh < 0x7FFFFFFF else "")
            + f" bytes_acked:{t.bytes_acked} bytes_received:{t.bytes_received}"
            f" segs_out:{t.segs_out} segs_in:{t.segs_in}"
            f" retrans:{t.retransmits}/{t.total_retrans} unacked:{t.unacked}"
            f" minrtt:{t.min_rtt_ms:g}"
        )
    if info and s.timer:
        parts.append(f"timer:({s.timer},{s.timer_expires_ms}ms)")
    if memory and s.memory is not None:
        m = s.memory
        parts.append(f"skmem:(r{m.rmem_alloc},rb{m.rcvbuf},t{m.wmem_alloc},tb{m.sndbuf},"
                     f"f{m.fwd_alloc},w{m.wmem_queued},o{m.optmem},bl{m.backlog},d{m.drops})")
    return " ".join(parts)


CSV_HEADERS = ["netns", "family", "proto", "type", "state", "local_address", "local_port",
               "remote_address", "remote_port", "recv_q", "send_q", "inode", "uid", "owners"]


def csv_row(s: Socket) -> list[object]:
    def split(a: object) -> tuple[object, object]:
        if isinstance(a, InetAddress):
            return a.address, a.port
        if a is None:
            return "", ""
        return str(a), ""

    la, lp = split(s.local)
    ra, rp = split(s.remote)
    owners = ";".join(f"{o.command}/{o.pid}/{o.fd}" for o in s.owners)
    return [s.netns, s.family, s.proto, s.type, s.state, la, lp, ra, rp, s.recv_q, s.send_q,
            s.inode, "" if s.uid is None else s.uid, owners]
