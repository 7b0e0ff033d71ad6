"""The scanner of one PC folder: pure-Python stat polling, no watchdog.

SMB shares deliver no inotify events for writes made by other machines, so polling stats is the
only signal that works on a NAS. Polling every file every poll would cost more than watchdog's
snapshot at 10^5 files; instead the `FolderIndex` (folder_index.py, run in a worker thread)
stats the folders every poll and lists only those that changed, stats the hot files every hot
tick and a slice of everything else every poll. What that finds, and how soon, is written at the
top of folder_index.py; the `FileTracker` (tracker.py) decides what to report.

One `NasPoller` looks at every PC in one worker-thread call per hot tick (their polls on the
ticks that fall due every poll interval): waking a thread, and trio to take its answer, costs
more than the few stats a PC needs per tick (measured on the 2-core test VM: futex and epoll
traffic dominated the idle CPU when each PC had its own thread call), so an idle agent wakes one
thread per tick, whatever the number of PCs. A PC whose folder hangs (a stale SMB mount) is
found by its place in the call, left out of the next calls until its stat returns, and costs
one thread; the others go on.

The startup backfill goes out newest file first on the queue's backfill lane; live changes take
the live lane and never wait behind it. The backlog belongs to the PC, not to one run of its
scanner: a scanner restarted after its folder failed (an SMB flicker mid-backfill) carries on
with what it had not yet sent.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from fnmatch import translate
from pathlib import Path

import trio

from ..logs import get_logger
from ..observe.status import ScanStats
from .change_queue import Producer
from .folder_index import FolderIndex, Observation
from .tracker import FileChange, FileTracker

__all__ = ["FileChange", "NasPoller", "PcScan", "WatchedPc", "compile_pattern", "newest_first"]

log = get_logger("scanner")


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Case-insensitive: files come from Windows PCs, where `.JSON` and `.json` are one name."""
    return re.compile(translate(pattern), re.IGNORECASE)


def newest_first(changes: Iterable[FileChange]) -> list[FileChange]:
    return sorted(changes, key=lambda c: c.mtime_ns, reverse=True)


@dataclass(frozen=True, slots=True)
class WatchedPc:
    """A PC folder being scanned, as the reader needs it: where it is and who to tell."""

    root: Path  # the resolved watch folder
    tracker: FileTracker


@dataclass
class ScanTiming:
    poll_interval: float = 2.0
    hot_poll_interval: float = 0.5
    full_sweep_interval: float = 600.0

    def sweep_slice(self, files: int) -> int:
        """How many files each poll stats so that all of them are stat'ed once per sweep."""
        polls_per_sweep = max(1.0, self.full_sweep_interval / self.poll_interval)
        return math.ceil(files / polls_per_sweep)


