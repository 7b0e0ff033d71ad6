"""The scanner of one PC folder: pure-Python stat polling, no watchdog.

SMB shares deliver no inotify events for writes made by other machines, so polling stats is the
only signal that works on a NAS. Polling every file every poll would cost more than watchdog's
snapshot at 10^5 files; instead the `FolderIndex` (folder_index.py, run in a worker thread)
stats the folders every poll and lists only those that changed, stats the hot files every hot
tick and a slice of everything else every poll. What that finds, and how soon, is written at the
top of folder_index.py; the `FileTracker` (tracker.py) decides what to report.

One `NasPoller` thread looks at every PC, a poll every poll interval and the hot files every
hot tick, and wakes trio only for a poll's figures or a change: waking a thread, and trio to
take its answer, costs more than the few stats a PC needs per tick (measured on the 2-core test
VM: futex and epoll traffic dominated the idle CPU when each PC had its own thread call per
tick). A PC whose folder hangs (a stale SMB mount) is found by a heartbeat, left out until its
stat returns, and costs one thread; the others go on.

The startup backfill goes out newest file first on the queue's backfill lane; live changes take
the live lane and never wait behind it. The backlog belongs to the PC, not to one run of its
scanner: a scanner restarted after its folder failed (an SMB flicker mid-backfill) carries on
with what it had not yet sent.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from fnmatch import translate
from pathlib import Path

import trio

from ..logs import get_logger
from ..nas_calls import NasCalls
from ..observe.status import ScanStats
from ..records import Stat
from .change_queue import Producer
from .folder_index import FolderIndex, Observation
from .pc_reads import PcReads
from .tracker import FileChange, FileTracker, reread

__all__ = ["FileChange", "NasPoller", "PcScan", "WatchedPc", "compile_pattern", "newest_first"]

log = get_logger("scanner")


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Case-insensitive: files come from Windows PCs, where `.JSON` and `.json` are one name."""
    return re.compile(translate(pattern), re.IGNORECASE)


def newest_first(changes: Iterable[FileChange]) -> list[FileChange]:
    return sorted(changes, key=lambda c: c.mtime_ns, reverse=True)


@dataclass(frozen=True, slots=True)
class WatchedPc:
    """A PC folder being scanned, as the reader needs it: where it is, who to tell, and its
    reads of the NAS (one at a time, each with a deadline)."""

    root: Path  # the resolved watch folder
    tracker: FileTracker
    reads: PcReads


MIN_SWEEP_SLICE = 32  # files stat'ed by the sweep each poll, at least


@dataclass
class ScanTiming:
    poll_interval: float = 2.0
    hot_poll_interval: float = 0.5
    full_sweep_interval: float = 600.0

    def sweep_slice(self, files: int) -> int:
        """How many files each poll stats so that all of them are stat'ed once per sweep, and
        at least MIN_SWEEP_SLICE: a small folder is swept in a few polls (a few microseconds a
        stat) instead of one file a poll, so a rewrite of a cold file in it is found in seconds;
        a large one (10,000 files at the defaults asks for 34) follows full_sweep_interval."""
        polls_per_sweep = max(1.0, self.full_sweep_interval / self.poll_interval)
        return max(math.ceil(files / polls_per_sweep), min(files, MIN_SWEEP_SLICE))


