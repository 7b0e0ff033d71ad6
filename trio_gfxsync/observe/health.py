"""The truth about the agent in one word, with its reasons (DESIGN 3.5), pure.

healthy   (200) everything flowing
degraded  (200) upstream offline or rate-limiting (queueing as designed), a PC folder unreadable,
                an invalid registry (the last good one is kept), any warn or review alert
unhealthy (503) key or privileges rejected, schema mismatch, queue database unusable or disk
                full, offline queue critical, a core stage died
"""

from __future__ import annotations

from dataclasses import dataclass

from .alerts import CRITICAL, Alert
from .upstream import Upstream

HEALTHY, DEGRADED, UNHEALTHY = "healthy", "degraded", "unhealthy"
HTTP_CODE = {HEALTHY: 200, DEGRADED: 200, UNHEALTHY: 503}


@dataclass(frozen=True, slots=True)
class PcHealth:
    id: str
    state: str
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


@dataclass(frozen=True, slots=True)
class Health:
    status: str
    reasons: tuple[str, ...]

    @property
    def http_code(self) -> int:
        return HTTP_CODE[self.status]


def assess(h: HealthInputs) -> Health:
    bad: list[str] = []
    meh: list[str] = []
    if h.failure:
        bad.append(f"core stage died: {h.failure}")
    if h.upstream == Upstream.REJECTED:
        bad.append(f"supabase rejected the key or a grant is missing: {h.upstream_reason}")
    elif h.upstream == Upstream.SCHEMA_MISMATCH:
        bad.append(f"gfx_sessions schema mismatch: {h.upstream_reason}")
    elif h.upstream == Upstream.REQUEST_REJECTED:
        bad.append(f"supabase refused the upload request: {h.upstream_reason}")
    elif h.upstream == Upstream.OFFLINE:
        meh.append(f"supabase unreachable: {h.upstream_reason}; {h.pending} sessions queued")
    elif h.upstream == Upstream.RATE_LIMITED:
        meh.append(f"supabase rate limiting: {h.upstream_reason}")
    elif h.pending and h.queued_for is not None and h.queued_for > h.missing_after:
        # connected, yet sessions wait in the queue: draining, or refused and retried
        meh.append(
            f"{h.pending} session(s) in the offline queue, the oldest for {h.queued_for:.0f} s"
        )
    if h.store_problem:
        bad.append(h.store_problem)
    if h.queue_full:
        bad.append("offline queue full: intake is paused until it drains")
    for pc in h.pcs:
        if pc.state == "error":
            meh.append(f"PC {pc.id}: {pc.reason}")
        elif pc.stale_for is not None:
            # a hung SMB mount: the stat never returns, and no error is ever raised
            meh.append(
                f"PC {pc.id}: no complete scan for {pc.stale_for:.0f} s (NAS not answering?)"
            )
        # a hung scan's figures are those of its last poll: its acknowledgements since are not
        # counted, so "not in the table" would be a guess (the stale scan is the reason shown)
        if pc.stale_for is None and pc.waiting and pc.sync_lag > h.missing_after:
            meh.append(
                f"PC {pc.id}: {pc.waiting} change(s) not in the table yet, the oldest waiting "
                f"{pc.sync_lag:.0f} s"
            )
        if pc.read_hung:
            meh.append(f"PC {pc.id}: {pc.read_hung}")
        if pc.unreadable:
            meh.append(f"PC {pc.id}: sub-folder(s) unreadable: {', '.join(pc.unreadable)}")
    if h.registry_error:
        meh.append(f"registry invalid, last good one kept: {h.registry_error}")
    for alert in h.alerts:
        (bad if alert.level == CRITICAL else meh).append(f"alert {alert.name}: {alert.message}")
    if h.shutting_down:
        meh.append("shutting down")
    if bad:
        return Health(UNHEALTHY, tuple(bad + meh))
    if meh:
        return Health(DEGRADED, tuple(meh))
    return Health(HEALTHY, ())
