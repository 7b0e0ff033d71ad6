"""The upstream (target) states, one StrEnum: written by the gate, read by health, metrics,
the dashboard and `scan`."""

from __future__ import annotations

from enum import StrEnum


class Upstream(StrEnum):
    UNKNOWN = "unknown"  # before the first answer
    CONNECTED = "connected"
    OFFLINE = "offline"  # no answer, or a 5xx that means "down": records queue
    RATE_LIMITED = "rate_limited"  # 429/503/504: slowing down, Retry-After honoured
    REJECTED = "rejected"  # the key, or a grant: paused until it is fixed
    SCHEMA_MISMATCH = "schema_mismatch"  # a column or the table is missing: paused
    REQUEST_REJECTED = "request_rejected"  # a 4xx about the request itself: paused


# paused: nothing is sent but the probe that can tell it is fixed
PAUSED = frozenset({Upstream.REJECTED, Upstream.SCHEMA_MISMATCH, Upstream.REQUEST_REJECTED})