@dataclass
class PcScan:
    """One PC's scanning state; it outlives a scanner that failed and was restarted."""

    tracker: FileTracker
    index: FolderIndex
    timing: ScanTiming
    stats: ScanStats = field(default_factory=ScanStats)
    # newest first, not yet sent. What a walk found unsettled waits as the tracker's reported
    # stat (the index's own object), made a FileChange only when it goes out: at 10^5 files a
    # backlog of FileChange objects alone holds some 10 MB more than the index already does
    backlog: dict[str, Stat | FileChange] = field(default_factory=dict)
    walked: bool = False  # the first walk of this run of the agent has been done
    polling: bool = False  # walked and polling: the poller looks at it
    hung: bool = False  # a stat of this folder has not returned: left out until it does
    hot_list: list[str] = field(default_factory=list)  # what the poller's thread stats
    _backlog_added: trio.Event = field(default_factory=trio.Event)
    _stopped: trio.Event = field(default_factory=trio.Event)
    _failure: OSError | None = None
    _once: bool = False
    _changes: Producer | None = None
    # the PC's reads: its backfill waits while they have changes parked or a read hangs
    reads: PcReads | None = None
    # the thread of a walk: the NAS's limiter, no deadline (a large folder takes its time)
    nas: NasCalls = field(default_factory=lambda: NasCalls(math.inf))
    # deleted files forgotten; returns files to read and send again (keep_newest.py)
    _on_gone: Callable[[str, list[str]], Awaitable[list[str]]] | None = None

    async def run(
        self,
        changes: Producer,
        *,
        on_gone: Callable[[str, list[str]], Awaitable[list[str]]] | None = None,
        once: bool = False,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Walk the folder, then let the poller look at it until cancelled (with `once`: until
        every file is acknowledged, for `scan`). Raises OSError when the folder cannot be read;
        the caller retries with the same PcScan. Started once the first walk is done.
        `changes` is not closed here: the supervising task owns it across restarts."""
        self._changes, self._on_gone, self._once = changes, on_gone, once
        self._failure, self._stopped = None, trio.Event()
        try:
            await self._walk()
            task_status.started()
            self.refresh_hot()
            self.polling = True
            self._check_done()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._feed_backlog, changes)
                await self._stopped.wait()
                nursery.cancel_scope.cancel()
            if self._failure is not None:
                raise self._failure
        finally:
            self.polling = False

    def fail(self, error: OSError) -> None:
        """The poller could not read the folder: end this run (the supervisor retries)."""
        self._failure = error
        self._stopped.set()

    def _check_done(self) -> None:
        if self._once and not self.backlog and self.tracker.caught_up():
            self._stopped.set()

    async def _walk(self) -> None:
        # abandonable: a stale SMB mount can hang a stat forever; shutdown must not wait
        obs = await self.nas.thread(self.index.walk)
        initial = not self.walked
        found, gone = self.tracker.observe(
            obs.seen, obs.gone, trio.current_time(), poll=True, initial=initial
        )
        self.walked = True
        await self._gone(gone, live=False)
        # after a failure too, what the walk finds goes out as backfill: it may be a whole
        # folder that came back, and live changes must not wait behind it
        self._backfill_entries(newest_first(found), self.backlog)
        self._backlog_added.set()
        self._note(obs)
        self._note_waiting()

    def _backfill_entries(
        self, found: list[FileChange], into: dict[str, Stat | FileChange]
    ) -> None:
        """A walk's changes as backlog entries: one found unsettled waits as the stat the
        tracker holds as reported (made a FileChange again when it goes out)."""
        reported = self.tracker.reported
        for change in found:
            rel = change.rel_path
            stat = reported.get(rel)
            if not change.settled and stat is not None and stat == change.stat:
                into[rel] = stat
            else:
                into[rel] = replace(change, live=False)

    def hot(self) -> list[str]:
        return self.tracker.hot(trio.current_time(), self.index.newest)

    def refresh_hot(self) -> None:
        """The list the poller's thread reads (a plain list swapped whole: no lock needed)."""
        self.hot_list = self.hot()

    def __post_init__(self) -> None:
        self.tracker.hot_changed = self.refresh_hot

    async def handle(self, obs: Observation) -> None:
        """What a poll or a hot tick saw: live changes out, gone files forgotten."""
        found, gone = self.tracker.observe(obs.seen, obs.gone, trio.current_time(), poll=obs.full)
        await self._gone(gone, live=True)
        for change in found:
            self.backlog.pop(change.rel_path, None)  # the live version supersedes it
            if self._changes is not None:
                await self._changes.put(change, live=True)
        if obs.full:
            self._note(obs)
        self.stats.backlog = len(self.backlog)
        self._note_waiting()
        self._check_done()

    def _note_waiting(self) -> None:
        """How many files wait to be acknowledged, and since when the oldest change the table
        lacks was first seen (the sync lag; tracker.py keeps it per file)."""
        self.stats.waiting = self.tracker.waiting()
        self.stats.waiting_since = self.tracker.oldest_unacked()

    async def _gone(self, gone: list[str], *, live: bool) -> None:
        if not gone or self._on_gone is None:
            return
        for rel in await self._on_gone(self.tracker.pc_id, gone):
            stat = self.tracker.acked_version(rel)
            if stat is None:
                continue
            change = reread(self.tracker.pc_id, rel, stat, live=live)
            if live and self._changes is not None:
                await self._changes.put(change, live=True)
            else:
                self.backlog[rel] = change

    async def _feed_backlog(self, changes: Producer) -> None:
        """The backfill lane: one backlog entry at a time, whenever the readers have room."""
        while True:
            if not self.backlog:
                self.backlog = {}  # a dict never shrinks: drop the table a backfill grew
                self._check_done()
                self._backlog_added = trio.Event()
                await self._backlog_added.wait()
                continue
            if self.reads is not None and (self.reads.parked or self.reads.hung):
                await self.reads.wait_ready()
                continue  # the backlog may have changed meanwhile
            rel, entry = next(iter(self.backlog.items()))
            change = (
                entry
                if isinstance(entry, FileChange)
                else self.tracker.change(rel, entry, settled=False, live=False)
            )
            await changes.put(change, live=False)
            if self.backlog.get(rel) is entry:
                del self.backlog[rel]
            self.stats.backlog = len(self.backlog)

    def _note(self, obs: Observation) -> None:
        stats = self.stats
        for folder, reason in obs.problems.items():
            if stats.problems.get(folder) != reason:
                log.warning(
                    "subfolder_unreadable", pc_id=self.tracker.pc_id, path=folder, error=reason
                )
        stats.polls += 1
        stats.files = len(self.index.files)
        stats.backlog = len(self.backlog)
        stats.last_scan_seconds = obs.busy_seconds
        stats.last_scan_at = trio.current_time()
        stats.problems = obs.problems
        if stats.observe is not None:
            stats.observe(obs.busy_seconds)


Outcome = Observation | OSError


class NasPoller:
    """One worker thread looks at every PC that is polling: every poll interval a poll (its
    folders, a sweep slice, its hot files), every hot tick in between its hot files only.

    The thread keeps its own time and calls into trio only for a poll's figures or a change,
    so an idle tick wakes one thread and nothing else. Its answers go through
    `trio.from_thread.run`, which waits while the readers have no room (backpressure). A stat
    that hangs (a stale mount) stops the heartbeat: the PC it is at is marked hung and left out,
    the stuck thread is abandoned and a new one carries on with the others; the hung PC is
    looked at again once its stat has returned."""

    def __init__(
        self,
        timing: ScanTiming,
        tick_deadline: float | None = None,
        nas: NasCalls | None = None,
    ) -> None:
        self.timing = timing
        # its threads: the NAS's limiter, no deadline (the heartbeat finds a hung stat)
        self.nas = nas or NasCalls(math.inf)
        self.tick_deadline = tick_deadline or max(10.0, 5 * timing.poll_interval)
        self.scans: dict[str, PcScan] = {}
        self._at: PcScan | None = None  # the PC the thread is looking at right now
        self._beat = time.monotonic()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:  # a new thread whenever the last one hung in a stat
            stop = threading.Event()
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._heartbeat, nursery.cancel_scope)
                    # abandonable: shutdown must not wait for a stat that hangs
                    await self.nas.thread(self._loop, stop)
                    nursery.cancel_scope.cancel()
            finally:
                stop.set()

    async def _heartbeat(self, scope: trio.CancelScope) -> None:
        while True:
            await trio.sleep(self.tick_deadline / 4)
            stuck = self._at
            if stuck is not None and time.monotonic() - self._beat > self.tick_deadline:
                stuck.hung = True
                log.warning("pc_scan_hung", pc_id=stuck.tracker.pc_id, seconds=self.tick_deadline)
                self._at = None
                scope.cancel()  # abandons the stuck thread; run() starts another
                return

    def _loop(self, stop: threading.Event) -> None:
        """The worker thread: poll and tick until `stop`, calling trio only with news."""
        timing = self.timing
        hot_interval = min(timing.hot_poll_interval, timing.poll_interval)
        next_poll = next_tick = time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            full = now >= next_poll - 1e-3
            if full:
                next_poll = now + timing.poll_interval
            next_tick = max(next_tick + hot_interval, now)
            news = self._look(full)
            if stop.is_set():
                return
            if full or news:
                try:
                    trio.from_thread.run(self._deliver, news)
                except (trio.Cancelled, trio.RunFinishedError):
                    return  # this thread was abandoned (shutdown, or it hung)
            stop.wait(max(0.0, next_tick - time.monotonic()))

    def _look(self, full: bool) -> list[tuple[PcScan, Outcome]]:
        news: list[tuple[PcScan, Outcome]] = []
        for scan in list(self.scans.values()):
            if not scan.polling:
                continue
            if scan.hung:
                if not scan.index.lock.acquire(blocking=False):
                    continue  # its stuck stat has not returned yet
                scan.index.lock.release()
                scan.hung = False
            self._at, self._beat = scan, time.monotonic()
            outcome: Outcome | None
            try:
                if full:
                    outcome = scan.index.poll(hot=scan.hot_list, sweep_slice=timing_slice(scan))
                elif scan.hot_list:
                    outcome = scan.index.tick(scan.hot_list)
                else:
                    outcome = None
            except OSError as exc:
                outcome = exc
            if outcome is not None and (
                full or not isinstance(outcome, Observation) or outcome.changed
            ):
                news.append((scan, outcome))
        self._at, self._beat = None, time.monotonic()
        return news

    async def _deliver(self, news: list[tuple[PcScan, Outcome]]) -> None:
        """In trio: what the thread found, then fresh hot lists for its next ticks."""
        for scan, outcome in news:
            if not scan.polling:
                continue
            if isinstance(outcome, OSError):
                scan.fail(outcome)
            else:
                await scan.handle(outcome)
        for scan in self.scans.values():
            scan.refresh_hot()


def timing_slice(scan: PcScan) -> int:
    return scan.timing.sweep_slice(len(scan.index.files))
