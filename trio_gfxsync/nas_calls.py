"""Every blocking call to the NAS: threads of the NAS's own, a deadline, and no pile-up.

A stale SMB mount blocks a stat, an open or a read for ever, and a thread cannot be cancelled:
trio abandons it, and the thread keeps its limiter token until it returns. On trio's default
limiter (40 tokens, shared with the monitor and every other `to_thread` call) forty hung reads
would stop them all. So:

- NAS calls run on a limiter of their own (`limiter`), never on the default one. A thread that
  was abandoned adds a token to it until it returns: hung threads never take the place of the
  calls that follow, whatever the number of PCs that hang;
- each call has a deadline (GFX_SYNC_NAS_READ_TIMEOUT); past it the caller gets `NasHung` and
  goes on, the thread is left to return in its own time;
- each call has a key (one PC's reads, the registry, a PC's root...): while a call under a key
  has missed its deadline and not returned, the next call under that key fails at once, without
  a thread, instead of hanging beside it. Whoever asked `when_returned` hears when it returns.
"""

from __future__ import annotations

import contextlib
import errno
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TypeVar

import trio

from .logs import get_logger

T = TypeVar("T")
log = get_logger("nas")

NAS_CALLS = 16  # NAS calls waited for at once (hung ones not counted)


class NasHung(TimeoutError):
    """A NAS call missed its deadline, or its key still waits for one that did."""

    def __init__(self, reason: str) -> None:
        super().__init__(errno.ETIMEDOUT, reason)
        self.reason = reason


@dataclass
class _Call:
    """What the thread and trio share about one call (the thread may outlive trio's interest)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    started: bool = False  # the thread runs (a call cancelled while waiting for a token has none)
    returned: bool = False
    abandoned: bool = False


@dataclass
class _Hung:
    what: str
    out: int = 1  # threads of this key past their deadline, not returned yet
    callbacks: list[Callable[[], None]] = field(default_factory=list)


class NasCalls:
    def __init__(self, timeout: float, calls: int = NAS_CALLS) -> None:
        self.timeout = timeout
        self.limiter = trio.CapacityLimiter(calls)
        self._hung: dict[Hashable, _Hung] = {}
        self.abandoned = 0  # threads past their deadline (or cancelled) still out

    def hung(self, key: Hashable) -> bool:
        return key in self._hung

    async def call(self, key: Hashable, fn: Callable[..., T], *args: object) -> T:
        """`fn(*args)` in a NAS thread, within the deadline; NasHung past it, or at once while
        an earlier call under `key` has not returned."""
        # the same words either way: a reason that changed with every try would be logged as
        # news every time
        missed = NasHung(f"no answer from the NAS within {self.timeout:g} s")
        if key in self._hung:
            raise missed
        with trio.move_on_after(self.timeout):
            return await self.thread(fn, *args, key=key)
        log.warning("nas_call_hung", key=_name(key), call=_what(fn), seconds=self.timeout)
        raise missed

    async def thread(self, fn: Callable[..., T], *args: object, key: Hashable | None = None) -> T:
        """`fn(*args)` in a NAS thread with no deadline of its own (the poller's long-lived
        loop, which has a heartbeat, and a PC's first walk); cancellable, the thread abandoned."""
        call = _Call()
        token = trio.lowlevel.current_trio_token()

        def run() -> T:
            with call.lock:
                call.started = True
            try:
                return fn(*args)
            finally:
                with call.lock:
                    call.returned = True
                    late = call.abandoned
                if late:
                    with contextlib.suppress(trio.RunFinishedError):
                        token.run_sync_soon(self._returned, key)

        done = False
        try:
            result = await trio.to_thread.run_sync(
                run, limiter=self.limiter, abandon_on_cancel=True
            )
            done = True
            return result
        finally:
            if not done:
                self._abandon(call, key, _what(fn))

    def when_returned(self, key: Hashable, callback: Callable[[], None]) -> bool:
        """Call `callback` (in trio) once the call hung under `key` returns; False when none
        is hung (the caller acts at once)."""
        hung = self._hung.get(key)
        if hung is None:
            return False
        hung.callbacks.append(callback)
        return True

    def _abandon(self, call: _Call, key: Hashable | None, what: str) -> None:
        with call.lock:
            if call.returned or not call.started:
                return  # it came back as the deadline fell, or never began: nothing hangs
            call.abandoned = True
        self.abandoned += 1
        # the abandoned thread keeps its token until it returns: one more for those that follow
        self.limiter.total_tokens += 1
        if key is None:
            return
        if key in self._hung:
            self._hung[key].out += 1
        else:
            self._hung[key] = _Hung(what)

    def _returned(self, key: Hashable | None) -> None:
        self.abandoned -= 1
        self.limiter.total_tokens = max(1, self.limiter.total_tokens - 1)
        hung = self._hung.get(key) if key is not None else None
        if hung is None:
            return
        hung.out -= 1
        if hung.out > 0:
            return  # another thread of this key is still out
        del self._hung[key]
        log.info("nas_call_returned", key=_name(key), call=hung.what)
        for callback in hung.callbacks:
            callback()


def _what(fn: Callable[..., object]) -> str:
    return getattr(fn, "__name__", None) or type(fn).__name__


def _name(key: Hashable | None) -> str | None:
    if key is None:
        return None
    return "/".join(str(part) for part in key) if isinstance(key, tuple) else str(key)
