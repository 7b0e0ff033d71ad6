"""Acknowledgement: the one path by which a file version becomes "done" (DESIGN 4.1).

A version is acknowledged when its record was stored (2xx), superseded by a stored newer copy,
committed to the offline queue, dead-lettered or quarantined: `FileLedger.acknowledge`,
`enqueue`, `dead_letter` and `quarantine` below, and nothing else. Each writes `file_state` in
the same SQLite transaction as the outcome itself, and only then tells the PC's scanner: a
crash between the two costs at most a repeated upsert, never a lost one.

The ledger knows the scanners only as `FileWatch`es and reports the queue's figures through a
callback, so that state depends on nothing above it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import trio

from ..keep_newest import StampClock, winner
from ..logs import get_logger
from ..records import Deliverable, FileVersion, Key, Stat
from .rows import QueueCounts, RecordFailure
from .store import Store

log = get_logger("ledger")

ROOM_RECHECK = 1.0  # seconds between looks at a full queue (the drainer also wakes us)


class FileWatch(Protocol):
    """What the ledger needs of a PC's scanner (intake's FileTracker)."""

    def acknowledge(self, rel_path: str, stat: Stat) -> None: ...

    def acked_paths(self) -> list[str]: ...

    def forget_acked(self, rel_path: str) -> None: ...


QueueReport = Callable[[QueueCounts, bool], None]  # (counts, full)


def _read_order(version: FileVersion) -> tuple[int, int]:
    # the later read (the larger stamp) is the newer version, whatever the mtimes say; versions
    # without a stamp (queued by an older agent) fall back on the mtime, behind any stamped one
    stamped = version.version_stamp is not None
    return (1, version.version_stamp or 0) if stamped else (0, version.mtime_ns)


def newest_per_file(versions: Iterable[FileVersion]) -> list[FileVersion]:
    """One version per file: a batch may carry an older copy of a file beside its newer one."""
    latest: dict[tuple[str, str], FileVersion] = {}
    for version in versions:
        key = (version.pc_id, version.rel_path)
        if key not in latest or _read_order(version) > _read_order(latest[key]):
            latest[key] = version
    return list(latest.values())


class FileLedger:
    def __init__(
        self,
        store: Store,
        *,
        max_queue_size: int = 10_000,
        max_queue_bytes: int = 2**31,
        report: QueueReport | None = None,
        stamps: StampClock | None = None,
    ) -> None:
        self.store = store
        # every stamp this agent issues (reads, re-reads, conditional replaces): seeded by the
        # agent from the store (`Store.largest_stamp`) so that they grow across restarts
        self.stamps = stamps or StampClock()
        self.max_queue_size = max_queue_size
        self.max_queue_bytes = max_queue_bytes
        self._report = report
        self.full = False
        self.trackers: dict[str, FileWatch] = {}
        self.queued = trio.Event()  # the drainer's wake-up: something entered the queue
        self.room = trio.Event()  # a full queue's wake-up: something left it

    def _tell_scanners(self, versions: Iterable[FileVersion]) -> None:
        for version in versions:
            tracker = self.trackers.get(version.pc_id)
            if tracker is not None:
                tracker.acknowledge(version.rel_path, version.stat)

    def issue_stamp(self, above: int | None = None) -> int:
        """A new version stamp: above every one issued before and above `above` (the largest
        stamp sent or seen for the session at hand), and no smaller than the wall clock."""
        return self.stamps.issue(time.time_ns(), above=above)

    async def acknowledge(
        self, versions: Iterable[FileVersion], stored: Iterable[tuple[Key, int]] = ()
    ) -> None:
        """`stored`: (key, stamp) of the rows the table just stored (their older queued copies
        are done)."""
        latest = newest_per_file(versions)
        await self.store.acknowledge(latest, stored)
        self._tell_scanners(latest)

    # -- the offline queue --

    async def _wait_for_room(self) -> None:
        """Backpressure: at max_queue_size or max_queue_bytes, intake waits; nothing is dropped."""
        logged = False
        while True:
            counts = await self.store.counts()
            if counts.pending < self.max_queue_size and counts.pending_bytes < self.max_queue_bytes:
                if logged:
                    log.info("offline_queue_has_room", pending=counts.pending)
                self._set_full(counts, False)
                return
            if not logged:
                log.error(
                    "offline_queue_full",
                    pending=counts.pending,
                    pending_bytes=counts.pending_bytes,
                    max_queue_size=self.max_queue_size,
                    max_queue_bytes=self.max_queue_bytes,
                )
                logged = True
            self._set_full(counts, True)
            with trio.move_on_after(ROOM_RECHECK):
                await self.room.wait()

    def _set_full(self, counts: QueueCounts, full: bool) -> None:
        self.full = full
        if self._report is not None:
            self._report(counts, full)

    async def enqueue(
        self,
        records: Sequence[Deliverable],
        versions: Iterable[FileVersion],
        *,
        error: str | None,
        attempts: dict[Key, int] | None = None,
        delay: float = 0.0,
        spill: bool = False,
        front: bool = False,
        failure: RecordFailure | None = None,
    ) -> None:
        """Commit records to pending_sync; `versions` (theirs and the copies they superseded)
        are acknowledged in the same transaction.

        `spill`: at shutdown, what is in memory goes in even over the limits (they hold the
        intake; they must not turn records already read into records lost)."""
        if not spill:
            await self._wait_for_room()
        latest = newest_per_file(versions)
        await self.store.enqueue(
            records,
            latest,
            attempts=attempts,
            delay=delay,
            error=error,
            front=front,
            failure=failure,
        )
        self._tell_scanners(latest)
        self.queued.set()
        self.queued = trio.Event()

    def made_room(self) -> None:
        self.room.set()
        self.room = trio.Event()

    # -- dead letters --

    async def dead_letter(
        self,
        record: Deliverable,
        superseded: Sequence[FileVersion],
        *,
        reason: str,
        status: int | None,
        code: str | None,
        message: str,
        attempts: int,
    ) -> None:
        """Refused for good: keep the record (for replay) and acknowledge its file versions."""
        await self.store.dead_letter(
            record, reason=reason, status=status, code=code, message=message, attempts=attempts
        )
        self._tell_scanners([record.version])
        if superseded:
            await self.acknowledge(superseded)
        log.error(
            "record_dead_lettered",
            pc_id=record.version.pc_id,
            path=record.version.rel_path,
            session_id=str(record.session_id),
            reason=reason,
            status=status,
            code=code,
            error=message,
            attempts=attempts,
        )

    async def quarantine(self, version: FileVersion, reason: str, message: str) -> None:
        await self.store.quarantine(version, reason, message)
        self._tell_scanners([version])

    async def forget(self, pc_id: str, rel_paths: list[str]) -> list[str]:
        """Deleted source files: forget their state (their rows stay in the table). Returns
        the files to read and send again: for each session that lost a copy, the best copy
        left (if the lost one was in the table, the best remaining one must replace it)."""
        sessions = await self.store.sessions_of(pc_id, rel_paths)
        await self.store.forget(pc_id, rel_paths)
        again = []
        for session_id in sorted(set(sessions.values())):
            copies = await self.store.copies(pc_id, session_id)
            if copies:
                again.append(winner(copies).rel_path)
        return again

    async def reload_states(self) -> None:
        """Another process (`dlq replay`) changed file_state: files it forgot are read again."""
        for pc_id, tracker in list(self.trackers.items()):
            current = await self.store.acked_stats(pc_id)
            for rel in [rel for rel in tracker.acked_paths() if rel not in current]:
                tracker.forget_acked(rel)
