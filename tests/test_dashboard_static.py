"""The dashboard's static page in a real headless Chromium, against the canned server.

Debian's `/usr/bin/chromium` driven by Playwright with `executable_path` (no browser download).
The agent is not involved: `tests/dashboard_fixture.py` serves the files and a canned status, so
these tests pin the page's own behaviour (rendering, exact 18-digit ids, live updates, reconnect,
token). The end-to-end dashboard test against a running agent lives with the HTTP server.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.support.browser import ARTIFACTS
from tests.support.canned_dashboard import CannedServer, sample_status, start_canned_server

BIG_ID = "999999999999999999"  # above 2^53: a JS Number would print 1000000000000000000
REAL_ID = "638966318331324926"
# How long a change may take to show before the test fails: generous, for a loaded machine.
# The dashboard's promise (on screen within 2 s) is a figure printed below, not an assertion.
LIVE_MS = 15_000


@pytest.fixture
def status() -> dict[str, Any]:
    return sample_status()


@pytest.fixture
def server(status: dict[str, Any]) -> Iterator[CannedServer]:
    with start_canned_server(status) as srv:
        yield srv


def open_live(page: Page, url: str) -> None:
    page.goto(url)
    expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "live")


def test_shows_every_pc_and_exact_session_ids(
    page: Page, server: CannedServer, status: dict[str, Any]
) -> None:
    open_live(page, server.url + "/")

    cards = page.get_by_test_id("pc-card")
    expect(cards).to_have_count(3)
    assert [cards.nth(i).get_attribute("data-pc-id") for i in range(3)] == [
        "PC01",
        "PC02",
        "table GG",
    ]
    for pc in status["pcs"]:
        card = page.locator(f'[data-testid="pc-card"][data-pc-id="{pc["id"]}"]')
        expect(card.get_by_test_id("pc-state")).to_have_text(pc["state"])
        expect(card.get_by_test_id("pc-files")).to_have_text(str(pc["files_tracked"]))
        expect(card.get_by_test_id("pc-sessions")).to_have_text(str(pc["sessions_synced"]))
        expected_sync = re.compile(r"\d+ (s|min) ago|just now") if pc["last_sync"] else "never"
        expect(card.get_by_test_id("pc-last-sync")).to_have_text(expected_sync)
    gg = page.locator('[data-testid="pc-card"][data-pc-id="table GG"]')
    expect(gg.get_by_test_id("pc-last-error")).to_have_text("quarantined: invalid_json")

    expect(page.get_by_test_id("overall-status")).to_have_text("degraded")
    expect(page.get_by_test_id("upstream-state")).to_have_attribute("data-state", "offline")
    expect(page.get_by_test_id("upstream-state")).to_have_text("offline · queueing")
    expect(page.get_by_test_id("last-sync")).to_have_text(re.compile(r"^\d+ s ago$"))
    expect(page.get_by_test_id("pending-count")).to_have_text("0")
    expect(page.get_by_test_id("dead-letter-count")).to_have_text("1")
    expect(page.get_by_test_id("quarantined-count")).to_have_text("1")
    expect(page.get_by_test_id("alert")).to_have_count(2)

    # 18-digit ids: shown exactly, never rounded through a JavaScript number.
    event_ids = page.get_by_test_id("event-session-id").all_text_contents()
    assert REAL_ID in event_ids
    assert BIG_ID in event_ids
    expect(page.get_by_test_id("event-row")).to_have_count(len(status["events"]))
    rows = page.get_by_test_id("quarantine-row")
    expect(rows).to_have_count(2)
    expect(rows.nth(1).get_by_test_id("quarantine-session-id")).to_have_text(BIG_ID)
    assert "1000000000000000000" not in page.locator("body").inner_text()

    # A file name is text, never markup.
    expect(rows.nth(0).get_by_test_id("quarantine-path")).to_have_text(
        "/nas/table GG/<b>broken</b>.json"
    )
    assert page.locator("#quarantine-body b, #events-body b").count() == 0

    chart = page.get_by_test_id("throughput-chart")
    total = sum(point["sessions"] for point in status["throughput"])
    expect(chart).to_have_attribute("data-total", str(total))
    expect(chart.locator("rect.bar")).to_have_count(60)
    expect(page.get_by_test_id("throughput-max")).to_have_text(
        str(max(point["sessions"] for point in status["throughput"]))
    )

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-canned.png"), full_page=True)


def test_shows_a_change_pushed_over_sse(page: Page, server: CannedServer) -> None:
    open_live(page, server.url + "/")
    expect(page.get_by_test_id("pending-count")).to_have_text("0")

    started = time.monotonic()
    with server.mutate() as status:
        status["queue"].update(pending=12, pending_bytes=3 * 1024 * 1024, full=True)
        pc = status["pcs"][1]
        pc.update(state="error", reason="watch path missing: /nas/PC02")
        status["events"].insert(
            0,
            {
                "ts": status["now"],
                "kind": "error",
                "pc_id": "PC02",
                "path": "/nas/PC02",
                "session_id": None,
                "message": "watch path missing",
            },
        )
        status["status"] = "unhealthy"
    card = page.locator('[data-testid="pc-card"][data-pc-id="PC02"]')
    expect(page.get_by_test_id("pending-count")).to_have_text("12", timeout=LIVE_MS)
    expect(card.get_by_test_id("pc-state")).to_have_text("error", timeout=LIVE_MS)
    expect(card.get_by_test_id("pc-reason")).to_have_text(
        "watch path missing: /nas/PC02", timeout=LIVE_MS
    )
    expect(page.get_by_test_id("overall-status")).to_have_text("unhealthy", timeout=LIVE_MS)
    expect(page.get_by_test_id("queue-full")).to_be_visible(timeout=LIVE_MS)
    expect(page.get_by_test_id("pending-bytes")).to_have_text("3.00 MB", timeout=LIVE_MS)
    expect(page.get_by_test_id("event-row").first).to_have_attribute("data-kind", "error")
    print(f"dashboard: the change was on screen {time.monotonic() - started:.2f}s after it")


def test_reconnects_after_the_stream_is_refused(page: Page, server: CannedServer) -> None:
    open_live(page, server.url + "/")

    # A 503 makes the browser close its EventSource for good: the page must start a new one.
    server.refuse_streams = True
    server.drop_streams()
    expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "reconnecting")
    expect(page.get_by_test_id("connection")).to_have_text("reconnecting…")

    with server.mutate() as status:
        status["queue"]["dead_letters"] = 5
    server.refuse_streams = False
    expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "live", timeout=8000)
    expect(page.get_by_test_id("dead-letter-count")).to_have_text("5", timeout=LIVE_MS)


def test_token_required_message_and_token_in_every_request(
    page: Page, status: dict[str, Any]
) -> None:
    with start_canned_server(status, token="abc") as server:
        page.goto(server.url + "/")
        banner = page.get_by_test_id("auth-required")
        expect(banner).to_be_visible()
        expect(banner).to_contain_text("dashboard token required: open /?token=…")
        expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "unauthorized")

        page.goto(server.url + "/?token=abc")
        expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "live")
        expect(page.get_by_test_id("auth-required")).to_be_hidden()
        expect(page.get_by_test_id("pc-card")).to_have_count(3)
        with server.mutate() as st:
            st["queue"]["pending"] = 7
        expect(page.get_by_test_id("pending-count")).to_have_text("7", timeout=LIVE_MS)

        api_after_token = [
            path
            for path in server.requests[server.requests.index("/?token=abc") :]
            if path.startswith("/api/")
        ]
        assert {p.split("?")[0] for p in api_after_token} == {"/api/status", "/api/events"}
        assert all("token=abc" in p for p in api_after_token), api_after_token


REFUSAL = {
    "error": "this address has 4 live dashboards open already (at most 4 per address); close one",
    "limit": "per_client",
    "retry_after": 5,
}


def wait_for_attempts(server: CannedServer, count: int, timeout: float = 120) -> list[float]:
    """The times of the first `count` /api/events requests (waits for them)."""
    deadline = time.monotonic() + timeout
    while len(server.events_at) < count:
        assert time.monotonic() < deadline, f"only {len(server.events_at)} stream requests"
        time.sleep(0.05)
    return server.events_at[:count]


def test_a_refusal_says_why_and_its_retry_after_is_honoured(
    page: Page, server: CannedServer
) -> None:
    open_live(page, server.url + "/")
    first = len(server.events_at)

    # the agent's answer to a laptop with too many dashboards open: 429, Retry-After: 5
    server.stream_refusal = (429, {"Retry-After": "5"}, json.dumps(REFUSAL).encode())
    server.drop_streams()
    connection = page.get_by_test_id("connection")
    detail = page.get_by_test_id("connection-detail")
    expect(connection).to_have_attribute("data-state", "refused", timeout=LIVE_MS)
    expect(connection).to_have_text("refused")
    expect(detail).to_be_visible()
    expect(detail).to_contain_text(f"refused by the agent (HTTP 429): {REFUSAL['error']}")
    expect(detail).to_contain_text(re.compile(r"next try in [1-5] s"))

    # the next attempt waits the Retry-After (5 s), not the back-off's 4 s
    refused, retried = wait_for_attempts(server, first + 2)[first:]
    assert retried - refused >= 4.95, f"tried again {retried - refused:.2f} s after a 429"

    server.stream_refusal = None
    expect(connection).to_have_attribute("data-state", "live", timeout=LIVE_MS * 5)
    expect(detail).to_be_hidden()


def test_the_page_backs_off_while_the_stream_is_refused(page: Page, server: CannedServer) -> None:
    open_live(page, server.url + "/")
    first = len(server.events_at)

    # a refusal without Retry-After: 2 s, then twice as long each time
    server.refuse_streams = True
    server.drop_streams()
    detail = page.get_by_test_id("connection-detail")
    expect(detail).to_contain_text("refused by the agent (HTTP 503): refused", timeout=LIVE_MS)
    times = wait_for_attempts(server, first + 3)[first:]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert gaps[0] >= 3.95 and gaps[1] >= 7.95, f"attempts {gaps} s apart"
    print(f"dashboard: refused attempts {', '.join(f'{g:.2f}' for g in gaps)} s apart")

    server.refuse_streams = False
    expect(page.get_by_test_id("connection")).to_have_attribute(
        "data-state", "live", timeout=LIVE_MS * 5
    )
