"""Live, in-memory status of the agent: what /health, /metrics and the dashboard read.

Plain data written by the stages (one trio thread, so no locks). Never holds a secret. Pure: it
imports no I/O, neither the web stack nor the Prometheus exporter (`web/` and `metrics` read it),
and time comes in as an argument (the trio clock, which the stages' timestamps use).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ..state.rows import DeadLetter, QueueCounts
from .activity import Activity
from .alerts import Alert
from .health import (
    DISK_FULL,
    QUEUE_DB_LOCKED,
    Health,
    HealthInputs,
    NothingWatched,
    PcHealth,
    assess,
)
from .histogram import Histogram, LabelledHistogram
from .pc_state import RUNNING, pc_state
from .sync_event_buffer import SyncEventBuffer
from .upstream import Upstream

STALE_POLLS = 3  # a PC is overdue after this many poll intervals without a complete scan
# a session whose row needed this many conditional replaces within the window: two agents
# that disagree on its newest copy (keep_newest.py), each replacing the other's
REPLACES_IN_WINDOW = 3
REPLACE_WINDOW = 600.0
STALE_MIN = 10.0
SILENT_WINDOW = 2 * 3600.0  # a PC whose live file changed this recently is in play

UPLOAD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000)
SCAN_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class StoreHealth(Protocol):
    """What the status reads of the queue database (`state.store.Store`)."""

    @property
    def problem(self) -> str | None:
        """Disk full or locked, when it is."""
        ...


@dataclass
class ScanStats:
    """Figures of a PC's last poll, written by its scanner."""

    polls: int = 0
    files: int = 0
    backlog: int = 0
    last_scan_seconds: float = 0.0
    last_scan_at: float | None = None  # trio clock
    observe: Callable[[float], None] | None = None  # e.g. a histogram's observe
    problems: dict[str, str] = field(default_factory=dict)  # unreadable sub-folders
    # files with a change seen and not acknowledged yet, and when the oldest such change was
    # first seen (trio clock): the sync lag is its age (intake/tracker.py)
    waiting: int = 0
    waiting_since: float | None = None

    def sync_lag(self, now: float) -> float:
        return 0.0 if self.waiting_since is None else max(0.0, now - self.waiting_since)


@dataclass(frozen=True, slots=True)
class LiveHand:
    """A PC's live session (the newest session id read from it) and its last HandNum.
    `seen_at`: the trio clock when this agent saw that hand appear in a live change (the
    monotonic clock, never the PC's); None when it was only read in a backfill."""

    session_id: int
    hand_num: int | None
    seen_at: float | None

    def age(self, now: float) -> float | None:
        return None if self.seen_at is None else max(0.0, now - self.seen_at)


def next_live_hand(
    current: LiveHand | None, session_id: int, hand_num: int | None, live: bool, now: float
) -> LiveHand | None:
    """The live hand after reading a session of the PC: a newer session replaces it, another
    hand of the same session moves it (a backfill read only forwards: an early copy of the
    session in another folder must not take it back), an older session changes nothing."""
    if current is not None:
        if session_id < current.session_id:
            return current
        if session_id == current.session_id:
            if hand_num == current.hand_num:
                return current
            if not live and (hand_num or -1) < (current.hand_num or -1):
                return current
    return LiveHand(session_id, hand_num, now if live else None)


