"""Every query on the agent's one SQLite file: file_state, pending_sync, dead_letter.

- `file_state`: the acknowledged version of each file (DESIGN 4.1); only the ledger writes it.
- `pending_sync`: the offline queue, one row per (gfx_pc_id, session_id), the newest copy wins,
  whole rows zlib-compressed, so the queue grows with sessions and survives a deleted file.
- `dead_letter`: records the table refused `max_retries` times, and quarantined files, with
  their reason; one row per file.

One connection, used from anyio worker threads through a CapacityLimiter(1), WAL journal and
`synchronous=FULL` (an acknowledgement must survive a power cut: it is what stops a re-send).
The schema and its recovery are `schema.py`. A full disk or a locked database blocks the writer
(which is backpressure) and is reported, never raised as a crash.
"""

from __future__ import annotations

import math
import sqlite3
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

import anyio
import anyio.to_thread
import trio

from ..keep_newest import Copy
from ..logs import get_logger
from ..names import from_storage, storable
from ..reconciliation import AckedCopy
from ..records import UNKNOWN, Deliverable, FileVersion, Key, Stat, make_stat
from .rows import (
    AckedFile,
    DeadLetter,
    ErrorCopy,
    FailingRecord,
    KeptRegistry,
    QueueCounts,
    QueuedRecord,
    RecordFailure,
)
from .schema import BUSY_ERRORS, FULL_ERRORS, error_name, open_database

T = TypeVar("T")
log = get_logger("store")

WRITE_RETRY_MAX = 5.0
# No record is ever given a longer wait than this (every backoff is capped at 60 s). One due
# later than that was scheduled by a clock that has since stepped back (NTP corrected a clock
# an hour fast, a restart in between): it is due now, not in an hour.
LONGEST_WAIT = 120.0

# The one copy of the queue's keep-newest rule, as the database trigger has it (keep_newest.py):
# the larger version stamp wins; rows without stamps (queued by an older agent) fall back to
# more hands, then the newer mtime.
QUEUE_UPSERT = """
    INSERT INTO pending_sync (pc_id, session_id, rel_path, size, mtime_ns, sha256,
        hand_count, row_z, nbytes, attempts, last_error, queued_at, next_attempt_at,
        version_stamp)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (pc_id, session_id) DO UPDATE SET
        rel_path = excluded.rel_path, size = excluded.size,
        mtime_ns = excluded.mtime_ns, sha256 = excluded.sha256,
        hand_count = excluded.hand_count, row_z = excluded.row_z,
        nbytes = excluded.nbytes, attempts = excluded.attempts,
        last_error = excluded.last_error, next_attempt_at = excluded.next_attempt_at,
        version_stamp = excluded.version_stamp,
        -- another version is another record: whatever failed before was the old one's
        failures = 0, first_failed_at = NULL, failure_reason = NULL, failure_status = NULL,
        failure_code = NULL
    WHERE coalesce(excluded.version_stamp, -1) > coalesce(pending_sync.version_stamp, -1)
       OR (coalesce(excluded.version_stamp, -1) = coalesce(pending_sync.version_stamp, -1)
           AND (excluded.hand_count > pending_sync.hand_count
                OR (excluded.hand_count = pending_sync.hand_count
                    AND excluded.mtime_ns >= pending_sync.mtime_ns)))
"""


def compress(row: bytes) -> bytes:
    # level 1: the real exports shrink ~12x at a fraction of the CPU of the default level
    return zlib.compress(row, 1)


def _version(
    pc_id: str,
    rel: str,
    size: int,
    mtime: int,
    sha: str,
    session_id: int | None = None,
    hand_count: int | None = None,
    version_stamp: int | None = None,
) -> FileVersion:
    return FileVersion(
        pc_id=pc_id,
        rel_path=rel,
        size=size,
        mtime_ns=mtime,
        sha256=sha,
        session_id=session_id,
        hand_count=hand_count,
        version_stamp=version_stamp,
    )


# The versions of one path in the order of their reads: by stamp when both have one, else (state
# written by an agent older than the stamps) by mtime, a stamped read counting as the later one.
LATER_READ = """
    CASE WHEN excluded.version_stamp IS NOT NULL AND file_state.version_stamp IS NOT NULL
         THEN excluded.version_stamp >= file_state.version_stamp
         WHEN excluded.version_stamp IS NOT NULL THEN 1
         WHEN file_state.version_stamp IS NOT NULL THEN 0
         ELSE excluded.mtime_ns >= file_state.mtime_ns END
"""


# A file name that is not UTF-8 (names.py) is bound as the BLOB of its bytes: SQLite cannot
# store it as TEXT, and a lossy form would not open the file again. Process-wide on purpose:
# every str any query binds goes through it (a name reaches the store by many routes).
sqlite3.register_adapter(str, storable)


