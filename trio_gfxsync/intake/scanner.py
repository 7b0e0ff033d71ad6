"""The scanner of one PC folder: pure-Python stat polling, no watchdog.

SMB shares deliver no inotify events for writes made by other machines, so polling stats is the
only signal that works on a NAS. Polling every file every poll would cost more than watchdog's
snapshot at 10^5 files; instead the `FolderIndex` (folder_index.py, run in a worker thread)
stats the folders every poll and lists only those that changed, stats the hot files every hot
tick and a slice of everything else every poll. What that finds, and how soon, is written at the
top of folder_index.py; the `FileTracker` (tracker.py) decides what to report.

One worker-thread call covers a whole poll interval: it polls, then stats the hot files every
hot tick, and returns early as soon as something changed. An idle PC costs one thread hop per
poll interval, not one per tick.

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
from functools import partial
from pathlib import Path

import trio

from ..logs import get_logger
from ..observe.status import ScanStats
from .change_queue import Producer
from .folder_index import FolderIndex, Observation
from .tracker import FileChange, FileTracker

__all__ = ["FileChange", "PcScan", "WatchedPc", "compile_pattern", "newest_first"]

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
    full_sweep_interval: float = 300.0

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
    _backlog_added: trio.Event = field(default_factory=trio.Event)
    _wake: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.tracker.hot_changed = self._wake.set

    async def run(
        self,
        changes: Producer,
        *,
        on_gone: Callable[[str, list[str]], Awaitable[None]] | None = None,
        once: bool = False,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Poll until cancelled (with `once`: until every file is acknowledged, for `scan`).
        Raises OSError when the folder cannot be read; the caller retries with the same PcScan.
        Started once the first walk is done. `changes` is not closed here: the supervising task
        owns it across restarts of the scanner."""
        stop = threading.Event()
        try:
            await self._walk(on_gone)
            task_status.started()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._feed_backlog, changes)
                await self._poll_forever(changes, stop, on_gone, once)
                nursery.cancel_scope.cancel()
        finally:
            stop.set()  # an abandoned poll thread ends at its next tick
            self._wake.set()

    async def _walk(self, on_gone: Callable[[str, list[str]], Awaitable[None]] | None) -> None:
        # abandon_on_cancel: a stale SMB mount can hang a stat forever; shutdown must not wait
        obs = await trio.to_thread.run_sync(self.index.walk, abandon_on_cancel=True)
        initial = not self.walked
        found, gone = self.tracker.observe(
            obs.seen, obs.gone, trio.current_time(), poll=True, initial=initial
        )
        self.walked = True
        if gone and on_gone is not None:
            await on_gone(self.tracker.pc_id, gone)
        # after a failure too, what the walk finds goes out as backfill: it may be a whole
        # folder that came back, and live changes must not wait behind it
        for change in newest_first(found):
            self.backlog[change.rel_path] = replace(change, live=False)
        self._backlog_added.set()
        self._note(obs)

    async def _poll_forever(
        self,
        changes: Producer,
        stop: threading.Event,
        on_gone: Callable[[str, list[str]], Awaitable[None]] | None,
        once: bool,
    ) -> None:
        timing = self.timing
        next_full = trio.current_time() + timing.poll_interval
        while not (once and not self.backlog and self.tracker.caught_up()):
            now = trio.current_time()
            full = now >= next_full
            if full:
                next_full = now + timing.poll_interval
            self._wake.clear()
            poll = partial(
                self.index.poll,
                hot=self.tracker.hot(now, self.index.newest),
                full=full,
                sweep_slice=timing.sweep_slice(len(self.index.files)),
                hot_interval=timing.hot_poll_interval,
                # the thread keeps time with time.monotonic(); trio's clock has its own offset
                until=time.monotonic() + max(0.0, next_full - now),
                wake=self._wake,
                stop=stop,
            )
            obs = await trio.to_thread.run_sync(poll, abandon_on_cancel=True)
            found, gone = self.tracker.observe(
                obs.seen, obs.gone, trio.current_time(), poll=obs.full
            )
            if gone and on_gone is not None:
                await on_gone(self.tracker.pc_id, gone)
            for change in found:
                self.backlog.pop(change.rel_path, None)  # the live version supersedes it
                await changes.put(change, live=True)
            if obs.full:
                self._note(obs)
            self.stats.backlog = len(self.backlog)
            await trio.lowlevel.checkpoint()

    async def _feed_backlog(self, changes: Producer) -> None:
        """The backfill lane: one backlog entry at a time, whenever the readers have room."""
        while True:
            if not self.backlog:
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
