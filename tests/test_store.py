"""The SQLite store on real files: migrations, the queue's keep-newest rule, dead letters,
corruption recovery, a full disk and a locked database."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import replace
from pathlib import Path

import pytest
import trio

from tests.support.records import export_record
from trio_gfxsync.errors import StoreError
from trio_gfxsync.records import FileVersion
from trio_gfxsync.state.rows import RecordFailure
from trio_gfxsync.state.schema import MIGRATIONS, SCHEMA_VERSION
from trio_gfxsync.state.store import Store

record = export_record


async def test_fresh_database_has_current_schema_and_wal(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "q" / "pending.db")
    try:
        conn = sqlite3.connect(tmp_path / "q" / "pending.db")
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.close()
    finally:
        await store.close()


async def test_migrates_a_version_1_database_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "pending.db"
    conn = sqlite3.connect(path)
    conn.executescript(MIGRATIONS[0])
    conn.execute("INSERT INTO file_state VALUES ('PC01', 'a.json', 1, 2, 'abc', 0)")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    store = await Store.open(path)
    try:
        assert (await store.file_states("PC01"))["a.json"].sha256 == "abc"
        assert (await store.counts()).pending == 0
    finally:
        await store.close()


async def test_a_newer_schema_is_refused_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "pending.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer than this agent"):
        await Store.open(path)
    assert path.exists()


async def test_a_corrupt_database_is_moved_aside_with_its_wal(tmp_path: Path) -> None:
    path = tmp_path / "pending.db"
    path.write_bytes(b"this is not a database" * 100)
    Path(f"{path}-wal").write_bytes(b"junk")
    store = await Store.open(path)
    try:
        assert store.recovered and "moved to pending.db.corrupt-" in store.recovered
        aside = sorted(p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name)
        assert aside and aside[0].startswith("pending.db.corrupt-")
        # the old WAL never replays into the new database (moved aside, or discarded by SQLite)
        wal = Path(f"{path}-wal")
        assert not wal.exists() or b"junk" not in wal.read_bytes()
        assert (await store.counts()).files == 0  # empty: the next scan re-sends everything
    finally:
        await store.close()
    # the dlq command must never move the agent's file away
    path.write_bytes(b"garbage again" * 100)
    with pytest.raises(StoreError, match="damaged"):
        await Store.open(path, recover=False)


async def test_queue_keeps_the_newest_copy_and_grows_with_sessions(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "pending.db")
    try:
        early = record("PC01", "1017/a.json", 6, mtime_ns=1 * 10**18)
        late = record("PC01", "1021/a.json", 130, index=2, mtime_ns=2 * 10**18)
        await store.enqueue([late], [late.version])
        await store.enqueue([early], [early.version])  # arrives later, is older: ignored
        due = await store.due(100, 10**9)
        assert [(r.hand_count, r.version.rel_path) for r in due] == [(130, "1021/a.json")]
        assert due[0].row == late.row  # stored whole (compressed), read back exactly
        counts = await store.counts()
        assert counts.pending == 1 and counts.pending_bytes < len(late.row) / 3
        # queueing acknowledges the files in the same transaction
        assert set(await store.file_states("PC01")) == {"1017/a.json", "1021/a.json"}
        # a newer copy replaced meanwhile is not removed by the older one's success
        newer = record("PC01", "1021/a.json", 131, index=3, mtime_ns=3 * 10**18)
        await store.enqueue([newer], [newer.version])
        await store.remove_queued(due)
        assert [r.hand_count for r in await store.due(100, 10**9)] == [131]
    finally:
        await store.close()


async def test_dead_letter_replay_and_purge(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "pending.db")
    try:
        rec = record("PC01", "x.json", 3)
        await store.enqueue([rec], [rec.version])
        (queued,) = await store.due(10, 10**9)
        await store.dead_letter(
            queued, reason="refused", status=400, code="23514", message="check", attempts=6
        )
        assert (await store.counts()).pending == 0
        (entry,) = await store.dead_letters()
        assert (entry.kind, entry.code, entry.attempts, entry.has_payload) == (
            "refused",
            "23514",
            6,
            True,
        )
        assert await store.replay([entry.id]) == [entry.id]
        (back,) = await store.due(10, 10**9)
        assert back.row == rec.row and back.attempts == 0
        bad = FileVersion("PC02", "bad.json", 10, 5, "f" * 64)
        await store.quarantine(bad, "not_json", "truncated")
        (q,) = await store.dead_letters()
        assert q.kind == "quarantine" and not q.has_payload
        assert "bad.json" in await store.file_states("PC02")  # acknowledged until it changes
        assert await store.purge(q.id) and not await store.purge(q.id)
        await store.quarantine(bad, "not_json", "truncated")
        fixed = FileVersion("PC02", "bad.json", 11, 6, "e" * 64)
        await store.acknowledge([fixed])
        assert await store.dead_letters() == []  # syncing the file resolves its quarantine
    finally:
        await store.close()


async def test_a_full_disk_blocks_the_writer_until_there_is_room(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "pending.db")
    try:
        rows = [record("PC01", f"{n}.json", 40, index=n) for n in range(3)]
        # SQLite's own page limit gives the same SQLITE_FULL a full volume gives
        store._conn.execute("PRAGMA max_page_count = 8")
        done = trio.Event()

        async def write() -> None:
            for n, rec in enumerate(rows):
                await store.enqueue(
                    [rec], [rec.version], attempts={}, error=None
                ) if n == 0 else await store.acknowledge([rec.version])
            done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(write)
            with trio.fail_after(10):
                while store.problem is None:
                    await trio.sleep(0.05)
            assert "full" in store.problem
            assert not done.is_set()
            store._conn.execute("PRAGMA max_page_count = 1000000")
            with trio.fail_after(15):
                await done.wait()
        assert store.problem is None
        assert (await store.counts()).pending == 1
    finally:
        await store.close()


async def test_a_locked_database_is_waited_for(tmp_path: Path) -> None:
    path = tmp_path / "pending.db"
    store = await Store.open(path)
    try:
        other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN EXCLUSIVE")

        async def release_later() -> None:
            await trio.sleep(0.5)
            other.execute("COMMIT")
            other.close()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(release_later)
            rec = record("PC01", "a.json", 2)
            with trio.fail_after(20):
                await store.acknowledge([rec.version])
        assert "a.json" in await store.file_states("PC01")
    finally:
        await store.close()


def stamped(r, stamp: int):  # type: ignore[no-untyped-def]
    return replace(r, version_stamp=stamp, version=replace(r.version, version_stamp=stamp))


async def test_for_one_path_the_later_read_wins_whatever_the_mtimes(tmp_path: Path) -> None:
    """A backup restored with its times, a PC clock corrected: the newer content has the older
    mtime. file_state keeps the later read (its stamp), so a restart sends nothing again."""
    store = await Store.open(tmp_path / "pending.db")
    try:
        old = stamped(record("PC01", "1016/a.json", 3, mtime_ns=2 * 10**18), 100)
        new = stamped(record("PC01", "1016/a.json", 4, mtime_ns=1 * 10**18), 200)
        await store.acknowledge([old.version])
        await store.acknowledge([new.version])
        assert (await store.file_states("PC01"))["1016/a.json"].sha256 == new.version.sha256
        await store.acknowledge([old.version])  # the older read, acknowledged late
        assert (await store.file_states("PC01"))["1016/a.json"].sha256 == new.version.sha256
        assert await store.largest_stamp() == 200
    finally:
        await store.close()


async def test_a_stored_row_drops_its_older_queued_copies_only(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "pending.db")
    try:
        queued = stamped(record("PC01", "1016/a.json", 3), 100)
        await store.enqueue([queued], [queued.version])
        await store.acknowledge([], stored=[(queued.key, 99)])  # an older one was stored
        assert [r.version_stamp for r in await store.due(10, 10**9)] == [100]
        await store.acknowledge([], stored=[(queued.key, 150)])  # a newer one was stored
        assert await store.due(10, 10**9) == []
    finally:
        await store.close()


async def test_records_failing_alone_wait_apart_from_the_queue(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "pending.db")
    try:
        good = stamped(record("PC01", "1016/a.json", 3), 100)
        bad = stamped(record("PC01", "1016/b.json", 3, index=2, session_id=12345), 101)
        failure = RecordFailure("timed_out", 504, None, "timed out")
        await store.enqueue([good], [good.version])
        await store.enqueue([bad], [bad.version], failure=failure)
        assert [r.session_id for r in await store.due(10, 10**9)] == [good.session_id]
        failing = await store.failing_due()
        assert failing is not None and failing.session_id == bad.session_id
        assert failing.failures == 1 and failing.first_failed_at is not None
        await store.failed_alone(failing, failure, 60.0)
        assert await store.failing_due() is None  # backing off
        listed = await store.failing()
        assert [(f.session_id, f.failures, f.reason) for f in listed] == [
            (bad.session_id, 2, "timed_out")
        ]
        assert (await store.counts()).failing == 1
        # a newer version of the session is another record: it starts afresh
        newer = stamped(record("PC01", "1016/b.json", 4, index=2, session_id=12345), 300)
        await store.enqueue([newer], [newer.version])
        assert (await store.counts()).failing == 0
    finally:
        await store.close()


async def test_a_clock_stepped_back_never_holds_a_queued_record(tmp_path: Path) -> None:
    """Queued under a clock an hour fast, read under the corrected one: due now, not in an
    hour (no backoff is ever longer than a minute)."""
    store = await Store.open(tmp_path / "pending.db")
    try:
        queued = stamped(record("PC01", "1016/a.json", 3), 100)
        failing = stamped(record("PC01", "1016/b.json", 3, index=2, session_id=12345), 101)
        await store.enqueue([queued], [queued.version], delay=3600)
        await store.enqueue(
            [failing], [failing.version], failure=RecordFailure("timed_out", 504, None, "x")
        )
        await store._run(
            lambda: store._conn.execute(
                "UPDATE pending_sync SET next_attempt_at = ?", (time.time() + 3600,)
            )
        )
        assert [r.session_id for r in await store.due(10, 10**9)] == [queued.session_id]
        found = await store.failing_due()
        assert found is not None and found.session_id == failing.session_id
        assert await store.next_due() <= time.time() + 120
    finally:
        await store.close()
