"""The values pcap and pcapng files carry, shared by readers and writers of both formats."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from sockscope.errors import SockscopeError

NS_PER_S = 1_000_000_000


class PcapError(SockscopeError):
    """A capture file that cannot be read or written; the message names the file and the offset."""


class Direction(IntEnum):
    """Packet direction, the values of bits 0-1 of the pcapng epb_flags option."""

    INBOUND = 1
    OUTBOUND = 2


# Not frozen: a frozen dataclass's __init__ goes through object.__setattr__ per field,
# which roughly halves reader throughput at a million records a second.
@dataclass(slots=True)
class Record:
    """One captured packet.

    ``interface_id`` indexes the reader's ``interfaces`` list (numbered across all
    pcapng sections, so it stays unique in multi-section files); classic pcap has one
    interface, 0. ``orig_len`` is the length on the wire, ``len(data)`` or more when
    the snapshot length cut the packet.
    """

    timestamp_ns: int
    data: bytes
    orig_len: int
    interface_id: int = 0
    direction: Direction | None = None


@dataclass(slots=True)
class Interface:
    """A capture interface: the pcap file header, or a pcapng Interface Description Block.

    ``tsresol`` is the raw pcapng if_tsresol value: bit 7 clear means units of
    10**-tsresol seconds, set means 2**-(tsresol & 0x7F). Classic pcap is 6 or 9.
    """

    linktype: int
    snaplen: int = 262144
    name: str | None = None
    filter: str | None = None
    tsresol: int = 9


@dataclass(slots=True)
class InterfaceStats:
    """A pcapng Interface Statistics Block; None marks a counter the writer did not record.

    ``ifrecv``/``ifdrop`` count packets the interface received / dropped, ``osdrop``
    those the kernel dropped (e.g. a full capture ring), ``filteraccept`` those the
    filter accepted and ``usrdeliv`` those handed to the capturing program.
    """

    interface_id: int
    timestamp_ns: int
    starttime_ns: int | None = None
    endtime_ns: int | None = None
    ifrecv: int | None = None
    ifdrop: int | None = None
    filteraccept: int | None = None
    osdrop: int | None = None
    usrdeliv: int | None = None
