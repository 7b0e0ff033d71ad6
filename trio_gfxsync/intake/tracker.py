"""What one PC's scanner has told the reader, and what came of it: pure state, no I/O.

A change is reported once per file version. The reader answers each report through the tracker:
acknowledged (stored, queued, quarantined, dead-lettered: via the ledger), `retry_when_settled`
(it was being written), `release` (it vanished), or `give_up` (unreadable: looked at again after
a while, or when it changes). The tracker also keeps the *hot set*: the files worth a stat every
hot tick, because the agent saw them change, because they are the newest of the PC (the live
session stays hot through a long break), or because they are waiting to settle.

The *sync lag* is kept here too, per file: the age of the oldest version the table does not hold
yet. Each version reported is noted with the time (the monotonic clock, never a PC's mtime) the
agent first saw it; acknowledging a version ends it and every version reported before it (the
table holds newer bytes), whatever newer version is already on its way. A file rewritten faster
than the table catches up therefore shows the age of its oldest unacknowledged version, never
the length of the busy stretch. The walk at a start reports every file at once (10^5 on a full
share): those get no entry each but share the walk's time, their one version being `reported`.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from ..keep_newest import Copy
from ..records import UNKNOWN, Stat, make_stat, stat_fields
from .folder_index import Seen

BLOCKED_RETRY_POLLS = 30  # an unreadable file is read again after this many polls (~1 min)
HOT_WINDOW = 600.0  # seconds a file stays hot after the agent saw it change
HOT_MAX = 32  # files per PC stat'ed every hot tick at most (the most recently changed)
HOT_NEWEST = 3  # the PC's newest files stay hot whatever their age


def same_version(acked: Stat, stat: Stat) -> bool:
    """Acknowledged `acked` describes the file now at `stat` (unknown fields match anything)."""
    if acked == stat:
        return True  # the common case, without unpacking
    size, mtime_ns, ctime_ns, inode = stat_fields(acked)
    now = stat_fields(stat)
    return (
        size == now[0]
        and mtime_ns == now[1]
        and ctime_ns in (UNKNOWN, now[2])
        and inode in (UNKNOWN, now[3])
    )


@dataclass(frozen=True, slots=True)
class FileChange:
    pc_id: str
    rel_path: str
    size: int
    mtime_ns: int
    kind: Literal["created", "modified", "reread"]  # reread: send again, it has not changed
    settled: bool  # its stat has not changed for a poll interval
    live: bool = True  # False for the startup backfill
    ctime_ns: int = UNKNOWN
    inode: int = UNKNOWN

    @property
    def stat(self) -> Stat:
        return make_stat(self.size, self.mtime_ns, self.ctime_ns, self.inode)


@dataclass
class FileTracker:
    pc_id: str
    acked: dict[str, Stat]  # the acknowledged version of each file
    reported: dict[str, Stat] = field(default_factory=dict)
    # files sent back as still being written, with the version read half-written: that version
    # waits until it settles; a newer one is read once it has held for one look
    needs_settle: dict[str, Stat] = field(default_factory=dict)
    blocked: dict[str, int] = field(default_factory=dict)  # unreadable: poll to look again at
    changed_at: dict[str, float] = field(default_factory=dict)  # seen changing (monotonic)
    polls: int = 0
    # called when the hot set must change at once (a file to watch until it settles)
    hot_changed: Callable[[], None] | None = None
    # copies read and sent but not acknowledged yet, for choosing among a session's copies
    inflight: dict[int, dict[str, Copy]] = field(default_factory=dict)
    _inflight_session: dict[str, int] = field(default_factory=dict)
    # versions reported and not acknowledged yet, oldest first, with the time each was first
    # seen; files the first walk reported have no entry (see `_walk_pending`)
    unacked: dict[str, list[tuple[Stat, float]]] = field(default_factory=dict)
    walked_at: float | None = None  # the first walk's time while any file it reported waits
    hot_window: float = HOT_WINDOW
    hot_max: int = HOT_MAX
    hot_newest: int = HOT_NEWEST

    def observe(
        self,
        seen: Mapping[str, Seen],
        gone: Iterable[str],
        now: float,
        *,
        poll: bool,
        initial: bool = False,
    ) -> tuple[list[FileChange], list[str]]:
        """Changes to report, and acknowledged files that have disappeared. `poll`: a full poll
        (counts towards retrying blocked files), not only a hot tick. `initial`: the first walk
        after a start, where every file is new to the index but none was seen changing."""
        changes: list[FileChange] = []
        if poll:
            self.polls += 1
            for rel in [r for r, at in self.blocked.items() if at <= self.polls]:
                del self.blocked[rel]
                stat = self.reported.pop(rel, None)
                if stat is not None and rel not in seen:
                    self._note_version(rel, stat, now)
                    changes.append(self.change(rel, stat, settled=True))
        for rel, observed in seen.items():
            stat = observed.stat
            if observed.changed and not initial:
                self.changed_at[rel] = now
            acked = self.acked.get(rel)
            if acked is not None and same_version(acked, stat):
                if initial and acked == stat:
                    # as loaded from the store: share the index's path string and stat
                    del self.acked[rel]
                    self.acked[rel] = stat
                self.needs_settle.pop(rel, None)
                if rel in self.unacked or rel in self.reported:
                    self._caught_up(rel)
                continue
            if self.reported.get(rel) == stat:
                continue  # in flight, or broken and waiting for the file to change
            torn = self.needs_settle.get(rel)
            if torn is not None and not observed.settled and (observed.changed or stat == torn):
                # still the version read half-written, or changing as we look: a table played
                # faster than the settle time would otherwise never be read again until it paused
                continue
            if not initial:
                self._note_version(rel, stat, now)  # before `change` replaces `reported`
            elif self.walked_at is None:
                self.walked_at = now
            changes.append(self.change(rel, stat, settled=observed.settled))
        vanished = []
        for rel in gone:
            if self.acked.pop(rel, None) is not None:
                vanished.append(rel)
            self.reported.pop(rel, None)
            self.needs_settle.pop(rel, None)
            self.blocked.pop(rel, None)
            self.changed_at.pop(rel, None)
            self.unacked.pop(rel, None)
        if len(self.changed_at) > 4 * self.hot_max:  # a folder copied in: keep the most recent
            keep = heapq.nlargest(2 * self.hot_max, self.changed_at.items(), key=lambda kv: kv[1])
            self.changed_at = dict(keep)
        return changes, vanished

    def change(self, rel: str, stat: Stat, *, settled: bool, live: bool = True) -> FileChange:
        """The change to report for `rel` at `stat` (created unless a version was
        acknowledged), now marked reported; the scanner's backlog calls it again for a
        version it kept as a bare stat, which changes nothing but the object."""
        self.needs_settle.pop(rel, None)
        self.blocked.pop(rel, None)
        self.reported[rel] = stat
        size, mtime_ns, ctime_ns, inode = stat_fields(stat)
        return FileChange(
            pc_id=self.pc_id,
            rel_path=rel,
            size=size,
            mtime_ns=mtime_ns,
            kind="created" if rel not in self.acked else "modified",
            settled=settled,
            live=live,
            ctime_ns=ctime_ns,
            inode=inode,
        )

    def hot(self, now: float, newest: Iterable[str]) -> list[str]:
        """The files to stat every hot tick: waiting to settle, seen changing within hot_window
        (the hot_max most recent, and the last hot_newest whatever their age), and the PC's
        newest by mtime (`newest`, from the index: the live session after a restart)."""
        for rel in [r for r, at in self.changed_at.items() if now - at > self.hot_window]:
            if len(self.changed_at) <= self.hot_newest:
                break  # the last ones seen changing stay, however old
            del self.changed_at[rel]
        recent = heapq.nlargest(self.hot_max, self.changed_at, key=self.changed_at.__getitem__)
        hot = dict.fromkeys([*self.needs_settle, *recent])
        for rel in list(newest)[: self.hot_newest]:
            hot[rel] = None
        return list(hot)

    # -- outcomes reported back by the reader and the ledger --

    def acknowledge(self, rel: str, stat: Stat) -> None:
        self._settle_versions(rel, stat)
        reported = self.reported.get(rel)
        if reported is not None and same_version(stat, reported):
            # the report is done: the acknowledged version answers for it from now on, and
            # the one stat the index holds serves both (10^5 files, two copies of each)
            del self.reported[rel]
            if not self.reported:
                self.reported = {}  # a dict never shrinks: drop the table a backfill grew
            stat = reported if reported == stat else stat
        self.acked[rel] = stat
        session = self._inflight_session.pop(rel, None)
        if session is not None:
            copies = self.inflight.get(session, {})
            copies.pop(rel, None)
            if not copies:
                self.inflight.pop(session, None)

    def note_inflight(self, session_id: int, copy: Copy) -> None:
        self.inflight.setdefault(session_id, {})[copy.rel_path] = copy
        self._inflight_session[copy.rel_path] = session_id

    # -- the sync lag --

    def _note_version(self, rel: str, stat: Stat, now: float) -> None:
        """A version reported outside the first walk: waiting from `now` on."""
        versions = self.unacked.get(rel)
        if versions is None:
            versions = self.unacked[rel] = self._walk_version(rel)
        if not versions or not same_version(versions[-1][0], stat):
            versions.append((stat, now))

    def _walk_version(self, rel: str) -> list[tuple[Stat, float]]:
        """The version of `rel` the first walk reported, if it still waits, as an entry."""
        stat = self.reported.get(rel)
        if self.walked_at is None or stat is None or rel in self.blocked:
            return []
        return [(stat, self.walked_at)]

    def _settle_versions(self, rel: str, stat: Stat) -> None:
        """`stat` is acknowledged: it and the versions reported before it wait no more."""
        versions = self.unacked.get(rel)
        if versions is None:
            return  # none, or the walk's one version: `reported`, cleared by acknowledge
        for i in range(len(versions) - 1, -1, -1):
            if same_version(stat, versions[i][0]):
                del versions[: i + 1]
                break
        # a version never reported (read as it changed) leaves the rest waiting until the file
        # is seen at it (`_caught_up`): its place among them is not known
        if not versions:
            del self.unacked[rel]

    def _caught_up(self, rel: str) -> None:
        """The file is seen at its acknowledged version: nothing of it waits any more."""
        self.unacked.pop(rel, None)
        if rel not in self.blocked:
            self.reported.pop(rel, None)  # a report overtaken by a read of newer bytes

    def _walk_pending(self) -> bool:
        """Some file the first walk reported still waits (the first found ends the look)."""
        if self.walked_at is None:
            return False
        for rel in self.reported:
            if rel not in self.unacked and rel not in self.blocked:
                return True
        self.walked_at = None
        return False

    def waiting(self) -> int:
        """Files with a change reported and not acknowledged yet (unreadable ones aside: they
        have alerts of their own): what the table still lacks from this PC."""
        extra = sum(1 for rel in self.unacked if rel not in self.reported)
        blocked = sum(1 for rel in self.blocked if rel in self.reported or rel in self.unacked)
        return len(self.reported) + extra - blocked

    def oldest_unacked(self) -> float | None:
        """When the agent first saw the oldest change the table does not hold yet (monotonic
        clock), None when it holds them all: now minus this is the PC's sync lag."""
        oldest = self.walked_at if self._walk_pending() else None
        for rel, versions in self.unacked.items():
            if rel not in self.blocked and (oldest is None or versions[0][1] < oldest):
                oldest = versions[0][1]
        return oldest

    def inflight_copies(self, session_id: int) -> dict[str, Copy]:
        return dict(self.inflight.get(session_id, {}))

    def acked_version(self, rel: str) -> Stat | None:
        return self.acked.get(rel)

    def acked_paths(self) -> list[str]:
        return list(self.acked)

    def forget_acked(self, rel: str) -> None:
        """Another process forgot this file's state (`dlq replay`): read it again."""
        self.acked.pop(rel, None)
        self.reported.pop(rel, None)
        self.unacked.pop(rel, None)

    def retry_when_settled(self, rel: str, stat: Stat) -> None:
        """The version was being written while read: report it again once it settles, or once a
        newer version has held still for one look (a fast table rewrites before any settle).
        It still waits (the table lacks it) from when it was first seen."""
        if self.reported.get(rel) == stat:
            self._keep_waiting(rel)
            del self.reported[rel]
        self.needs_settle[rel] = stat
        if self.hot_changed is not None:
            self.hot_changed()  # hot from the next tick on

    def give_up(self, rel: str, stat: Stat) -> None:
        """Unreadable (permissions, I/O): look again when it changes or after a while (a
        permission fixed on the NAS changes no mtime; a session's last write never changes).
        Its waiting versions leave the sync lag: the unreadable file has an alert of its own."""
        self.unacked.pop(rel, None)
        self.reported[rel] = stat
        self.blocked[rel] = self.polls + BLOCKED_RETRY_POLLS

    def release(self, rel: str, stat: Stat) -> None:
        """Forget a report so that the next look at the file reports it afresh."""
        if self.reported.get(rel) == stat:
            self._keep_waiting(rel)
            del self.reported[rel]
            self.needs_settle[rel] = stat  # look at it again soon, not only at the next sweep
            if self.hot_changed is not None:
                self.hot_changed()

    def _keep_waiting(self, rel: str) -> None:
        """`reported[rel]` is about to go while its version still waits: the first walk's
        version of the file gets an entry of its own (it would leave the lag otherwise)."""
        if rel not in self.unacked and (walk := self._walk_version(rel)):
            self.unacked[rel] = walk

    def caught_up(self) -> bool:
        """Every file seen is acknowledged, or blocked until it changes (for one-shot scans)."""
        if self.needs_settle:
            return False
        for rel, stat in self.reported.items():
            acked = self.acked.get(rel)
            if rel not in self.blocked and (acked is None or not same_version(acked, stat)):
                return False
        return True


def reread(pc_id: str, rel_path: str, stat: Stat, *, live: bool = True) -> FileChange:
    """A file to read and send again though it has not changed (the copy it beat is gone)."""
    size, mtime_ns, ctime_ns, inode = stat_fields(stat)
    return FileChange(
        pc_id=pc_id,
        rel_path=rel_path,
        size=size,
        mtime_ns=mtime_ns,
        kind="reread",
        settled=True,
        live=live,
        ctime_ns=ctime_ns,
        inode=inode,
    )
