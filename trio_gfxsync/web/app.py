"""The HTTP side: /health, /metrics, /api/status, /api/events (SSE) and the dashboard at /.

Starlette on hypercorn's trio worker (one event loop with the agent). Everything it serves is
read from the in-memory AgentStatus that the monitor keeps fresh, so no request touches the NAS
or SQLite and /health answers even when the mount hangs. `dashboard_token`, when set, protects
/ and /api/*; /health and /metrics stay open for Docker and Prometheus.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncGenerator
from importlib import resources
from typing import Any

import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..logs import dumps_redacted, get_logger, register_secret
from ..observe.metrics import CONTENT_TYPE, render
from ..observe.status import AgentStatus
from ..settings import Settings
from .documents import fingerprint, health_document, status_document
from .fleet import FLEET_HEADERS, fleet_page
from .sse import WRITE_TIMEOUT, EventStream, StreamSlots, Writers

log = get_logger("web")

SSE_HEARTBEAT = 1.0  # a full status at least this often
SSE_CHECK = 0.25  # how often a change is looked for between heartbeats
STATIC = {
    "dashboard.js": "application/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}


def served(body: Any) -> bytes:
    """Every JSON document the HTTP side serves, redacted whole as it leaves (the stages redact
    upstream's text before they cut it; this is the last line of defence, as for the log)."""
    return dumps_redacted(body).encode()


def json_response(
    body: Any, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        served(body),
        status_code=status_code,
        media_type="application/json",
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


class SharedDocument:
    """One status document per change or heartbeat, shared by every open dashboard: building
    it is the costly part, and N clients must not build it N times a second."""

    def __init__(self, status: AgentStatus, settings: Settings) -> None:
        self.status = status
        self.settings = settings
        self._mark: tuple[object, ...] | None = None
        self._at = -1e9
        self._data = b""

    def document(self, mark: tuple[object, ...], now: float) -> bytes:
        if mark != self._mark or now - self._at >= SSE_HEARTBEAT / 2:
            self._data = served(status_document(self.status, self.settings, now))
            self._mark, self._at = mark, now
        return self._data


def build_app(status: AgentStatus, settings: Settings, shutdown: trio.Event) -> Starlette:
    token = settings.dashboard_token.get_secret_value() if settings.dashboard_token else None
    if token is not None:
        register_secret(token)  # a secret like the key: never in what is served or logged
    shared = SharedDocument(status, settings)
    slots = StreamSlots(settings.dashboard_streams_per_client)
    writers = Writers()
    broken: dict[str, str] = {}

    def authorised(request: Request) -> bool:
        if token is None:
            return True
        offered = request.query_params.get("token", "")
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            offered = header[7:].strip()
        return hmac.compare_digest(offered.encode(), token.encode())

    def refuse() -> Response:
        return json_response({"error": "dashboard token required: open /?token=..."}, 401)

    async def health(request: Request) -> Response:
        # never a 500: Docker's healthcheck would fail without saying why. A document that
        # cannot be built is itself the reason (and a bug, logged with its traceback)
        try:
            document, code = health_document(status, trio.current_time())
            return json_response(document, code)
        except Exception as exc:
            reason = f"health document failed: {type(exc).__name__}: {exc}"
            if broken.get("health") != reason:
                log.error("health_document_failed", exc_info=exc, error=reason)
                broken["health"] = reason
            return json_response({"status": "unhealthy", "reasons": [reason]}, 503)

    async def metrics(request: Request) -> Response:
        return Response(render(status, trio.current_time()), media_type=CONTENT_TYPE)

    async def api_status(request: Request) -> Response:
        if not authorised(request):
            return refuse()
        return json_response(status_document(status, settings, trio.current_time()))

    async def api_events(request: Request) -> Response:
        if not authorised(request):
            return refuse()
        client = request.client.host if request.client is not None else "unknown"
        refusal = slots.take(client)
        if refusal is not None:
            log.warning(
                "sse_refused",
                reason=refusal.limit,
                client=client,
                open_streams=slots.open_streams(),
                retry_after=refusal.retry_after,
            )
            return json_response(
                refusal.document(), 429, headers={"Retry-After": str(refusal.retry_after)}
            )

        def closed(ending: str) -> None:
            slots.give_back(client)
            if ending == "stalled":
                log.warning("sse_stream_stalled", client=client, write_timeout=WRITE_TIMEOUT)

        async def stream() -> AsyncGenerator[bytes, None]:
            last: tuple[object, ...] | None = None
            sent_at = -1e9
            while not (shutdown.is_set() or status.shutting_down):
                now = trio.current_time()
                mark = fingerprint(status)
                if mark != last or now - sent_at >= SSE_HEARTBEAT:
                    yield b"event: status\ndata: " + shared.document(mark, now) + b"\n\n"
                    last, sent_at = mark, now
                with trio.move_on_after(SSE_CHECK):
                    await shutdown.wait()

        return EventStream(
            stream(),
            writers=writers.nursery,
            on_close=closed,
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    page = resources.files("trio_gfxsync.web").joinpath("static/index.html").read_bytes()

    async def dashboard(request: Request) -> Response:
        # without the token the page still loads and tells the operator what to do
        code = 200 if authorised(request) else 401
        return Response(page, status_code=code, media_type="text/html; charset=utf-8")

    fleet = fleet_page(
        resources.files("trio_gfxsync.web").joinpath("static/fleet.html").read_bytes(),
        settings.supabase_url,
        settings.supabase_publishable_key,
    )

    async def fleet_dashboard(request: Request) -> Response:
        # no dashboard token: the page holds nothing secret, its data needs a Supabase sign-in
        return Response(fleet, media_type="text/html; charset=utf-8", headers=FLEET_HEADERS)

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            return Response(b"not found", status_code=404)
        body = resources.files("trio_gfxsync.web").joinpath(f"static/{name}").read_bytes()
        return Response(body, media_type=STATIC[name], headers={"Cache-Control": "no-cache"})

    return Starlette(
        lifespan=writers.lifespan,
        routes=[
            Route("/health", health),
            Route("/metrics", metrics),
            Route("/api/status", api_status),
            Route("/api/events", api_events),
            Route("/", dashboard),
            Route("/fleet", fleet_dashboard),
            Route("/static/{name}", static),
        ],
    )
