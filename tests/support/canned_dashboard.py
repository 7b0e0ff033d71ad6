"""A canned stand-in for the agent's HTTP side, to exercise the static dashboard without the agent.

`start_canned_server(status)` serves, on 127.0.0.1 and a free port, in a daemon thread:
- `/` -> `trio_gfxsync/web/static/index.html`, `/static/<name>` -> that folder's files;
- `/api/status` -> the caller's status dict as JSON;
- `/api/events` -> server-sent events, `event: status` with the current dict, every `interval`
  seconds and at once after `mutate()`.
The dict stays the caller's: change it inside `with server.mutate() as status:` (which holds the
lock the server serialises under, and wakes the streams when the block ends).

With `token=...`, `/api/*` answers 401 unless the query string carries `token=<token>`; `/`
answers 401 with the page itself (so the page can say what is missing) and `/static/*` stays open,
which is how the agent is expected to behave. `refuse_streams` makes `/api/events` answer 503,
`stream_refusal = (code, headers, body)` any refusal (the agent's 429 with Retry-After), and
`drop_streams()` cuts the open ones; `events_at` holds when each `/api/events` request came
(time.monotonic()).

`sample_status()` builds a realistic status (3 PCs, 18-digit session ids, an hour of throughput).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

STATIC_DIR = Path(__file__).resolve().parents[2] / "trio_gfxsync" / "web" / "static"

_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}


class CannedServer:
    """The running server: `.url` (no trailing slash), `.status` (the caller's dict)."""

    def __init__(
        self, status: dict[str, Any], *, token: str | None, interval: float, static_dir: Path
    ) -> None:
        self.status = status
        self.token = token
        self.interval = interval
        self.static_dir = static_dir
        self.refuse_streams = False
        self.stream_refusal: tuple[int, dict[str, str], bytes] | None = None
        self.events_at: list[float] = []
        self.requests: list[str] = []  # request paths with their query, in order
        self._changed = threading.Condition()
        self._generation = 0  # bumped by mutate() and drop_streams()
        self._dropped = 0
        self._closing = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="canned-dashboard", daemon=True
        )
        host, port = self._httpd.server_address[:2]
        self.url = f"http://{host}:{port}"

    def start(self) -> CannedServer:
        self._thread.start()
        return self

    @contextmanager
    def mutate(self) -> Iterator[dict[str, Any]]:
        """Change the status in place; the streams send it as soon as the block ends."""
        with self._changed:
            yield self.status
            self._generation += 1
            self._changed.notify_all()

    def snapshot(self) -> bytes:
        with self._changed:
            return json.dumps(self.status).encode()

    def drop_streams(self) -> None:
        """Close every open /api/events response (the browser's EventSource will retry)."""
        with self._changed:
            self._dropped += 1
            self._changed.notify_all()

    def close(self) -> None:
        self._closing.set()
        with self._changed:
            self._changed.notify_all()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> CannedServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _wait_for_change(self, generation: int, dropped: int) -> tuple[int, int]:
        with self._changed:
            self._changed.wait_for(
                lambda: (
                    self._generation != generation
                    or self._dropped != dropped
                    or self._closing.is_set()
                ),
                timeout=self.interval,
            )
            return self._generation, self._dropped


def start_canned_server(
    status: dict[str, Any],
    *,
    token: str | None = None,
    interval: float = 0.5,
    static_dir: Path = STATIC_DIR,
) -> CannedServer:
    """Start serving `status` (kept by reference); close with `.close()` or a `with` block."""
    return CannedServer(status, token=token, interval=interval, static_dir=static_dir).start()


