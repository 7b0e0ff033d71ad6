"""Notifier: sends health changes and alerts to the webhooks of GFX_SYNC_NOTIFY_URL.

A task of its own with its own HTTP client, never the upstream gate's nor the target's: the
case that matters most is Supabase unreachable, when nothing may wait on it. The monitor hands
notices over with `submit` (never blocks; a full buffer drops the notice with a log line); the
task applies `NoticeGate` (no repeat within ten minutes, at most ten a minute) and posts each
to every URL, SEND_ATTEMPTS tries with a SEND_TIMEOUT each. Logs name a webhook's host only.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import trio

from ..logs import get_logger, scrub
from ..settings import Settings
from .heartbeat import load_agent_id
from .notices import Notice, NoticeGate, body_for, parse_urls, url_host

log = get_logger("notify")

SEND_TIMEOUT = 5.0
RETRIES = 3  # after the first try
RETRY_DELAYS = (1.0, 2.0, 4.0)
BUFFER = 64


async def identity(settings: Settings) -> tuple[str, str]:
    """(venue, agent id) a notice names: GFX_SYNC_VENUE and the id the heartbeats send (kept
    beside the queue; made here first when notifications start before the heartbeat)."""
    try:
        agent_id = await trio.to_thread.run_sync(load_agent_id, settings.queue_db_path.parent)
    except OSError:
        agent_id = socket.gethostname()  # a read-only queue folder: the heartbeat says so
    return settings.venue or "", agent_id


@dataclass(frozen=True, slots=True)
class Delivery:
    host: str
    ok: bool
    detail: str  # "HTTP 200", "ConnectError", ...


async def post(
    client: httpx.AsyncClient, url: str, body: dict[str, object], *, retries: int = RETRIES
) -> Delivery:
    """POST one notice to one webhook; retry transport errors, 429 and 5xx."""
    host = url_host(url)
    detail = "not sent"
    for attempt in range(retries + 1):
        if attempt:
            await trio.sleep(RETRY_DELAYS[min(attempt - 1, len(RETRY_DELAYS) - 1)])
        try:
            response = await client.post(url, json=body, timeout=SEND_TIMEOUT)
        except httpx.HTTPError as exc:
            # the exception's text may quote the URL: its class only
            detail = type(exc).__name__
            continue
        detail = f"HTTP {response.status_code}"
        if response.is_success:
            return Delivery(host, True, detail)
        if response.status_code != 429 and response.status_code < 500:
            break  # refused for good (a revoked webhook, a malformed body): no retry helps
    return Delivery(host, False, detail)


class Notifier:
    def __init__(
        self,
        urls: list[str],
        venue: str,
        agent_id: str,
        *,
        gate: NoticeGate | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.urls = urls
        self.venue = venue
        self.agent_id = agent_id
        self.gate = gate or NoticeGate()
        self._transport = transport
        self._send, self._recv = trio.open_memory_channel[Notice](BUFFER)

    @classmethod
    async def from_settings(cls, settings: Settings) -> Notifier | None:
        if settings.notify_url is None:
            return None
        venue, agent_id = await identity(settings)
        return cls(parse_urls(settings.notify_url.get_secret_value()), venue, agent_id)

    def submit(self, notice: Notice) -> None:
        """Hand a notice over (from the monitor); never waits."""
        try:
            self._send.send_nowait(notice)
        except trio.WouldBlock:
            log.warning("notify_dropped", kind=notice.kind, name=notice.name, reason="buffer full")

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        hosts = sorted({url_host(u) for u in self.urls})
        async with httpx.AsyncClient(transport=self._transport) as client, self._recv:
            log.info("notify_ready", hosts=hosts)
            task_status.started()
            async for notice in self._recv:
                if not self.gate.admit(notice, trio.current_time()):
                    log.info("notify_repeat", kind=notice.kind, name=notice.name, pc=notice.pc)
                    continue
                wait = self.gate.wait(trio.current_time())
                if wait > 0:
                    log.info("notify_rate_limited", kind=notice.kind, wait_s=round(wait, 1))
                    await trio.sleep(wait)
                self.gate.sent(trio.current_time())
                await self.send(client, notice)

    async def send(self, client: httpx.AsyncClient, notice: Notice) -> list[Delivery]:
        results: list[Delivery] = []

        async def one(url: str) -> None:
            result = await post(client, url, body_for(url, notice, self.venue, self.agent_id))
            results.append(result)
            fields = {"host": result.host, "kind": notice.kind, "name": notice.name}
            if result.ok:
                log.info("notify_sent", status=notice.status, **fields)
            else:
                log.warning("notify_failed", detail=scrub(result.detail), **fields)

        async with trio.open_nursery() as nursery:
            for url in self.urls:
                nursery.start_soon(one, url)
        return results


async def start_notifier(
    nursery: trio.Nursery, settings: Settings
) -> Callable[[Notice], None] | None:
    """Start the notifier in `nursery` when GFX_SYNC_NOTIFY_URL is set; its `submit`."""
    notifier = await Notifier.from_settings(settings)
    if notifier is None:
        return None
    await nursery.start(notifier.run)
    return notifier.submit
