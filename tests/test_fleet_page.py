"""The fleet page (issue 25, item 5) in headless Chromium, reading the real PostgREST through
the gateway stand-in with a user signed in at Supabase Auth's stand-in.

- From file:// (its project in the query string): every venue with its agents (offline first,
  in red, with how long ago last seen) and their PCs' current hands; a drill into one venue;
  the token refreshed before it expires (no request ever answered 401); readable on a phone.
- An account without the claim, or none at all, reads nothing of the fleet.
- Served by a running agent at /fleet without the dashboard token: two agents of two venues
  heartbeating; one killed with SIGKILL turns stale, then offline, on the page.
"""

from __future__ import annotations

import json
import random
import re
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.support import infra
from tests.support.agent import agent_env, running_agent
from tests.support.browser import ARTIFACTS
from tests.support.fleet_site import (
    PASSWORD,
    PUBLISHABLE_KEY,
    FleetSite,
    fleet_gateway,
    sign_in_on_page,
)
from tests.support.tree import grow, make_session, write_session
from tests.support.waits import wait_for

pytestmark = pytest.mark.e2e

BIG_SESSION = "638966318331324926"  # 18 digits: a JavaScript number would round it


@pytest.fixture
def site(postgrest: infra.PostgrestServer, postgres_db: infra.Database) -> Any:
    infra.query(postgres_db.dsn, "delete from public.gfx_agents")
    infra.truncate_tables(postgres_db.dsn)
    with fleet_gateway(postgrest, access_lifetime=8) as site:
        site.auth.add_user("ops@example.org", PASSWORD, gfx_access="ops")
        site.auth.add_user("live@example.org", PASSWORD, gfx_access="live")
        site.auth.add_user("delayed@example.org", PASSWORD, gfx_access="delayed")
        site.auth.add_user("nobody@example.org", PASSWORD)
        yield site


def pc(
    pc_id: str, hand: int | None, hand_age: float | None, state: str = "running"
) -> dict[str, Any]:
    return {
        "id": pc_id,
        "state": state,
        "reason": None if state == "running" else "watch folder missing",
        "sync_lag_s": 0.4,
        "files_waiting": 0,
        "last_sync": "2026-12-05T09:00:00Z",
        "session_key": BIG_SESSION if hand is not None else None,
        "hand_num": hand,
        "hand_age_s": hand_age,
    }


def heartbeat_row(dsn: str, agent_id: str, venue: str, interval: float, pcs: list[Any]) -> None:
    """A row as an agent's heartbeat writes it (last_seen is the database's, by its trigger)."""
    infra.query(
        dsn,
        "insert into public.gfx_agents (agent_id, venue, host, version, heartbeat_interval_s,"
        " status, reasons, pcs) values (%s, %s, %s, '0.1.0', %s, 'healthy', '[]', %s::jsonb)",
        (agent_id, venue, f"nas-{agent_id}", interval, json.dumps(pcs)),
    )