class Store:
    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        self._limiter = anyio.CapacityLimiter(1)
        self.problem: str | None = None  # disk full / locked, shown by /health
        self.recovered: str | None = None
        self._data_version = 0
        # bumped on every change of the file, ours or another process's: readers of figures
        # (the monitor, the drainer) query again only when it moved, so an idle agent is quiet
        self.generation = 0
        self.external_changes = 0  # commits by another connection (`dlq replay`) seen so far
        self.changed_elsewhere = trio.Event()  # set (then replaced) when one is seen
        # the sessions with an acknowledged copy (keep_newest.py): a reader asks for the other
        # copies of every file it reads, and at a backfill of 10^5 new files nearly none has
        # one; answering those from memory keeps the backfill off the database thread. Only
        # grows (a forgotten copy leaves a key behind: one query too many, never one too few).
        # Per PC a set of plain ints: at 10^5 sessions a set of (pc, id) tuples costs twice as much.
        self._with_copies: dict[str, set[int]] | None = None

    @classmethod
    async def open(cls, path: Path, *, recover: bool = True) -> Store:
        conn, recovered = await anyio.to_thread.run_sync(open_database, path, recover)
        store = cls(conn, path)
        store._with_copies = await store._run(store._keys_with_copies)
        if recovered:
            store.recovered = recovered
            log.error("queue_db_recreated", path=str(path), reason=recovered, rescan=True)
        return store

    async def close(self) -> None:
        await self._run(self._conn.close)

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    async def _write(self, fn: Callable[..., T], *args: object) -> T:
        """Run a write; while the disk is full or the file locked, wait and retry (backpressure)."""
        delay = 0.1
        while True:
            try:
                result = await self._run(fn, *args)
            except sqlite3.OperationalError as exc:
                name = error_name(exc)
                if name not in FULL_ERRORS | BUSY_ERRORS:
                    raise
                state = (
                    "locked" if name in BUSY_ERRORS else "not writable (full, failing or read-only)"
                )
                problem = f"queue database {state}: {name}: {exc}"
                if problem != self.problem:
                    log.error("queue_db_write_blocked", error=problem, path=str(self.path))
                self.problem = problem
                await trio.sleep(delay)
                delay = min(delay * 2, WRITE_RETRY_MAX)
                continue
            if self.problem is not None:
                log.info("queue_db_write_recovered", path=str(self.path))
                self.problem = None
            self.generation += 1
            return result

    def _transaction(self, body: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = body(conn)
            conn.execute("COMMIT")
        except BaseException:
            # SQLite rolls back by itself on some errors (SQLITE_FULL): keep the original error
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result

    # -- file_state --

    def _file_states(self, pc_id: str) -> dict[str, AckedFile]:
        rows = self._conn.execute(
            "SELECT rel_path, size, mtime_ns, sha256, coalesce(ctime_ns, -1), coalesce(inode, -1)"
            " FROM file_state WHERE pc_id = ?",
            (pc_id,),
        )
        return {
            from_storage(rel): AckedFile(size, mtime, sha, ctime, ino)
            for rel, size, mtime, sha, ctime, ino in rows
        }

    async def file_states(self, pc_id: str) -> dict[str, AckedFile]:
        return await self._run(self._file_states, pc_id)

    def _acked_stats(self, pc_id: str) -> dict[str, Stat]:
        rows = self._conn.execute(
            "SELECT rel_path, size, mtime_ns, coalesce(ctime_ns, -1), coalesce(inode, -1)"
            " FROM file_state WHERE pc_id = ?",
            (pc_id,),
        )
        return {
            from_storage(rel): make_stat(size, mtime, ctime, ino)
            for rel, size, mtime, ctime, ino in rows
        }

    async def acked_stats(self, pc_id: str) -> dict[str, Stat]:
        """What a scanner starts from: the acknowledged stat of each file (no hashes in RAM)."""
        return await self._run(self._acked_stats, pc_id)

    def _copies(self, pc_id: str, session_id: int) -> tuple[list[Copy], int | None]:
        rows = self._conn.execute(
            "SELECT rel_path, hand_count, mtime_ns, coalesce(ctime_ns, -1), version_stamp"
            " FROM file_state WHERE pc_id = ? AND session_id = ? AND hand_count IS NOT NULL",
            (pc_id, session_id),
        ).fetchall()
        stamps = [stamp for *_, stamp in rows if stamp is not None]
        copies = [
            Copy(from_storage(rel), hands, mtime, ctime) for rel, hands, mtime, ctime, _ in rows
        ]
        return copies, max(stamps, default=None)

    def _keys_with_copies(self) -> dict[str, set[int]]:
        rows = self._conn.execute(
            "SELECT DISTINCT pc_id, session_id FROM file_state WHERE hand_count IS NOT NULL"
        )
        keys: dict[str, set[int]] = {}
        for pc_id, session_id in rows:
            keys.setdefault(pc_id, set()).add(session_id)
        return keys

    async def copies(self, pc_id: str, session_id: int) -> list[Copy]:
        """The acknowledged copies of a session, one per file (keep_newest.py)."""
        return (await self.copies_and_stamp(pc_id, session_id))[0]

    async def copies_and_stamp(self, pc_id: str, session_id: int) -> tuple[list[Copy], int | None]:
        """The acknowledged copies of a session, and the largest stamp acknowledged for it (a
        new stamp for the session must be larger: keep_newest.StampClock)."""
        known = self._with_copies
        if known is not None and session_id not in known.get(pc_id, ()):
            return [], None
        return await self._run(self._copies, pc_id, session_id)

    def _largest_stamp(self) -> int:
        largest = 0
        for table in ("file_state", "pending_sync", "dead_letter"):
            (value,) = self._conn.execute(f"SELECT max(version_stamp) FROM {table}").fetchone()
            largest = max(largest, value or 0)
        return largest

    async def largest_stamp(self) -> int:
        """The largest stamp the file holds (acknowledged, queued or dead-lettered): where the
        stamps of a new run start, whatever the clock did meanwhile (keep_newest.StampClock)."""
        return await self._run(self._largest_stamp)

    def _acked_copies(self, pc_id: str) -> list[AckedCopy]:
        rows = self._conn.execute(
            "SELECT session_id, rel_path, hand_count, size, mtime_ns, coalesce(ctime_ns, -1),"
            " coalesce(inode, -1), sha256 FROM file_state"
            " WHERE pc_id = ? AND session_id IS NOT NULL AND hand_count IS NOT NULL",
            (pc_id,),
        )
        return [
            AckedCopy(session_id, from_storage(rel), hands, make_stat(size, mtime, ctime, ino), sha)
            for session_id, rel, hands, size, mtime, ctime, ino, sha in rows
        ]

    async def acked_copies(self, pc_id: str) -> list[AckedCopy]:
        """Every acknowledged file of a PC that holds a session, for reconciliation."""
        return await self._run(self._acked_copies, pc_id)

    def _waiting_sessions(self, pc_id: str) -> set[int]:
        rows = self._conn.execute(
            "SELECT session_id FROM pending_sync WHERE pc_id = ?"
            " UNION SELECT session_id FROM dead_letter"
            " WHERE pc_id = ? AND kind = 'refused' AND session_id IS NOT NULL",
            (pc_id, pc_id),
        )
        return {int(session_id) for (session_id,) in rows}

    async def waiting_sessions(self, pc_id: str) -> set[int]:
        """Sessions of a PC with a record waiting: queued, or refused by the table."""
        return await self._run(self._waiting_sessions, pc_id)

    def _sessions_of(self, pc_id: str, rel_paths: list[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for rel in rel_paths:
            row = self._conn.execute(
                "SELECT session_id FROM file_state WHERE pc_id = ? AND rel_path = ?",
                (pc_id, rel),
            ).fetchone()
            if row is not None and row[0] is not None:
                found[rel] = int(row[0])
        return found

    async def sessions_of(self, pc_id: str, rel_paths: list[str]) -> dict[str, int]:
        return await self._run(self._sessions_of, pc_id, rel_paths)

    def _acked_hash(self, pc_id: str, rel_path: str) -> str | None:
        row = self._conn.execute(
            "SELECT sha256 FROM file_state WHERE pc_id = ? AND rel_path = ?", (pc_id, rel_path)
        ).fetchone()
        return None if row is None else str(row[0])

    async def acked_hash(self, pc_id: str, rel_path: str) -> str | None:
        return await self._run(self._acked_hash, pc_id, rel_path)

    def _ack_rows(
        self, conn: sqlite3.Connection, versions: Sequence[FileVersion], now: float
    ) -> None:
        if self._with_copies is not None:
            # before the write: a reader that looks while it commits still finds the key
            for v in versions:
                if v.session_id is not None and v.hand_count is not None:
                    self._with_copies.setdefault(v.pc_id, set()).add(v.session_id)
        conn.executemany(
            """
            INSERT INTO file_state (pc_id, rel_path, size, mtime_ns, sha256, acked_at, session_id,
                ctime_ns, inode, hand_count, version_stamp)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (pc_id, rel_path) DO UPDATE SET
                size = excluded.size, mtime_ns = excluded.mtime_ns, sha256 = excluded.sha256,
                acked_at = excluded.acked_at, session_id = excluded.session_id,
                ctime_ns = excluded.ctime_ns, inode = excluded.inode,
                hand_count = excluded.hand_count, version_stamp = excluded.version_stamp
            -- an older read acknowledged late (a dead letter from the queue, two saves at
            -- once) must not replace a newer one, whatever the mtimes say (a backup restored
            -- with its times, a PC clock corrected): a restart would re-send an unchanged file
            WHERE """
            + LATER_READ,
            [
                (
                    v.pc_id,
                    v.rel_path,
                    v.size,
                    v.mtime_ns,
                    v.sha256,
                    now,
                    v.session_id,
                    None if v.ctime_ns == UNKNOWN else v.ctime_ns,
                    None if v.inode == UNKNOWN else v.inode,
                    v.hand_count,
                    v.version_stamp,
                )
                for v in versions
            ],
        )

    def _acknowledge(self, versions: list[FileVersion], stored: list[tuple[str, int, int]]) -> None:
        def body(conn: sqlite3.Connection) -> None:
            self._ack_rows(conn, versions, time.time())
            # a quarantined file that now syncs is resolved
            conn.executemany(
                "DELETE FROM dead_letter WHERE pc_id = ? AND rel_path = ? AND kind = 'quarantine'",
                [(v.pc_id, v.rel_path) for v in versions],
            )
            # a queued copy older than the one just stored would only be skipped by the table
            # (or, stamped by another run, overwrite it): it is done
            conn.executemany(
                "DELETE FROM pending_sync WHERE pc_id = ? AND session_id = ?"
                " AND coalesce(version_stamp, -1) < ?",
                stored,
            )

        self._transaction(body)

    async def acknowledge(
        self, versions: Iterable[FileVersion], stored: Iterable[tuple[Key, int]] = ()
    ) -> None:
        """Durably mark these file versions done; only then may a restart skip them.
        `stored`: (key, stamp) of rows the table just stored: queued copies of those keys
        with a smaller stamp are removed in the same transaction."""
        batch = list(versions)
        drop = [(pc_id, session_id, stamp) for (pc_id, session_id), stamp in stored]
        if batch or drop:
            await self._write(self._acknowledge, batch, drop)

    def _forget(self, pc_id: str, rel_paths: list[str]) -> None:
        self._transaction(
            lambda conn: conn.executemany(
                "DELETE FROM file_state WHERE pc_id = ? AND rel_path = ?",
                [(pc_id, rel) for rel in rel_paths],
            )
        )

    async def forget(self, pc_id: str, rel_paths: Iterable[str]) -> None:
        """A deleted source file: forget its state (its row in the database stays)."""
        batch = list(rel_paths)
        if batch:
            await self._write(self._forget, pc_id, batch)

    # -- pending_sync: the offline queue --

    def _enqueue(
        self,
        records: list[Deliverable],
        acked: list[FileVersion],
        attempts: dict[Key, int],
        next_attempt_at: float,
        error: str | None,
        failure: RecordFailure | None,
    ) -> None:
        now = time.time()

        def body(conn: sqlite3.Connection) -> None:
            rows = []
            for record in records:
                v = record.version
                row_z = compress(record.row)
                rows.append(
                    (
                        v.pc_id,
                        record.session_id,
                        v.rel_path,
                        v.size,
                        v.mtime_ns,
                        v.sha256,
                        record.hand_count,
                        row_z,
                        len(row_z),
                        attempts.get(record.key, 0),
                        error,
                        now,
                        next_attempt_at,
                        record.version_stamp,
                    )
                )
            conn.executemany(QUEUE_UPSERT, rows)
            if failure is not None:
                for record in records:
                    self._note_failure(conn, record, failure, now, next_attempt_at)
            self._ack_rows(conn, acked, now)

        self._transaction(body)

    async def enqueue(
        self,
        records: Sequence[Deliverable],
        acked: Sequence[FileVersion],
        *,
        attempts: dict[Key, int] | None = None,
        delay: float = 0.0,
        error: str | None = None,
        front: bool = False,
        failure: RecordFailure | None = None,
    ) -> None:
        """Queue records and, in the same transaction, acknowledge the file versions they carry.
        `front`: the drainer takes them before everything else (live changes). `failure`: they
        failed alone (RecordFailure): counted, and retried apart from the rest of the queue."""
        if records or acked:
            await self._write(
                self._enqueue,
                list(records),
                list(acked),
                attempts or {},
                0.0 if front else time.time() + delay,
                error,
                failure,
            )

    def _note_failure(
        self,
        conn: sqlite3.Connection,
        record: Deliverable,
        failure: RecordFailure,
        now: float,
        next_attempt_at: float,
    ) -> None:
        conn.execute(
            """UPDATE pending_sync SET failures = failures + 1,
                   first_failed_at = coalesce(first_failed_at, ?), failure_reason = ?,
                   failure_status = ?, failure_code = ?, last_error = ?, next_attempt_at = ?
               WHERE pc_id = ? AND session_id = ? AND sha256 = ?""",
            (
                now,
                failure.reason,
                failure.status,
                failure.code,
                failure.message,
                next_attempt_at,
                record.version.pc_id,
                record.session_id,
                record.version.sha256,
            ),
        )

    def _failed(self, record: Deliverable, failure: RecordFailure, when: float) -> None:
        self._transaction(lambda conn: self._note_failure(conn, record, failure, time.time(), when))

    async def failed_alone(self, record: Deliverable, failure: RecordFailure, delay: float) -> None:
        """A queued record failed once more on its own: count it, retry it after `delay`."""
        await self._write(self._failed, record, failure, time.time() + delay)

    def _due(self, now: float, limit: int, max_bytes: int, failing: bool) -> list[QueuedRecord]:
        rows = self._conn.execute(
            f"""
            SELECT pc_id, session_id, rel_path, size, mtime_ns, sha256, hand_count, row_z, attempts,
                version_stamp, failures, first_failed_at
            FROM pending_sync
            WHERE (next_attempt_at <= ? OR next_attempt_at > ?)
                AND failures {">" if failing else "="} 0
            ORDER BY next_attempt_at, queued_at LIMIT ?
            """,
            (now, now + LONGEST_WAIT, limit),
        )
        found: list[QueuedRecord] = []
        total = 2
        for (
            pc_id,
            session_id,
            rel,
            size,
            mtime,
            sha,
            hands,
            row_z,
            attempts,
            stamp,
            failures,
            failed_at,
        ) in rows:
            row = zlib.decompress(row_z)
            if found and total + len(row) + 1 > max_bytes:
                break
            total += len(row) + 1
            version = _version(pc_id, from_storage(rel), size, mtime, sha, session_id, hands, stamp)
            found.append(
                QueuedRecord(version, session_id, hands, row, attempts, stamp, failures, failed_at)
            )
        return found

    async def due(self, limit: int, max_bytes: int) -> list[QueuedRecord]:
        """Queued records whose time has come, oldest first, within one request's limits;
        records that failed alone are not among them (`failing_due`)."""
        return await self._run(self._due, time.time(), limit, max_bytes, False)

    async def failing_due(self) -> QueuedRecord | None:
        """The record that failed alone whose next attempt is due first, if one is."""
        found = await self._run(self._due, time.time(), 1, 2**62, True)
        return found[0] if found else None

    def _next_due(self, failing: bool) -> float:
        (value,) = self._conn.execute(
            "SELECT min(next_attempt_at) FROM pending_sync WHERE failures "
            + ("> 0" if failing else "= 0")
        ).fetchone()
        if value is None:
            return math.inf
        return min(float(value), time.time() + LONGEST_WAIT)  # a clock stepped back: not later

    async def next_due(self, *, failing: bool = False) -> float:
        """Wall-clock time of the next queued record's attempt (inf when the queue is empty):
        of the records that failed alone, or of the rest."""
        return await self._run(self._next_due, failing)

    def _failing(self) -> list[FailingRecord]:
        rows = self._conn.execute(
            "SELECT pc_id, rel_path, session_id, failures, first_failed_at, failure_reason,"
            " failure_status, failure_code, last_error FROM pending_sync WHERE failures > 0"
            " ORDER BY first_failed_at LIMIT 100"
        )
        return [
            FailingRecord(pc_id, from_storage(rel), session_id, n, since, reason, status, code, msg)
            for pc_id, rel, session_id, n, since, reason, status, code, msg in rows
        ]

    async def failing(self) -> list[FailingRecord]:
        """Queued records that failed alone (at most 100, the longest failing first)."""
        return await self._run(self._failing)

    def _remove(self, records: list[QueuedRecord]) -> None:
        # only the copy that was sent: a newer one may have replaced it meanwhile
        self._transaction(
            lambda conn: conn.executemany(
                "DELETE FROM pending_sync WHERE pc_id = ? AND session_id = ? AND sha256 = ?",
                [(r.version.pc_id, r.session_id, r.version.sha256) for r in records],
            )
        )

    async def remove_queued(self, records: Sequence[QueuedRecord]) -> None:
        if records:
            await self._write(self._remove, list(records))

    def _retry_later(self, record: QueuedRecord, attempts: int, when: float, error: str) -> None:
        self._transaction(
            lambda conn: conn.execute(
                """UPDATE pending_sync SET attempts = ?, next_attempt_at = ?, last_error = ?
                   WHERE pc_id = ? AND session_id = ? AND sha256 = ?""",
                (
                    attempts,
                    when,
                    error,
                    record.version.pc_id,
                    record.session_id,
                    record.version.sha256,
                ),
            )
        )

    async def retry_later(
        self, record: QueuedRecord, attempts: int, delay: float, error: str
    ) -> None:
        await self._write(self._retry_later, record, attempts, time.time() + delay, error)

    def _postpone(self, records: list[QueuedRecord], when: float) -> None:
        self._transaction(
            lambda conn: conn.executemany(
                """UPDATE pending_sync SET next_attempt_at = max(next_attempt_at, ?)
                   WHERE pc_id = ? AND session_id = ? AND sha256 = ?""",
                [(when, r.version.pc_id, r.session_id, r.version.sha256) for r in records],
            )
        )

    async def postpone(self, records: Sequence[QueuedRecord], delay: float) -> None:
        """Let other queued rows go first (no attempt is counted: this is not a refusal)."""
        if records:
            await self._write(self._postpone, list(records), time.time() + delay)

    # -- the error folder's copies (intake/error_folder.py) --

    _EC_COLUMNS = (
        "path, pc_id, rel_path, device, inode, note_inode, bytes, made_at, sha256, note_sha256"
    )

    def _error_copies(self, where: str, params: tuple[object, ...]) -> list[ErrorCopy]:
        rows = self._conn.execute(f"SELECT {self._EC_COLUMNS} FROM error_copy {where}", params)
        return [
            ErrorCopy(from_storage(path), pc, from_storage(rel), *rest)
            for path, pc, rel, *rest in rows
        ]

    async def error_copies_of(self, pc_id: str, rel_path: str) -> list[ErrorCopy]:
        """The copies made of one quarantined file (an earlier version's, to be replaced)."""
        return await self._run(
            self._error_copies, "WHERE pc_id = ? AND rel_path = ?", (pc_id, rel_path)
        )

    async def oldest_error_copies(self, limit: int) -> list[ErrorCopy]:
        return await self._run(self._error_copies, "ORDER BY made_at, path LIMIT ?", (limit,))

    def _error_copy_bytes(self) -> int:
        return int(
            self._conn.execute("SELECT coalesce(sum(bytes), 0) FROM error_copy").fetchone()[0]
        )

    async def error_copy_bytes(self) -> int:
        return await self._run(self._error_copy_bytes)

    def _record_error_copy(self, copy: ErrorCopy) -> None:
        self._conn.execute(
            f"INSERT OR REPLACE INTO error_copy ({self._EC_COLUMNS})"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                copy.path,
                copy.pc_id,
                copy.rel_path,
                copy.device,
                copy.inode,
                copy.note_inode,
                copy.bytes,
                copy.made_at,
                copy.sha256,
                copy.note_sha256,
            ),
        )

    async def record_error_copy(self, copy: ErrorCopy) -> None:
        """Durable before a byte is written into it: a crash leaves no copy unknown."""
        await self._write(self._record_error_copy, copy)

    def _forget_error_copies(self, paths: list[str]) -> None:
        self._transaction(
            lambda conn: conn.executemany(
                "DELETE FROM error_copy WHERE path = ?", [(p,) for p in paths]
            )
        )

    async def forget_error_copies(self, paths: Iterable[str]) -> None:
        if paths := list(paths):
            await self._write(self._forget_error_copies, paths)

    # -- dead letters and quarantine --

    def _dead_letter(
        self,
        kind: str,
        version: FileVersion,
        session_id: int | None,
        hand_count: int | None,
        reason: str,
        status: int | None,
        code: str | None,
        message: str | None,
        attempts: int,
        row: bytes | None,
        drop_queued: bool,
        version_stamp: int | None = None,
    ) -> None:
        now = time.time()

        def body(conn: sqlite3.Connection) -> None:
            conn.execute(
                """
                INSERT INTO dead_letter (kind, pc_id, rel_path, session_id, size, mtime_ns,
                    sha256, hand_count, reason, status, code, message, attempts, first_seen,
                    last_seen, row_z, version_stamp)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (pc_id, rel_path) DO UPDATE SET
                    kind = excluded.kind, session_id = excluded.session_id,
                    size = excluded.size, mtime_ns = excluded.mtime_ns, sha256 = excluded.sha256,
                    hand_count = excluded.hand_count, reason = excluded.reason,
                    status = excluded.status, code = excluded.code, message = excluded.message,
                    attempts = excluded.attempts, last_seen = excluded.last_seen,
                    row_z = excluded.row_z, version_stamp = excluded.version_stamp
                """,
                (
                    kind,
                    version.pc_id,
                    version.rel_path,
                    session_id,
                    version.size,
                    version.mtime_ns,
                    version.sha256,
                    hand_count,
                    reason,
                    status,
                    code,
                    message,
                    attempts,
                    now,
                    now,
                    compress(row) if row is not None else None,
                    version_stamp,
                ),
            )
            if drop_queued and session_id is not None:
                conn.execute(
                    "DELETE FROM pending_sync WHERE pc_id = ? AND session_id = ? AND sha256 = ?",
                    (version.pc_id, session_id, version.sha256),
                )
            self._ack_rows(conn, [version], now)

        self._transaction(body)

    async def dead_letter(
        self,
        record: Deliverable,
        *,
        reason: str,
        status: int | None,
        code: str | None,
        message: str,
        attempts: int,
    ) -> None:
        """A record the table refused for good: keep it (with its row, for replay), ack its file."""
        await self._write(
            self._dead_letter,
            "refused",
            record.version,
            record.session_id,
            record.hand_count,
            reason,
            status,
            code,
            message,
            attempts,
            record.row,
            True,
            record.version_stamp,
        )

    async def quarantine(self, version: FileVersion, reason: str, message: str) -> None:
        """A bad file: recorded with its reason and acknowledged until the file changes."""
        await self._write(
            self._dead_letter,
            "quarantine",
            version,
            None,
            None,
            reason,
            None,
            None,
            message,
            0,
            None,
            False,
        )

    _DL_COLUMNS = (
        "id, kind, pc_id, rel_path, session_id, size, mtime_ns, sha256, hand_count, reason,"
        " status, code, message, attempts, first_seen, last_seen, row_z IS NOT NULL"
    )

    def _dead_letters(self, where: str = "", params: tuple[int, ...] = ()) -> list[DeadLetter]:
        rows = self._conn.execute(
            f"SELECT {self._DL_COLUMNS} FROM dead_letter {where} ORDER BY id", params
        )
        return [
            DeadLetter(
                id=r[0],
                kind=r[1],
                pc_id=r[2],
                rel_path=from_storage(r[3]),
                session_id=r[4],
                size=r[5],
                mtime_ns=r[6],
                sha256=r[7],
                hand_count=r[8],
                reason=r[9],
                status=r[10],
                code=r[11],
                message=r[12],
                attempts=r[13],
                first_seen=r[14],
                last_seen=r[15],
                has_payload=bool(r[16]),
            )
            for r in rows
        ]

    async def dead_letters(self) -> list[DeadLetter]:
        return await self._run(self._dead_letters)

    async def recent_dead_letters(self, limit: int) -> list[DeadLetter]:
        """The newest `limit` entries (bounded: the dashboard reads it every refresh)."""
        newest = await self._run(
            self._dead_letters,
            "WHERE id IN (SELECT id FROM dead_letter ORDER BY last_seen DESC, id DESC LIMIT ?)",
            (limit,),
        )
        return sorted(newest, key=lambda e: (e.last_seen, e.id))

    async def get_dead_letter(self, entry_id: int) -> DeadLetter | None:
        found = await self._run(self._dead_letters, "WHERE id = ?", (entry_id,))
        return found[0] if found else None

    def _replay(self, entry_ids: list[int] | None) -> list[int]:
        def body(conn: sqlite3.Connection) -> list[int]:
            where, params = (
                ("", ())
                if entry_ids is None
                else (
                    f"WHERE id IN ({','.join('?' * len(entry_ids))})",
                    tuple(entry_ids),
                )
            )
            rows = conn.execute(
                "SELECT id, pc_id, rel_path, session_id, size, mtime_ns, sha256,"
                f" hand_count, row_z, version_stamp FROM dead_letter {where}",
                params,
            ).fetchall()
            now = time.time()
            for entry_id, pc_id, rel, session_id, size, mtime, sha, hands, row_z, stamp in rows:
                if row_z is not None:
                    # back into the queue with a clean slate; keep-newest still applies
                    # attempts 0, last_error NULL, queued and due now
                    values = (pc_id, session_id, rel, size, mtime, sha, hands, row_z, len(row_z))
                    conn.execute(QUEUE_UPSERT, (*values, 0, None, now, now, stamp))
                else:
                    # a quarantined file: forget its state so the agent reads it again
                    conn.execute(
                        "DELETE FROM file_state WHERE pc_id = ? AND rel_path = ?", (pc_id, rel)
                    )
                conn.execute("DELETE FROM dead_letter WHERE id = ?", (entry_id,))
            return [row[0] for row in rows]

        return self._transaction(body)

    async def replay(self, entry_ids: list[int] | None) -> list[int]:
        """Move dead letters back (None: all); returns the ids replayed."""
        return await self._write(self._replay, entry_ids)

    def _purge(self, entry_id: int) -> bool:
        cursor = self._transaction(
            lambda conn: conn.execute("DELETE FROM dead_letter WHERE id = ?", (entry_id,))
        )
        return cursor.rowcount > 0

    async def purge(self, entry_id: int) -> bool:
        return await self._write(self._purge, entry_id)

    # -- figures and change detection --

    def _sessions_synced(self) -> dict[str, int]:
        # sessions with an acknowledged file, less those still waiting in the offline queue
        # and those whose acknowledged version is a dead letter (acknowledged, never stored)
        rows = self._conn.execute(
            """
            SELECT f.pc_id, count(DISTINCT f.session_id) FROM file_state f
            WHERE f.session_id IS NOT NULL AND NOT EXISTS (
                SELECT 1 FROM pending_sync p
                WHERE p.pc_id = f.pc_id AND p.session_id = f.session_id)
            AND NOT EXISTS (
                SELECT 1 FROM dead_letter d
                WHERE d.pc_id = f.pc_id AND d.rel_path = f.rel_path AND d.sha256 = f.sha256)
            GROUP BY f.pc_id
            """
        )
        return dict(rows.fetchall())

    async def sessions_synced(self) -> dict[str, int]:
        return await self._run(self._sessions_synced)

    # -- what should be watched: the kept registry, the PCs watched so far --

    def _kept_registry(self) -> KeptRegistry | None:
        row = self._conn.execute("SELECT data, stored_at FROM kept_registry").fetchone()
        return None if row is None else KeptRegistry(bytes(row[0]), float(row[1]))

    async def kept_registry(self) -> KeptRegistry | None:
        """The last good registry file's bytes and when they were read (None: never one)."""
        return await self._run(self._kept_registry)

    def _keep_registry(self, data: bytes, at: float) -> None:
        self._conn.execute(
            "INSERT INTO kept_registry (id, data, stored_at) VALUES (1, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET data = excluded.data, stored_at = excluded.stored_at",
            (data, at),
        )

    async def keep_registry(self, data: bytes, at: float) -> None:
        await self._write(self._keep_registry, data, at)

    def _forget_registry(self) -> bool:
        return self._conn.execute("DELETE FROM kept_registry").rowcount > 0

    async def forget_registry(self) -> bool:
        """Back to discovery (while no registry file exists); False when none was kept."""
        return await self._write(self._forget_registry)

    def _known_pcs(self) -> dict[str, str]:
        rows = self._conn.execute("SELECT pc_id, watch_path FROM known_pc ORDER BY pc_id")
        return {str(pc_id): str(watch_path) for pc_id, watch_path in rows}

    async def known_pcs(self) -> dict[str, str]:
        """The PCs watched so far (id -> watch_path), until the registry drops them or
        `pcs forget`."""
        return await self._run(self._known_pcs)

    def _note_known_pcs(self, pcs: dict[str, str], at: float) -> None:
        self._conn.executemany(
            "INSERT INTO known_pc (pc_id, watch_path, since) VALUES (?, ?, ?) "
            "ON CONFLICT (pc_id) DO UPDATE SET watch_path = excluded.watch_path",
            [(pc_id, watch_path, at) for pc_id, watch_path in pcs.items()],
        )

    async def note_known_pcs(self, pcs: dict[str, str], at: float) -> None:
        await self._write(self._note_known_pcs, pcs, at)

    def _forget_pcs(self, pc_ids: list[str]) -> list[str]:
        gone = []
        for pc_id in pc_ids:
            if self._conn.execute("DELETE FROM known_pc WHERE pc_id = ?", (pc_id,)).rowcount:
                gone.append(pc_id)
        return gone

    async def forget_pcs(self, pc_ids: Iterable[str]) -> list[str]:
        """No longer watched: those that were known."""
        return await self._write(self._forget_pcs, list(pc_ids))

    def _drop_pcs(self, pc_ids: list[str]) -> int:
        def body(conn: sqlite3.Connection) -> int:
            queued = 0
            for pc_id in pc_ids:
                queued += conn.execute(
                    "DELETE FROM pending_sync WHERE pc_id = ?", (pc_id,)
                ).rowcount
                conn.execute("DELETE FROM file_state WHERE pc_id = ?", (pc_id,))
                conn.execute("DELETE FROM known_pc WHERE pc_id = ?", (pc_id,))
            return queued

        return self._transaction(body)

    async def drop_pcs(self, pc_ids: Iterable[str]) -> int:
        """Everything local of PCs the registry does not name (`reconcile --unknown-pcs
        --apply`): their queued records (else the drainer would write their rows again), their
        acknowledged files, their place among the PCs watched. How many records were queued."""
        return await self._write(self._drop_pcs, list(pc_ids))

    def _retried(self, attempts: int) -> int:
        (count,) = self._conn.execute(
            "SELECT count(*) FROM pending_sync WHERE attempts >= ?", (attempts,)
        ).fetchone()
        return int(count)

    async def retried(self, attempts: int) -> int:
        """Queued records the table has refused at least `attempts` times."""
        return await self._run(self._retried, attempts)

    def _counts(self) -> QueueCounts:
        conn = self._conn
        pending, pending_bytes, oldest = conn.execute(
            "SELECT count(*), coalesce(sum(nbytes), 0), min(queued_at) FROM pending_sync"
        ).fetchone()
        dead, quarantined = conn.execute(
            "SELECT count(*) FILTER (WHERE kind = 'refused'),"
            " count(*) FILTER (WHERE kind = 'quarantine') FROM dead_letter"
        ).fetchone()
        (files,) = conn.execute("SELECT count(*) FROM file_state").fetchone()
        (failing,) = conn.execute("SELECT count(*) FROM pending_sync WHERE failures > 0").fetchone()
        return QueueCounts(pending, pending_bytes, dead, quarantined, files, oldest, failing)

    async def counts(self) -> QueueCounts:
        return await self._run(self._counts)

    def _external_change(self) -> bool:
        (version,) = self._conn.execute("PRAGMA data_version").fetchone()
        changed = version != self._data_version
        self._data_version = int(version)
        return bool(changed)

    async def check_elsewhere(self) -> int:
        """Look for commits by another connection (the `dlq` command); returns how many such
        changes were seen so far (compare with the last value you saw)."""
        if await self._run(self._external_change):
            self.external_changes += 1
            self.generation += 1
            self.changed_elsewhere.set()
            self.changed_elsewhere = trio.Event()
        return self.external_changes
