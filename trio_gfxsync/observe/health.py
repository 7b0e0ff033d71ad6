"""The truth about the agent in one word, with its reasons (DESIGN 3.5), pure.

healthy   (200) everything flowing
degraded  (200) upstream offline or rate-limiting (queueing as designed), a PC folder unreadable,
                missing, stale or hung, an invalid or missing registry (the last good one is
                kept), folders but no PC enabled or matching, any warn or review alert
unhealthy (503) key or privileges rejected, schema mismatch, queue database unusable or disk
                full, offline queue critical, a core stage died, a NAS base missing or empty

Each reason comes with a stable code (`reason_codes`, the same order): the words of
docs/troubleshooting.md's table, a PC's id or an alert's name after the colon. `deploy/nas`
compares them across a deploy, so a code, once published, never changes its spelling.
"""

from __future__ import annotations

from dataclasses import dataclass

from .alerts import CRITICAL, Alert
from .pc_state import ERROR, MISSING
from .upstream import Upstream

HEALTHY, DEGRADED, UNHEALTHY = "healthy", "degraded", "unhealthy"
HTTP_CODE = {HEALTHY: 200, DEGRADED: 200, UNHEALTHY: 503}


# the codes that are not a PC's or an alert's (those are `<code>:<id>`, `alert:<name>`)
NO_PC_WATCHED = "no_pc_watched"
CORE_FAILED = "core_failed"
UPSTREAM_REJECTED = "upstream_rejected"
SCHEMA_MISMATCH = "schema_mismatch"
REQUEST_REJECTED = "upstream_request_rejected"
UPSTREAM_UNREACHABLE = "upstream_unreachable"
UPSTREAM_RATE_LIMITED = "upstream_rate_limited"
OFFLINE_QUEUE_WAITING = "offline_queue_waiting"
OFFLINE_QUEUE_FULL = "offline_queue_full"
OFFLINE_QUEUE_CRITICAL = "offline_queue_critical"
DISK_FULL = "disk_full"
QUEUE_DB_LOCKED = "queue_db_locked"
REGISTRY_INVALID = "registry_invalid"
REGISTRY_MISSING = "registry_missing"
SHUTTING_DOWN = "shutting_down"
# a PC's codes, `<prefix>:<pc id>`
PC_ERROR, PC_MISSING, PC_STALE, PC_HUNG = "pc_error", "pc_missing", "pc_stale", "pc_hung"
PC_UNREADABLE, SYNC_LAG = "pc_unreadable", "sync_lag"
# alerts whose code is a word of its own (the others are `alert:<name>`)
ALERT_CODES = {"offline_pending": OFFLINE_QUEUE_CRITICAL}


def alert_code(name: str) -> str:
    return ALERT_CODES.get(name, f"alert:{name}")


@dataclass(frozen=True, slots=True)
class NothingWatched:
    """No PC to watch (the registry watcher's finding, after its read of the NAS base)."""

    where: str  # the NAS base (and the registry) it looked at
    base_empty: bool  # the base is missing or has no entries at all: unhealthy, else degraded
    detail: str = ""  # e.g. "3 folder(s), no PC enabled"


@dataclass(frozen=True, slots=True)
class PcHealth:
    id: str
    state: str  # pc_state.PC_STATES
    reason: str | None
    stale_for: float | None = None  # seconds since the last complete poll, when overdue
    unreadable: tuple[str, ...] = ()  # sub-folders the last poll could not read
    waiting: int = 0  # changes seen, not acknowledged yet
    sync_lag: float = 0.0  # seconds the oldest of them has waited
    read_hung: str | None = None  # a read past its deadline that has not returned


@dataclass(frozen=True, slots=True)
class HealthInputs:
    upstream: Upstream
    upstream_reason: str | None
    pending: int
    store_problem: str | None
    failure: str | None  # a core stage died
    registry_error: str | None
    pcs: tuple[PcHealth, ...]
    alerts: tuple[Alert, ...]
    shutting_down: bool = False
    queue_full: bool = False
    missing_after: float = float("inf")  # seconds after which a waiting change is missing
    queued_for: float | None = None  # age of the oldest record in the offline queue
    registry_missing: str | None = None  # the file is gone; "last good one from <time> kept"
    nothing_watched: NothingWatched | None = None  # only once the start's grace is over
    store_problem_code: str = DISK_FULL


@dataclass(frozen=True, slots=True)
class Health:
    status: str
    reasons: tuple[str, ...]
    reason_codes: tuple[str, ...] = ()  # one per reason, the same order

    @property
    def http_code(self) -> int:
        return HTTP_CODE[self.status]