def test_the_page_shows_every_venue_drills_into_one_and_refreshes_its_token(
    site: FleetSite, postgres_db: infra.Database, page: Page
) -> None:
    dsn = postgres_db.dsn
    heartbeat_row(
        dsn, "agent-a1", "Casino Nord", 3600, [pc("A-PC01", 17, 42.0), pc("A-PC02", 3, 5.0)]
    )
    # an agent of Casino Süd that stopped: 1 s interval, so offline after 6 s
    heartbeat_row(dsn, "agent-b2", "Casino Süd", 1, [pc("B-PC01", 88, 1.0)])
    heartbeat_row(dsn, "agent-b1", "Casino Süd", 3600, [pc("B-PC02", None, None, "missing")])
    infra.query(
        dsn,
        "insert into public.sync_events (gfx_pc_id, event_type, agent_id, record_count,"
        " error_message) values ('', 'agent_offline', 'agent-b2', 0, 'agent-b2 went offline')",
    )
    infra.query(
        dsn,
        "insert into public.sync_events (gfx_pc_id, event_type, file_path) values"
        " ('A-PC01', 'modified', '1016/a.json')",
    )
    wait_for(
        lambda: (
            infra.query(dsn, "select state from public.gfx_fleet where agent_id = 'agent-b2'")[0][
                "state"
            ]
            == "offline"
        ),
        30,
        "agent-b2 offline in gfx_fleet",
    )

    page.goto(site.page_url(poll=1))
    sign_in_on_page(page, "ops@example.org")
    expect(page.get_by_test_id("who")).to_have_text("ops@example.org")
    expect(page.get_by_test_id("sign-in")).to_be_hidden()
    expect(page.get_by_test_id("config-form")).to_be_hidden()
    venues = page.get_by_test_id("venue")
    expect(venues).to_have_count(2)
    # the venue with an offline agent first; in it, the offline agent first, in red
    expect(venues.nth(0)).to_have_attribute("data-venue", "Casino Süd")
    south_agents = venues.nth(0).get_by_test_id("agent")
    expect(south_agents.nth(0)).to_have_attribute("data-agent", "agent-b2")
    expect(south_agents.nth(0)).to_have_attribute("data-state", "offline")
    expect(south_agents.nth(0).get_by_test_id("seen")).to_have_text(
        re.compile(r"last seen \d+ s ago")
    )
    colour = south_agents.nth(0).locator(".agent-name").evaluate("e => getComputedStyle(e).color")
    assert colour == "rgb(248, 81, 73)", colour
    expect(south_agents.nth(1)).to_have_attribute("data-state", "online")
    # PCs with their state, current hand and its age (aged on from the heartbeat's figure)
    a1 = page.locator('[data-testid=pc][data-pc="A-PC01"]')
    expect(a1.get_by_test_id("hand")).to_have_text("#17")
    expect(a1.get_by_test_id("hand-age")).to_have_text(re.compile(r"^\d+ s ago$"))
    assert int(a1.get_by_test_id("hand-age").inner_text().split()[0]) >= 42
    expect(a1).to_contain_text(BIG_SESSION)
    expect(page.locator('[data-testid=pc][data-pc="B-PC02"]')).to_have_attribute(
        "data-state", "missing"
    )
    expect(page.locator('[data-testid=event][data-type="agent_offline"]')).to_have_count(1)

    # drill into one venue: its agents and its events only
    venues.nth(1).locator("h2").click()
    expect(page.get_by_test_id("venue")).to_have_count(1)
    expect(page.get_by_test_id("venue")).to_have_attribute("data-venue", "Casino Nord")
    expect(page.get_by_test_id("event")).to_have_count(1)
    expect(page.get_by_test_id("event")).to_have_attribute("data-type", "modified")
    page.locator("#crumb a").click()
    expect(page.get_by_test_id("venue")).to_have_count(2)

    # the poll goes on while the 8 s token is refreshed before it expires, twice over
    wait_for(lambda: site.auth.grants.count("refresh_token") >= 3, 40, "three refreshes")
    heartbeat_row(dsn, "agent-c1", "Casino West", 3600, [pc("C-PC01", 1, 0.0)])
    expect(page.get_by_test_id("venue")).to_have_count(3)
    assert site.gateway.count(status=401) == 0, "a request went out with an expired token"
    assert site.gateway.count(method="GET", path_suffix="/gfx_fleet", status=200) >= 5
    page.screenshot(path=str(ARTIFACTS / "fleet-page.png"), full_page=True)


def test_readable_on_a_phone(site: FleetSite, postgres_db: infra.Database, browser: Any) -> None:
    heartbeat_row(
        postgres_db.dsn,
        "agent-p1",
        "A venue with a rather long name for a phone",
        3600,
        [pc(f"PC{n:02d}", n * 10, 30.0) for n in range(1, 7)],
    )
    context = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True)
    try:
        page = context.new_page()
        page.goto(site.page_url(poll=1))
        sign_in_on_page(page, "ops@example.org")
        expect(page.get_by_test_id("pc")).to_have_count(6)
        expect(page.locator('[data-pc="PC06"] [data-testid=hand]')).to_be_visible()
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{overflow} px wider than the phone: sideways scrolling"
        page.screenshot(path=str(ARTIFACTS / "fleet-phone.png"), full_page=True)
    finally:
        context.close()


def test_an_account_without_the_claim_reads_nothing(
    site: FleetSite, postgres_db: infra.Database, page: Page
) -> None:
    heartbeat_row(postgres_db.dsn, "agent-x", "Casino Nord", 3600, [pc("X-PC01", 5, 1.0)])
    infra.query(
        postgres_db.dsn,
        "insert into public.sync_events (gfx_pc_id, event_type, file_path) values"
        " ('X-PC01', 'created', 'x.json')",
    )
    infra.query(
        postgres_db.dsn,
        "insert into public.gfx_sessions (gfx_pc_id, session_id, file_name, file_hash, raw_json)"
        " values ('X-PC01', 1, 'x.json', 'ab', '{}')",
    )
    tables = ("gfx_fleet", "gfx_agents", "sync_events", "pc_status")
    for email, readable in (
        ("nobody@example.org", False),
        ("delayed@example.org", False),
        ("live@example.org", True),
        ("ops@example.org", True),
    ):
        token = str(site.sign_in(email)["access_token"])
        with site.browser_client(token) as client:
            for table in tables:
                response = client.get(f"/{table}", params={"select": "*"})
                rows = response.json() if response.status_code == 200 else []
                assert bool(rows) is readable, (email, table, response.status_code, response.text)
    with site.browser_client(None) as anon:  # the publishable key alone: anon
        for table in tables:
            response = anon.get(f"/{table}", params={"select": "*"})
            assert response.status_code in (200, 401, 403), response.text
            assert response.status_code != 200 or response.json() == [], (table, response.text)
    # raw_json stays with the service role
    ops = str(site.sign_in("ops@example.org")["access_token"])
    with site.browser_client(ops) as client:
        assert client.get("/gfx_sessions", params={"select": "raw_json"}).status_code in (401, 403)

    page.goto(site.page_url(poll=1))
    sign_in_on_page(page, "nobody@example.org")
    expect(page.get_by_test_id("who")).to_have_text("nobody@example.org")
    expect(page.get_by_test_id("empty")).to_be_visible()
    expect(page.get_by_test_id("agent")).to_have_count(0)
    expect(page.get_by_test_id("event")).to_have_count(0)
    # and a wrong password signs nobody in
    page.click("#sign-out")
    sign_in_on_page(page, "ops@example.org", "wrong")
    expect(page.get_by_test_id("sign-in-error")).to_contain_text("Invalid login credentials")
    expect(page.get_by_test_id("agent")).to_have_count(0)


