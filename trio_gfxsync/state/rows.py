"""Typed rows read back from the queue database."""

from __future__ import annotations

from dataclasses import dataclass

from ..records import UNKNOWN, FileVersion, Key, Stat, make_stat


@dataclass(frozen=True, slots=True)
class AckedFile:
    size: int
    mtime_ns: int
    sha256: str
    ctime_ns: int = UNKNOWN  # UNKNOWN for files acknowledged before schema 4
    inode: int = UNKNOWN

    @property
    def stat(self) -> Stat:
        return make_stat(self.size, self.mtime_ns, self.ctime_ns, self.inode)


@dataclass(frozen=True, slots=True)
class QueuedRecord:
    """A record read back from pending_sync: enough to upsert, acknowledge or dead-letter it."""

    version: FileVersion
    session_id: int
    hand_count: int
    row: bytes
    attempts: int
    version_stamp: int | None = None
    failures: int = 0  # times it failed alone (RecordFailure), apart from refusals
    first_failed_at: float | None = None  # wall clock

    @property
    def key(self) -> Key:
        return (self.version.pc_id, self.session_id)


@dataclass(frozen=True, slots=True)
class RecordFailure:
    """One record failed alone: a server error or a timeout on a request of that record only,
    while upstream answered other requests (`timed_out` or `server_error`)."""

    reason: str
    status: int | None
    code: str | None
    message: str


@dataclass(frozen=True, slots=True)
class FailingRecord:
    """A queued record that failed alone, as the alerts and the dashboard show it."""

    pc_id: str
    rel_path: str
    session_id: int
    failures: int
    since: float  # wall clock of its first failure
    reason: str
    status: int | None
    code: str | None
    message: str | None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    kind: str
    pc_id: str
    rel_path: str
    session_id: int | None
    size: int | None
    mtime_ns: int | None
    sha256: str | None
    hand_count: int | None
    reason: str
    status: int | None
    code: str | None
    message: str | None
    attempts: int
    first_seen: float
    last_seen: float
    has_payload: bool


@dataclass(frozen=True, slots=True)
class QueueCounts:
    pending: int
    pending_bytes: int
    dead_letters: int
    quarantined: int
    files: int
    oldest_pending_at: float | None = None  # queued_at of the oldest pending record (wall clock)
    failing: int = 0  # queued records that failed alone (RecordFailure)


@dataclass(frozen=True, slots=True)
class ErrorCopy:
    """A file the agent made in the error folder: a quarantined file's copy, and its note
    (`<path>.reason.txt`, on the same device). Known by inode and content: a file put there by
    anyone else under the same name is not this one."""

    path: str
    pc_id: str
    rel_path: str  # the quarantined file, in its PC folder
    device: int
    inode: int
    note_inode: int | None
    bytes: int  # copy and note together
    made_at: float
    # of the bytes written, once written: an inode number is reused after a delete (within
    # the same clock tick, so no time tells them apart); the content does
    sha256: str | None = None
    note_sha256: str | None = None

    @property
    def note_path(self) -> str:
        return self.path + NOTE_SUFFIX


NOTE_SUFFIX = ".reason.txt"


@dataclass(frozen=True, slots=True)
class KeptRegistry:
    """The last good registry file: in force while the file is gone."""

    data: bytes
    stored_at: float  # wall clock of the read that found it good
