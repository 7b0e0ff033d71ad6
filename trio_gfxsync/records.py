"""What travels from the NAS to the target: file versions, and the `Deliverable` protocol that
live records (`pokergfx.SessionRecord`) and queued ones (`state.rows.QueuedRecord`) share.

Pure data, no I/O: every layer may import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

Key = tuple[str, int]  # the conflict key of gfx_sessions: (gfx_pc_id, session_id)
Stat = tuple[int, int, int, int]  # a file's (size, mtime_ns, ctime_ns, inode)
UNKNOWN = -1  # a ctime or inode not recorded (state written by an older agent)


@dataclass(frozen=True, slots=True)
class FileVersion:
    """One version of one file, as read: what `file_state` records once it is acknowledged."""

    pc_id: str
    rel_path: str
    size: int
    mtime_ns: int
    sha256: str
    session_id: int | None = None  # None when the file never became a record (quarantine)
    ctime_ns: int = UNKNOWN
    inode: int = UNKNOWN
    hand_count: int | None = None  # None when the file never became a record

    @property
    def stat(self) -> Stat:
        return (self.size, self.mtime_ns, self.ctime_ns, self.inode)


class Deliverable(Protocol):
    """A row ready to upsert, with the file version it acknowledges once stored."""

    @property
    def version(self) -> FileVersion: ...

    @property
    def session_id(self) -> int: ...

    @property
    def hand_count(self) -> int: ...

    @property
    def row(self) -> bytes:
        """The row's JSON object, as sent in the upsert body."""
        ...

    @property
    def attempts(self) -> int:
        """How often the table has refused this record so far (0 for a live one)."""
        ...

    @property
    def version_stamp(self) -> int | None:
        """The agent's clock when it read the file (keep_newest.py)."""
        ...

    @property
    def key(self) -> Key: ...