def last_hand_num(path: Path) -> int:
    hands = json.loads(path.read_text())["Hands"]
    return int(hands[-1]["HandNum"])


def test_served_by_an_agent_two_venues_and_a_killed_agent_turns_stale_then_offline(
    tmp_path: Path, postgres_db: infra.Database, site: FleetSite, page: Page
) -> None:
    interval = 2.0  # stale after 6 s, offline after 12 s without a heartbeat
    hands: dict[str, int] = {}
    files = {}
    rng = random.Random(25)
    for name, pcs in (("a", ["A-PC01", "A-PC02"]), ("b", ["B-PC01"])):
        for index, pc_id in enumerate(pcs):
            session = make_session(index + (10 if name == "b" else 0), 3 + index, rng)
            path = tmp_path / f"nas-{name}" / pc_id / "1016" / session.file_name
            write_session(path, session)
            hands[pc_id] = last_hand_num(path)
            files[pc_id] = (path, session)

    def env(name: str, venue: str) -> dict[str, str]:
        return agent_env(
            nas=tmp_path / f"nas-{name}",
            queue=tmp_path / f"queue-{name}",
            gateway_url=site.url,
            key=site.gateway.key,
            log_level="INFO",
            venue=venue,
            heartbeat_interval=interval,
            supabase_publishable_key=PUBLISHABLE_KEY,
            dashboard_token="a-dashboard-token-for-the-venue",
        )

    with (
        running_agent(env("a", "Venue A"), tmp_path / "a.log") as a,
        running_agent(env("b", "Venue B"), tmp_path / "b.log", stop=False) as b,
    ):
        # /fleet needs no dashboard token, and carries the project, never the secret key
        served = httpx.get(f"{a.url}/fleet", timeout=10)
        assert served.status_code == 200
        assert f'content="{site.url}"' in served.text and PUBLISHABLE_KEY in served.text
        assert site.gateway.key not in served.text
        assert httpx.get(f"{a.url}/", timeout=10).status_code == 401, "the dashboard still is"

        page.goto(f"{a.url}/fleet?poll=1")
        sign_in_on_page(page, "ops@example.org")
        expect(page.get_by_test_id("venue")).to_have_count(2, timeout=30_000)
        for pc_id, hand in hands.items():
            row = page.locator(f'[data-testid=pc][data-pc="{pc_id}"]')
            expect(row).to_have_attribute("data-state", "running", timeout=30_000)
            expect(row.get_by_test_id("hand")).to_have_text(f"#{hand}", timeout=30_000)
            # read at start: when it was played is not known (a PC's clock is never used)
            expect(row.get_by_test_id("hand-age")).to_have_text("before start")
        # a hand ends at each venue: its number and how long ago, by the agents' clocks
        for pc_id in ("A-PC02", "B-PC01"):
            path, session = files[pc_id]
            grow(path, session, rng)
            row = page.locator(f'[data-testid=pc][data-pc="{pc_id}"]')
            expect(row.get_by_test_id("hand")).to_have_text(f"#{hands[pc_id] + 1}", timeout=30_000)
            expect(row.get_by_test_id("hand-age")).to_have_text(re.compile(r"^\d+ s ago$"))
        b_agent = page.locator('[data-testid=venue][data-venue="Venue B"] [data-testid=agent]')
        expect(b_agent).to_have_attribute("data-state", "online")

        assert b.stop(signal.SIGKILL)[0] == -signal.SIGKILL
        expect(b_agent).to_have_attribute("data-state", "stale", timeout=30_000)
        expect(b_agent).to_have_attribute("data-state", "offline", timeout=30_000)
        expect(b_agent.get_by_test_id("seen")).to_have_text(re.compile(r"last seen \d+ s ago"))
        assert int(b_agent.get_by_test_id("seen").inner_text().split()[2]) >= 6 * interval
        # the living agent recorded the death, once, and the page lists it
        expect(page.locator('[data-testid=event][data-type="agent_offline"]')).to_have_count(
            1, timeout=30_000
        )
        a_agent = page.locator('[data-testid=venue][data-venue="Venue A"] [data-testid=agent]')
        expect(a_agent).to_have_attribute("data-state", "online")
        page.screenshot(path=str(ARTIFACTS / "fleet-killed.png"), full_page=True)
