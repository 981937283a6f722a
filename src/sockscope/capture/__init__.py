"""Packet capture: tcpdump filters compiled by libpcap (``bpf``), live sockets and pcap I/O."""
