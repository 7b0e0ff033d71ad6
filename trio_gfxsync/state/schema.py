"""The queue database's schema and how the file is opened: tables, forward-only migrations
(`PRAGMA user_version`), WAL with `synchronous=FULL`, and recovery of a damaged file.

A corrupt file is moved aside (with its -wal and -shm) and recreated: the NAS is the source of
truth, so a full rescan rebuilds everything. Only the agent recovers; a command run beside it
(`dlq`) must never move the agent's file away.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import StoreError

# Each entry moves the schema from version N to N+1; never edit a released step.
MIGRATIONS: tuple[str, ...] = (
    # 1: acknowledged file versions
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
    # 2: offline queue and dead letters
    """
    CREATE TABLE pending_sync (
        pc_id           TEXT    NOT NULL,
        session_id      INTEGER NOT NULL,
        rel_path        TEXT    NOT NULL,
        size            INTEGER NOT NULL,
        mtime_ns        INTEGER NOT NULL,
        sha256          TEXT    NOT NULL,
        hand_count      INTEGER NOT NULL,
        row_z           BLOB    NOT NULL,
        nbytes          INTEGER NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        last_error      TEXT,
        queued_at       REAL    NOT NULL,
        next_attempt_at REAL    NOT NULL,
        PRIMARY KEY (pc_id, session_id)
    );
    CREATE INDEX pending_sync_due ON pending_sync (next_attempt_at, queued_at);
    CREATE TABLE dead_letter (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        kind        TEXT    NOT NULL CHECK (kind IN ('quarantine', 'refused')),
        pc_id       TEXT    NOT NULL,
        rel_path    TEXT    NOT NULL,
        session_id  INTEGER,
        size        INTEGER,
        mtime_ns    INTEGER,
        sha256      TEXT,
        hand_count  INTEGER,
        reason      TEXT    NOT NULL,
        status      INTEGER,
        code        TEXT,
        message     TEXT,
        attempts    INTEGER NOT NULL DEFAULT 0,
        first_seen  REAL    NOT NULL,
        last_seen   REAL    NOT NULL,
        row_z       BLOB,
        UNIQUE (pc_id, rel_path)
    );
    """,
)
MIGRATIONS += (
    # 3: the session each acknowledged file holds, for "sessions synced" per PC
    """
    ALTER TABLE file_state ADD COLUMN session_id INTEGER;
    CREATE INDEX file_state_session ON file_state (pc_id, session_id);
    """,
)
MIGRATIONS += (
    # 4: a change is any difference in (size, mtime, ctime, inode): a copy that keeps size and
    # mtime is still seen. NULL: acknowledged by an older agent, compared on size and mtime.
    """
    ALTER TABLE file_state ADD COLUMN ctime_ns INTEGER;
    ALTER TABLE file_state ADD COLUMN inode INTEGER;
    """,
)
MIGRATIONS += (
    # 5: keep-newest follows the files (keep_newest.py): each file's hand count, for choosing
    # among the copies of a session, and the version stamp of what is queued or dead-lettered
    """
    ALTER TABLE file_state ADD COLUMN hand_count INTEGER;
    ALTER TABLE pending_sync ADD COLUMN version_stamp INTEGER;
    ALTER TABLE dead_letter ADD COLUMN version_stamp INTEGER;
    """,
)
MIGRATIONS += (
    # 6: clocks cannot turn a version back (keep_newest.py). file_state orders the versions of
    # one path by the stamp of their read, never by mtime; a queued record that fails alone
    # (a statement timeout, a 500 on that record only) keeps its own count, reason and since
    # when, apart from the table's refusals (`attempts`)
    """
    ALTER TABLE file_state ADD COLUMN version_stamp INTEGER;
    ALTER TABLE pending_sync ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE pending_sync ADD COLUMN first_failed_at REAL;
    ALTER TABLE pending_sync ADD COLUMN failure_reason TEXT;
    ALTER TABLE pending_sync ADD COLUMN failure_status INTEGER;
    ALTER TABLE pending_sync ADD COLUMN failure_code TEXT;
    """,
)
MIGRATIONS += (
    # 7: every file the agent makes in the error folder (a copy of a quarantined file and its
    # note), by device, inode and content: pruning removes these and nothing else, and a copy
    # never replaces a file the agent did not make
    """
    CREATE TABLE error_copy (
        path        TEXT    NOT NULL PRIMARY KEY,
        pc_id       TEXT    NOT NULL,
        rel_path    TEXT    NOT NULL,
        device      INTEGER NOT NULL,
        inode       INTEGER NOT NULL,
        note_inode  INTEGER,
        bytes       INTEGER NOT NULL,
        made_at     REAL    NOT NULL,
        sha256      TEXT,
        note_sha256 TEXT
    );
    CREATE INDEX error_copy_source ON error_copy (pc_id, rel_path);
    CREATE INDEX error_copy_age ON error_copy (made_at);
    """,
)
MIGRATIONS += (
    # 8: what the agent should be watching, across restarts. The last good registry file (its
    # bytes, and when it was read): while the file is gone it stays in force, and discovery
    # runs only when none was ever stored. The PCs watched so far: one whose folder is gone is
    # `missing` until the registry drops it or `pcs forget`; those with acknowledged files are
    # the ones an older agent watched.
    """
    CREATE TABLE kept_registry (
        id          INTEGER PRIMARY KEY CHECK (id = 1),
        data        BLOB    NOT NULL,
        stored_at   REAL    NOT NULL
    );
    CREATE TABLE known_pc (
        pc_id       TEXT    NOT NULL PRIMARY KEY,
        watch_path  TEXT    NOT NULL,
        since       REAL    NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO known_pc (pc_id, watch_path, since)
        SELECT pc_id, pc_id, min(acked_at) FROM file_state GROUP BY pc_id;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)