@dataclass
class PcStatus:
    id: str
    watch_path: str
    name: str | None = None  # from the registry, for display
    description: str | None = None
    state: str = "starting"  # the scanner's: starting | running | error (`shown` is the word)
    reason: str | None = None
    missing: bool = False  # the watch folder does not exist: `missing` (an alert of its own)
    scan: ScanStats = field(default_factory=ScanStats)
    last_sync: float | None = None
    last_error: str | None = None
    # a read of this PC has not returned within GFX_SYNC_NAS_READ_TIMEOUT (the reason), until
    # its thread does: the PC is `hung` (its changes wait, none is dropped)
    read_hung: str | None = None
    hand: LiveHand | None = None  # the live session's last hand (the reader's)
    # trio clock: the last live rewrite of the live session's file, and since when no new hand
    # has come (its last new hand, or the first rewrite seen): for the pc_silent alert
    rewritten_at: float | None = None
    quiet_since: float | None = None

    def note_read(self, session_id: int, hand_num: int | None, live: bool, now: float) -> None:
        """A session of this PC was read (`now`: the trio clock)."""
        self.hand = next_live_hand(self.hand, session_id, hand_num, live, now)
        if live and self.hand is not None and self.hand.session_id == session_id:
            self.rewritten_at = now
            if self.quiet_since is None:
                self.quiet_since = now
            if self.hand.seen_at is not None:
                self.quiet_since = max(self.quiet_since, self.hand.seen_at)

    def silent_for(self, now: float) -> float | None:
        """Seconds without a new hand while its live file was rewritten within SILENT_WINDOW
        (PokerGFX rewrites the file as each hand ends); None for a PC not in play. Measured on
        this agent's clock only, never on the PC's file times."""
        if self.rewritten_at is None or self.quiet_since is None:
            return None
        if now - self.rewritten_at > SILENT_WINDOW:
            return None
        return max(0.0, now - self.quiet_since)

    def stale_for(self, poll_interval: float, now: float) -> float | None:
        """Seconds since the last complete poll, when overdue (a hung SMB mount raises nothing).
        `now` is the trio clock, as `last_scan_at`."""
        if self.state != RUNNING or self.scan.last_scan_at is None:
            return None
        age = now - self.scan.last_scan_at
        return age if age > max(STALE_MIN, STALE_POLLS * poll_interval) else None

    def shown(self, poll_interval: float, now: float) -> str:
        """The PC's state in the one vocabulary (observe/pc_state.py)."""
        return pc_state(
            self.state,
            missing=self.missing,
            stale=self.stale_for(poll_interval, now) is not None,
            hung=self.read_hung is not None,
        )


