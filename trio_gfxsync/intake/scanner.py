"""Stat-polling scanner for one PC folder: which files are new or changed since acknowledged.

Pure Python, no watchdog: SMB mounts do not deliver inotify events for writes made by other
machines, so polling size and mtime is the only signal that works on a NAS. The interface is
small on purpose (`walk_folder`, `FileTracker`, `run_scanner`) so the walk can be optimised alone.

A change is reported once per version. The reader answers each report through the tracker:
acknowledged (stored), `retry_when_settled` (it was mid-write), or left blocked until the file
changes again (broken). The startup backfill goes out newest file first and never blocks the
live path: live changes are sent at every poll, the backlog only fills the time in between.
"""

from __future__ import annotations

import os
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from fnmatch import translate
from pathlib import Path
from typing import Literal

import trio

from ..logs import get_logger
from ..observe.status import ScanStats
from ..state.rows import AckedFile
from .registry import is_system_folder

log = get_logger("scanner")

Stat = tuple[int, int]  # (size, mtime_ns)
BLOCKED_RETRY_POLLS = 30  # an unreadable file is read again after this many polls (~1 min)
Snapshot = dict[str, Stat]  # rel_path ('/'-separated) -> stat


@dataclass(frozen=True, slots=True)
class FileChange:
    pc_id: str
    rel_path: str
    size: int
    mtime_ns: int
    kind: Literal["created", "modified"]
    settled: bool  # same size and mtime on two consecutive polls
    live: bool = True  # False for the startup backfill


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Case-insensitive: files come from Windows PCs, where `.JSON` and `.json` are one name."""
    return re.compile(translate(pattern), re.IGNORECASE)


def walk_folder(
    root: Path,
    pattern: re.Pattern[str],
    skip: frozenset[Path] = frozenset(),
    problems: dict[str, str] | None = None,
) -> Snapshot:
    """Blocking recursive walk (run it in a worker thread): matching files with size and mtime.

    Dot-files and dot-folders are skipped (SMB clients leave `.DS_Store`, `._x`, temp files),
    so are the NAS's own folders (@eaDir, #recycle) and folders in `skip` (the error folder,
    when it lies inside the tree). The root must be readable (OSError otherwise); a sub-folder
    that is not is left out and named in `problems`, so one bad day folder never hides a PC.
    """
    snapshot: Snapshot = {}
    stack: list[tuple[str, str]] = [(str(root), "")]
    skip_str = {str(p) for p in skip}
    while stack:
        folder, prefix = stack.pop()
        try:
            entries = os.scandir(folder)
        except OSError as exc:
            if not prefix:
                raise
            if problems is not None and not isinstance(exc, FileNotFoundError):
                problems[prefix.rstrip("/")] = exc.strerror or type(exc).__name__
            continue
        with entries:
            for entry in entries:
                name = entry.name
                if name.startswith("."):
                    continue
                try:
                    if entry.is_dir(follow_symlinks=False):
                        if entry.path not in skip_str and not is_system_folder(name):
                            stack.append((entry.path, f"{prefix}{name}/"))
                        continue
                    if not pattern.match(name) or not entry.is_file(follow_symlinks=False):
                        continue
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # deleted between listing and stat: the next poll sees it gone
                snapshot[f"{prefix}{name}"] = (st.st_size, st.st_mtime_ns)
    return snapshot


@dataclass
class FileTracker:
    """What one scanner knows about its files; pure state, driven by polls and reader outcomes."""

    pc_id: str
    acked: dict[str, AckedFile]
    reported: dict[str, Stat] = field(default_factory=dict)
    needs_settle: set[str] = field(default_factory=set)
    previous: Snapshot = field(default_factory=dict)
    blocked: dict[str, int] = field(default_factory=dict)  # unreadable: poll to look again at
    polls: int = 0

    def diff(self, snapshot: Snapshot) -> tuple[list[FileChange], list[str]]:
        """Changes to report for this poll, and acknowledged files that have disappeared."""
        changes: list[FileChange] = []
        self.polls += 1
        for rel in [r for r, at in self.blocked.items() if at <= self.polls]:
            del self.blocked[rel]
            self.reported.pop(rel, None)
        for rel, stat in snapshot.items():
            acked = self.acked.get(rel)
            if acked is not None and (acked.size, acked.mtime_ns) == stat:
                continue
            if self.reported.get(rel) == stat:
                continue  # in flight, or broken and waiting for the file to change
            settled = self.previous.get(rel) == stat
            if rel in self.needs_settle and not settled:
                continue
            self.needs_settle.discard(rel)
            self.blocked.pop(rel, None)
            self.reported[rel] = stat
            changes.append(
                FileChange(
                    pc_id=self.pc_id,
                    rel_path=rel,
                    size=stat[0],
                    mtime_ns=stat[1],
                    kind="created" if acked is None else "modified",
                    settled=settled,
                )
            )
        gone = [rel for rel in self.acked if rel not in snapshot]
        vanished = [r for r in (*self.reported, *self.needs_settle) if r not in snapshot]
        for rel in [*gone, *vanished]:
            self.acked.pop(rel, None)
            self.reported.pop(rel, None)
            self.needs_settle.discard(rel)
            self.blocked.pop(rel, None)
        self.previous = snapshot
        return changes, gone

    # -- outcomes reported back by the reader and the uploader --

    def acknowledge(self, rel: str, acked: AckedFile) -> None:
        self.acked[rel] = acked

    def acked_version(self, rel: str) -> AckedFile | None:
        return self.acked.get(rel)

    def acked_paths(self) -> list[str]:
        return list(self.acked)

    def forget_acked(self, rel: str) -> None:
        """Another process forgot this file's state (`dlq replay`): read it again."""
        self.acked.pop(rel, None)
        self.reported.pop(rel, None)

    def retry_when_settled(self, rel: str, stat: Stat) -> None:
        """The version was being written while read: report it again once it stops changing."""
        if self.reported.get(rel) == stat:
            del self.reported[rel]
        self.needs_settle.add(rel)

    def give_up(self, rel: str, stat: Stat) -> None:
        """Unreadable (permissions, I/O): look again when it changes or after a while (a
        permission fixed on the NAS changes no mtime; a session's last write never changes)."""
        self.reported[rel] = stat
        self.blocked[rel] = self.polls + BLOCKED_RETRY_POLLS

    def caught_up(self) -> bool:
        """Every file seen is acknowledged, or blocked until it changes (for one-shot scans)."""
        if self.needs_settle:
            return False
        for rel, stat in self.reported.items():
            acked = self.acked.get(rel)
            if rel not in self.blocked and (acked is None or (acked.size, acked.mtime_ns) != stat):
                return False
        return True

    def release(self, rel: str, stat: Stat) -> None:
        """Forget a report so that the next poll looks at the file afresh."""
        if self.reported.get(rel) == stat:
            del self.reported[rel]


