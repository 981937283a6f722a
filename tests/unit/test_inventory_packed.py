"""The packed owner map and unix names: the same answers as plain dicts would give."""

from __future__ import annotations

import marshal

from hypothesis import given, settings
from hypothesis import strategies as st

from sockscope.inventory.model import Owner, Socket, UnixAddress
from sockscope.inventory.owners import OwnerMap
from sockscope.inventory.packed import InodeIndex
from sockscope.inventory.unixnames import UnixNames

inodes = st.integers(min_value=1, max_value=2**64 - 1)


@settings(max_examples=200, deadline=None)
@given(st.lists(inodes, max_size=300), st.lists(inodes, max_size=50))
def test_index_finds_every_entry_of_every_key(keys: list[int], others: list[int]) -> None:
    index = InodeIndex()
    index.extend(keys)
    expected: dict[int, list[int]] = {}
    for entry, key in enumerate(keys):
        expected.setdefault(key, []).append(entry)
    for key in {*keys, *others}:
        assert list(index.entries(key)) == expected.get(key, [])
        assert index.first(key) == expected.get(key, [-1])[0]


def test_index_is_rebuilt_after_more_keys() -> None:
    index = InodeIndex()
    index.extend([5, 6])
    assert index.first(6) == 1
    index.extend(range(7, 5000))
    assert index.first(4999) == 4994 and index.first(5) == 0 and index.first(1) == -1


def test_clustered_inodes_probe_briefly() -> None:
    # Inodes come from a counter in per-CPU batches of 1024: runs, and strides of 1024.
    index = InodeIndex()
    keys = [base + i for base in range(1 << 20, 1 << 22, 1024) for i in range(0, 1024, 64)]
    index.extend(keys)
    index.first(keys[0])  # builds the table
    slots, mask = index._slots, len(index._slots) - 1
    longest = 0
    for key in keys[:2000]:
        h = ((key * 0x9E3779B1) & 0xFFFFFFFF) >> index._shift
        probes = 1
        while index.keys[slots[h]] != key:
            h = (h + 1) & mask
            probes += 1
        longest = max(longest, probes)
    assert longest < 32


def owner_map() -> OwnerMap:
    omap = OwnerMap()
    omap.add(300, "nginx", 0, [11, 12, 13], [6, 7, 8])
    omap.add(200, "nginx", 33, [11, 14], [6, 3])  # 11 held by both (inherited)
    return omap


def test_owner_map_answers_as_the_dict_did() -> None:
    omap = owner_map()
    assert [(o.pid, o.fd) for o in omap.holders(11)] == [(200, 6), (300, 6)]  # by pid, then fd
    assert [(o.pid, o.command, o.fd, o.uid) for o in omap.holders(14)] == [(200, "nginx", 3, 33)]
    assert omap.holders(99) == [] and omap.get(99) is None and 99 not in omap
    assert omap.by_inode.get(12) == [Owner(300, "nginx", 7, "root", 0)]
    assert sorted(omap) == [11, 12, 13, 14] and len(omap) == 4 and omap.descriptors() == 5


def test_owner_map_travels_packed_between_processes() -> None:
    mine = OwnerMap()
    mine.add(100, "sshd", 0, [20], [3])
    mine.denied = 1
    theirs = owner_map()
    theirs.denied = 2
    mine.merge(marshal.loads(marshal.dumps(theirs.packed())))
    assert [(o.pid, o.fd) for o in mine.holders(11)] == [(200, 6), (300, 6)]
    assert [o.command for o in mine.holders(20)] == ["sshd"] and mine.denied == 3


def test_unix_names_keep_each_name_once() -> None:
    def unix(inode: int, path: str | None, abstract: bool = False) -> Socket:
        local = UnixAddress(path, abstract) if path is not None else None
        return Socket("n", "unix", "unix", "stream", "ESTABLISHED", local, None, 0, 0, inode, 0)

    names = UnixNames([unix(1, "/run/a.sock"), unix(2, None), unix(3, "/run/a.sock"),
                       unix(4, "x", abstract=True)])
    assert [names.get(i) for i in (1, 2, 3, 4, 5)] == ["/run/a.sock", None, "/run/a.sock", "@x", None]
    assert names._names == ["/run/a.sock", "@x"] and len(names) == 3
