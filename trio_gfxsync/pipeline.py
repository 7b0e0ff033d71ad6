"""Pipeline stages between the scanners and the uploaders: the reader/parser and the batcher.

Each stage takes its receive channel and the send channel of the next stage, closes what it sends
on when it ends, and ends when its input closes: end-of-stream flows down the pipe.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import trio

from .batching import Batch, BatchBuffer
from .ledger import FileLedger
from .logs import get_logger
from .pokergfx import FileTooLarge, ParseError, SessionRecord, parse_session
from .scanner import FileChange
from .status import AgentStatus
from .uploader import UploadSlots, Wakeup

log = get_logger("pipeline")


# -- reader / parser --


@dataclass(frozen=True, slots=True)
class Unsettled:
    """The file changed while it was read: try again when it has stopped changing."""

    stat: tuple[int, int]


@dataclass(frozen=True, slots=True)
class Vanished:
    """Deleted between the scan and the read."""


@dataclass(frozen=True, slots=True)
class Unreadable:
    error: ParseError | OSError
    stat: tuple[int, int]


ReadOutcome = SessionRecord | Unsettled | Vanished | Unreadable


def read_change(path: Path, change: FileChange, max_file_bytes: int) -> ReadOutcome:
    """Blocking (worker thread): stat, read, stat again, parse.

    A file whose size or mtime moves during the read is still being written. A parse error on a
    file that was not yet seen settled is treated the same way: PokerGFX rewrites the whole
    file, so a half-written copy looks like broken JSON for a moment.
    """
    try:
        before = os.stat(path)
        stat = (before.st_size, before.st_mtime_ns)
        if before.st_size > max_file_bytes:
            too_large = FileTooLarge(
                f"{before.st_size} bytes is above the limit of {max_file_bytes}"
            )
            return Unreadable(too_large, stat)
        with open(path, "rb") as handle:
            data = handle.read(max_file_bytes + 1)
        after = os.stat(path)
    except FileNotFoundError:
        return Vanished()
    except OSError as exc:
        return Unreadable(exc, (change.size, change.mtime_ns))
    if (after.st_size, after.st_mtime_ns) != stat or len(data) != before.st_size:
        return Unsettled((after.st_size, after.st_mtime_ns))
    try:
        return parse_session(
            data,
            pc_id=change.pc_id,
            rel_path=change.rel_path,
            mtime_ns=before.st_mtime_ns,
            max_file_bytes=max_file_bytes,
        )
    except ParseError as exc:
        settled = change.settled and stat == (change.size, change.mtime_ns)
        return Unreadable(exc, stat) if settled else Unsettled(stat)


@dataclass
class Reader:
    ledger: FileLedger
    status: AgentStatus
    roots: dict[str, Path]  # pc_id -> resolved watch folder
    max_file_bytes: int

    async def run(
        self,
        changes: trio.MemoryReceiveChannel[FileChange],
        records: trio.MemorySendChannel[SessionRecord],
    ) -> None:
        async with changes, records:
            async for change in changes:
                record = await self.read(change)
                if record is not None:
                    await records.send(record)

    async def read(self, change: FileChange) -> SessionRecord | None:
        root = self.roots.get(change.pc_id)
        tracker = self.ledger.trackers.get(change.pc_id)
        if root is None or tracker is None:
            return None  # the PC was removed from the registry meanwhile
        self.status.files_seen[change.pc_id] += 1
        outcome = await trio.to_thread.run_sync(
            read_change, root / change.rel_path, change, self.max_file_bytes, abandon_on_cancel=True
        )
        fields = {"pc_id": change.pc_id, "path": change.rel_path}
        match outcome:
            case SessionRecord() as record:
                if self.ledger.acked_hash(change.pc_id, change.rel_path) == record.version.sha256:
                    # touched, not changed: same bytes as acknowledged, nothing to send
                    await self.ledger.acknowledge([record.version])
                    return None
                log.info(
                    "file_" + change.kind,
                    **fields,
                    session_id=str(record.session_id),
                    hands=record.hand_count,
                    size=record.version.size,
                    backfill=not change.live,
                )
                return record
            case Unsettled():
                log.debug("file_unsettled", **fields)
                tracker.retry_when_settled(change.rel_path, (change.size, change.mtime_ns))
            case Vanished():
                tracker.release(change.rel_path, (change.size, change.mtime_ns))
            case Unreadable(error, stat):
                reason = error.reason if isinstance(error, ParseError) else "os_error"
                message = error.message if isinstance(error, ParseError) else str(error)
                # logged once per version: the tracker will not report it again until it changes
                log.error("file_unreadable", **fields, reason=reason, error=message)
                tracker.reported[change.rel_path] = stat
        return None


# -- batcher --


@dataclass
class Batcher:
    buffer: BatchBuffer
    slots: UploadSlots
    status: AgentStatus

    async def run(
        self,
        records: trio.MemoryReceiveChannel[SessionRecord],
        batches: trio.MemorySendChannel[Batch],
    ) -> None:
        """Intake and dispatch run side by side: records keep accumulating while a batch waits
        for a free uploader, and a full buffer holds the intake (backpressure)."""
        wakeup = self.slots.wakeup  # set by intake (record in) and by uploaders (slot free)
        room = Wakeup()
        closed = False

        async def intake() -> None:
            nonlocal closed
            async with records:
                async for record in records:
                    while self.buffer.full:
                        await room.event.wait()
                    self.buffer.add(record, trio.current_time())
                    self.status.batch_pending = len(self.buffer)
                    wakeup.set()
            closed = True
            wakeup.set()

        async with batches, trio.open_nursery() as nursery:
            nursery.start_soon(intake)
            while not (closed and len(self.buffer) == 0):
                now = trio.current_time()
                free = self.slots.free > 0
                if self.buffer.due(now, uploader_free=free, closed=closed):
                    batch = self.buffer.take()
                    self.status.batch_pending = len(self.buffer)
                    room.set()
                    await batches.send(batch)
                    continue
                changed = wakeup.event
                with trio.move_on_at(self.buffer.next_deadline(uploader_free=free)):
                    await changed.wait()