@dataclass
class AgentStatus:
    started_at: float = field(default_factory=time.time)
    pcs: dict[str, PcStatus] = field(default_factory=dict)
    registry_source: str | None = None  # "file", "kept" (the stored one) or "discovered"
    registry_error: str | None = None
    registry_missing: str | None = None  # the file is gone, the stored one is in force
    # no PC to watch, as the registry watcher found it; /health says so from `watch_settled_at`
    # (trio clock: the first registry read and scan done, and 2 x poll + 5 s after the start)
    nothing_watched: NothingWatched | None = None
    watch_settled_at: float | None = None
    upstream: Upstream = Upstream.UNKNOWN
    upstream_reason: str | None = None
    last_sync: float | None = None
    files_seen: Counter[str] = field(default_factory=Counter)
    sessions_upserted: Counter[str] = field(default_factory=Counter)
    sessions_synced: dict[str, int] = field(default_factory=dict)  # from the store, refreshed
    batch_pending: int = 0
    last_upload_error: str | None = None
    queue_counts: QueueCounts = field(default_factory=lambda: QueueCounts(0, 0, 0, 0, 0))
    queue_full: bool = False
    store: StoreHealth | None = None  # for its `problem` (disk full, locked)
    consecutive_upload_failures: int = 0
    # files the last read could not open or read (permissions, I/O), with the error: they
    # count in /health until a read of them succeeds or they go away
    unreadable_files: dict[tuple[str, str], str] = field(default_factory=dict)
    shutting_down: bool = False
    force_exit: bool = False  # a second signal: skip spilling to the queue, just go
    poll_interval: float = 2.0  # for "no complete scan for a while" in /health
    flush_interval: float = 5.0  # with poll_interval: when a waiting change counts as missing
    failure: str | None = None  # a core stage died
    alerts: list[Alert] = field(default_factory=list)
    alert_since: dict[str, float] = field(default_factory=dict)
    dead_letter_list: list[DeadLetter] = field(default_factory=list)
    activity: Activity = field(default_factory=Activity)
    sync_events: SyncEventBuffer = field(default_factory=SyncEventBuffer)
    upload_seconds: Histogram = field(default_factory=lambda: Histogram(UPLOAD_BUCKETS))
    batch_records: Histogram = field(default_factory=lambda: Histogram(BATCH_BUCKETS))
    scan_seconds: LabelledHistogram = field(default_factory=lambda: LabelledHistogram(SCAN_BUCKETS))
    clock_skew: float | None = None  # seconds ahead of upstream's clock (its answers' Date)
    # monotonic times of the recent conditional replaces of each session's row
    replaced: dict[tuple[str, int], list[float]] = field(default_factory=dict)

    def note_clock_skew(self, skew: float) -> None:
        self.clock_skew = skew

    def note_replaced(self, key: tuple[str, int], now: float) -> int:
        """A conditional replace of this session's row (keep_newest.py); how many within the
        window, this one included."""
        recent = [t for t in self.replaced.get(key, []) if now - t < REPLACE_WINDOW]
        recent.append(now)
        self.replaced[key] = recent
        return len(recent)

    def conflicting_sessions(self, now: float) -> list[tuple[str, int]]:
        for key in [k for k, ts in self.replaced.items() if now - ts[-1] >= REPLACE_WINDOW]:
            del self.replaced[key]  # bounded: a quiet session is forgotten
        return sorted(
            key
            for key, times in self.replaced.items()
            if sum(1 for t in times if now - t < REPLACE_WINDOW) >= REPLACES_IN_WINDOW
        )

    def uptime(self) -> float:
        return time.time() - self.started_at

    @property
    def store_problem(self) -> str | None:
        return self.store.problem if self.store is not None else None

    def mark_synced(self, pc_ids: list[str]) -> None:
        now = time.time()
        self.last_sync = now
        for pc_id in pc_ids:
            self.sessions_upserted[pc_id] += 1
            pc = self.pcs.get(pc_id)
            if pc is not None:
                pc.last_sync = now
        self.activity.count_synced(len(pc_ids))

    def pc_error(self, pc_id: str, message: str) -> None:
        pc = self.pcs.get(pc_id)
        if pc is not None:
            pc.last_error = message

    def update_queue(self, counts: QueueCounts, full: bool) -> None:
        """The ledger's view of the offline queue (it never imports this module)."""
        self.queue_counts = counts
        self.queue_full = full

    def pc_state(self, pc_id: str, now: float) -> str:
        """`now`: the trio clock."""
        return self.pcs[pc_id].shown(self.poll_interval, now)

    def health_inputs(self, now: float) -> HealthInputs:
        settled = self.watch_settled_at is not None and now >= self.watch_settled_at
        problem = self.store_problem
        return HealthInputs(
            upstream=self.upstream,
            upstream_reason=self.upstream_reason,
            pending=self.queue_counts.pending,
            store_problem=problem,
            failure=self.failure,
            registry_error=self.registry_error,
            pcs=tuple(
                PcHealth(
                    pc_id,
                    pc.shown(self.poll_interval, now),
                    pc.reason,
                    pc.stale_for(self.poll_interval, now),
                    tuple(sorted(pc.scan.problems)),
                    pc.scan.waiting,
                    pc.scan.sync_lag(now),
                    pc.read_hung,
                )
                for pc_id, pc in self.pcs.items()
            ),
            alerts=tuple(self.alerts),
            shutting_down=self.shutting_down,
            queue_full=self.queue_full,
            missing_after=self.missing_after,
            queued_for=(
                None
                if self.queue_counts.oldest_pending_at is None
                else max(0.0, time.time() - self.queue_counts.oldest_pending_at)
            ),
            registry_missing=self.registry_missing,
            nothing_watched=self.nothing_watched if settled else None,
            store_problem_code=(
                QUEUE_DB_LOCKED
                if problem is not None and problem.startswith("queue database locked")
                else DISK_FULL
            ),
        )

    @property
    def missing_after(self) -> float:
        """A settled change still unacknowledged this long is a session missing from the table
        (a live rewrite takes up to a poll to be seen and a flush to be sent)."""
        return 2 * self.poll_interval + self.flush_interval

    def health(self, now: float) -> Health:
        """`now`: the trio clock (trio.current_time())."""
        return assess(self.health_inputs(now))
