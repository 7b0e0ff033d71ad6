"""Recent activity for operators: the last events and sessions synced per minute over an hour.

Pure and bounded (a deque of events, 60 minute buckets); the clock is passed in, so it is tested
without waiting. Session ids are kept as strings: they are 18 digits, beyond JavaScript's numbers.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

MAX_EVENTS = 200
MINUTES = 60


def iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class ActivityEvent:
    ts: float
    kind: str  # created, modified, synced, queued, error, quarantined, upstream, alert, registry
    message: str
    pc_id: str | None = None
    path: str | None = None
    session_id: str | None = None

    def as_json(self) -> dict[str, object]:
        return {
            "ts": iso(self.ts),
            "kind": self.kind,
            "pc_id": self.pc_id,
            "path": self.path,
            "session_id": self.session_id,
            "message": self.message,
        }


class Activity:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.events: deque[ActivityEvent] = deque(maxlen=MAX_EVENTS)
        self._per_minute: dict[int, int] = {}
        self.version = 0  # bumped on every change: SSE pushes when it moves

    def add(
        self,
        kind: str,
        message: str,
        *,
        pc_id: str | None = None,
        path: str | None = None,
        session_id: int | str | None = None,
    ) -> None:
        sid = None if session_id is None else str(session_id)
        self.events.appendleft(ActivityEvent(self._clock(), kind, message, pc_id, path, sid))
        self.version += 1

    def count_synced(self, sessions: int) -> None:
        minute = int(self._clock() // 60)
        self._per_minute[minute] = self._per_minute.get(minute, 0) + sessions
        for old in [m for m in self._per_minute if m <= minute - MINUTES]:
            del self._per_minute[old]
        self.version += 1

    def throughput(self) -> list[dict[str, object]]:
        """Sessions stored per minute, the last 60 minutes, oldest first."""
        now_minute = int(self._clock() // 60)
        return [
            {"minute": iso(m * 60), "sessions": self._per_minute.get(m, 0)}
            for m in range(now_minute - MINUTES + 1, now_minute + 1)
        ]

    def recent(self, limit: int = 50) -> list[dict[str, object]]:
        return [event.as_json() for event in list(self.events)[:limit]]
