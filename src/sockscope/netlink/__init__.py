"""Netlink: a sans-IO codec (``codec``), one socket wrapper (``socket``) and the
protocol families built on them (``sockdiag``, ``rtnl``)."""
