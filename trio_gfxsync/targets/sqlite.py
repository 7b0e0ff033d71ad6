"""The embedded target: `gfx_sessions` and `sync_events` in a local SQLite file, no Supabase.

For trial runs, the demo, and a venue's local consumers. It takes the same rows as PostgREST,
through the same pipeline, batching, offline queue and error policy, and keeps the same
keep-newest rule as the database trigger (keep_newest.py: the larger version stamp wins).
`session_key` is the id as text, as in Supabase, because JavaScript rounds 18-digit numbers.

Its failures map onto the policy's verdicts like PostgREST's do: a full or failing disk is
"down" (records wait in the offline queue), a locked file is "slow down", a missing table or
column is a schema mismatch, a row the table refuses is refused. Never chosen silently: only
GFX_SYNC_TARGET=sqlite selects it.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import orjson

from ..errors import UpstreamError
from ..keep_newest import StoredRow
from ..policy import Verdict
from ..records import Written

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS gfx_sessions (
    id                 TEXT PRIMARY KEY,
    gfx_pc_id          TEXT    NOT NULL,
    session_id         INTEGER NOT NULL,
    session_key        TEXT GENERATED ALWAYS AS (CAST(session_id AS TEXT)) STORED,
    file_name          TEXT    NOT NULL,
    file_path          TEXT,
    file_hash          TEXT    NOT NULL,
    file_size          INTEGER,
    file_mtime         TEXT,
    raw_json           TEXT    NOT NULL CHECK (json_valid(raw_json)),
    table_type         TEXT,
    event_title        TEXT,
    software_version   TEXT,
    hand_count         INTEGER DEFAULT 0,
    player_count       INTEGER,
    session_created_at TEXT,
    sync_source        TEXT DEFAULT 'nas_central',
    sync_status        TEXT DEFAULT 'synced',
    version_stamp      INTEGER,
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL,
    UNIQUE (gfx_pc_id, session_id)
);
CREATE TABLE IF NOT EXISTS sync_events (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    gfx_pc_id     TEXT NOT NULL,
    event_type    TEXT NOT NULL CHECK (event_type IN ('created', 'modified', 'error')),
    file_path     TEXT,
    record_count  INTEGER DEFAULT 1,
    error_message TEXT,
    created_at    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sync_events_pc_created ON sync_events (gfx_pc_id, created_at);
"""

COLUMNS = (
    "gfx_pc_id",
    "session_id",
    "file_name",
    "file_path",
    "file_hash",
    "file_size",
    "file_mtime",
    "raw_json",
    "table_type",
    "event_title",
    "software_version",
    "hand_count",
    "player_count",
    "session_created_at",
    "version_stamp",
)

# keep_newest.stored_row_wins, as the PostgreSQL trigger has it: the larger stamp wins; rows
# without stamps never replace stamped ones and among themselves keep more hands, then newer
UPSERT = f"""
INSERT INTO gfx_sessions (id, {", ".join(COLUMNS)}, created_at, updated_at)
VALUES (?, {", ".join("?" for _ in COLUMNS)}, ?, ?)
ON CONFLICT (gfx_pc_id, session_id) DO UPDATE SET
    {", ".join(f"{c} = excluded.{c}" for c in COLUMNS if c not in ("gfx_pc_id", "session_id"))},
    updated_at = excluded.updated_at
WHERE (excluded.version_stamp IS NOT NULL
       AND (gfx_sessions.version_stamp IS NULL
            OR excluded.version_stamp >= gfx_sessions.version_stamp))
   OR (excluded.version_stamp IS NULL AND gfx_sessions.version_stamp IS NULL
       AND (coalesce(excluded.hand_count, 0) > coalesce(gfx_sessions.hand_count, 0)
            OR (coalesce(excluded.hand_count, 0) = coalesce(gfx_sessions.hand_count, 0)
                AND coalesce(excluded.file_mtime, '') >= coalesce(gfx_sessions.file_mtime, ''))))
RETURNING gfx_pc_id, session_id, file_hash
"""

EVENT_COLUMNS = ("gfx_pc_id", "event_type", "file_path", "record_count", "error_message")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _failure(exc: sqlite3.Error) -> UpstreamError:
    name = getattr(exc, "sqlite_errorname", "") or type(exc).__name__
    text = str(exc)
    if isinstance(exc, sqlite3.IntegrityError):
        return UpstreamError(400, "23514", text, verdict=Verdict.REFUSED)
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return UpstreamError(503, name, text, retry_after=1.0, verdict=Verdict.SLOW_DOWN)
    if "no such table" in text or "no such column" in text or "has no column" in text:
        return UpstreamError(400, "42703", text, verdict=Verdict.SCHEMA_MISMATCH)
    if name.startswith(("SQLITE_READONLY", "SQLITE_PERM", "SQLITE_AUTH")):
        return UpstreamError(403, name, text, verdict=Verdict.REJECTED)
    # full disk, I/O error, a damaged file: passes with time (or an operator), like an outage
    return UpstreamError(None, None, text, kind=name, verdict=Verdict.DOWN)


