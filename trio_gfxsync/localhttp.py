"""`healthcheck` and `status`: ask the running agent over its own HTTP port.

`healthcheck` is what Docker's HEALTHCHECK runs (slim images have no curl): exit 0 on HTTP 200,
1 otherwise, never 2 (Docker reserves it). It reads only the two settings it needs, so a
broken Supabase setting cannot make the probe itself fail differently from the agent.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import httpx
import orjson

PROBE_TIMEOUT = 4.0


def local_host(host: str) -> str:
    """Where to reach a server bound to `host` from this machine."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host in ("::", "[::]"):
        return "[::1]"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def base_url(host: str, port: int) -> str:
    return f"http://{local_host(host)}:{port}"


def healthcheck() -> int:
    host = os.environ.get("GFX_SYNC_HEALTH_HOST", "0.0.0.0").strip()
    try:
        port = int(os.environ.get("GFX_SYNC_HEALTH_PORT", "8080"))
    except ValueError:
        print("GFX_SYNC_HEALTH_PORT: not a port number", file=sys.stderr)
        return 1
    url = f"{base_url(host, port)}/health"
    try:
        response = httpx.get(url, timeout=PROBE_TIMEOUT)
    except httpx.HTTPError as exc:
        print(f"unhealthy: {url} did not answer ({type(exc).__name__})", file=sys.stderr)
        return 1
    try:
        document = orjson.loads(response.content)
        summary = f"{document.get('status')}: {'; '.join(document.get('reasons') or []) or 'ok'}"
    except orjson.JSONDecodeError:
        summary = f"HTTP {response.status_code}"
    print(summary)
    return 0 if response.status_code == 200 else 1


def fetch_status(host: str, port: int, token: str | None) -> dict[str, Any]:
    # a header, not ?token=: httpx puts the URL into its error messages
    headers = {"Authorization": f"Bearer {token}"} if token else None
    response = httpx.get(
        f"{base_url(host, port)}/api/status", headers=headers, timeout=PROBE_TIMEOUT
    )
    response.raise_for_status()
    return orjson.loads(response.content)


def _table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return [line(headers), *(line(r) for r in rows)]


def format_status(doc: dict[str, Any]) -> str:
    up = doc["upstream"]
    queue = doc["queue"]
    out = [
        f"status     {doc['status'].upper()}"
        + (f"  ({'; '.join(doc['reasons'])})" if doc["reasons"] else ""),
        f"supabase   {up['state']}" + (f"  ({up['reason']})" if up.get("reason") else ""),
        f"last sync  {up.get('last_sync') or 'never'}",
        f"queue      {queue['pending']} pending, {queue['dead_letters']} dead letters, "
        f"{queue['quarantined']} quarantined, {queue['batch_pending']} in the batcher",
        f"uptime     {doc['uptime_seconds']} s   version {doc['version']}",
        "",
    ]
    rows = [
        (
            pc["id"],
            pc["state"],
            str(pc["files_tracked"]),
            str(pc["sessions_synced"]),
            str(pc["backlog"]),
            pc.get("last_sync") or "-",
            pc.get("reason") or pc.get("last_error") or "",
        )
        for pc in doc["pcs"]
    ]
    out += _table(("PC", "STATE", "FILES", "SESSIONS", "BACKLOG", "LAST SYNC", "PROBLEM"), rows)
    if doc["alerts"]:
        out += ["", "alerts:"] + [
            f"  [{a['level']}] {a['name']}: {a['message']}" for a in doc["alerts"]
        ]
    return "\n".join(out)
