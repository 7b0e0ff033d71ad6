"""The reader stage: FileChange in, SessionRecord out (stat, read, stat again, parse).

Like every stage it takes its receive channel and the next stage's send channel, closes what it
sends on when it ends, and ends when its input closes: end-of-stream flows down the pipe. A file
that cannot become a record is quarantined here, with its reason (and copied to the error
folder, error_folder.py); one that is still being written is handed back to its scanner to be
read again once it settles. A PC's reads go one at a time, each within the NAS deadline
(pc_reads.py): a PC whose read hangs holds no reader, and the others go on.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from stat import S_ISREG

import trio

from ..errors import FileTooLarge, NotARegularFile, ParseError
from ..keep_newest import Copy, rank, winner
from ..logs import get_logger
from ..memory_budget import ByteBudget
from ..nas_calls import NasHung
from ..observe.status import AgentStatus
from ..pokergfx import SessionRecord, parse_session, restamp
from ..records import FileVersion, Stat, file_stat, stat_fields
from ..state.ledger import FileLedger
from .change_queue import ChangeQueue
from .error_folder import ErrorFolder
from .scanner import WatchedPc
from .tracker import FileChange, FileTracker, reread

log = get_logger("reader")


@dataclass(frozen=True, slots=True)
class Unsettled:
    """The file changed while it was read: try again when it has stopped changing."""

    stat: Stat


@dataclass(frozen=True, slots=True)
class Vanished:
    """Deleted between the scan and the read."""


@dataclass(frozen=True, slots=True)
class Unreadable:
    error: ParseError | OSError
    stat: Stat
    sha256: str = ""  # of the bytes read, when they were read


ReadOutcome = SessionRecord | Unsettled | Vanished | Unreadable


def read_change(
    path: Path, change: FileChange, max_file_bytes: int, version_stamp: int | None = None
) -> ReadOutcome:
    """Blocking (worker thread): stat, read, stat again, parse.

    A file whose size or mtime moves during the read is still being written. A parse error on a
    file that was not yet seen settled is treated the same way: PokerGFX rewrites the whole
    file, so a half-written copy looks like broken JSON for a moment.
    """
    try:
        # O_NOFOLLOW and O_NONBLOCK: a symlink (to /dev/zero, out of the share) is not followed
        # and a FIFO does not block the worker; only a regular file is read, at most
        # max_file_bytes + 1 bytes of it
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return Vanished()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            link = NotARegularFile("a symbolic link: not followed below a watch path")
            return Unreadable(link, change.stat)
        return Unreadable(exc, change.stat)
    try:
        with os.fdopen(fd, "rb", closefd=True) as handle:
            before = os.fstat(handle.fileno())
            stat = file_stat(before)
            if not S_ISREG(before.st_mode):
                return Unreadable(NotARegularFile("not a regular file"), stat)
            settled = change.settled and stat == change.stat
            if before.st_size > max_file_bytes:
                if not settled:
                    return Unsettled(stat)
                limit = f"{before.st_size} bytes is above the limit of {max_file_bytes}"
                return Unreadable(FileTooLarge(limit), stat)
            data = handle.read(max_file_bytes + 1)
        after = file_stat(os.stat(path, follow_symlinks=False))
    except FileNotFoundError:
        return Vanished()
    except OSError as exc:
        return Unreadable(exc, change.stat)
    if after != stat or len(data) != before.st_size:
        return Unsettled(after)
    _, mtime_ns, ctime_ns, _ = stat_fields(stat)  # as clamped for the store
    try:
        return parse_session(
            data,
            pc_id=change.pc_id,
            rel_path=change.rel_path,
            mtime_ns=mtime_ns,
            max_file_bytes=max_file_bytes,
            ctime_ns=ctime_ns,
            inode=before.st_ino,
            version_stamp=version_stamp,
        )
    except ParseError as exc:
        return (
            Unreadable(exc, stat, hashlib.sha256(data).hexdigest()) if settled else Unsettled(stat)
        )


@dataclass
class Reader:
    ledger: FileLedger
    status: AgentStatus
    watched: dict[str, WatchedPc]  # shared with the registry watcher
    max_file_bytes: int
    budget: ByteBudget
    errors: ErrorFolder | None = None
    # per file being read: how many reads of it are in flight, and the read stamp of the latest
    # one decided. Reads of one file may overlap (a slow read of v1 while v2 is read): the one
    # that started later holds the newer bytes, so an older read decided after it is dropped
    # (it would carry the larger version stamp). Entries live only while reads are in flight.
    _reading: dict[tuple[str, str], int] = field(default_factory=dict, init=False)
    _decided: dict[tuple[str, str], int] = field(default_factory=dict, init=False)

    async def run(
        self, changes: ChangeQueue, records: trio.MemorySendChannel[SessionRecord]
    ) -> None:
        async with records:
            while True:
                try:
                    taken = await changes.get()
                except trio.EndOfChannel:
                    return
                pc = self.watched.get(taken.pc_id)
                if pc is None or not pc.reads.begin(taken):
                    continue  # the PC was removed meanwhile, or its read is out: parked there
                # this reader holds the PC: its own change, then whatever was parked meanwhile
                change: FileChange | None = taken
                while change is not None:
                    await self._read_and_send(change, records)
                    change = pc.reads.next()

    async def _read_and_send(
        self, change: FileChange, records: trio.MemorySendChannel[SessionRecord]
    ) -> None:
        # the bytes read and the row built from them: acquired before the read, so that a few
        # large files cannot fill the memory between the stages
        charge = 2 * max(change.size, 1)
        await self.budget.acquire(charge)
        try:
            record = await self.read(change)
        except BaseException:
            self.budget.release(charge)
            raise
        if record is None:
            self.budget.release(charge)
            return
        self.budget.release(max(0, charge - len(record.row)))  # the record keeps its row
        await records.send(record)

    async def read(self, change: FileChange) -> SessionRecord | None:
        pc = self.watched.get(change.pc_id)
        if pc is None:
            return None  # the PC was removed from the registry meanwhile
        key = (change.pc_id, change.rel_path)
        self._reading[key] = self._reading.get(key, 0) + 1
        try:
            return await self._read(change, pc)
        finally:
            self._reading[key] -= 1
            if not self._reading[key]:
                del self._reading[key]
                self._decided.pop(key, None)

    def _stale(self, change: FileChange, read_stamp: int) -> bool:
        """A later read of this file was decided first: this one holds older bytes. Marks
        this read decided otherwise (call it where nothing awaits before the decision)."""
        key = (change.pc_id, change.rel_path)
        if self._decided.get(key, -1) > read_stamp:
            log.debug("read_superseded_by_later_read", pc_id=key[0], path=key[1])
            return True
        self._decided[key] = read_stamp
        return False

    async def _read(self, change: FileChange, pc: WatchedPc) -> SessionRecord | None:
        root, tracker = pc.root, pc.tracker
        self.status.files_seen[change.pc_id] += 1
        # taken before the read: of two reads of one file, the one started later has the
        # larger read stamp and the newer bytes (a read overlapping a write is unsettled)
        read_stamp = self.ledger.issue_stamp()
        try:
            outcome = await pc.reads.read(
                read_change,
                root / change.rel_path,
                change,
                self.max_file_bytes,
                None,
                change=change,
            )
        except NasHung:
            return None  # the PC is hung: this change is read again when the thread returns
        fields = {"pc_id": change.pc_id, "path": change.rel_path}
        if not isinstance(outcome, Unsettled | Unreadable):
            self.status.unreadable_files.pop((change.pc_id, change.rel_path), None)
        match outcome:
            case SessionRecord() as record:
                touched = change.kind == "modified" and (
                    await self.ledger.store.acked_hash(change.pc_id, change.rel_path)
                    == record.version.sha256
                )
                winner, seen = await self._winner(record, tracker)
                if self._stale(change, read_stamp):
                    return None
                # the version stamp: issued at the decision, so a copy chosen after another was
                # sent carries the larger one; above every stamp seen for this session
                record = restamp(record, self.ledger.issue_stamp(above=seen))
                if touched:
                    # touched, not changed: same bytes as acknowledged, nothing to send
                    await self.ledger.acknowledge([record.version])
                    return None
                if winner.rel_path != change.rel_path:
                    return await self._superseded(record, change, winner, tracker)
                tracker.note_inflight(record.session_id, copy_of(record))
                kind = "modified" if change.kind == "reread" else change.kind
                self.status.sync_events.note(change.pc_id, kind, change.rel_path)
                self.status.activity.add(
                    kind,
                    f"{record.hand_count} hands",
                    pc_id=change.pc_id,
                    path=change.rel_path,
                    session_id=record.session_id,
                )
                pc_status = self.status.pcs.get(change.pc_id)
                if pc_status is not None:
                    pc_status.note_read(
                        record.session_id, record.last_hand_num, change.live, trio.current_time()
                    )
                if not change.live:
                    record = replace(record, live=False)
                # a live change keeps its line; a backfill of 10^5 files is told by the
                # monitor's backfill_progress lines instead of one line per file
                (log.info if change.live else log.debug)(
                    "file_" + kind,
                    **fields,
                    session_id=str(record.session_id),
                    hands=record.hand_count,
                    size=record.version.size,
                    backfill=not change.live,
                )
                return record
            case Unsettled():
                log.debug("file_unsettled", **fields)
                tracker.retry_when_settled(change.rel_path, change.stat)
            case Vanished():
                tracker.release(change.rel_path, change.stat)
            case Unreadable(OSError() as error, stat):
                # not a bad file but a bad read (permissions, I/O): logged once per version,
                # looked at again when the file changes or the agent restarts
                log.error("file_unreadable", **fields, error=str(error))
                self.status.unreadable_files[(change.pc_id, change.rel_path)] = str(error)
                tracker.give_up(change.rel_path, stat)
                self.status.activity.add("error", str(error), **fields)
                self.status.pc_error(change.pc_id, str(error))
            case Unreadable(ParseError() as error, stat, sha256):
                self.status.unreadable_files.pop((change.pc_id, change.rel_path), None)
                if not self._stale(change, read_stamp):
                    await self.quarantine(change, error, stat, sha256)
        return None

    async def _winner(self, record: SessionRecord, tracker: FileTracker) -> tuple[Copy, int | None]:
        """Among the copies of this session (acknowledged or in flight, one per path, this file
        as just read), the one the table must hold (keep_newest.py); and the largest stamp
        acknowledged for the session (a new one must be larger)."""
        acked, seen = await self.ledger.store.copies_and_stamp(*record.key)
        copies = {c.rel_path: c for c in acked}
        copies.update(tracker.inflight_copies(record.session_id))
        copies[record.version.rel_path] = copy_of(record)
        return winner(copies.values()), seen

    async def _superseded(
        self, record: SessionRecord, change: FileChange, best: Copy, tracker: FileTracker
    ) -> SessionRecord | None:
        """Another path holds a more complete copy: this version is acknowledged without being
        sent. If this path held the winner until now (a voided hand, a reset), the table holds
        its old content: the new winner is read again and sent with a fresh stamp."""
        before = {c.rel_path: c for c in await self.ledger.store.copies(*record.key)}
        previous = before.get(change.rel_path)
        await self.ledger.acknowledge([record.version])
        log.debug(
            "copy_superseded",
            pc_id=change.pc_id,
            path=change.rel_path,
            session_id=str(record.session_id),
            by=best.rel_path,
        )
        if previous is None or rank(previous) < rank(best):
            return None  # the winner was the winner already: it is in the table
        acked = tracker.acked_version(best.rel_path)
        if acked is None:
            return None  # in flight: it goes out by itself
        return await self.read(reread(change.pc_id, best.rel_path, acked, live=change.live))

    async def quarantine(
        self, change: FileChange, error: ParseError, stat: Stat, sha256: str
    ) -> None:
        """A settled file that cannot become a record: recorded with its reason, logged once,
        copied to the error folder if that is writable, read again when the file changes."""
        size, mtime_ns, ctime_ns, inode = stat_fields(stat)
        version = FileVersion(
            change.pc_id,
            change.rel_path,
            size,
            mtime_ns,
            sha256,
            ctime_ns=ctime_ns,
            inode=inode,
            version_stamp=self.ledger.issue_stamp(),
        )
        await self.ledger.quarantine(version, error.reason, error.message)
        pc = self.watched.get(change.pc_id)
        copied = None
        if pc is not None and self.errors is not None:
            # the copy reads the NAS: one of the PC's reads, with its deadline
            copied = await self.errors.keep(
                pc.root / change.rel_path,
                change.pc_id,
                change.rel_path,
                error.reason,
                error.message,
                run=functools.partial(pc.reads.read, change=None),
            )
        self.status.activity.add(
            "quarantined",
            f"{error.reason}: {error.message}",
            pc_id=change.pc_id,
            path=change.rel_path,
        )
        self.status.pc_error(change.pc_id, f"{change.rel_path}: {error.reason}")
        self.status.sync_events.note(
            change.pc_id, "error", change.rel_path, f"quarantined {error.reason}: {error.message}"
        )
        log.error(
            "file_quarantined",
            pc_id=change.pc_id,
            path=change.rel_path,
            reason=error.reason,
            error=error.message,
            size=size,
            copied_to=str(copied) if isinstance(copied, Path) else None,
            copy_error=copied if isinstance(copied, str) else None,
        )


def copy_of(record: SessionRecord) -> Copy:
    v = record.version
    return Copy(v.rel_path, record.hand_count, v.mtime_ns, v.ctime_ns)
