"""Alerts of DESIGN 3.5 (the spec's monitoring table plus a missing watch path), pure.

`evaluate` turns measured figures into the active alerts; `AlertBook` remembers since when
each is active and says which started and which cleared, so each is logged exactly then.
"""

from __future__ import annotations

from dataclasses import dataclass, field

WARN, CRITICAL, REVIEW = "warn", "critical", "review"

# every alert this agent can raise, for the metric (a 0 series for the inactive ones)
ALERT_NAMES = {
    "nas_disk_usage": WARN,
    "agent_memory": WARN,
    "batch_pending": WARN,
    "offline_pending": CRITICAL,
    "records_retried": REVIEW,
    "upload_failures": WARN,
    "dead_letters": REVIEW,
    "quarantined_files": REVIEW,
    "files_unreadable": REVIEW,
    "watch_path_missing": WARN,
    "clock_skew": REVIEW,
    "record_failing": REVIEW,
    "keep_newest_conflict": REVIEW,
    "pc_silent": WARN,
}


@dataclass(frozen=True, slots=True)
class Thresholds:
    disk_percent: float = 80.0
    memory_mb: float = 512.0
    batch_pending: int = 500
    offline_pending: int = 5000
    retried_records: int = 10
    retry_attempts: int = 5
    upload_failures: int = 5
    dead_letters: int = 1
    clock_skew_seconds: float = 60.0
    silent_minutes: float = 0.0  # 0: pc_silent off


@dataclass(frozen=True, slots=True)
class Figures:
    disk_percent: float | None
    memory_mb: float | None
    batch_pending: int
    offline_pending: int
    retried_records: int  # queued records refused at least `retry_attempts` times
    consecutive_upload_failures: int
    dead_letters: int
    missing_watch_paths: tuple[str, ...] = ()
    # a quarantined or unreadable file is a session missing from the table: never "healthy"
    quarantined: int = 0
    unreadable_files: int = 0
    # seconds this agent's clock is ahead of upstream's (the Date of its answers)
    clock_skew: float | None = None
    # records that failed alone (server error or timeout on their own request): "PC path session"
    failing_records: tuple[str, ...] = ()
    # sessions whose row needed repeated conditional replaces (two agents disagreeing)
    conflicting_sessions: tuple[str, ...] = ()
    # (PC, seconds without a new hand) of the PCs in play (status.PcStatus.silent_for)
    silent_pcs: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class Alert:
    name: str
    level: str
    message: str


def evaluate(f: Figures, t: Thresholds) -> list[Alert]:
    found: list[Alert] = []
    if f.disk_percent is not None and f.disk_percent >= t.disk_percent:
        found.append(
            Alert(
                "nas_disk_usage",
                WARN,
                f"NAS disk {f.disk_percent:.0f}% full (>= {t.disk_percent:.0f}%)",
            )
        )
    if f.memory_mb is not None and f.memory_mb >= t.memory_mb:
        found.append(
            Alert(
                "agent_memory", WARN, f"agent memory {f.memory_mb:.0f} MB (>= {t.memory_mb:.0f} MB)"
            )
        )
    if f.batch_pending >= t.batch_pending:
        found.append(
            Alert(
                "batch_pending",
                WARN,
                f"{f.batch_pending} records waiting for upload (>= {t.batch_pending})",
            )
        )
    if f.offline_pending >= t.offline_pending:
        found.append(
            Alert(
                "offline_pending",
                CRITICAL,
                f"{f.offline_pending} sessions in the offline queue (>= {t.offline_pending})",
            )
        )
    if f.retried_records >= t.retried_records:
        found.append(
            Alert(
                "records_retried",
                REVIEW,
                f"{f.retried_records} records refused {t.retry_attempts}+ times: look at the table",
            )
        )
    if f.consecutive_upload_failures >= t.upload_failures:
        found.append(
            Alert(
                "upload_failures",
                WARN,
                f"{f.consecutive_upload_failures} upload failures in a row",
            )
        )
    if f.dead_letters >= t.dead_letters:
        found.append(
            Alert(
                "dead_letters",
                REVIEW,
                f"{f.dead_letters} dead letter(s): see `trio-gfxsync dlq list`",
            )
        )
    if f.quarantined:
        found.append(
            Alert(
                "quarantined_files",
                REVIEW,
                f"{f.quarantined} file(s) quarantined, their sessions not in the table: see "
                "`trio-gfxsync dlq list`",
            )
        )
    if f.unreadable_files:
        found.append(
            Alert(
                "files_unreadable",
                REVIEW,
                f"{f.unreadable_files} file(s) could not be read (permissions or I/O): see the "
                "dashboard or the file_unreadable log lines",
            )
        )
    if f.clock_skew is not None and abs(f.clock_skew) > t.clock_skew_seconds:
        side = "ahead of" if f.clock_skew > 0 else "behind"
        found.append(
            Alert(
                "clock_skew",
                REVIEW,
                f"this machine's clock is {abs(f.clock_skew):.0f} s {side} Supabase's "
                f"(> {t.clock_skew_seconds:.0f} s): set up NTP on the NAS",
            )
        )
    if f.failing_records:
        shown = "; ".join(f.failing_records[:3])
        more = f" (+{len(f.failing_records) - 3} more)" if len(f.failing_records) > 3 else ""
        found.append(
            Alert(
                "record_failing",
                REVIEW,
                f"{len(f.failing_records)} record(s) failing alone (timeout or server error on "
                f"their own request, retried apart): {shown}{more}",
            )
        )
    if f.conflicting_sessions:
        found.append(
            Alert(
                "keep_newest_conflict",
                REVIEW,
                "row replaced again and again (two agents disagree on the newest copy?): "
                + ", ".join(f.conflicting_sessions[:5]),
            )
        )
    silent = [
        (pc, seconds)
        for pc, seconds in f.silent_pcs
        if t.silent_minutes > 0 and seconds >= t.silent_minutes * 60
    ]
    if silent:
        found.append(
            Alert(
                "pc_silent",
                WARN,
                "no new hand for "
                + ", ".join(
                    f"{seconds / 60:.0f} min from PC {pc}" for pc, seconds in sorted(silent)
                )
                + f" (>= {t.silent_minutes:g} min; its file changed within 2 h)",
            )
        )
    if f.missing_watch_paths:
        found.append(
            Alert(
                "watch_path_missing",
                WARN,
                "watch path missing: " + ", ".join(sorted(f.missing_watch_paths)),
            )
        )
    return found


@dataclass
class AlertBook:
    active: dict[str, tuple[Alert, float]] = field(default_factory=dict)  # name -> (alert, since)

    def update(self, alerts: list[Alert], now: float) -> tuple[list[Alert], list[Alert]]:
        """Record the current alerts; return (started, cleared)."""
        current = {a.name: a for a in alerts}
        started = [a for name, a in current.items() if name not in self.active]
        cleared = [a for name, (a, _) in self.active.items() if name not in current]
        for alert in cleared:
            del self.active[alert.name]
        for name, alert in current.items():
            since = self.active[name][1] if name in self.active else now
            self.active[name] = (alert, since)  # keep the start, refresh the message
        return started, cleared
