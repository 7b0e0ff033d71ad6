"""Names that are not UTF-8 (names.py), and timestamps beyond 64 bits (records.py): pure."""

from __future__ import annotations

import os
import sqlite3

import orjson
from hypothesis import given
from hypothesis import strategies as st

from trio_gfxsync import names
from trio_gfxsync.records import (
    NS_MAX,
    NS_MIN,
    UNKNOWN,
    clamp_ns,
    file_stat,
    make_stat,
    stat_fields,
    stat_mtime_ns,
)

# what a POSIX file name can be: any bytes but NUL and "/"
name_bytes = st.binary(min_size=1, max_size=80).map(
    lambda b: b.replace(b"\x00", b"_").replace(b"/", b"_")
)


@given(name_bytes)
def test_a_listed_name_goes_through_sqlite_and_back_unchanged(raw: bytes) -> None:
    listed = os.fsdecode(raw)  # what os.scandir gives for it
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (rel_path TEXT PRIMARY KEY)")
    conn.execute("INSERT INTO t VALUES (?)", (names.storable(listed),))
    (back,) = conn.execute("SELECT rel_path FROM t").fetchone()
    assert names.from_storage(back) == listed
    assert os.fsencode(names.from_storage(back)) == raw  # it opens the same file again
    # and a lookup by the same name finds it
    assert conn.execute("SELECT 1 FROM t WHERE rel_path = ?", (names.storable(listed),)).fetchone()


@given(name_bytes)
def test_the_printable_form_is_utf8_and_keeps_valid_names(raw: bytes) -> None:
    listed = os.fsdecode(raw)
    shown = names.printable(listed)
    shown.encode("utf-8")  # never raises
    try:
        assert shown == raw.decode("utf-8")
    except UnicodeDecodeError:
        assert "\\x" in shown


@given(
    st.recursive(
        st.text() | st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.none(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
    ),
    name_bytes,
)
def test_dumps_never_raises_on_a_name(value: object, raw: bytes) -> None:
    document = {"path": os.fsdecode(raw), os.fsdecode(raw): [value, os.fsdecode(raw)]}
    assert isinstance(orjson.loads(names.dumps(document)), dict)


def test_odd_bytes_read_as_backslash_x() -> None:
    assert names.printable(os.fsdecode(b"10\xff\xfe/a.json")) == "10\\xff\\xfe/a.json"
    assert names.printable("Caf\u00e9 1021/a.json") == "Caf\u00e9 1021/a.json"


@given(st.integers(min_value=-(2**80), max_value=2**80))
def test_timestamps_are_clamped_into_sqlite_integers(value: int) -> None:
    clamped = clamp_ns(value)
    assert NS_MIN <= clamped <= NS_MAX
    assert clamped == min(max(value, NS_MIN), NS_MAX)
    conn = sqlite3.connect(":memory:")
    assert conn.execute("SELECT ?", (clamped,)).fetchone() == (clamped,)


@given(
    st.integers(0, NS_MAX),
    st.integers(NS_MIN, NS_MAX),
    st.integers(NS_MIN, NS_MAX),
    st.integers(UNKNOWN, 2**64 - 1),  # an inode may use all 64 unsigned bits
    st.integers(0, NS_MAX),
    st.integers(NS_MIN, NS_MAX),
)
def test_a_packed_stat_gives_its_fields_back_and_differs_when_any_field_does(
    size: int, mtime: int, ctime: int, inode: int, other_size: int, other_mtime: int
) -> None:
    fields = (size, mtime, ctime, inode)
    stat = make_stat(*fields)
    assert stat_fields(stat) == fields and stat_mtime_ns(stat) == mtime
    for changed in (
        (other_size, mtime, ctime, inode),
        (size, other_mtime, ctime, inode),
        (size, mtime, other_mtime, inode),
        (size, mtime, ctime, UNKNOWN if inode != UNKNOWN else 0),
    ):
        assert (make_stat(*changed) == stat) == (changed == fields)


def test_a_stat_from_the_disk_packs_its_clamped_fields(tmp_path) -> None:
    path = tmp_path / "a.json"
    path.write_bytes(b"{}")
    os.utime(path, ns=(0, 2**63 + 5))  # beyond int64: clamped
    st_ = os.stat(path)
    assert stat_fields(file_stat(st_)) == (2, NS_MAX, st_.st_ctime_ns, st_.st_ino)
