"""Monitor: refreshes the figures that come from the store and the system, and the alerts.

Runs every MONITOR_INTERVAL in the root nursery (so /health stays truthful while the core
drains). A hung NAS mount cannot stall it: the disk figure comes from a worker thread it
abandons after a deadline. Alerts are logged and shown in the activity when they start and
when they clear.
"""

from __future__ import annotations

import os
import resource
import shutil
import time
from pathlib import Path

import trio

from ..logs import get_logger
from ..settings import Settings
from ..state.store import Store
from .alerts import Alert, AlertBook, Figures, Thresholds, evaluate
from .status import AgentStatus

log = get_logger("monitor")

MONITOR_INTERVAL = 2.0
DISK_TIMEOUT = 2.0
DEAD_LETTERS_SHOWN = 100


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
    def __init__(self, settings: Settings, status: AgentStatus, store: Store) -> None:
        self.settings = settings
        self.status = status
        self.store = store
        self.thresholds = thresholds(settings)
        self.book = AlertBook()
        self._last_health: str | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.refresh()
        task_status.started()
        while True:
            await trio.sleep(MONITOR_INTERVAL)
            await self.refresh()

    async def refresh(self) -> None:
        status = self.status
        status.queue_counts = counts = await self.store.counts()
        status.sessions_synced = await self.store.sessions_synced()
        # re-read every time (bounded): a re-quarantined file changes its reason, not the count
        status.dead_letter_list = await self.store.recent_dead_letters(DEAD_LETTERS_SHOWN)
        disk = None
        with trio.move_on_after(DISK_TIMEOUT):
            try:
                disk = await trio.to_thread.run_sync(
                    disk_percent, self.settings.nas_base_path, abandon_on_cancel=True
                )
            except OSError:
                disk = None  # a missing base is reported by the scanners
        figures = Figures(
            disk_percent=disk,
            memory_mb=memory_mb(),
            batch_pending=status.batch_pending,
            offline_pending=counts.pending,
            retried_records=await self.store.retried(self.thresholds.retry_attempts),
            consecutive_upload_failures=status.consecutive_upload_failures,
            dead_letters=counts.dead_letters,
            missing_watch_paths=tuple(p for p, pc in status.pcs.items() if pc.missing),
        )
        self.apply_alerts(evaluate(figures, self.thresholds))
        self.log_health_change()

    def apply_alerts(self, alerts: list[Alert]) -> None:
        now = time.time()
        started, cleared = self.book.update(alerts, now)
        for alert in started:
            log.warning("alert_started", alert=alert.name, level=alert.level, message=alert.message)
            self.status.activity.add("alert", f"{alert.level}: {alert.message}")
        for alert in cleared:
            log.info("alert_cleared", alert=alert.name, level=alert.level)
            self.status.activity.add("alert", f"cleared: {alert.name}")
        self.status.alerts = [a for a, _ in self.book.active.values()]
        self.status.alert_since = {name: since for name, (_, since) in self.book.active.items()}

    def log_health_change(self) -> None:
        health = self.status.health(trio.current_time())
        if health.status != self._last_health:
            level = log.info if health.status == "healthy" else log.warning
            level("health_changed", status=health.status, reasons=list(health.reasons))
            self._last_health = health.status
