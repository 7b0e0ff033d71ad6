"""sync_events retention: rows older than the setting go, a few hundred at a time, and a target
that refuses (no DELETE grant) is logged, never raised, never an upstream state.

Against the embedded SQLite target and the real PostgREST (through the gateway stand-in)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trio

from tests.support import infra
from trio_gfxsync.delivery import retention as retention_module
from trio_gfxsync.delivery.retention import SyncEventsRetention
from trio_gfxsync.settings import load_settings
from trio_gfxsync.targets.postgrest import PostgrestClient
from trio_gfxsync.targets.sqlite import SqliteTarget

OLD, RECENT = 1_234, 10  # old rows: more than two delete batches


def fill_sqlite(path: Path) -> None:
    now = datetime.now(UTC)
    rows = [
        ("PC01", "modified", f"{i}.json", (now - timedelta(days=40, seconds=i)).isoformat())
        for i in range(OLD)
    ] + [("PC01", "created", f"new{i}.json", now.isoformat()) for i in range(RECENT)]
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO sync_events (gfx_pc_id, event_type, file_path, created_at)"
            " VALUES (?, ?, ?, replace(?, '+00:00', 'Z'))",
            rows,
        )


async def test_old_rows_go_in_batches_and_recent_ones_stay(tmp_path: Path) -> None:
    target = SqliteTarget(tmp_path / "target.db")
    await target.probe()  # creates the tables
    fill_sqlite(tmp_path / "target.db")
    calls = []
    real_delete = target.delete_sync_events

    async def counted(before: datetime, limit: int) -> int:
        gone = await real_delete(before, limit)
        calls.append(gone)
        return gone

    target.delete_sync_events = counted  # type: ignore[method-assign]
    assert await SyncEventsRetention(target, 30).prune() == OLD
    assert calls == [500, 500, 234]  # bounded requests, the last one short: done
    with sqlite3.connect(tmp_path / "target.db") as conn:
        left = [r[0] for r in conn.execute("SELECT file_path FROM sync_events")]
    assert sorted(left) == sorted(f"new{i}.json" for i in range(RECENT))
    assert await SyncEventsRetention(target, 30).prune() == 0
    await target.aclose()


async def test_the_first_pass_waits_for_the_backfill_then_one_a_day(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    class Recorder:
        def __init__(self) -> None:
            self.at: list[float] = []

        async def delete_sync_events(self, before: datetime, limit: int) -> int:
            self.at.append(trio.current_time())
            return 0

    recorder = Recorder()
    started = trio.current_time()
    with trio.move_on_after(3 * 86_400 + 120):
        await SyncEventsRetention(recorder, 30).run()  # type: ignore[arg-type]
    offsets = [round(t - started) for t in recorder.at]
    first = retention_module.FIRST_PASS_AFTER
    assert offsets == [first, first + 86_400, first + 2 * 86_400, first + 3 * 86_400]


@pytest.fixture
def rest_settings(fresh_gateway: infra.Gateway):  # type: ignore[no-untyped-def]
    return load_settings(
        supabase_url=fresh_gateway.url, supabase_secret_key=fresh_gateway.key, request_timeout=30
    )


def fill_postgres(dsn: str) -> None:
    infra.query(
        dsn,
        "insert into public.sync_events (gfx_pc_id, event_type, file_path, created_at)"
        " select 'PC01', 'modified', i || '.json', now() - interval '40 days' - i * interval '1 s'"
        " from generate_series(1, %s) i",
        (OLD,),
    )
    infra.query(
        dsn,
        "insert into public.sync_events (gfx_pc_id, event_type, file_path)"
        " select 'PC01', 'created', 'new' || i || '.json' from generate_series(1, %s) i",
        (RECENT,),
    )


async def test_postgrest_deletes_old_rows_by_limited_delete(
    clean_db: infra.Database, fresh_gateway: infra.Gateway, rest_settings
) -> None:
    fill_postgres(clean_db.dsn)
    async with PostgrestClient(rest_settings) as client:
        assert await SyncEventsRetention(client, 30).prune() == OLD
    left = infra.query(clean_db.dsn, "select file_path from public.sync_events")
    assert sorted(r["file_path"] for r in left) == sorted(f"new{i}.json" for i in range(1, 11))
    deletes = [r for r in fresh_gateway.records if r.method == "DELETE"]
    assert len(deletes) == 3 and all("limit=500" in r.query for r in deletes), deletes


async def test_without_the_grant_it_logs_and_deletes_nothing(
    clean_db: infra.Database, rest_settings
) -> None:
    fill_postgres(clean_db.dsn)
    infra.query(clean_db.dsn, "revoke delete on public.sync_events from service_role")
    try:
        async with PostgrestClient(rest_settings) as client:
            assert await SyncEventsRetention(client, 30).prune() == 0
    finally:
        infra.query(clean_db.dsn, "grant delete on public.sync_events to service_role")
    count = infra.query(clean_db.dsn, "select count(*) as n from public.sync_events")
    assert count == [{"n": OLD + RECENT}]
