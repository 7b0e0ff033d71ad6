"""Monitor: refreshes the figures that come from the store and the system, and the alerts.

Runs every MONITOR_INTERVAL in the root nursery (so /health stays truthful while the core
drains). A hung NAS mount cannot stall it: the disk figure comes from a worker thread it
abandons after a deadline. Alerts are logged and shown in the activity when they start and
when they clear.
"""

from __future__ import annotations

import math
import os
import resource
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import trio

from ..logs import get_logger, scrub
from ..nas_calls import NasCalls
from ..settings import Settings
from ..state.store import Store
from .alerts import Alert, AlertBook, Figures, Thresholds, evaluate
from .backfill import BackfillProgress
from .notices import Notice, alert_notice, health_notice
from .status import AgentStatus

log = get_logger("monitor")

MONITOR_INTERVAL = 2.0
DISK_TIMEOUT = 2.0
DISK_EVERY = 10.0  # seconds between looks at the NAS's disk usage
DEAD_LETTERS_SHOWN = 100
SYNCED_EVERY = 5.0  # seconds between counts of the sessions synced (a scan of file_state)


def thresholds(settings: Settings) -> Thresholds:
    return Thresholds(
        disk_percent=settings.alert_disk_percent,
        memory_mb=settings.alert_memory_mb,
        batch_pending=settings.alert_batch_pending,
        offline_pending=settings.alert_offline_pending,
        retried_records=settings.alert_retried_records,
        retry_attempts=settings.alert_retry_attempts,
        upload_failures=settings.alert_upload_failures,
        dead_letters=settings.alert_dead_letters,
        clock_skew_seconds=settings.alert_clock_skew_seconds,
        silent_minutes=settings.alert_silent_minutes,
    )


def disk_percent(path: Path) -> float:
    usage = shutil.disk_usage(path)
    return 100.0 * usage.used / usage.total if usage.total else 0.0


def memory_mb() -> float:
    """Resident memory now (Linux /proc), else the peak from getrusage."""
    try:
        with open("/proc/self/statm", "rb") as handle:
            resident_pages = int(handle.read().split()[1])
        return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Monitor:
    def __init__(
        self,
        settings: Settings,
        status: AgentStatus,
        store: Store,
        nas: NasCalls | None = None,
        notify: Callable[[Notice], None] | None = None,
    ) -> None:
        self.settings = settings
        self.notify = notify  # the notifier's submit: health changes and alerts
        # the disk's figures come from the NAS: a thread of its own, and none more while one hangs
        self.nas = nas or NasCalls(DISK_TIMEOUT)
        self.status = status
        self.store = store
        self.thresholds = thresholds(settings)
        self.book = AlertBook()
        self._last_health: str | None = None
        self.backfill = BackfillProgress()
        self._read_at = -1  # store generation of the figures shown
        self._retried = 0
        self._failing: tuple[str, ...] = ()
        self._synced_stale = True
        self._synced_at = -math.inf
        self._disk: float | None = None
        self._disk_at = -math.inf

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.refresh()
        task_status.started()
        while True:
            await trio.sleep(MONITOR_INTERVAL)
            await self.refresh()

    async def refresh(self) -> None:
        status = self.status
        store = self.store
        await store.check_elsewhere()
        if store.generation != self._read_at:
            # the store changed: figures again (bounded queries; a re-quarantined file changes
            # its reason, not the count). Unchanged: the last ones hold, and an idle agent
            # costs no queries.
            self._read_at = store.generation
            status.queue_counts = await store.counts()
            status.dead_letter_list = await store.recent_dead_letters(DEAD_LETTERS_SHOWN)
            self._retried = await store.retried(self.thresholds.retry_attempts)
            failing = await store.failing() if status.queue_counts.failing else []
            self._failing = tuple(
                f"{f.pc_id} {f.rel_path} session {f.session_id} ({f.reason}, {f.failures}x)"
                for f in failing
            )
            self._synced_stale = True
        now = trio.current_time()
        if self._synced_stale and now >= self._synced_at + SYNCED_EVERY:
            # a count over every acknowledged file: at most every SYNCED_EVERY seconds
            status.sessions_synced = await store.sessions_synced()
            self._synced_stale, self._synced_at = False, now
        counts = status.queue_counts
        if now >= self._disk_at + DISK_EVERY:
            self._disk_at = now
            self._disk = None
            with trio.move_on_after(DISK_TIMEOUT):
                try:
                    self._disk = await self.nas.call(
                        ("disk",), disk_percent, self.settings.nas_base_path
                    )
                except OSError:
                    # a missing base is reported by the scanners, a hung one by its PCs
                    self._disk = None
        disk = self._disk
        figures = Figures(
            disk_percent=disk,
            memory_mb=memory_mb(),
            batch_pending=status.batch_pending,
            offline_pending=counts.pending,
            retried_records=self._retried,
            consecutive_upload_failures=status.consecutive_upload_failures,
            dead_letters=counts.dead_letters,
            missing_watch_paths=tuple(p for p, pc in status.pcs.items() if pc.missing),
            quarantined=counts.quarantined,
            unreadable_files=len(status.unreadable_files),
            clock_skew=status.clock_skew,
            failing_records=self._failing,
            conflicting_sessions=tuple(
                f"{pc_id} session {session_id}"
                for pc_id, session_id in status.conflicting_sessions(time.monotonic())
            ),
            silent_pcs=tuple(
                (pc_id, silent)
                for pc_id, pc in status.pcs.items()
                if (silent := pc.silent_for(now)) is not None
            ),
        )
        self.apply_alerts(evaluate(figures, self.thresholds))
        self.log_health_change()
        self.log_backfill(now)

    def log_backfill(self, now: float) -> None:
        status = self.status
        line = self.backfill.update(
            now,
            backlog=sum(pc.scan.backlog for pc in status.pcs.values()),
            files_read=sum(status.files_seen.values()),
            sessions_stored=sum(status.sessions_upserted.values()),
            waiting=status.batch_pending,
        )
        if line is not None:
            log.info(line[0], **line[1])

    def apply_alerts(self, alerts: list[Alert]) -> None:
        now = time.time()
        started, cleared = self.book.update(alerts, now)
        for alert in started:
            log.warning("alert_started", alert=alert.name, level=alert.level, message=alert.message)
            self.status.activity.add("alert", f"{alert.level}: {alert.message}")
        for alert in cleared:
            log.info("alert_cleared", alert=alert.name, level=alert.level)
            self.status.activity.add("alert", f"cleared: {alert.name}")
        if self.notify is not None:
            for alerts_, was_started in ((started, True), (cleared, False)):
                for alert in alerts_:
                    self.notify(
                        alert_notice(
                            alert.name, alert.level, scrub(alert.message), was_started, now
                        )
                    )
        self.status.alerts = [a for a, _ in self.book.active.values()]
        self.status.alert_since = {name: since for name, (_, since) in self.book.active.items()}

    def log_health_change(self) -> None:
        health = self.status.health(trio.current_time())
        if health.status != self._last_health:
            level = log.info if health.status == "healthy" else log.warning
            level("health_changed", status=health.status, reasons=list(health.reasons))
            if (
                self.notify is not None
                and self._last_health is not None
                and not self.status.shutting_down
            ):
                # the first status after start is no change, a stop is no news
                reasons = [scrub(r) for r in health.reasons]
                self.notify(health_notice(health.status, self._last_health, reasons, time.time()))
            self._last_health = health.status
