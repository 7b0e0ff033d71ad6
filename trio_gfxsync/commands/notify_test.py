"""`trio-gfxsync notify-test`: send one test notification to every GFX_SYNC_NOTIFY_URL.

One line per webhook, naming its host only (the URL's path is its credential); exit 0 when
every webhook took it, 1 when one did not, 2 when no URL is set.
"""

from __future__ import annotations

import sys
import time

import httpx

from ..observe.notices import Notice
from ..observe.notifier import Notifier
from ..settings import Settings

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2


def test_notice(at: float) -> Notice:
    return Notice(
        kind="test",
        name="notify_test",
        level="info",
        status="test",
        previous=None,
        reason="trio-gfxsync notify-test: notifications reach this channel",
        at=at,
    )


async def run_notify_test(
    settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None
) -> int:
    notifier = await Notifier.from_settings(settings)
    if notifier is None:
        print("GFX_SYNC_NOTIFY_URL: not set, nothing to test", file=sys.stderr)
        return EXIT_CONFIG
    async with httpx.AsyncClient(transport=transport) as client:
        results = await notifier.send(client, test_notice(time.time()))
    for result in sorted(results, key=lambda r: r.host):
        print(f"{'ok' if result.ok else 'FAILED'}  {result.host}  {result.detail}")
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILURE
