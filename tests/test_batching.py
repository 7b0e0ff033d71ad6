"""Batching decisions: de-duplication (keep newest, any order), take(), due(), split().

Records are built directly as SessionRecords whose `row` is a small JSON object of a chosen size.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.records import sized_record
from trio_gfxsync.delivery.batching import Batch, BatchBuffer, keep_newest, split
from trio_gfxsync.pokergfx import SessionRecord, parse_session
from trio_gfxsync.records import FileVersion, Key

HYPOTHESIS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BIG = 1 << 40


make_record = sized_record


def buffer(
    batch_size: int = 500,
    max_batch_bytes: int = BIG,
    linger: float = 0.25,
    flush_interval: float = 5.0,
) -> BatchBuffer:
    return BatchBuffer(
        batch_size=batch_size,
        max_batch_bytes=max_batch_bytes,
        linger=linger,
        flush_interval=flush_interval,
    )


def drain(buf: BatchBuffer) -> list[Batch]:
    batches = []
    while len(buf):
        batch = buf.take()
        assert len(batch) >= 1, "take() on a non-empty buffer must return at least one record"
        batches.append(batch)
        assert len(batches) < 10_000
    return batches


def newest(records: Iterable[SessionRecord]) -> SessionRecord:
    return max(records, key=lambda r: (r.hand_count, r.version.mtime_ns, r.version.sha256))


# --------------------------------------------------------------------------- real parser


def test_records_from_parse_session_batch_into_a_valid_body() -> None:
    rows = []
    buf = buffer()
    for session_id, hands in [(638962090875783819, 1), (638966318331324926, 6)]:
        document = {"ID": session_id, "Hands": [{"Players": []}] * hands}
        data = json.dumps(document).encode()
        record = parse_session(
            data,
            pc_id="PC01",
            rel_path=f"x/GameID={session_id}.json",
            mtime_ns=1,
            max_file_bytes=1 << 20,
        )
        buf.add(record, now=0.0)
        rows.append(json.loads(record.row))
    batch = buf.take()
    assert json.loads(batch.body) == rows
    assert json.loads(batch.body)[0]["raw_json"]["ID"] == 638962090875783819


# --------------------------------------------------------------------------- de-duplication


def test_same_key_keeps_the_one_with_more_hands_in_either_order() -> None:
    early = make_record(hand_count=6, mtime_ns=2_000)
    late = make_record(hand_count=130, mtime_ns=1_000)
    for order in ([early, late], [late, early]):
        buf = buffer()
        for i, record in enumerate(order):
            buf.add(record, now=float(i))
        assert len(buf) == 1
        batch = buf.take()
        assert batch.records == (late,)
        assert batch.superseded == ((late.key, early.version),)
        assert set(batch.versions) == {early.version, late.version}


def test_equal_hands_keep_the_newer_mtime() -> None:
    old = make_record(hand_count=5, mtime_ns=1_000)
    new = make_record(hand_count=5, mtime_ns=2_000)
    assert keep_newest(old, new) is new
    assert keep_newest(new, old) is new


def test_same_version_twice_is_one_record_and_not_superseded() -> None:
    record = make_record()
    buf = buffer()
    buf.add(record, 0.0)
    buf.add(record, 1.0)
    assert len(buf) == 1
    batch = buf.take()
    assert batch.records == (record,) and batch.superseded == ()


def test_replacement_keeps_place_and_arrival_time_and_byte_count() -> None:
    buf = buffer()
    a1 = make_record(session_id=1, hand_count=1, row_size=100)
    b = make_record(session_id=2, row_size=100)
    a2 = make_record(session_id=1, hand_count=2, row_size=300)
    buf.add(a1, 10.0)
    buf.add(b, 11.0)
    buf.add(a2, 12.0)
    assert buf.oldest_arrival == 10.0
    assert buf.nbytes == len(a2.row) + len(b.row) + 2
    assert buf.take().records == (a2, b)
    assert buf.nbytes == 0


@st.composite
def record_versions(draw: st.DrawFn, max_size: int = 25) -> list[SessionRecord]:
    """Versions over a few keys; within a key every version has its own hash (no full ties)."""
    specs = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["PC01", "PC 02"]),
                st.sampled_from([638962090875783819, 638966318331324926, 7]),
                st.integers(0, 3),  # hand_count: few values, many ties
                st.integers(0, 3),  # mtime: few values, many ties
                st.integers(0, 2**32),  # hash seed
                st.integers(60, 400),  # row size
            ),
            max_size=max_size,
            unique_by=lambda spec: (spec[0], spec[1], spec[4]),
        )
    )
    return [
        make_record(
            pc,
            sid,
            hand_count=hands,
            mtime_ns=mtime,
            sha=hashlib.sha256(str(seed).encode()).hexdigest(),
            row_size=size,
        )
        for pc, sid, hands, mtime, seed, size in specs
    ]


def dedupe_outcome(
    records: list[SessionRecord], batch_size: int, max_batch_bytes: int
) -> tuple[dict[Key, FileVersion], dict[Key, frozenset[FileVersion]]]:
    buf = buffer(batch_size=batch_size, max_batch_bytes=max_batch_bytes)
    for i, record in enumerate(records):
        buf.add(record, float(i))
    kept: dict[Key, FileVersion] = {}
    superseded: dict[Key, set[FileVersion]] = {}
    seen_versions: Counter[FileVersion] = Counter()
    for batch in drain(buf):
        keys_in_batch = {r.key for r in batch.records}
        for record in batch.records:
            assert record.key not in kept, "a key was taken twice"
            kept[record.key] = record.version
        for key, version in batch.superseded:
            assert key in keys_in_batch, "a superseded version travels with its key's record"
            superseded.setdefault(key, set()).add(version)
        seen_versions.update(batch.versions)
    # (3) every input version exactly once, kept or superseded
    assert seen_versions == Counter(r.version for r in records)
    return kept, {k: frozenset(v) for k, v in superseded.items()}


@HYPOTHESIS
@given(
    data=st.data(),
    records=record_versions(),
    batch_size=st.integers(1, 6),
    max_batch_bytes=st.sampled_from([200, 700, BIG]),
)
def test_dedup_keeps_the_newest_whatever_the_order(
    data: st.DataObject, records: list[SessionRecord], batch_size: int, max_batch_bytes: int
) -> None:
    permuted = data.draw(st.permutations(records))
    by_key: dict[Key, list[SessionRecord]] = {}
    for record in records:
        by_key.setdefault(record.key, []).append(record)

    outcomes = [dedupe_outcome(order, batch_size, max_batch_bytes) for order in (records, permuted)]

    for kept, superseded in outcomes:
        # (1) one record per key, every key present
        assert set(kept) == set(by_key)
        for key, versions in by_key.items():
            # (2) the kept record is the max by (hand_count, mtime_ns, sha256)
            assert kept[key] == newest(versions).version
            assert superseded.get(key, frozenset()) == {r.version for r in versions} - {kept[key]}
    # (4) independent of arrival order
    assert outcomes[0] == outcomes[1]


def test_full_tie_on_different_paths_is_order_independent() -> None:
    sha = hashlib.sha256(b"same bytes").hexdigest()
    a = make_record(hand_count=6, mtime_ns=5, sha=sha, rel_path="1017/GameID=1.json")
    b = make_record(hand_count=6, mtime_ns=5, sha=sha, rel_path="1021/GameID=1.json")
    assert keep_newest(a, b).version == keep_newest(b, a).version


# --------------------------------------------------------------------------- take()


@HYPOTHESIS
@given(
    sizes=st.lists(st.integers(60, 3000), min_size=1, max_size=40),
    batch_size=st.integers(1, 10),
    max_batch_bytes=st.integers(100, 6000),
)
def test_take_respects_limits_and_order(
    sizes: list[int], batch_size: int, max_batch_bytes: int
) -> None:
    records = [make_record(session_id=i + 1, row_size=size) for i, size in enumerate(sizes)]
    buf = buffer(batch_size=batch_size, max_batch_bytes=max_batch_bytes)
    for i, record in enumerate(records):
        buf.add(record, float(i))
    assert buf.nbytes == sum(len(r.row) + 1 for r in records)

    batches = drain(buf)

    taken = [record for batch in batches for record in batch.records]
    assert taken == records  # each exactly once, oldest first
    assert buf.nbytes == 0 and buf.oldest_arrival is None
    for batch in batches:
        assert 1 <= len(batch) <= batch_size
        body = batch.body
        if len(batch) > 1:
            assert len(body) <= max_batch_bytes
        assert json.loads(body) == [json.loads(r.row) for r in batch.records]
        assert batch.superseded == ()


def test_a_record_larger_than_max_batch_bytes_goes_alone() -> None:
    small = make_record(session_id=1, row_size=100)
    huge = make_record(session_id=2, row_size=5000)
    after = make_record(session_id=3, row_size=100)
    buf = buffer(max_batch_bytes=1024)
    for i, record in enumerate((small, huge, after)):
        buf.add(record, float(i))
    assert [b.records for b in drain(buf)] == [(small,), (huge,), (after,)]


def test_empty_batch_body_is_an_empty_array() -> None:
    assert json.loads(Batch(()).body) == []


# --------------------------------------------------------------------------- due()


def test_due_with_free_uploader_after_linger() -> None:
    buf = buffer(linger=0.25, flush_interval=5.0)
    buf.add(make_record(), 10.0)
    assert not buf.due(10.0, uploader_free=True, closed=False)
    assert not buf.due(10.2499, uploader_free=True, closed=False)
    assert buf.due(10.25, uploader_free=True, closed=False)
    assert buf.next_deadline(uploader_free=True) == 10.25


def test_due_with_busy_uploader_only_at_flush_interval() -> None:
    buf = buffer(linger=0.25, flush_interval=5.0)
    buf.add(make_record(session_id=1), 10.0)
    buf.add(make_record(session_id=2), 14.0)  # the oldest decides
    assert not buf.due(10.25, uploader_free=False, closed=False)
    assert not buf.due(14.999, uploader_free=False, closed=False)
    assert buf.due(15.0, uploader_free=False, closed=False)
    assert buf.next_deadline(uploader_free=False) == 15.0


def test_due_when_full_by_count_or_bytes() -> None:
    by_count = buffer(batch_size=2)
    by_count.add(make_record(session_id=1), 0.0)
    assert not by_count.due(0.0, uploader_free=False, closed=False)
    by_count.add(make_record(session_id=2), 0.0)
    assert by_count.full and by_count.due(0.0, uploader_free=False, closed=False)

    by_bytes = buffer(max_batch_bytes=1024)
    by_bytes.add(make_record(session_id=1, row_size=600), 0.0)
    assert not by_bytes.full
    by_bytes.add(make_record(session_id=2, row_size=600), 0.0)
    assert by_bytes.full and by_bytes.due(0.0, uploader_free=False, closed=False)


def test_due_when_closed() -> None:
    buf = buffer()
    buf.add(make_record(), 0.0)
    assert buf.due(0.0, uploader_free=False, closed=True)


def test_empty_is_never_due() -> None:
    buf = buffer()
    for free in (True, False):
        assert not buf.due(1e9, uploader_free=free, closed=True)
        assert buf.next_deadline(uploader_free=free) == math.inf
    buf.add(make_record(), 0.0)
    buf.take()
    assert not buf.due(1e9, uploader_free=True, closed=True)


# Times are multiples of 1/64 below 2**20: sums and differences are exact in binary floating
# point, so this checks the rule itself; rounding is
# test_due_at_next_deadline_despite_float_rounding's subject.
exact_times = st.integers(0, 2**20 * 64).map(lambda n: n / 64)


@HYPOTHESIS
@given(
    arrivals=st.lists(exact_times, max_size=6),
    now_offset=st.integers(-64 * 10, 64 * 20).map(lambda n: n / 64),
    linger_ticks=st.integers(0, 64 * 5),
    flush_extra_ticks=st.integers(1, 64 * 10),
    batch_size=st.integers(1, 8),
    uploader_free=st.booleans(),
    closed=st.booleans(),
)
def test_next_deadline_is_consistent_with_due(
    arrivals: list[float],
    now_offset: float,
    linger_ticks: int,
    flush_extra_ticks: int,
    batch_size: int,
    uploader_free: bool,
    closed: bool,
) -> None:
    linger = linger_ticks / 64
    flush_interval = (linger_ticks + flush_extra_ticks) / 64  # linger <= flush (settings check)
    buf = buffer(batch_size=batch_size, linger=linger, flush_interval=flush_interval)
    arrivals = sorted(arrivals)
    for i, arrival in enumerate(arrivals):
        buf.add(make_record(session_id=i + 1), arrival)
    now = (arrivals[0] if arrivals else 0.0) + now_offset

    due = buf.due(now, uploader_free=uploader_free, closed=closed)
    deadline = buf.next_deadline(uploader_free=uploader_free)

    if not arrivals:
        assert not due and deadline == math.inf
        return
    assert due == (now >= deadline or buf.full or closed)
    waited = now - arrivals[0]
    expected = closed or buf.full or waited >= (linger if uploader_free else flush_interval)
    assert due == expected


def test_due_at_next_deadline_despite_float_rounding() -> None:
    buf = buffer(linger=0.25, flush_interval=5.0)
    oldest = 4095.8968792678575  # oldest + 0.25 crosses 4096 and rounds down
    buf.add(make_record(), oldest)
    deadline = buf.next_deadline(uploader_free=True)
    assert buf.due(deadline, uploader_free=True, closed=False)


# --------------------------------------------------------------------------- split()


def batch_from(records: list[SessionRecord]) -> Batch:
    buf = buffer()
    for i, record in enumerate(records):
        buf.add(record, float(i))
    batch = buf.take()
    assert len(buf) == 0
    return batch


def test_split_halves_partition_and_superseded_follow_their_key() -> None:
    a_old = make_record(session_id=1, hand_count=1)
    a_new = make_record(session_id=1, hand_count=2)
    b = make_record(session_id=2)
    c_old = make_record(session_id=3, hand_count=1)
    c_new = make_record(session_id=3, hand_count=3)
    batch = batch_from([a_old, b, c_old, a_new, c_new])
    assert batch.records == (a_new, b, c_new)

    first, second = split(batch)

    assert first.records + second.records == batch.records
    assert first.records == (a_new,)
    assert first.superseded == ((a_new.key, a_old.version),)
    assert second.superseded == ((c_new.key, c_old.version),)


def test_split_of_one_record_gives_an_empty_half() -> None:
    record = make_record()
    first, second = split(Batch((record,)))
    assert len(first) == 0 and second.records == (record,)


@HYPOTHESIS
@given(records=record_versions(max_size=30))
def test_recursive_split_puts_everything_exactly_once_into_the_leaves(
    records: list[SessionRecord],
) -> None:
    if not records:
        return
    batch = batch_from(records)
    leaves: list[Batch] = []
    stack = [batch]
    while stack:
        current = stack.pop()
        if len(current) <= 1:
            if len(current) == 1:
                leaves.append(current)
            else:
                assert current.superseded == ()
            continue
        first, second = split(current)
        assert len(first) >= 1 and len(second) >= 1
        assert abs(len(first) - len(second)) <= 1
        assert first.records + second.records == current.records
        assert Counter(first.superseded + second.superseded) == Counter(current.superseded)
        stack.extend((second, first))

    assert [leaf.records[0] for leaf in leaves] == list(batch.records)
    for leaf in leaves:
        assert all(key == leaf.records[0].key for key, _ in leaf.superseded)
    leaf_versions = Counter(v for leaf in leaves for v in leaf.versions)
    assert leaf_versions == Counter(r.version for r in records)