class SqliteTarget:
    """`targets.base.Target` over one SQLite file; one connection through a limiter of 1."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._limiter = anyio.CapacityLimiter(1)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None, timeout=2
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.executescript(SCHEMA)
            self._conn = conn
        return self._conn

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            try:
                return fn(self._connection())
            except sqlite3.Error as exc:
                raise _failure(exc) from None

        return await anyio.to_thread.run_sync(call, limiter=self._limiter)

    async def upsert_sessions(self, body: bytes) -> Written:
        try:
            rows = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(400, "PGRST102", f"not a JSON array: {exc}") from None
        if not isinstance(rows, list):
            raise UpstreamError(400, "PGRST102", "not a JSON array of rows")
        now = _now()
        values = [_values(row, now) for row in rows]

        def write(conn: sqlite3.Connection) -> Written:
            written: Written = {}
            conn.execute("BEGIN IMMEDIATE")
            try:
                # a row the keep-newest rule skips returns nothing, as in PostgreSQL
                for row in values:
                    for pc_id, session_id, file_hash in conn.execute(UPSERT, row):
                        written[(pc_id, session_id)] = file_hash
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return written

        return await self._run(write)

    async def stored_versions(self, pc_id: str, session_ids: Sequence[int]) -> dict[int, StoredRow]:
        ids = sorted(set(session_ids))

        def read(conn: sqlite3.Connection) -> dict[int, StoredRow]:
            found: dict[int, StoredRow] = {}
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                rows = conn.execute(
                    "SELECT session_id, version_stamp, file_hash, file_path FROM gfx_sessions"
                    f" WHERE gfx_pc_id = ? AND session_id IN ({','.join('?' * len(chunk))})",
                    (pc_id, *chunk),
                )
                for session_id, stamp, file_hash, file_path in rows:
                    found[int(session_id)] = StoredRow(stamp, file_hash, file_path)
            return found

        return await self._run(read)

    async def replace_session(
        self, pc_id: str, session_id: int, row: bytes, expected_stamp: int | None
    ) -> bool:
        values = _values(orjson.loads(row), _now())[1:-2]  # the columns, without id and times
        assignments = ", ".join(f"{c} = ?" for c in COLUMNS)

        def write(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                f"UPDATE gfx_sessions SET {assignments}, updated_at = ?"
                " WHERE gfx_pc_id = ? AND session_id = ? AND version_stamp IS ?",
                (*values, _now(), pc_id, session_id, expected_stamp),
            )
            return cursor.rowcount == 1

        return await self._run(write)

    async def insert_sync_events(self, body: bytes) -> None:
        rows = orjson.loads(body)
        now = _now()
        values = [(*(row.get(c) for c in EVENT_COLUMNS), now) for row in rows]

        def write(conn: sqlite3.Connection) -> None:
            conn.executemany(
                f"INSERT INTO sync_events ({', '.join(EVENT_COLUMNS)}, created_at)"
                f" VALUES ({', '.join('?' for _ in EVENT_COLUMNS)}, ?)",
                values,
            )

        await self._run(write)

    async def probe(self) -> None:
        columns = ", ".join(COLUMNS)
        await self._run(lambda conn: conn.execute(f"SELECT {columns} FROM gfx_sessions LIMIT 0"))

    async def probe_write(self) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")

        await self.probe()
        await self._run(write)

    async def stored_hashes(
        self, pc_id: str, after: int | None, limit: int
    ) -> list[tuple[int, str | None]]:
        def read(conn: sqlite3.Connection) -> list[tuple[int, str | None]]:
            rows = conn.execute(
                "SELECT session_id, file_hash FROM gfx_sessions WHERE gfx_pc_id = ?"
                " AND (? IS NULL OR session_id > ?) ORDER BY session_id LIMIT ?",
                (pc_id, after, after, limit),
            )
            return [(int(session_id), file_hash) for session_id, file_hash in rows]

        return await self._run(read)

    async def pcs_in_table(self) -> dict[str, int]:
        def read(conn: sqlite3.Connection) -> dict[str, int]:
            rows = conn.execute("SELECT gfx_pc_id, count(*) FROM gfx_sessions GROUP BY gfx_pc_id")
            return {str(pc_id): int(n) for pc_id, n in rows}

        return await self._run(read)

    async def delete_pc_rows(self, pc_id: str) -> int:
        def delete(conn: sqlite3.Connection) -> int:
            return conn.execute("DELETE FROM gfx_sessions WHERE gfx_pc_id = ?", (pc_id,)).rowcount

        return await self._run(delete)

    async def delete_sync_events(self, before: datetime, limit: int) -> int:
        cutoff = before.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")

        def delete(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "DELETE FROM sync_events WHERE id IN (SELECT id FROM sync_events"
                " WHERE created_at < ? ORDER BY id LIMIT ?)",
                (cutoff, limit),
            )
            return cursor.rowcount

        return await self._run(delete)

    async def aclose(self) -> None:
        def close(conn: sqlite3.Connection) -> None:
            conn.close()

        if self._conn is not None:
            await self._run(close)
            self._conn = None


def _values(row: Any, now: str) -> tuple[object, ...]:
    if not isinstance(row, dict):
        raise UpstreamError(400, "PGRST102", "a row is not a JSON object")
    missing = [c for c in COLUMNS if c not in row]
    if missing:
        raise UpstreamError(400, "PGRST102", f"rows without {', '.join(missing)}")
    values: list[object] = [str(uuid.uuid4())]
    for column in COLUMNS:
        value = row[column]
        if column == "raw_json" and value is not None:
            # a JSON null stays SQL NULL, so the table refuses it as PostgreSQL's NOT NULL does
            value = orjson.dumps(value).decode()  # 18-digit integers stay exact
        values.append(value)
    return (*values, now, now)
