"""Live, in-memory status of the agent: what /health, the dashboard and metrics read.

Plain data written by the stages (one trio thread, so no locks). Never holds a secret.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .registry import PcEntry
from .scanner import ScanStats
from .store import QueueCounts


@dataclass
class PcStatus:
    entry: PcEntry
    state: str = "starting"  # starting | running | error
    reason: str | None = None
    scan: ScanStats = field(default_factory=ScanStats)
    last_sync: float | None = None


@dataclass
class AgentStatus:
    started_at: float = field(default_factory=time.time)
    pcs: dict[str, PcStatus] = field(default_factory=dict)
    registry_source: str | None = None
    registry_error: str | None = None
    upstream: str = "unknown"  # connected | offline | rejected | schema_mismatch
    upstream_reason: str | None = None
    last_sync: float | None = None
    files_seen: Counter[str] = field(default_factory=Counter)
    sessions_upserted: Counter[str] = field(default_factory=Counter)
    batches_uploaded: int = 0
    batch_pending: int = 0
    last_upload_error: str | None = None
    queue_counts: QueueCounts = field(default_factory=lambda: QueueCounts(0, 0, 0, 0, 0))
    queue_full: bool = False
    store: Any = None  # the Store, for its `problem` (disk full, locked) and counts
    consecutive_upload_failures: int = 0
    shutting_down: bool = False

    def mark_synced(self, pc_ids: list[str]) -> None:
        now = time.time()
        self.last_sync = now
        for pc_id in pc_ids:
            self.sessions_upserted[pc_id] += 1
            pc = self.pcs.get(pc_id)
            if pc is not None:
                pc.last_sync = now
