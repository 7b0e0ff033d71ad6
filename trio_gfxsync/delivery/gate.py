"""The one upstream gate every sender passes: uploader, drainer, probes (DESIGN 5).

It holds the upstream state and a "not before" time. One request is in flight at a time: a
Retry-After or an outage then holds every sender, and no request leaves before the server
allowed it, not even one that was waiting behind another.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

from ..errors import UpstreamError
from ..logs import get_logger, scrub
from ..observe.status import AgentStatus
from ..observe.upstream import PAUSED, Upstream
from ..policy import Verdict

log = get_logger("gate")
T = TypeVar("T")

SENDABLE = frozenset({Upstream.CONNECTED, Upstream.RATE_LIMITED, Upstream.UNKNOWN})
# the verdicts that pause every sender, and the state each one shows
PAUSE_STATE = {
    Verdict.SCHEMA_MISMATCH: Upstream.SCHEMA_MISMATCH,
    Verdict.REJECTED: Upstream.REJECTED,
    Verdict.UNEXPECTED: Upstream.REQUEST_REJECTED,
}
__all__ = ["PAUSED", "PAUSE_STATE", "SENDABLE", "UpstreamGate"]


class UpstreamGate:
    def __init__(self, status: AgentStatus, request_deadline: float = 60.0) -> None:
        self.status = status
        # httpx's timeout is per phase (connect, each read...): a trickling answer could hold
        # the one slot for ever, so the gate bounds the whole request as well
        self.request_deadline = request_deadline
        self.not_before = -math.inf
        self.last_answer_ok = -math.inf  # trio time of the last request upstream stored
        self._slot = trio.Lock()
        # records that failed alone are retried on a lane of their own: a record that takes a
        # statement timeout every time must not hold the one slot the live data needs. It still
        # waits for `not_before` and for a sendable state like every sender.
        self._alone_slot = trio.Lock()
        self._changed = trio.Event()

    @property
    def state(self) -> Upstream:
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

    @property
    def idle(self) -> bool:
        """Nothing in flight or waiting, nothing held, and a state that sends."""
        return self.sendable and not self.busy and trio.current_time() >= self.not_before

    async def send_if_idle(
        self, request: Callable[[], Awaitable[object]], *, deadline: float, wait: bool = False
    ) -> tuple[Verdict, UpstreamError | None] | None:
        """For what must never hold a session (heartbeats): sent only when the gate is `idle`,
        in the one slot, within `deadline`; its answer changes nothing here (no state, no
        hold): the caller only reads it. None: not sent.

        `wait`: rather than give up on a busy gate, take the slot in turn, between two
        requests (a gate that is never idle, a long backfill), and go only if nothing holds
        the gate then."""
        if wait:
            await self._slot.acquire()
            if not self.sendable or trio.current_time() < self.not_before:
                self._slot.release()
                return None
        elif self.idle:
            self._slot.acquire_nowait()  # free: `idle` said so, with no checkpoint since
        else:
            return None
        try:
            with trio.move_on_after(deadline) as scope:
                try:
                    await request()
                except UpstreamError as exc:
                    return exc.verdict, exc
            if scope.cancelled_caught:
                late = UpstreamError(None, None, "no complete answer in time", kind="Timeout")
                return Verdict.DOWN, late
            return Verdict.STORED, None
        finally:
            self._slot.release()

    def hold(self, seconds: float) -> None:
        self.not_before = max(self.not_before, trio.current_time() + seconds)

    def set_state(self, state: Upstream, reason: str | None = None) -> None:
        # the reason is upstream's own text: a proxy could echo a header back into it
        reason = scrub(reason) if reason else reason
        if state == self.status.upstream and reason == self.status.upstream_reason:
            return
        previous = self.status.upstream
        if state == Upstream.CONNECTED:
            log.info("upstream_state", state=state, previous=previous)
        else:
            log.warning("upstream_state", state=state, previous=previous, reason=reason)
        self.status.upstream = state
        self.status.upstream_reason = reason
        self.status.activity.add("upstream", f"{state}: {reason}" if reason else state)
        self._changed.set()
        self._changed = trio.Event()

    async def send(
        self,
        request: Callable[[], Awaitable[object]],
        *,
        deadline: float | None = None,
        alone: bool = False,
    ) -> tuple[Verdict, UpstreamError | None]:
        """Wait for the slot and for `not_before`, then make the request; classify the answer.
        `alone`: a record that failed alone, on its own lane (it never holds the main slot).

        A Retry-After in any answer holds every sender from here, whoever asked."""
        async with self._alone_slot if alone else self._slot:
            # not_before may move later while we sleep (another answer's Retry-After)
            while trio.current_time() < self.not_before:  # noqa: ASYNC110
                await trio.sleep_until(self.not_before)
            with trio.move_on_after(deadline or self.request_deadline) as scope:
                try:
                    await request()
                except UpstreamError as exc:
                    if exc.retry_after is not None:
                        self.hold(exc.retry_after)
                    return exc.verdict, exc
            if scope.cancelled_caught:
                late = UpstreamError(None, None, "no complete answer in time", kind="Timeout")
                return Verdict.DOWN, late
            self.last_answer_ok = trio.current_time()
            return Verdict.STORED, None

    async def fetch(self, request: Callable[[], Awaitable[T]]) -> T:
        """`send` for a request whose answer is wanted: its result, or the UpstreamError."""
        answer: list[T] = []

        async def call() -> None:
            answer.append(await request())

        _, error = await self.send(call)
        if error is not None:
            raise error
        return answer[0]
