"""Serve the HTTP app with hypercorn's trio worker, as a task of the agent's nursery.

hypercorn over a hand-written server: HTTP/1.1 keep-alive, streaming responses for SSE and a
graceful shutdown with a deadline are all done right there. Its logs go through ours.
"""

from __future__ import annotations

import logging

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from ..logs import get_logger
from ..observe.status import AgentStatus
from ..settings import Settings
from .app import build_app

log = get_logger("http")

GRACEFUL_TIMEOUT = 1.0  # SSE streams end on shutdown by themselves; this bounds the rest


def hypercorn_config(settings: Settings) -> Config:
    config = Config()
    host = settings.health_host
    config.bind = [
        f"[{host}]:{settings.health_port}" if ":" in host else f"{host}:{settings.health_port}"
    ]
    config.accesslog = None  # one line per probe every 30 s is noise in `docker logs`
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = GRACEFUL_TIMEOUT
    config.keep_alive_timeout = 30
    return config


async def run_http(
    settings: Settings,
    status: AgentStatus,
    shutdown: trio.Event,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until `shutdown` is set; started once the socket is bound (port 0 works)."""
    app = build_app(status, settings, shutdown)

    class _Started:
        def started(self, binds: list[str] | None = None) -> None:
            binds = binds or []
            log.info(
                "http_listening", urls=binds, dashboard_token=settings.dashboard_token is not None
            )
            local = settings.health_host in ("127.0.0.1", "::1", "localhost")
            if settings.dashboard_token is None and not local:
                log.warning(
                    "dashboard_open",
                    host=settings.health_host,
                    hint="anyone on this network sees the dashboard: set GFX_SYNC_DASHBOARD_TOKEN",
                )
            task_status.started(binds)

    await serve(
        app,  # type: ignore[arg-type]  # starlette's ASGI callable, typed apart from hypercorn's
        hypercorn_config(settings),
        shutdown_trigger=shutdown.wait,
        task_status=_Started(),
    )
