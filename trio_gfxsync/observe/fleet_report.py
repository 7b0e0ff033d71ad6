"""What a heartbeat tells the fleet (a row of gfx_agents), built from the status: pure.

Every age is the agent's monotonic clock (`now`, the trio clock) or left to the database
(last_seen): never a PC's clock. Every text that may hold upstream's or the NAS's words goes
through the one redaction (`logs.scrub`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..logs import scrub
from .activity import iso
from .health import Health
from .status import AgentStatus, PcStatus


@dataclass(frozen=True, slots=True)
class AgentIdentity:
    agent_id: str
    venue: str
    host: str
    version: str
    heartbeat_interval: float


def pc_state(pc: PcStatus, poll_interval: float, now: float) -> str:
    """One word per PC, in the fleet's order starting < running < stale < hung < missing <
    error. The one place that reads it: the /health issue's PC states replace this body."""
    if pc.missing:
        return "missing"
    if pc.state == "error":
        return "error"
    if pc.read_hung:
        return "hung"
    if pc.stale_for(poll_interval, now) is not None:
        return "stale"
    return pc.state


def reason_codes(health: Health) -> list[str]:
    """The health result's machine-readable reasons, once it has them (the /health issue)."""
    codes = getattr(health, "reason_codes", ())
    return [str(code) for code in codes]


def _text(value: str | None, limit: int = 500) -> str | None:
    return None if value is None else scrub(value)[:limit]


def pc_report(pc_id: str, pc: PcStatus, poll_interval: float, now: float) -> dict[str, Any]:
    hand = pc.hand
    age = hand.age(now) if hand is not None else None
    return {
        "id": pc_id,
        "state": pc_state(pc, poll_interval, now),
        "reason": _text(pc.reason or pc.read_hung),
        "sync_lag_s": round(pc.scan.sync_lag(now), 1),
        "files_waiting": pc.scan.waiting,
        "last_sync": iso(pc.last_sync),
        # strings: 18 digits are beyond JavaScript's numbers
        "session_key": None if hand is None else str(hand.session_id),
        "hand_num": None if hand is None else hand.hand_num,
        "hand_age_s": None if age is None else round(age, 1),
    }


def agent_row(identity: AgentIdentity, status: AgentStatus, now: float) -> dict[str, Any]:
    """The heartbeat's body. `now`: the trio clock. last_seen is not sent: the database sets
    it."""
    health = status.health(now)
    counts = status.queue_counts
    return {
        "agent_id": identity.agent_id,
        "venue": identity.venue,
        "host": identity.host,
        "version": identity.version,
        "started_at": iso(status.started_at),
        "heartbeat_interval_s": identity.heartbeat_interval,
        "status": health.status,
        "reasons": [_text(r) for r in health.reasons],
        "reason_codes": reason_codes(health),
        "queue": {
            "pending": counts.pending,
            "dead_letters": counts.dead_letters,
            "quarantined": counts.quarantined,
        },
        "alerts": [
            {"name": a.name, "level": a.level, "message": _text(a.message)} for a in status.alerts
        ],
        "pcs": [
            pc_report(pc_id, pc, status.poll_interval, now)
            for pc_id, pc in sorted(status.pcs.items())
        ],
    }
