"""`/health` never answers 500 (README, Operations): a health document that cannot be built is
itself the reason, answered 503 with it, so Docker's healthcheck fails saying why."""

from __future__ import annotations

import httpx
import pytest
import trio

from trio_gfxsync.observe.status import AgentStatus
from trio_gfxsync.settings import load_settings
from trio_gfxsync.web import app as web_app


async def test_a_health_document_that_cannot_be_built_answers_503_with_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GFX_SYNC_TARGET", "sqlite")
    status = AgentStatus()
    served = web_app.build_app(status, load_settings(), trio.Event())
    transport = httpx.ASGITransport(app=served)
    async with httpx.AsyncClient(transport=transport, base_url="http://agent") as client:
        healthy = await client.get("/health")
        assert healthy.status_code in (200, 503), healthy.text
        assert healthy.json()["status"] in ("healthy", "degraded", "unhealthy")

        def broken(*args: object) -> tuple[dict, int]:
            raise KeyError("PC07")  # a bug in the document: a PC gone from the status meanwhile

        monkeypatch.setattr(web_app, "health_document", broken)
        for _ in range(2):  # every time, not only the first (which also logs it)
            answer = await client.get("/health")
            assert answer.status_code == 503, answer.text
            assert answer.json() == {
                "status": "unhealthy",
                "reasons": ["health document failed: KeyError: 'PC07'"],
            }
