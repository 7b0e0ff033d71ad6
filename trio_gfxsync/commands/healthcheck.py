"""`trio-gfxsync healthcheck`: ask the running agent's /health over its own HTTP port.

What Docker's HEALTHCHECK runs (slim images have no curl): exit 0 on HTTP 200, 1 otherwise,
never 2 (Docker reserves it). It reads only the two settings it needs, so a broken Supabase
setting cannot make the probe itself fail differently from the agent.

`--json` prints the /health document itself (one line, as the agent sent it) instead of the
summary, with the same exit codes: `deploy/nas` reads its `reason_codes` through `docker exec`
to tell a release's own trouble from a venue that was already unwell.
"""

from __future__ import annotations

import os
import sys

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


def healthcheck(*, as_json: bool = False) -> int:
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
        if as_json:
            # the agent's own bytes, re-serialised compactly: one line, nothing added or dropped
            sys.stdout.buffer.write(orjson.dumps(document) + b"\n")
            return 0 if response.status_code == 200 else 1
        summary = f"{document.get('status')}: {'; '.join(document.get('reasons') or []) or 'ok'}"
    except orjson.JSONDecodeError:
        summary = f"HTTP {response.status_code}"
        if as_json:
            status = response.status_code
            print(f"unhealthy: {url} answered HTTP {status}, not JSON", file=sys.stderr)
            return 1
    print(summary)
    return 0 if response.status_code == 200 else 1
