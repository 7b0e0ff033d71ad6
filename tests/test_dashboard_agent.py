"""The dashboard in a real headless Chromium against a running agent: every PC shown, counts
equal to the database, a new session shown once it is stored, 18-digit ids exact. Prints how
long the new session took to appear (a figure, not an assertion: bench/ measures latency).
Saves the screenshot the README shows."""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.support import infra
from tests.support.agent import agent_env, running_agent
from tests.support.browser import ARTIFACTS
from tests.support.tree import build_nas, make_session, write_session
from tests.support.waits import wait_for, wait_until_equal

pytestmark = pytest.mark.e2e


def test_dashboard_against_a_running_agent(
    page: Page, tmp_path: Path, clean_db: infra.Database, fresh_gateway: infra.Gateway
) -> None:
    nas = tmp_path / "nas"
    sessions = build_nas(nas, pcs=2, sessions_per_pc=6, seed=5)
    # a PC folder named with a space, as discovery allows
    for path in list(sessions)[:3]:
        target = nas / "table GG" / path.relative_to(nas / path.relative_to(nas).parts[0])
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    env = agent_env(
        nas=nas,
        queue=tmp_path / "queue",
        gateway_url=fresh_gateway.url,
        key=fresh_gateway.key,
        poll_interval=0.5,
        log_level="INFO",
    )
    with running_agent(env, tmp_path / "agent.log") as agent:
        url = agent.url
        wait_until_equal(nas, clean_db.dsn, timeout=60)
        page.goto(url + "/")
        expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "live")

        rows = infra.query(
            clean_db.dsn, "select gfx_pc_id, count(*) as n from gfx_sessions group by 1"
        )
        per_pc = {r["gfx_pc_id"]: r["n"] for r in rows}
        assert set(per_pc) == {"PC01", "PC02", "table GG"}
        cards = page.get_by_test_id("pc-card")
        expect(cards).to_have_count(3)
        for pc_id, count in per_pc.items():
            card = page.locator(f'[data-testid="pc-card"][data-pc-id="{pc_id}"]')
            expect(card.get_by_test_id("pc-state")).to_have_text("running")
            # sessions synced is a count over every acknowledged file, refreshed every few s
            expect(card.get_by_test_id("pc-sessions")).to_have_text(str(count), timeout=20_000)
        expect(page.get_by_test_id("overall-status")).to_have_attribute("data-status", "healthy")
        expect(page.get_by_test_id("upstream-state")).to_have_attribute("data-state", "connected")
        expect(page.get_by_test_id("pending-count")).to_have_text("0")

        # a new session lands: shown on screen, with the count the table has once it is stored
        new = make_session(4000, 2, random.Random(8))
        expected_id = str(new.session_id)
        assert int(expected_id) > 2**53  # a JavaScript Number would round it
        write_session(nas / "PC02" / "1021" / new.file_name, new)
        written = time.monotonic()
        ids = page.get_by_test_id("event-session-id")
        expect(ids.filter(has_text=expected_id).first).to_be_visible(timeout=20_000)
        on_screen = time.monotonic() - written
        print(f"dashboard: new session on screen {on_screen:.2f}s after the write (poll 0.5 s)")
        wait_for(
            lambda: infra.query(
                clean_db.dsn,
                "select 1 from gfx_sessions where gfx_pc_id = 'PC02' and session_id = %s",
                (new.session_id,),
            ),
            30,
            "the new session in the table",
        )
        (now,) = infra.query(
            clean_db.dsn, "select count(*) as n from gfx_sessions where gfx_pc_id = 'PC02'"
        )
        assert now["n"] == per_pc["PC02"] + 1
        card = page.locator('[data-testid="pc-card"][data-pc-id="PC02"]')
        expect(card.get_by_test_id("pc-sessions")).to_have_text(str(now["n"]), timeout=20_000)
        texts = [t for t in ids.all_text_contents() if t != "—"]  # "—": an event without one
        known = {str(s.session_id) for s in sessions.values()} | {expected_id}
        assert texts and set(texts) <= known, "every id on screen is exact"

        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
