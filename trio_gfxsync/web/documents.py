"""The JSON documents the HTTP side serves, built from a status snapshot: pure, no I/O.

`health_document` is /health (DESIGN 3.5), `status_document` is /api/status and each SSE event.
Session ids travel as strings: they are 18 digits, beyond JavaScript's numbers.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from .. import __version__
from ..observe.activity import iso
from ..observe.pc_state import ERROR, MISSING
from ..observe.status import AgentStatus, LiveHand
from ..settings import Settings


def alert_json(status: AgentStatus) -> list[dict[str, object]]:
    return [
        {
            "name": a.name,
            "level": a.level,
            "message": a.message,
            "since": iso(status.alert_since.get(a.name)),
        }
        for a in status.alerts
    ]


def health_document(status: AgentStatus, now: float) -> tuple[dict[str, Any], int]:
    """`now`: the trio clock."""
    health = status.health(now)
    watcher = "running"
    states = {status.pc_state(pc_id, now) for pc_id in status.pcs}
    if states & {ERROR, MISSING} or status.registry_error or status.registry_missing:
        watcher = "degraded"
    if status.shutting_down:
        watcher = "stopped"
    document = {
        "status": health.status,
        "uptime_seconds": int(status.uptime()),
        "reasons": list(health.reasons),
        "reason_codes": list(health.reason_codes),
        "components": {
            "watcher": watcher,
            "supabase": status.upstream,
            "offline_queue": {
                "pending_count": status.queue_counts.pending,
                "dead_letter_count": status.queue_counts.dead_letters,
            },
            "batch_queue": {"pending_count": status.batch_pending},
        },
        "alerts": alert_json(status),
        "last_sync": iso(status.last_sync),
        "watched_pcs": sorted(status.pcs),
    }
    return document, health.http_code


def status_document(status: AgentStatus, settings: Settings, now: float) -> dict[str, Any]:
    """`now`: the trio clock."""
    health = status.health(now)
    counts = status.queue_counts
    return {
        "status": health.status,
        "reasons": list(health.reasons),
        "reason_codes": list(health.reason_codes),
        "uptime_seconds": int(status.uptime()),
        "version": __version__,
        "now": iso(datetime.now(UTC).timestamp()),
        "upstream": {
            "state": status.upstream,
            "reason": status.upstream_reason,
            "last_sync": iso(status.last_sync),
            "url": settings.supabase_url,
        },
        "queue": {
            "pending": counts.pending,
            "pending_bytes": counts.pending_bytes,
            "dead_letters": counts.dead_letters,
            "quarantined": counts.quarantined,
            "batch_pending": status.batch_pending,
            "files_acknowledged": counts.files,
            "full": status.queue_full,
        },
        "pcs": [
            {
                "id": pc_id,
                "name": pc.name,
                "description": pc.description,
                "watch_path": pc.watch_path,
                "state": status.pc_state(pc_id, now),
                "reason": pc.reason,
                "read_hung": pc.read_hung,
                "files_tracked": pc.scan.files,
                "sessions_synced": status.sessions_synced.get(pc_id, 0),
                "files_seen": status.files_seen.get(pc_id, 0),
                "last_sync": iso(pc.last_sync),
                "last_error": pc.last_error,
                "backlog": pc.scan.backlog,
                "files_waiting": pc.scan.waiting,
                "sync_lag_seconds": round(pc.scan.sync_lag(now), 1),
                "polls": pc.scan.polls,
                "last_scan_seconds": round(pc.scan.last_scan_seconds, 4),
                "hand": hand_json(pc.hand, now),
            }
            for pc_id, pc in sorted(status.pcs.items())
        ],
        "alerts": alert_json(status),
        "throughput": status.activity.throughput(),
        "events": status.activity.recent(50),
        "quarantined": [
            {
                "id": e.id,
                "kind": e.kind,
                "pc_id": e.pc_id,
                "path": e.rel_path,
                "session_id": None if e.session_id is None else str(e.session_id),
                "reason": e.reason,
                "message": e.message,
                "last_seen": iso(e.last_seen),
            }
            for e in reversed(status.dead_letter_list)
        ],
    }


def hand_json(hand: LiveHand | None, now: float) -> dict[str, object] | None:
    """The live session's last hand; its age by this agent's clock (`now`: the trio clock),
    and `at` from it on the wall clock for the dashboard's ticking "ago" (None: read at start,
    not seen written)."""
    if hand is None:
        return None
    age = hand.age(now)
    return {
        "session_key": str(hand.session_id),
        "hand_num": hand.hand_num,
        "age_seconds": None if age is None else round(age, 1),
        "at": None if age is None else iso(datetime.now(UTC).timestamp() - age),
    }


def fingerprint(status: AgentStatus) -> tuple[object, ...]:
    """What, when it changes, is worth a new SSE event at once (a scan turning stale shows
    with the next heartbeat)."""
    return (
        status.activity.version,
        status.upstream,
        status.queue_counts,
        status.batch_pending,
        tuple(a.name for a in status.alerts),
        tuple(
            (
                k,
                p.state,
                p.missing,
                p.read_hung,
                p.scan.files,
                p.scan.backlog,
                p.scan.waiting,
                p.hand,
            )
            for k, p in status.pcs.items()
        ),
        tuple(sorted(status.sessions_synced.items())),
        status.shutting_down,
        status.registry_source,
        status.registry_missing,
    )