CORRUPT_ERRORS = frozenset({"SQLITE_CORRUPT", "SQLITE_NOTADB"})
# Primary result codes (error_name strips the extended part: SQLITE_IOERR_FSYNC is an IOERR).
# A disk that is full, failing or turned read-only under the agent passes with time or an
# operator: the agent waits (backpressure) and says so in /health; it never crashes on it.
FULL_ERRORS = frozenset({"SQLITE_FULL", "SQLITE_IOERR", "SQLITE_READONLY", "SQLITE_CANTOPEN"})
BUSY_ERRORS = frozenset({"SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_PROTOCOL"})


def error_name(exc: sqlite3.Error) -> str:
    """The primary result code's name: "SQLITE_BUSY" for SQLITE_BUSY_RECOVERY too."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    return "_".join(name.split("_")[:2])


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
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


def _damaged(exc: BaseException) -> bool:
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    return not isinstance(exc, sqlite3.OperationalError) or error_name(exc) in CORRUPT_ERRORS


def _connect(path: Path, on_damage: Callable[[], None] | None = None) -> sqlite3.Connection:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create {path.parent}: {exc.strerror}") from None
    # A short busy timeout per call keeps every worker-thread call short (shutdown deadlines
    # cannot interrupt a thread); Store._write retries a longer lock with backoff.
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=2)
    try:
        conn.execute("PRAGMA busy_timeout=2000")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        result = conn.execute("PRAGMA quick_check").fetchone()[0]
        if result != "ok":
            raise sqlite3.DatabaseError(f"quick_check: {result}")
        _migrate(conn, path)
    except BaseException as exc:
        if on_damage is not None and _damaged(exc):
            # before the close: closing the last connection deletes the -wal and -shm (or
            # checkpoints them into the damaged file), and they belong with it, moved aside
            on_damage()
        conn.close()
        raise
    return conn


def move_aside(path: Path) -> Path:
    """Move a corrupt database and its -wal/-shm out of the way; return the new name."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{path}{suffix}")
        if source.exists():
            source.rename(Path(f"{target}{suffix}"))
    return target


def open_database(path: Path, recover: bool = True) -> tuple[sqlite3.Connection, str | None]:
    """Blocking: open (or create) the database; a corrupt one is moved aside and recreated.

    Returns the connection and, when it recovered, what was wrong and where the old file went.
    Only the agent recovers; a command run beside it (`dlq`) must not move its file away.
    """
    moved: list[Path] = []
    try:
        return _connect(path, (lambda: moved.append(move_aside(path))) if recover else None), None
    except sqlite3.DatabaseError as exc:
        if not _damaged(exc):
            raise StoreError(f"cannot open {path}: {exc}") from None
        if not recover or not moved:
            raise StoreError(
                f"{path} is damaged ({exc}); the agent recreates it at start"
            ) from None
        return _connect(path), f"{exc}; moved to {moved[0].name}"
