"""The HTTP side: /health, /metrics, /api/status, /api/events (SSE) and the dashboard at /.

Starlette on hypercorn's trio worker (one event loop with the agent). Everything it serves is
read from the in-memory AgentStatus that the monitor keeps fresh, so no request touches the NAS
or SQLite and /health answers even when the mount hangs. `dashboard_token`, when set, protects
/ and /api/*; /health and /metrics stay open for Docker and Prometheus.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import orjson
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from .. import __version__
from ..activity import iso
from ..health import assess
from ..monitor import alert_json, health_inputs
from ..settings import Settings
from ..status import AgentStatus
from .metrics import CONTENT_TYPE

SSE_HEARTBEAT = 1.0  # a full status at least this often
SSE_CHECK = 0.25  # how often a change is looked for between heartbeats
STATIC = {
    "dashboard.js": "application/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}


def json_response(body: Any, status_code: int = 200) -> Response:
    return Response(
        orjson.dumps(body),
        status_code=status_code,
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def health_document(status: AgentStatus) -> tuple[dict[str, Any], int]:
    health = assess(health_inputs(status))
    watcher = "running"
    if any(pc.state == "error" for pc in status.pcs.values()) or status.registry_error:
        watcher = "degraded"
    if status.shutting_down:
        watcher = "stopped"
    document = {
        "status": health.status,
        "uptime_seconds": int(status.uptime()),
        "reasons": list(health.reasons),
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


def status_document(status: AgentStatus, settings: Settings) -> dict[str, Any]:
    health = assess(health_inputs(status))
    counts = status.queue_counts
    return {
        "status": health.status,
        "reasons": list(health.reasons),
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
                "name": pc.entry.name,
                "description": pc.entry.description,
                "watch_path": pc.entry.watch_path,
                "state": pc.state,
                "reason": pc.reason,
                "files_tracked": pc.scan.files,
                "sessions_synced": status.sessions_synced.get(pc_id, 0),
                "files_seen": status.files_seen.get(pc_id, 0),
                "last_sync": iso(pc.last_sync),
                "last_error": pc.last_error,
                "backlog": pc.scan.backlog,
                "last_scan_seconds": round(pc.scan.last_scan_seconds, 4),
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


def _fingerprint(status: AgentStatus) -> tuple[object, ...]:
    return (
        status.activity.version,
        status.upstream,
        status.queue_counts,
        status.batch_pending,
        tuple(a.name for a in status.alerts),
        tuple((k, p.state, p.scan.files, p.scan.backlog) for k, p in status.pcs.items()),
        tuple(sorted(status.sessions_synced.items())),
        status.shutting_down,
    )


def build_app(status: AgentStatus, settings: Settings, shutdown: trio.Event) -> Starlette:
    token = settings.dashboard_token.get_secret_value() if settings.dashboard_token else None

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
        document, code = health_document(status)
        return json_response(document, code)

    async def metrics(request: Request) -> Response:
        return Response(status.metrics.render(), media_type=CONTENT_TYPE)

    async def api_status(request: Request) -> Response:
        if not authorised(request):
            return refuse()
        return json_response(status_document(status, settings))

    async def api_events(request: Request) -> Response:
        if not authorised(request):
            return refuse()

        async def stream() -> AsyncIterator[bytes]:
            last: tuple[object, ...] | None = None
            sent_at = -1e9
            while not (shutdown.is_set() or status.shutting_down):
                now = trio.current_time()
                mark = _fingerprint(status)
                if mark != last or now - sent_at >= SSE_HEARTBEAT:
                    data = orjson.dumps(status_document(status, settings))
                    yield b"event: status\ndata: " + data + b"\n\n"
                    last, sent_at = mark, now
                with trio.move_on_after(SSE_CHECK):
                    await shutdown.wait()

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    page = resources.files("trio_gfxsync.web").joinpath("static/index.html").read_bytes()

    async def dashboard(request: Request) -> Response:
        # without the token the page still loads and tells the operator what to do
        code = 200 if authorised(request) else 401
        return Response(page, status_code=code, media_type="text/html; charset=utf-8")

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            return Response(b"not found", status_code=404)
        body = resources.files("trio_gfxsync.web").joinpath(f"static/{name}").read_bytes()
        return Response(body, media_type=STATIC[name], headers={"Cache-Control": "no-cache"})

    return Starlette(
        routes=[
            Route("/health", health),
            Route("/metrics", metrics),
            Route("/api/status", api_status),
            Route("/api/events", api_events),
            Route("/", dashboard),
            Route("/static/{name}", static),
        ]
    )
