"""Endpoints for TCP, UDP and Unix sockets; Unix path rules; peer credentials;
descriptor and credential passing; servers that enforce a policy."""

from .address import Endpoint, parse_endpoint
from .credentials import SO_PEERPIDFD, PeerCredentials, peer_credentials, process_credentials
from .fdpass import enable_credentials, recv_credentials, recv_fds, send_credentials, send_fds
from .server import Peer, Server, bind_endpoint, connect_endpoint
from .unixpath import check_path_length, path_limit, replace_stale

__all__ = [
    "SO_PEERPIDFD",
    "Endpoint",
    "Peer",
    "PeerCredentials",
    "Server",
    "bind_endpoint",
    "check_path_length",
    "connect_endpoint",
    "enable_credentials",
    "parse_endpoint",
    "path_limit",
    "peer_credentials",
    "process_credentials",
    "recv_credentials",
    "recv_fds",
    "replace_stale",
    "send_credentials",
    "send_fds",
]
