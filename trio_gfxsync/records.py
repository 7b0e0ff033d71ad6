"""What travels from the NAS to the target: file versions, and the `Deliverable` protocol that
live records (`pokergfx.SessionRecord`) and queued ones (`state.rows.QueuedRecord`) share.

Pure data, no I/O: every layer may import it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import NewType, Protocol

Key = tuple[str, int]  # the conflict key of gfx_sessions: (gfx_pc_id, session_id)
# what an upsert wrote: the key of each row it stored, with the file_hash stored
Written = dict[Key, str | None]
UNKNOWN = -1  # a ctime or inode not recorded (state written by an older agent)

# A file's (size, mtime_ns, ctime_ns, inode), packed into one int: the agent keeps one for
# every file it watches, twice (what the folder shows, what was acknowledged), and at 10^5
# files a tuple of four ints costs 208 bytes where one 264-bit int costs 64. Equal stats are
# equal ints; `stat_fields` gives the four back. Each field is stored plus _OFFSET in _WIDTH
# bits: timestamps are clamped to int64 (below), an inode may use all 64 unsigned bits, and
# UNKNOWN is -1.
Stat = NewType("Stat", int)
_WIDTH = 66
_OFFSET = 1 << 64
_MASK = (1 << _WIDTH) - 1


def make_stat(size: int, mtime_ns: int, ctime_ns: int, inode: int) -> Stat:
    return Stat(
        (
            (((size + _OFFSET) << _WIDTH | mtime_ns + _OFFSET) << _WIDTH | ctime_ns + _OFFSET)
            << _WIDTH
        )
        | inode + _OFFSET
    )


def stat_fields(stat: Stat) -> tuple[int, int, int, int]:
    """(size, mtime_ns, ctime_ns, inode) of a packed stat."""
    return (
        (stat >> 3 * _WIDTH) - _OFFSET,
        (stat >> 2 * _WIDTH & _MASK) - _OFFSET,
        (stat >> _WIDTH & _MASK) - _OFFSET,
        (stat & _MASK) - _OFFSET,
    )


def stat_mtime_ns(stat: Stat) -> int:
    return (stat >> 2 * _WIDTH & _MASK) - _OFFSET


# SQLite's INTEGER is 64-bit: a PC whose clock says 2300 writes an mtime beyond it (in ns). A
# timestamp is clamped here, where a stat enters the agent, so that every later comparison,
# the store and the rows all see the same value; two mtimes both beyond 2262 look alike,
# which costs at most a rewrite that changes nothing else (size, ctime, inode) going unseen.
NS_MAX = 2**63 - 1
NS_MIN = -(2**63)


def clamp_ns(value: int) -> int:
    return NS_MAX if value > NS_MAX else NS_MIN if value < NS_MIN else value


def file_stat(st: os.stat_result) -> Stat:
    """A file's Stat from os.stat, its timestamps clamped to what the store can hold (inline:
    a poll makes this call for every file it stats)."""
    m, c = st.st_mtime_ns, st.st_ctime_ns
    if not (NS_MIN <= m <= NS_MAX and NS_MIN <= c <= NS_MAX):
        m, c = clamp_ns(m), clamp_ns(c)
    return Stat(
        ((((st.st_size + _OFFSET) << _WIDTH | m + _OFFSET) << _WIDTH | c + _OFFSET) << _WIDTH)
        | st.st_ino + _OFFSET
    )


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
    # the stamp of this read (keep_newest.StampClock): for one path, the larger stamp is the
    # later read, whatever the mtimes say (a restored backup, a PC clock corrected)
    version_stamp: int | None = None

    @property
    def stat(self) -> Stat:
        return make_stat(self.size, self.mtime_ns, self.ctime_ns, self.inode)


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
