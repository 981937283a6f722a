#!/usr/bin/env bash
# Set up sockscope on Debian 12 as root: system packages (apt) and a virtualenv
# in .venv with sockscope installed. Idempotent: a second run installs nothing.
#   scripts/setup.sh          what `sockscope` needs
#   scripts/setup.sh --test   plus what the test suite needs
#   scripts/setup.sh --bench  plus what the benchmarks compare against (bench/): trafgen,
#                             traceroute, nmap, mtr; dpkt, scapy, python-netfilterqueue
#                             in .venv only (never dependencies of sockscope)
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
want_bench=0
case "${1:-}" in
    --test) want_test=1 ;;
    --bench) want_test=1; want_bench=1 ;;
    "") ;;
    *) echo "usage: scripts/setup.sh [--test | --bench]" >&2; exit 2 ;;
esac

# Debian packages: iproute2 gives `ip` (tests, namespaces) and `ss` (benchmark anchor);
# nftables gives `nft`, which `sockscope guard` runs (divert speaks nf_tables' netlink
# itself); libpcap0.8 compiles capture and divert filters.
apt_pkgs=(python3 python3-venv iproute2 nftables libpcap0.8)
if [ "$want_test" = 1 ]; then
    # time: /usr/bin/time gives the benchmarks each command's own peak RSS.
    # tshark, tcpdump: the capture files we write are checked with the real tools.
    # libpcap0.8: tcpdump filters are compiled to BPF by libpcap (sockscope.capture.bpf).
    # iptables: the divert tests put an administrator's own rules in place beside divert's.
    apt_pkgs+=(nftables procps time tshark tcpdump libpcap0.8 iptables)
    # iperf3: the traffic generator `top`'s accuracy tests compare with; tmux: they read
    # the live view off a real terminal (capture-pane).
    apt_pkgs+=(iperf3 tmux)
    # traceroute, nmap, iputils-ping: the probing commands' oracles (tests/oracle/).
    apt_pkgs+=(traceroute nmap iputils-ping)
    # netcat-openbsd (nc), tcpd (tcpdmatch): the oracles of connect/listen and check.
    apt_pkgs+=(netcat-openbsd tcpd)
    # prometheus: the exporter's tests scrape it with the real server and check its
    # output and alerting rules with promtool; openssl makes their TLS certificates;
    # systemd checks its unit file (systemd-analyze verify); util-linux: setpriv.
    apt_pkgs+=(prometheus openssl systemd util-linux)
fi
if [ "$want_bench" = 1 ]; then
    # netsniff-ng: trafgen blasts frames at the capture and divert benchmarks.
    # traceroute, nmap, mtr-tiny: bench/probe.py compares trace and scan with them.
    # libnetfilter-queue-dev, build-essential, python3-dev: build python-netfilterqueue.
    apt_pkgs+=(netsniff-ng traceroute nmap mtr-tiny libnetfilter-queue-dev build-essential python3-dev)
    # nethogs: bench/top.py compares `top`'s CPU and accuracy with it.
    apt_pkgs+=(nethogs)
fi

missing=()
for p in "${apt_pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "setup: need root to install: ${missing[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    # tshark asks whether non-root users may capture: answer no, without a prompt.
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Any python3 >= 3.11 with venv works (Debian 12's is 3.11).
PY=${PYTHON:-python3}
"$PY" -c 'import sys; assert sys.version_info >= (3, 11), sys.version' 2>/dev/null || {
    echo "setup: sockscope needs Python 3.11 or newer ($PY is $("$PY" -V 2>&1))" >&2
    exit 1
}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
# exporter: prometheus-client, PyYAML, bcrypt for `sockscope exporter` (README).
extra="[exporter]"
[ "$want_test" = 1 ] && extra="[exporter,test]"
[ "$want_bench" = 1 ] && extra="[exporter,test,bench]"
stamp=".venv/.installed$extra"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ bin/sockscope -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q --disable-pip-version-check -e ".$extra"
    touch "$stamp"
fi
if [ ! -f .venv/.compiled ] || [ -n "$(find src -name "*.py" -newer .venv/.compiled -print -quit)" ]; then
    .venv/bin/python -m compileall -q src >/dev/null
    touch .venv/.compiled
fi
