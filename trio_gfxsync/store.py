"""The agent's durable state in one SQLite file: which file versions are acknowledged.

One connection, used from anyio worker threads through a CapacityLimiter(1), WAL journal and
`synchronous=FULL` (an acknowledgement must survive a power cut: it is what stops a re-send).
The schema carries its version in `PRAGMA user_version` and migrates itself forward.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import anyio
import anyio.to_thread

from .pokergfx import FileVersion

T = TypeVar("T")

# Each entry moves the schema from version N to N+1; never edit a released step.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE file_state (
        pc_id       TEXT    NOT NULL,
        rel_path    TEXT    NOT NULL,
        size        INTEGER NOT NULL,
        mtime_ns    INTEGER NOT NULL,
        sha256      TEXT    NOT NULL,
        acked_at    REAL    NOT NULL,
        PRIMARY KEY (pc_id, rel_path)
    ) WITHOUT ROWID;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


class StoreError(Exception):
    """The queue database cannot be used (newer schema, unreadable)."""


@dataclass(frozen=True, slots=True)
class AckedFile:
    size: int
    mtime_ns: int
    sha256: str


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=10000")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        conn.close()
        raise StoreError(
            f"{path} has schema version {version}, newer than this agent's {SCHEMA_VERSION}: "
            "upgrade the agent or move the file aside"
        )
    for step in range(version, SCHEMA_VERSION):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[step].split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {step + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return conn


class Store:
    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        self._limiter = anyio.CapacityLimiter(1)

    @classmethod
    async def open(cls, path: Path) -> Store:
        conn = await anyio.to_thread.run_sync(_connect, path)
        return cls(conn, path)

    async def close(self) -> None:
        await self._run(self._conn.close)

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    # -- file_state --

    def _file_states(self, pc_id: str) -> dict[str, AckedFile]:
        rows = self._conn.execute(
            "SELECT rel_path, size, mtime_ns, sha256 FROM file_state WHERE pc_id = ?", (pc_id,)
        )
        return {rel: AckedFile(size, mtime, sha) for rel, size, mtime, sha in rows}

    async def file_states(self, pc_id: str) -> dict[str, AckedFile]:
        return await self._run(self._file_states, pc_id)

    def _acknowledge(self, versions: list[FileVersion]) -> None:
        now = time.time()
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.executemany(
                """
                INSERT INTO file_state (pc_id, rel_path, size, mtime_ns, sha256, acked_at)
                VALUES (?, ?, ?, ?, ?, ?)
                ON CONFLICT (pc_id, rel_path) DO UPDATE SET
                    size = excluded.size, mtime_ns = excluded.mtime_ns,
                    sha256 = excluded.sha256, acked_at = excluded.acked_at
                """,
                [(v.pc_id, v.rel_path, v.size, v.mtime_ns, v.sha256, now) for v in versions],
            )

    async def acknowledge(self, versions: Iterable[FileVersion]) -> None:
        """Durably mark these file versions done; only then may a restart skip them."""
        batch = list(versions)
        if batch:
            await self._run(self._acknowledge, batch)

    def _forget(self, pc_id: str, rel_paths: list[str]) -> None:
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.executemany(
                "DELETE FROM file_state WHERE pc_id = ? AND rel_path = ?",
                [(pc_id, rel) for rel in rel_paths],
            )

    async def forget(self, pc_id: str, rel_paths: Iterable[str]) -> None:
        """A deleted source file: forget its state (its row in the database stays)."""
        batch = list(rel_paths)
        if batch:
            await self._run(self._forget, pc_id, batch)

    def _counts(self) -> dict[str, int]:
        (files,) = self._conn.execute("SELECT count(*) FROM file_state").fetchone()
        return {"files_acknowledged": files}

    async def counts(self) -> dict[str, int]:
        return await self._run(self._counts)
