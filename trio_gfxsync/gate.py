"""The one upstream gate every sender passes: uploader, drainer, probes (DESIGN 5).

It holds the upstream state and a "not before" time. One request is in flight at a time: a
Retry-After or an outage then holds every sender, and no request leaves before the server
allowed it, not even one that was waiting behind another.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

import trio

from .logs import get_logger, scrub
from .policy import Verdict, classify
from .postgrest import UpstreamError
from .status import AgentStatus

log = get_logger("gate")

CONNECTED = "connected"
OFFLINE = "offline"
RATE_LIMITED = "rate_limited"
REJECTED = "rejected"
SCHEMA_MISMATCH = "schema_mismatch"
REQUEST_REJECTED = "request_rejected"  # a 4xx about the request itself (PGRST1xx, a proxy)
PAUSED = frozenset({REJECTED, SCHEMA_MISMATCH, REQUEST_REJECTED})
UNKNOWN = "unknown"  # before the first answer
SENDABLE = frozenset({CONNECTED, RATE_LIMITED, UNKNOWN})


class UpstreamGate:
    def __init__(self, status: AgentStatus, request_deadline: float = 60.0) -> None:
        self.status = status
        # httpx's timeout is per phase (connect, each read...): a trickling answer could hold
        # the one slot for ever, so the gate bounds the whole request as well
        self.request_deadline = request_deadline
        self.not_before = -math.inf
        self._slot = trio.Lock()
        self._changed = trio.Event()

    @property
    def state(self) -> str:
        return self.status.upstream

    @property
    def sendable(self) -> bool:
        """Live batches and the queue may be sent (possibly after `not_before`)."""
        return self.state in SENDABLE

    @property
    def changed(self) -> trio.Event:
        """Fires at the next state change (then a fresh event takes its place)."""
        return self._changed

    @property
    def busy(self) -> bool:
        """A request is in flight (or waiting for not_before)."""
        return self._slot.locked()

    def hold(self, seconds: float) -> None:
        self.not_before = max(self.not_before, trio.current_time() + seconds)

    def set_state(self, state: str, reason: str | None = None) -> None:
        # the reason is upstream's own text: a proxy could echo a header back into it
        reason = scrub(reason) if reason else reason
        if state == self.status.upstream and reason == self.status.upstream_reason:
            return
        previous = self.status.upstream
        if state == CONNECTED:
            log.info("upstream_state", state=state, previous=previous)
        else:
            log.warning("upstream_state", state=state, previous=previous, reason=reason)
        self.status.upstream = state
        self.status.upstream_reason = reason
        self.status.activity.add("upstream", f"{state}: {reason}" if reason else state)
        self._changed.set()
        self._changed = trio.Event()

    async def send(
        self, request: Callable[[], Awaitable[object]], *, deadline: float | None = None
    ) -> tuple[Verdict, UpstreamError | None]:
        """Wait for the slot and for `not_before`, then make the request; classify the answer.

        A Retry-After in any answer holds every sender from here, whoever asked."""
        async with self._slot:
            # not_before may move later while we sleep (another answer's Retry-After)
            while trio.current_time() < self.not_before:  # noqa: ASYNC110
                await trio.sleep_until(self.not_before)
            with trio.move_on_after(deadline or self.request_deadline) as scope:
                try:
                    await request()
                except UpstreamError as exc:
                    if exc.retry_after is not None:
                        self.hold(exc.retry_after)
                    return classify(exc.status, exc.code), exc
            if scope.cancelled_caught:
                late = UpstreamError(None, None, "no complete answer in time", kind="Timeout")
                return Verdict.DOWN, late
            return Verdict.STORED, None