def _handler_for(server: CannedServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.0: every response ends with the connection, which is what an SSE stream needs
        # without chunked encoding.
        protocol_version = "HTTP/1.0"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep the test output clean

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            server.requests.append(self.path)
            authorised = server.token is None or parse_qs(parts.query).get("token") == [
                server.token
            ]
            if parts.path == "/":
                page = (server.static_dir / "index.html").read_bytes()
                code = HTTPStatus.OK if authorised else HTTPStatus.UNAUTHORIZED
                self._send(code, page, _CONTENT_TYPES[".html"])
            elif parts.path.startswith("/static/"):
                self._send_static(parts.path.removeprefix("/static/"))
            elif parts.path.startswith("/api/") and not authorised:
                body = json.dumps({"error": "dashboard token required"}).encode()
                self._send(HTTPStatus.UNAUTHORIZED, body, "application/json")
            elif parts.path == "/api/status":
                self._send(HTTPStatus.OK, server.snapshot(), "application/json")
            elif parts.path == "/api/events":
                server.events_at.append(time.monotonic())
                refusal = server.stream_refusal
                if refusal is not None:
                    code, headers, body = refusal
                    self._send(HTTPStatus(code), body, "application/json", headers)
                elif server.refuse_streams:
                    self._send(HTTPStatus.SERVICE_UNAVAILABLE, b"refused", "text/plain")
                else:
                    self._stream()
            else:
                self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")

        def _send(
            self,
            code: int,
            body: bytes,
            content_type: str,
            headers: dict[str, str] | None = None,
        ) -> None:
            self.send_response(code)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _send_static(self, name: str) -> None:
            path = (server.static_dir / name).resolve()
            content_type = _CONTENT_TYPES.get(path.suffix)
            if (
                path.parent != server.static_dir.resolve()
                or content_type is None
                or not path.is_file()
            ):
                self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")
                return
            self._send(HTTPStatus.OK, path.read_bytes(), content_type)

        def _stream(self) -> None:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            generation, dropped = server._generation, server._dropped
            try:
                self.wfile.write(b"retry: 1000\n\n")
                while not server._closing.is_set():
                    data = server.snapshot().decode()
                    self.wfile.write(f"event: status\ndata: {data}\n\n".encode())
                    self.wfile.flush()
                    generation, now_dropped = server._wait_for_change(generation, dropped)
                    if now_dropped != dropped:
                        return
            except (BrokenPipeError, ConnectionResetError):
                return  # the browser went away

    return Handler


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def sample_status(now: datetime | None = None) -> dict[str, Any]:
    """A degraded agent with three PCs (one id with a space), ids above 2^53, a quarantined file."""
    now = now or datetime.now(UTC)
    minute0 = now.replace(second=0, microsecond=0) - timedelta(minutes=59)
    throughput = [
        {"minute": _iso(minute0 + timedelta(minutes=i)), "sessions": (i * 7) % 11 + (i // 20)}
        for i in range(60)
    ]
    pcs = [
        {
            "id": "PC01",
            "name": "Feature table",
            "description": "Main feature table GFX PC",
            "watch_path": "/nas/PC01",
            "state": "running",
            "reason": None,
            "files_tracked": 128,
            "sessions_synced": 126,
            "files_seen": 131,
            "last_sync": _iso(now - timedelta(seconds=12)),
            "last_error": None,
            "backlog": 0,
            "last_scan_seconds": 0.18,
        },
        {
            "id": "PC02",
            "name": None,
            "description": None,
            "watch_path": "/nas/PC02",
            "state": "running",
            "reason": None,
            "files_tracked": 64,
            "sessions_synced": 60,
            "files_seen": 64,
            "last_sync": _iso(now - timedelta(minutes=3)),
            "last_error": None,
            "backlog": 4,
            "last_scan_seconds": 0.09,
        },
        {
            "id": "table GG",
            "name": "Outer table",
            "description": None,
            "watch_path": "/nas/table GG",
            "state": "running",
            "reason": None,
            "files_tracked": 12,
            "sessions_synced": 11,
            "files_seen": 12,
            "last_sync": None,
            "last_error": "quarantined: invalid_json",
            "backlog": 0,
            "last_scan_seconds": 0.02,
        },
    ]
    events = [
        {
            "ts": _iso(now - timedelta(seconds=2 + 9 * i)),
            "kind": kind,
            "pc_id": pc_id,
            "path": path,
            "session_id": session_id,
            "message": message,
        }
        for i, (kind, pc_id, path, session_id, message) in enumerate(
            [
                (
                    "synced",
                    "PC01",
                    "/nas/PC01/638966318331324926.json",
                    "638966318331324926",
                    "upserted (27 hands)",
                ),
                (
                    "queued",
                    "PC02",
                    "/nas/PC02/999999999999999999.json",
                    "999999999999999999",
                    "offline queue: supabase unreachable",
                ),
                ("upstream", None, None, None, "supabase offline: ConnectError"),
                (
                    "quarantined",
                    "table GG",
                    "/nas/table GG/<b>broken</b>.json",
                    None,
                    "invalid JSON at line 1 column 2",
                ),
                (
                    "modified",
                    "PC01",
                    "/nas/PC01/638966318331324926.json",
                    "638966318331324926",
                    "file changed",
                ),
                ("created", "PC01", "/nas/PC01/638966318331324926.json", None, "new file"),
                ("alert", None, None, None, "offline_pending started (12 >= 10)"),
                ("registry", None, None, None, "registry loaded: 3 PCs"),
            ]
        )
    ]
    return {
        "status": "degraded",
        "reasons": ["supabase unreachable: ConnectError; records are queued"],
        "uptime_seconds": 3725,
        "version": "0.1.0",
        "now": _iso(now),
        "upstream": {
            "state": "offline",
            "reason": "ConnectError: connection refused",
            "last_sync": _iso(now - timedelta(seconds=12)),
            "url": "https://example.supabase.co",
        },
        "queue": {
            "pending": 0,
            "pending_bytes": 0,
            "dead_letters": 1,
            "quarantined": 1,
            "batch_pending": 3,
            "files_acknowledged": 201,
            "full": False,
        },
        "pcs": pcs,
        "alerts": [
            {
                "name": "dead_letters",
                "level": "review",
                "message": "1 dead-lettered record needs review",
                "since": _iso(now - timedelta(minutes=5)),
            },
            {
                "name": "batch_pending",
                "level": "warn",
                "message": "batch pending 512 >= 500",
                "since": _iso(now - timedelta(seconds=40)),
            },
        ],
        "throughput": throughput,
        "events": events,
        "quarantined": [
            {
                "id": 1,
                "kind": "quarantine",
                "pc_id": "table GG",
                "path": "/nas/table GG/<b>broken</b>.json",
                "session_id": None,
                "reason": "invalid_json",
                "message": "Expecting value: line 1 column 2 (char 1)",
                "last_seen": _iso(now - timedelta(minutes=2)),
            },
            {
                "id": 2,
                "kind": "refused",
                "pc_id": "PC02",
                "path": "/nas/PC02/999999999999999999.json",
                "session_id": "999999999999999999",
                "reason": "23514",
                "message": 'new row violates check constraint "hand_count_nonnegative"',
                "last_seen": _iso(now - timedelta(minutes=7)),
            },
        ],
    }
