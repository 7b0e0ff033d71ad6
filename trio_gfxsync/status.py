"""Live, in-memory status of the agent: what /health, /metrics and the dashboard read.

Plain data written by the stages (one trio thread, so no locks). Never holds a secret.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .activity import Activity
from .alerts import Alert
from .registry import PcEntry
from .scanner import ScanStats
from .store import QueueCounts
from .sync_event_buffer import SyncEventBuffer
from .web.metrics import Metrics


@dataclass
class PcStatus:
    entry: PcEntry
    state: str = "starting"  # starting | running | error
    reason: str | None = None
    missing: bool = False  # the watch folder does not exist (an alert of its own)
    scan: ScanStats = field(default_factory=ScanStats)
    last_sync: float | None = None
    last_error: str | None = None


@dataclass
class AgentStatus:
    started_at: float = field(default_factory=time.time)
    pcs: dict[str, PcStatus] = field(default_factory=dict)
    registry_source: str | None = None
    registry_error: str | None = None
    upstream: str = "unknown"  # connected | offline | rate_limited | rejected | schema_mismatch
    upstream_reason: str | None = None
    last_sync: float | None = None
    files_seen: Counter[str] = field(default_factory=Counter)
    sessions_upserted: Counter[str] = field(default_factory=Counter)
    sessions_synced: dict[str, int] = field(default_factory=dict)  # from the store, refreshed
    batch_pending: int = 0
    last_upload_error: str | None = None
    queue_counts: QueueCounts = field(default_factory=lambda: QueueCounts(0, 0, 0, 0, 0))
    queue_full: bool = False
    store: Any = None  # the Store, for its `problem` (disk full, locked)
    consecutive_upload_failures: int = 0
    shutting_down: bool = False
    force_exit: bool = False  # a second signal: skip spilling to the queue, just go
    poll_interval: float = 2.0  # for "no complete scan for a while" in /health
    failure: str | None = None  # a core stage died
    alerts: list[Alert] = field(default_factory=list)
    alert_since: dict[str, float] = field(default_factory=dict)
    dead_letter_list: list[Any] = field(default_factory=list)
    activity: Activity = field(default_factory=Activity)
    sync_events: SyncEventBuffer = field(default_factory=SyncEventBuffer)
    metrics: Metrics = field(default_factory=Metrics)

    def __post_init__(self) -> None:
        self.metrics.attach(self)

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