def assess(h: HealthInputs) -> Health:
    bad: list[tuple[str, str]] = []
    meh: list[tuple[str, str]] = []
    if h.failure:
        bad.append((CORE_FAILED, f"core stage died: {h.failure}"))
    if h.nothing_watched is not None and not h.pcs:
        nothing = h.nothing_watched
        if nothing.base_empty:
            text = f"no PC watched: the NAS folder {nothing.where} is missing or empty"
        else:
            text = f"no PC watched in {nothing.where}: {nothing.detail or 'no PC enabled'}"
        (bad if nothing.base_empty else meh).append((NO_PC_WATCHED, text))
    if h.upstream == Upstream.REJECTED:
        bad.append(
            (
                UPSTREAM_REJECTED,
                f"supabase rejected the key or a grant is missing: {h.upstream_reason}",
            )
        )
    elif h.upstream == Upstream.SCHEMA_MISMATCH:
        bad.append((SCHEMA_MISMATCH, f"gfx_sessions schema mismatch: {h.upstream_reason}"))
    elif h.upstream == Upstream.REQUEST_REJECTED:
        bad.append((REQUEST_REJECTED, f"supabase refused the upload request: {h.upstream_reason}"))
    elif h.upstream == Upstream.OFFLINE:
        meh.append(
            (
                UPSTREAM_UNREACHABLE,
                f"supabase unreachable: {h.upstream_reason}; {h.pending} sessions queued",
            )
        )
    elif h.upstream == Upstream.RATE_LIMITED:
        meh.append((UPSTREAM_RATE_LIMITED, f"supabase rate limiting: {h.upstream_reason}"))
    elif h.pending and h.queued_for is not None and h.queued_for > h.missing_after:
        # connected, yet sessions wait in the queue: draining, or refused and retried
        meh.append(
            (
                OFFLINE_QUEUE_WAITING,
                f"{h.pending} session(s) in the offline queue, the oldest for {h.queued_for:.0f} s",
            )
        )
    if h.store_problem:
        bad.append((h.store_problem_code, h.store_problem))
    if h.queue_full:
        bad.append((OFFLINE_QUEUE_FULL, "offline queue full: intake is paused until it drains"))
    for pc in h.pcs:
        if pc.state == MISSING:
            meh.append((f"{PC_MISSING}:{pc.id}", f"PC {pc.id}: folder missing: {pc.reason}"))
        elif pc.state == ERROR:
            meh.append((f"{PC_ERROR}:{pc.id}", f"PC {pc.id}: {pc.reason}"))
        elif pc.stale_for is not None:
            # a hung SMB mount: the stat never returns, and no error is ever raised
            meh.append(
                (
                    f"{PC_STALE}:{pc.id}",
                    f"PC {pc.id}: no complete scan for {pc.stale_for:.0f} s (NAS not answering?)",
                )
            )
        # a hung scan's figures are those of its last poll: its acknowledgements since are not
        # counted, so "not in the table" would be a guess (the stale scan is the reason shown)
        if pc.stale_for is None and pc.waiting and pc.sync_lag > h.missing_after:
            meh.append(
                (
                    f"{SYNC_LAG}:{pc.id}",
                    f"PC {pc.id}: {pc.waiting} change(s) not in the table yet, the oldest "
                    f"waiting {pc.sync_lag:.0f} s",
                )
            )
        if pc.read_hung:
            meh.append((f"{PC_HUNG}:{pc.id}", f"PC {pc.id}: {pc.read_hung}"))
        if pc.unreadable:
            meh.append(
                (
                    f"{PC_UNREADABLE}:{pc.id}",
                    f"PC {pc.id}: sub-folder(s) unreadable: {', '.join(pc.unreadable)}",
                )
            )
    if h.registry_error:
        meh.append((REGISTRY_INVALID, f"registry invalid, last good one kept: {h.registry_error}"))
    if h.registry_missing:
        meh.append((REGISTRY_MISSING, h.registry_missing))
    for alert in h.alerts:
        (bad if alert.level == CRITICAL else meh).append(
            (alert_code(alert.name), f"alert {alert.name}: {alert.message}")
        )
    if h.shutting_down:
        meh.append((SHUTTING_DOWN, "shutting down"))
    status = UNHEALTHY if bad else DEGRADED if meh else HEALTHY
    reasons = bad + meh
    return Health(status, tuple(text for _, text in reasons), tuple(c for c, _ in reasons))