@dataclass
class PcScan:
    """One PC's scanning state; it outlives a scanner that failed and was restarted."""

    tracker: FileTracker
    index: FolderIndex
    timing: ScanTiming
    stats: ScanStats = field(default_factory=ScanStats)
    backlog: dict[str, FileChange] = field(default_factory=dict)  # newest first, not yet sent
    walked: bool = False  # the first walk of this run of the agent has been done
    polling: bool = False  # walked and polling: the poller looks at it
    hung: bool = False  # a stat of this folder has not returned: left out until it does
    _backlog_added: trio.Event = field(default_factory=trio.Event)
    _stopped: trio.Event = field(default_factory=trio.Event)
    _failure: OSError | None = None
    _once: bool = False
    _changes: Producer | None = None
    _on_gone: Callable[[str, list[str]], Awaitable[None]] | None = None

    async def run(
        self,
        changes: Producer,
        *,
        on_gone: Callable[[str, list[str]], Awaitable[None]] | None = None,
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
        # abandon_on_cancel: a stale SMB mount can hang a stat forever; shutdown must not wait
        obs = await trio.to_thread.run_sync(self.index.walk, abandon_on_cancel=True)
        initial = not self.walked
        found, gone = self.tracker.observe(
            obs.seen, obs.gone, trio.current_time(), poll=True, initial=initial
        )
        self.walked = True
        if gone and self._on_gone is not None:
            await self._on_gone(self.tracker.pc_id, gone)
        # after a failure too, what the walk finds goes out as backfill: it may be a whole
        # folder that came back, and live changes must not wait behind it
        for change in newest_first(found):
            self.backlog[change.rel_path] = replace(change, live=False)
        self._backlog_added.set()
        self._note(obs)

    def hot(self) -> list[str]:
        return self.tracker.hot(trio.current_time(), self.index.newest)

    async def handle(self, obs: Observation) -> None:
        """What a poll or a hot tick saw: live changes out, gone files forgotten."""
        found, gone = self.tracker.observe(obs.seen, obs.gone, trio.current_time(), poll=obs.full)
        if gone and self._on_gone is not None:
            await self._on_gone(self.tracker.pc_id, gone)
        for change in found:
            self.backlog.pop(change.rel_path, None)  # the live version supersedes it
            if self._changes is not None:
                await self._changes.put(change, live=True)
        if obs.full:
            self._note(obs)
        self.stats.backlog = len(self.backlog)
        self._check_done()

    async def _feed_backlog(self, changes: Producer) -> None:
        """The backfill lane: one backlog entry at a time, whenever the readers have room."""
        while True:
            if not self.backlog:
                self._check_done()
                self._backlog_added = trio.Event()
                await self._backlog_added.wait()
                continue
            rel, change = next(iter(self.backlog.items()))
            await changes.put(change, live=False)
            if self.backlog.get(rel) is change:
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


Outcome = Observation | OSError | None  # None: skipped (a stat of it is still running)


class NasPoller:
    """Every hot tick, one worker-thread call looks at every PC that is polling: a poll on the
    ticks that fall due (every poll interval), the hot files only in between."""

    def __init__(self, timing: ScanTiming, tick_deadline: float | None = None) -> None:
        self.timing = timing
        # a call that takes this long has a stat that hangs; the PC it is at is left out
        self.tick_deadline = tick_deadline or max(10.0, 5 * timing.poll_interval)
        self.scans: dict[str, PcScan] = {}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        timing = self.timing
        hot_interval = min(timing.hot_poll_interval, timing.poll_interval)
        next_tick = next_poll = trio.current_time()
        while True:
            next_tick += hot_interval
            await trio.sleep_until(max(next_tick, trio.current_time()))
            full = trio.current_time() >= next_poll - 1e-3
            if full:
                next_poll = trio.current_time() + timing.poll_interval
            await self.tick(full=full)

    async def tick(self, *, full: bool) -> None:
        for scan in self.scans.values():
            if scan.hung and scan.index.lock.acquire(blocking=False):
                scan.index.lock.release()  # its stuck stat has returned: look at it again
                scan.hung = False
                log.info("pc_scan_unhung", pc_id=scan.tracker.pc_id)
        jobs = [
            (scan, scan.hot(), timing_slice(scan) if full else None)
            for scan in self.scans.values()
            if scan.polling and not scan.hung
        ]
        jobs = [job for job in jobs if job[2] is not None or job[1]]
        if not jobs:
            return
        at: list[PcScan | None] = [None]  # the PC the thread is looking at right now

        def look() -> list[tuple[PcScan, Outcome]]:
            results: list[tuple[PcScan, Outcome]] = []
            for scan, hot, sweep_slice in jobs:
                at[0] = scan
                outcome: Outcome
                try:
                    if sweep_slice is None:
                        outcome = scan.index.tick(hot)
                    else:
                        outcome = scan.index.poll(hot=hot, sweep_slice=sweep_slice)
                except OSError as exc:
                    outcome = exc
                results.append((scan, outcome))
            at[0] = None
            return results

        results = None
        with trio.move_on_after(self.tick_deadline):
            results = await trio.to_thread.run_sync(look, abandon_on_cancel=True)
        if results is None:
            stuck = at[0]
            if stuck is not None:
                # its thread stays stuck in the stat; the PC is looked at again once it returns
                stuck.hung = True
                log.warning("pc_scan_hung", pc_id=stuck.tracker.pc_id, seconds=self.tick_deadline)
            return
        for scan, outcome in results:
            if not scan.polling:
                continue
            if isinstance(outcome, OSError):
                scan.fail(outcome)
            elif outcome is not None:
                await scan.handle(outcome)


def timing_slice(scan: PcScan) -> int:
    return scan.timing.sweep_slice(len(scan.index.files))
