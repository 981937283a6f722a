"""pcap and pcapng files, usable on their own.

A sans-IO core (byte encoders in ``pcapfile``/``pcapng``, the incremental
``Decoder``) and thin file edges (``open_reader``, ``PcapWriter``,
``PcapngWriter``, ``writer_for``). Timestamps are integer nanoseconds throughout.
"""

from sockscope.pcap.decoder import Decoder
from sockscope.pcap.files import PcapngWriter, PcapWriter, Reader, open_reader, writer_for
from sockscope.pcap.pcapfile import pcap_header, pcap_record
from sockscope.pcap.pcapng import pcapng_epb, pcapng_idb, pcapng_isb, pcapng_shb
from sockscope.pcap.records import Direction, Interface, InterfaceStats, PcapError, Record

__all__ = [
    "Decoder",
    "Direction",
    "Interface",
    "InterfaceStats",
    "PcapError",
    "PcapWriter",
    "PcapngWriter",
    "Reader",
    "Record",
    "open_reader",
    "pcap_header",
    "pcap_record",
    "pcapng_epb",
    "pcapng_idb",
    "pcapng_isb",
    "pcapng_shb",
    "writer_for",
]
