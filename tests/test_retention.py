"""sync_events retention: rows older than the setting go, a few hundred at a time, and a target
that refuses (no DELETE grant) is logged, never raised, never an upstream state.

Against the embedded SQLite target and the real PostgREST (through the gateway stand-in)."""

from __future__ import annotations

import logging
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trio

from tests.support import infra
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


async def test_old_rows_go_in_batches_and_recent_ones_stay(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
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
    with caplog.at_level(logging.INFO, logger="trio_gfxsync.retention"):
        assert await SyncEventsRetention(target, 30).prune() == OLD
    assert calls == [500, 500, 234]  # bounded requests, the last one short: done
    assert [(r.msg, r.gfx_fields["deleted"]) for r in caplog.records] == [  # type: ignore[attr-defined]
        ("sync_events_pruned", OLD)
    ]
    with sqlite3.connect(tmp_path / "target.db") as conn:
        left = [r[0] for r in conn.execute("SELECT file_path FROM sync_events")]
    assert sorted(left) == sorted(f"new{i}.json" for i in range(RECENT))
    assert await SyncEventsRetention(target, 30).prune() == 0
    await target.aclose()


async def test_the_first_pass_comes_a_minute_after_start_then_one_a_day(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    """A minute after start (out of the way of the start's first uploads), then daily: the
    offsets written out, not read from the module (a first pass at once would fail)."""

    class Table:
        """In memory (a target's worker thread would let the autojump clock jump meanwhile)."""

        def __init__(self) -> None:
            self.old = OLD
            self.at: list[tuple[float, int]] = []

        async def delete_sync_events(self, before: datetime, limit: int) -> int:
            gone = min(limit, self.old)
            self.old -= gone
            self.at.append((trio.current_time(), gone))
            return gone

    target = Table()
    started = trio.current_time()
    with trio.move_on_after(3 * 86_400 + 120):
        await SyncEventsRetention(target, 30).run()  # type: ignore[arg-type]
    offsets = [(round(t - started, 1), gone) for t, gone in target.at]
    # the first pass: three requests 0.2 s apart (the last one short); then one a day
    assert offsets == [
        (60.0, 500),
        (60.2, 500),
        (60.4, 234),
        (86_460.4, 0),
        (172_860.4, 0),
        (259_260.4, 0),
    ]


@pytest.mark.parametrize("days", [0, 0.0])
async def test_zero_days_keeps_every_row(
    tmp_path: Path, autojump_clock: trio.abc.Clock, days: float
) -> None:
    """GFX_SYNC_SYNC_EVENTS_RETENTION_DAYS=0: kept for ever, however old (README)."""
    target = SqliteTarget(tmp_path / "target.db")
    await target.probe()
    fill_sqlite(tmp_path / "target.db")
    retention = SyncEventsRetention(target, days)
    assert await retention.prune() == 0
    with trio.move_on_after(3 * 86_400):
        await retention.run()
    with sqlite3.connect(tmp_path / "target.db") as conn:
        assert conn.execute("SELECT count(*) FROM sync_events").fetchone() == (OLD + RECENT,)
    await target.aclose()
    settings = load_settings(
        supabase_url="http://127.0.0.1:9", supabase_secret_key="x", sync_events_retention_days=0
    )
    assert settings.sync_events_retention_days == 0


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
    clean_db: infra.Database, rest_settings, caplog: pytest.LogCaptureFixture
) -> None:
    fill_postgres(clean_db.dsn)
    infra.query(clean_db.dsn, "revoke delete on public.sync_events from service_role")
    try:
        async with PostgrestClient(rest_settings) as client:
            with caplog.at_level(logging.INFO, logger="trio_gfxsync.retention"):
                assert await SyncEventsRetention(client, 30).prune() == 0
    finally:
        infra.query(clean_db.dsn, "grant delete on public.sync_events to service_role")
    count = infra.query(clean_db.dsn, "select count(*) as n from public.sync_events")
    assert count == [{"n": OLD + RECENT}]
    # logged once, with what to do about it
    [record] = caplog.records
    assert (record.levelno, record.msg) == (logging.WARNING, "sync_events_retention_failed")
    fields = record.gfx_fields  # type: ignore[attr-defined]
    assert fields["deleted"] == 0 and "42501" in fields["error"], fields
    assert "20261204100000_gfx_sync_events_retention.sql" in fields["hint"]
