"""Access control: hosts_access(5) rules, Unix peer rules, decisions and the
nftables compiler used by ``sockscope guard``."""

from .patterns import Client, HostName
from .policy import Decision, Policy
from .syntax import PolicyError, Rule

__all__ = ["Client", "Decision", "HostName", "Policy", "PolicyError", "Rule"]
