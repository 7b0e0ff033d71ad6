"""A webhook receiver on a free port of 127.0.0.1: what a Slack, Discord, Teams or plain JSON
endpoint is to the agent's notifier. It records every POST (path and JSON body) and answers
with the statuses queued in `answers` (then 200), like a channel that is briefly unwell.

    with webhook_receiver() as hook:
        ...hook.url("/T000/B000/secret")...
        hook.wait_for(2, timeout=30)
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    body: Any
    status: int  # what the receiver answered


@dataclass
class WebhookReceiver:
    port: int = 0
    answers: list[int] = field(default_factory=list)  # statuses to answer, in order
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    arrived: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.arrived = threading.Condition(self.lock)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def bodies(self, status: int | None = 200) -> list[Any]:
        with self.lock:
            return [r.body for r in self.received if status is None or r.status == status]

    def wait_for(self, count: int, timeout: float, status: int | None = 200) -> list[Any]:
        """Block until `count` bodies have arrived (answered `status`); AssertionError if not."""
        deadline = time.monotonic() + timeout
        with self.arrived:
            while True:
                got = [r.body for r in self.received if status is None or r.status == status]
                if len(got) >= count:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(got)} notification(s) within {timeout} s: {got}")
                self.arrived.wait(left)


def _handler(receiver: WebhookReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body: Any = json.loads(raw)
            except ValueError:
                body = raw.decode(errors="replace")
            with receiver.arrived:
                status = receiver.answers.pop(0) if receiver.answers else 200
                receiver.received.append(Received(self.path, body, status))
                receiver.arrived.notify_all()
            self.send_response(status)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            """Silent: `received` is the log."""

    return Handler


@contextlib.contextmanager
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    server.daemon_threads = True
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, name="webhook", daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
