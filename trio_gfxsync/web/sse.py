"""Live dashboard streams (server-sent events) that no client can hold on to.

Two guards, so that one laptop on flaky Wi-Fi cannot lock every operator out:

- `StreamSlots`: at most `per_client` open streams per client address and `MAX_STREAMS` in all.
  A refusal is a `Refusal` (429 with Retry-After: the page waits that long).
- `EventStream`: an ASGI response that writes each event under a deadline (`WRITE_TIMEOUT`).
  A client that stops reading (a half-open connection, a laptop asleep) stalls the writes once
  the socket's buffers are full; after the deadline the stream is closed and its slot is free.

Why the writes run in a task of their own: hypercorn's trio server writes to the socket inside
a shielded cancel scope, so a deadline around the ASGI `send` never fires while the socket is
full. The response hands each message to a writer task (owned by the app's `writers` nursery,
open for the server's lifetime) and waits for it under the deadline. On a timeout the response
returns; the server then closes the connection, which ends the stuck write (ClosedResourceError
inside hypercorn) and with it the writer task.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

MAX_STREAMS = 16  # dashboards open at once, from every client together
WRITE_TIMEOUT = 10.0  # seconds one event may take to be taken by the client's socket
# Retry-After of a refusal, in seconds: a stalled stream of this client is gone within the
# write timeout; a full house waits for someone to close a dashboard
RETRY_AFTER_CLIENT = 10
RETRY_AFTER_FULL = 30


@dataclass(frozen=True)
class Refusal:
    limit: str  # "per_client" or "total"
    message: str
    retry_after: int

    def document(self) -> dict[str, object]:
        return {"error": self.message, "limit": self.limit, "retry_after": self.retry_after}


class StreamSlots:
    """How many streams each client address holds; pure bookkeeping, one event loop."""

    def __init__(self, per_client: int, total: int = MAX_STREAMS) -> None:
        self.per_client = per_client
        self.total = total
        self._open: Counter[str] = Counter()

    def open_streams(self, client: str | None = None) -> int:
        return self._open[client] if client is not None else sum(self._open.values())

    def take(self, client: str) -> Refusal | None:
        """A slot for `client`, or why not (then nothing was taken)."""
        if self._open[client] >= self.per_client:
            return Refusal(
                "per_client",
                f"this address has {self._open[client]} live dashboards open already "
                f"(at most {self.per_client} per address); close one",
                RETRY_AFTER_CLIENT,
            )
        if self.open_streams() >= self.total:
            return Refusal(
                "total",
                f"too many live dashboards ({self.total} in all); close one",
                RETRY_AFTER_FULL,
            )
        self._open[client] += 1
        return None

    def give_back(self, client: str) -> None:
        self._open[client] -= 1
        if self._open[client] <= 0:
            del self._open[client]


class Writers:
    """The nursery the SSE writes run in (see sse.py), open for the app's lifetime: the
    server runs `lifespan` before the first request and leaves it after the last connection."""

    def __init__(self) -> None:
        self._nursery: trio.Nursery | None = None

    def nursery(self) -> trio.Nursery:
        if self._nursery is None:
            raise RuntimeError("the HTTP app serves streams only under a server that runs lifespan")
        return self._nursery

    @asynccontextmanager
    async def lifespan(self, app: object) -> AsyncGenerator[None, None]:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                yield
            finally:
                self._nursery = None
                nursery.cancel_scope.cancel()


class StreamStalled(Exception):
    """The client took no data for WRITE_TIMEOUT seconds."""


class DeadlineSend:
    """The ASGI `send`, each message written by a task of `writers` and awaited under a
    deadline. One message at a time: the next is handed over only once the last is written."""

    def __init__(self, send: Send, writers: trio.Nursery, timeout: float) -> None:
        self._send = send
        self._writers = writers
        self._timeout = timeout

    async def __call__(self, message: Message) -> None:
        done = trio.Event()
        failed: list[BaseException] = []

        async def write() -> None:
            try:
                await self._send(message)
            except Exception as exc:  # the response's, not the writers nursery's
                failed.append(exc)
            finally:
                done.set()

        try:
            self._writers.start_soon(write)
        except RuntimeError:  # the server is stopping: its writers' nursery is closed
            raise StreamStalled from None
        with trio.move_on_after(self._timeout):
            await done.wait()
        if not done.is_set():
            raise StreamStalled
        if failed:
            raise failed[0]


class EventStream(Response):
    """text/event-stream from `events`, each write under `write_timeout`; `on_close` runs once
    the stream is over, whichever way (client gone, stalled, shutdown)."""

    media_type = "text/event-stream"

    def __init__(
        self,
        events: AsyncGenerator[bytes, None],
        *,
        writers: Callable[[], trio.Nursery],
        on_close: Callable[[str], None],
        headers: Mapping[str, str] | None = None,
        write_timeout: float = WRITE_TIMEOUT,
    ) -> None:
        # as StreamingResponse does: no body, so no Content-Length (the stream is chunked)
        self.status_code = 200
        self.background = None
        self.init_headers(headers)
        self.events = events
        self.writers = writers
        self.on_close = on_close
        self.write_timeout = write_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ending = "finished"

        async def until_disconnect(cancel_scope: trio.CancelScope) -> None:
            nonlocal ending
            while True:
                message: Mapping[str, Any] = await receive()
                if message["type"] == "http.disconnect":
                    ending = "disconnected"
                    cancel_scope.cancel()
                    return

        try:
            timed = DeadlineSend(send, self.writers(), self.write_timeout)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(until_disconnect, nursery.cancel_scope)
                try:
                    await self._write_all(timed)
                except StreamStalled:
                    ending = "stalled"  # returning makes the server close the connection
                nursery.cancel_scope.cancel()
        finally:
            self.on_close(ending)

    async def _write_all(self, timed: DeadlineSend) -> None:
        await timed(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        async with aclosing(self.events) as events:
            async for chunk in events:
                await timed({"type": "http.response.body", "body": chunk, "more_body": True})
        await timed({"type": "http.response.body", "body": b"", "more_body": False})
