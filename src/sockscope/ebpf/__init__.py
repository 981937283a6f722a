"""eBPF from plain Python: a small assembler (``asm``), the kernel's type
information (``btf``: struct member offsets) and the ``bpf()`` system call
through ctypes (``syscall``). No compiler at run time.

Used by ``sockscope.traffic`` to count bytes per socket and process in the
kernel (``traffic/socktrace.py``). Classic BPF socket filters are elsewhere:
``capture/bpf.py`` (compiled by libpcap).
"""
