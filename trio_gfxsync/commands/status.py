"""`trio-gfxsync status`: the running agent's /api/status, as a table (or the raw JSON)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
import orjson

from .healthcheck import PROBE_TIMEOUT, base_url


def fetch_status(host: str, port: int, token: str | None) -> dict[str, Any]:
    # a header, not ?token=: httpx puts the URL into its error messages
    headers = {"Authorization": f"Bearer {token}"} if token else None
    response = httpx.get(
        f"{base_url(host, port)}/api/status", headers=headers, timeout=PROBE_TIMEOUT
    )
    response.raise_for_status()
    document = orjson.loads(response.content)
    if not isinstance(document, dict):
        raise httpx.DecodingError("/api/status did not answer a JSON object")
    return document


def _table(headers: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
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
            str(pc["id"]),
            str(pc["state"]),
            str(pc["files_tracked"]),
            str(pc["sessions_synced"]),
            str(pc["backlog"]),
            str(pc.get("last_sync") or "-"),
            str(pc.get("reason") or pc.get("last_error") or ""),
        )
        for pc in doc["pcs"]
    ]
    out += _table(("PC", "STATE", "FILES", "SESSIONS", "BACKLOG", "LAST SYNC", "PROBLEM"), rows)
    if doc["alerts"]:
        out += ["", "alerts:"] + [
            f"  [{a['level']}] {a['name']}: {a['message']}" for a in doc["alerts"]
        ]
    return "\n".join(out)
