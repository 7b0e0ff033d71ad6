"""The current hand on the agent's own dashboard, and the optional pc_silent alert (issue 25,
item 7): the pure rule on the agent's clock, then a running agent whose PC plays a hand, goes
quiet past GFX_SYNC_ALERT_SILENT_MINUTES and plays again, seen in /api/status, /health and the
dashboard in Chromium.
"""

from __future__ import annotations

import dataclasses
import random
import re
import time
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from playwright.sync_api import Page, expect

from tests.support import infra
from tests.support.agent import agent_env, running_agent
from tests.support.tree import grow, make_session, write_session
from tests.support.waits import wait_for
from trio_gfxsync.observe.alerts import Figures, Thresholds, evaluate
from trio_gfxsync.observe.status import SILENT_WINDOW, PcStatus

FIGURES = Figures(
    disk_percent=None,
    memory_mb=None,
    batch_pending=0,
    offline_pending=0,
    retried_records=0,
    consecutive_upload_failures=0,
    dead_letters=0,
)


def test_pc_silent_is_off_by_default_and_names_only_the_quiet_pcs() -> None:
    silent = (("PC01", 1900.0), ("PC02", 100.0))
    quiet = dataclasses.replace(FIGURES, silent_pcs=silent)
    assert [a.name for a in evaluate(quiet, Thresholds())] == []
    (alert,) = evaluate(quiet, Thresholds(silent_minutes=30))
    assert (alert.name, alert.level) == ("pc_silent", "warn")
    assert "PC PC01" in alert.message and "PC02" not in alert.message
    assert evaluate(quiet, Thresholds(silent_minutes=40)) == []


# reads of a PC: (seconds since the previous read, session id, hand number, live)
reads = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=3000, allow_nan=False),
        st.integers(min_value=1, max_value=3),
        st.integers(min_value=1, max_value=30),
        st.booleans(),
    ),
    max_size=40,
)


@given(reads, st.floats(min_value=0, max_value=10_000, allow_nan=False))
def test_silence_counts_from_the_last_new_hand_while_the_file_is_in_play(
    seq: list[tuple[float, int, int, bool]], later: float
) -> None:
    pc = PcStatus("PC01", "PC01")
    now = 0.0
    last_live_rewrite: float | None = None
    last_change: float | None = None  # a new hand seen live, or the first live rewrite
    for gap, session, hand, live in seq:
        now += gap
        before = pc.hand
        pc.note_read(session, hand, live, now)
        if live and pc.hand is not None and pc.hand.session_id == session:
            last_live_rewrite = now
            if last_change is None or (pc.hand is not before and pc.hand.seen_at == now):
                last_change = now
    now += later
    silent = pc.silent_for(now)
    if last_live_rewrite is None or now - last_live_rewrite > SILENT_WINDOW:
        assert silent is None
    else:
        assert last_change is not None
        assert silent == pytest.approx(now - last_change)
        assert silent >= 0


def test_a_backfill_alone_is_no_play() -> None:
    pc = PcStatus("PC01", "PC01")
    pc.note_read(7, 12, False, 100.0)
    assert pc.silent_for(5000.0) is None
    assert pc.hand is not None and pc.hand.hand_num == 12 and pc.hand.age(200.0) is None


@pytest.mark.e2e
def test_the_dashboard_shows_the_current_hand_and_a_quiet_pc_raises_pc_silent(
    tmp_path: Path, clean_db: infra.Database, fresh_gateway: infra.Gateway, page: Page
) -> None:
    rng = random.Random(7)
    session = make_session(3, 4, rng)
    path = tmp_path / "nas" / "PC01" / "1016" / session.file_name
    write_session(path, session)
    env = agent_env(
        nas=tmp_path / "nas",
        queue=tmp_path / "queue",
        gateway_url=fresh_gateway.url,
        key=fresh_gateway.key,
        poll_interval=0.5,
        alert_silent_minutes=0.1,  # 6 s
    )

    def pc_doc(agent_url: str) -> dict[str, object]:
        status = httpx.get(f"{agent_url}/api/status", timeout=10).json()
        return next(p for p in status["pcs"] if p["id"] == "PC01")

    def alerts(agent_url: str) -> list[str]:
        return [a["name"] for a in httpx.get(f"{agent_url}/health", timeout=10).json()["alerts"]]

    with running_agent(env, tmp_path / "agent.log") as agent:
        # read at start: the hand is known, when it was written is not (no PC clock is used)
        wait_for(lambda: (pc_doc(agent.url).get("hand") or {}).get("hand_num") == 4, 30, "hand 4")
        assert pc_doc(agent.url)["hand"] == {
            "session_key": str(session.session_id),
            "hand_num": 4,
            "age_seconds": None,
            "at": None,
        }
        page.goto(agent.url)
        card = page.locator('[data-testid=pc-card][data-pc-id="PC01"]')
        expect(card.get_by_test_id("pc-hand")).to_have_text("#4")
        expect(card.get_by_test_id("pc-hand-age")).to_have_text("before start")

        grow(path, session, rng)  # hand 5 ends: the file is rewritten
        played = time.monotonic()
        expect(card.get_by_test_id("pc-hand")).to_have_text("#5", timeout=20_000)
        expect(card.get_by_test_id("pc-hand-age")).to_have_text(re.compile(r"just now|\d+ s ago"))
        hand = pc_doc(agent.url)["hand"]
        assert isinstance(hand, dict) and hand["hand_num"] == 5 and hand["at"] is not None
        assert "pc_silent" not in alerts(agent.url)

        # no hand for 6 s while the file was rewritten within 2 h: pc_silent, a warning
        wait_for(lambda: "pc_silent" in alerts(agent.url), 30, "pc_silent")
        assert time.monotonic() - played >= 6
        health = httpx.get(f"{agent.url}/health", timeout=10).json()
        (alert,) = [a for a in health["alerts"] if a["name"] == "pc_silent"]
        assert alert["level"] == "warn" and "PC01" in alert["message"]
        assert health["status"] == "degraded"

        grow(path, session, rng)  # hand 6: the PC plays again
        wait_for(lambda: "pc_silent" not in alerts(agent.url), 30, "pc_silent cleared")
        assert pc_doc(agent.url)["hand"]["hand_num"] == 6  # type: ignore[index]
    events = [e.get("event") for e in agent.read_events()]
    assert "alert_started" in events and "alert_cleared" in events