@dataclass(frozen=True, slots=True)
class WatchedPc:
    """A PC folder being scanned, as the reader needs it: where it is and who to tell."""

    root: Path  # the resolved watch folder
    tracker: FileTracker


def newest_first(changes: Iterable[FileChange]) -> list[FileChange]:
    return sorted(changes, key=lambda c: c.mtime_ns, reverse=True)


async def run_scanner(
    tracker: FileTracker,
    root: Path,
    pattern: re.Pattern[str],
    changes: trio.MemorySendChannel[FileChange],
    *,
    poll_interval: float,
    skip: frozenset[Path] = frozenset(),
    stats: ScanStats | None = None,
    on_gone: Callable[[str, list[str]], Awaitable[None]] | None = None,
    once: bool = False,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Poll `root` forever (with `once`: until every file is acknowledged, for `scan`).
    Raises OSError when the folder cannot be read (the caller retries).

    `changes` is not closed here: the supervising task owns it across restarts of the scanner.
    """
    stats = stats if stats is not None else ScanStats()
    backlog: dict[str, FileChange] = {}
    first = True
    while True:
        next_poll = trio.current_time() + poll_interval
        started = trio.current_time()
        # abandon_on_cancel: a stale SMB mount can hang a stat forever; shutdown must not wait
        problems: dict[str, str] = {}
        snapshot = await trio.to_thread.run_sync(
            walk_folder, root, pattern, skip, problems, abandon_on_cancel=True
        )
        for folder, reason in problems.items():
            if stats.problems.get(folder) != reason:
                log.warning("subfolder_unreadable", pc_id=tracker.pc_id, path=folder, error=reason)
        stats.problems = problems
        if problems:
            # an unreadable folder is not an empty one: its files keep their last known state
            # (or a flaky SMB folder would be forgotten and re-sent on every flip)
            hidden = tuple(f"{folder}/" for folder in problems)
            known = {rel: (a.size, a.mtime_ns) for rel, a in tracker.acked.items()}
            known.update(tracker.previous)
            for rel, stat in known.items():
                if rel.startswith(hidden) and rel not in snapshot:
                    snapshot[rel] = stat
        found, gone = tracker.diff(snapshot)
        if gone and on_gone is not None:
            await on_gone(tracker.pc_id, gone)
        stats.polls += 1
        stats.files = len(snapshot)
        stats.last_scan_seconds = trio.current_time() - started
        stats.last_scan_at = trio.current_time()
        if stats.observe is not None:
            stats.observe(stats.last_scan_seconds)
        if first:
            for change in newest_first(found):
                backlog[change.rel_path] = replace(change, live=False)
            first = False
            stats.backlog = len(backlog)
            task_status.started()
        else:
            for change in found:
                backlog.pop(change.rel_path, None)  # the live version supersedes the queued one
                await changes.send(change)
        stats.backlog = len(backlog)
        if once and not backlog and tracker.caught_up():
            return
        with trio.move_on_at(next_poll):
            while backlog:
                rel, change = next(iter(backlog.items()))
                await changes.send(change)
                del backlog[rel]
                stats.backlog = len(backlog)
            await trio.sleep_forever()
