"""Notifications (issue 25, item 6): the pure shaping, deduplication and rate of
`observe.notices`, the notifier's retries against a real local webhook receiver, `notify-test`
as a subprocess, and an agent that tells a webhook once when its upstream is cut and once when
it returns.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import trio
from hypothesis import example, given
from hypothesis import strategies as st

from tests.support import infra
from tests.support.agent import agent_env, running_agent
from tests.support.tree import build_nas
from tests.support.webhook import webhook_receiver
from trio_gfxsync.observe import notifier as notifier_module
from trio_gfxsync.observe.notices import (
    DISCORD_MAX,
    Notice,
    NoticeGate,
    alert_notice,
    body_for,
    flavour,
    health_notice,
    url_host,
)
from trio_gfxsync.observe.notifier import Notifier

JSON_FIELDS = {
    "venue",
    "agent_id",
    "kind",
    "name",
    "level",
    "pc",
    "reason",
    "status",
    "previous",
    "at",
}

notices = st.builds(
    Notice,
    kind=st.sampled_from(["health", "alert"]),
    name=st.sampled_from(["agent", "dead_letters", "pc_silent"]),
    level=st.sampled_from(["info", "warn", "review", "critical"]),
    status=st.sampled_from(["healthy", "degraded", "started", "cleared"]),
    previous=st.none() | st.sampled_from(["healthy", "degraded"]),
    reason=st.text(max_size=5000),
    at=st.floats(min_value=0, max_value=4e9),
    pc=st.sampled_from(["", "PC01", "table 2"]),
)


# -- shapes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://hooks.slack.com/services/T0/B0/xyz", "slack"),
        ("https://discord.com/api/webhooks/1/abc", "discord"),
        ("https://discordapp.com/api/webhooks/1/abc", "discord"),
        ("https://ptb.discord.com/api/webhooks/1/abc", "discord"),
        (
            "https://prod-12.westus.logic.azure.com:443/workflows/abc/triggers/manual/paths/invoke",
            "teams",
        ),
        (
            "https://default1.environment.api.powerplatform.com:443/powerautomate/automations/direct/workflows/x",
            "teams",
        ),
        ("https://contoso.webhook.office.com/webhookb2/x", "teams"),
        ("https://example.com/hooks/gfx", "json"),
        ("http://127.0.0.1:9000/notslack/hooks.slack.com", "json"),
    ],
)
def test_the_host_decides_the_format(url: str, expected: str) -> None:
    assert flavour(url) == expected


@given(notices)
def test_every_format_carries_the_change_and_discord_stays_within_2000(n: Notice) -> None:
    slack = body_for("https://hooks.slack.com/services/x", n, "Venue A", "agent-1")
    assert set(slack) == {"text"} and "Venue A" in slack["text"] and n.status in slack["text"]
    discord = body_for("https://discord.com/api/webhooks/1/x", n, "Venue A", "agent-1")
    assert set(discord) == {"content"}
    assert 0 < len(discord["content"]) <= DISCORD_MAX
    assert discord["content"].startswith("[Venue A agent-1]")
    plain = body_for("https://example.com/h", n, "Venue A", "agent-1")
    assert set(plain) == JSON_FIELDS
    assert (plain["kind"], plain["name"], plain["status"], plain["reason"]) == (
        n.kind,
        n.name,
        n.status,
        n.reason,
    )
    assert plain["pc"] == (n.pc or None)
    json.dumps(plain)  # serialisable as is


def test_teams_gets_an_adaptive_card_in_the_message_envelope() -> None:
    n = health_notice("degraded", "healthy", ["supabase unreachable: ConnectError"], 1.8e9)
    body = body_for("https://x.logic.azure.com/workflows/1", n, "Casino Nord", "nas-1")
    assert body["type"] == "message"
    (attachment,) = body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"]
    assert card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    texts = [b.get("text", "") for b in card["body"]]
    assert any("healthy -> degraded" in t for t in texts)
    assert any("supabase unreachable" in t for t in texts)
    facts = {f["title"]: f["value"] for b in card["body"] for f in b.get("facts", [])}
    assert facts["Venue"] == "Casino Nord" and facts["Agent"] == "nas-1"


def test_a_log_may_name_the_host_only() -> None:
    assert url_host("https://hooks.slack.com/services/T0/B0/secret") == "hooks.slack.com"
    assert url_host("not a url") == "?"


# -- the gate ----------------------------------------------------------------------------------

changes = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=300, allow_nan=False),  # seconds since the last one
        st.sampled_from(["agent", "dead_letters"]),
        st.sampled_from(["started", "cleared", "degraded"]),
        st.sampled_from(["", "PC01"]),
    ),
    max_size=60,
)


@given(changes)
def test_the_same_change_goes_out_once_per_ten_minutes(
    seq: list[tuple[float, str, str, str]],
) -> None:
    gate = NoticeGate()
    now = 0.0
    last_sent: dict[tuple[str, str, str], float] = {}
    for gap, name, status, pc in seq:
        now += gap
        n = Notice("alert", name, "warn", status, None, "", now, pc)
        key = (name, pc, status)
        expected = key not in last_sent or now - last_sent[key] >= 600
        assert gate.admit(n, now) is expected
        if expected:
            last_sent[key] = now


@given(st.lists(st.floats(min_value=0, max_value=20, allow_nan=False), max_size=80))
@example([1.2439595008054747, 7.438764995484561, 8.145612415552543] + [0.0] * 10)  # rounding
def test_never_more_than_ten_a_minute_and_no_wait_below_it(arrivals: list[float]) -> None:
    gate = NoticeGate()
    now = 0.0
    sent: list[float] = []
    for gap in arrivals:
        now += gap
        in_window = [t for t in sent if now - t < 60]
        wait = gate.wait(now)
        assert (wait == 0) is (len(in_window) < 10)
        now += wait  # the notifier sleeps that long
        gate.sent(now)
        sent.append(now)
        assert sum(1 for t in sent if now - t < 60) <= 10


# -- the notifier against a real receiver ------------------------------------------------------


def test_a_failing_webhook_is_retried_and_a_refusing_one_is_not() -> None:
    with webhook_receiver() as hook:
        hook.answers = [503, 503]  # unwell twice, then fine
        notifier = Notifier([hook.url("/retry"), hook.url("/gone")], "V", "a1")
        n = alert_notice("dead_letters", "review", "1 dead letter", True, time.time())

        async def main() -> list[notifier_module.Delivery]:
            async with httpx.AsyncClient() as client:
                return await notifier.send(client, n)

        results = trio.run(main)
    assert all(r.host == "127.0.0.1" for r in results)
    # the two URLs ran concurrently: the receiver's queued 503s went to whichever came first,
    # and each kept trying until it got its 200 (at most 1 + RETRIES tries)
    assert [r.ok for r in results] == [True, True]
    assert len(hook.received) == 4
    with webhook_receiver() as hook:
        hook.answers = [404]
        notifier = Notifier([hook.url("/revoked")], "V", "a1")

        async def once() -> list[notifier_module.Delivery]:
            async with httpx.AsyncClient() as client:
                return await notifier.send(client, n)

        (result,) = trio.run(once)
        assert not result.ok and result.detail == "HTTP 404"
        assert len(hook.received) == 1, "a 404 is final: no retry"


def test_an_unreachable_webhook_gets_three_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(notifier_module, "RETRY_DELAYS", (0.01,))
    port = infra.free_port()
    attempts: list[httpx.Request] = []

    class Counting(httpx.AsyncHTTPTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            attempts.append(request)
            return await super().handle_async_request(request)

    async def main() -> notifier_module.Delivery:
        async with httpx.AsyncClient(transport=Counting()) as client:
            return await notifier_module.post(client, f"http://127.0.0.1:{port}/x", {"a": 1})

    result = trio.run(main)
    assert not result.ok and result.detail == "ConnectError"
    assert len(attempts) == 1 + notifier_module.RETRIES == 4


def test_notify_test_sends_one_and_names_only_the_host(tmp_path: Path) -> None:
    secret_path = "/services/T0SECRET/B0SECRET/xoxsecretpart"
    with webhook_receiver() as hook:
        env = {
            "PATH": "/usr/bin:/bin",
            "GFX_SYNC_NOTIFY_URL": f"{hook.url(secret_path)}, {hook.url('/second')}",
            "GFX_SYNC_QUEUE_DB_PATH": str(tmp_path / "q.db"),
        }
        done = subprocess.run(
            [sys.executable, "-m", "trio_gfxsync", "notify-test"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        bodies = hook.bodies()
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("ok  127.0.0.1") == 2
    assert "SECRET" not in done.stdout + done.stderr
    assert sorted(r.path for r in hook.received) == sorted([secret_path, "/second"])
    assert {b["kind"] for b in bodies} == {"test"} and set(bodies[0]) == JSON_FIELDS


def test_notify_test_without_a_url_is_a_configuration_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "trio_gfxsync", "notify-test"],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 2 and "GFX_SYNC_NOTIFY_URL" in done.stderr


def test_a_bad_notify_url_stops_the_agent_without_quoting_it(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "trio_gfxsync", "notify-test"],
        env={"PATH": "/usr/bin:/bin", "GFX_SYNC_NOTIFY_URL": "ftp://h/SECRETPATH"},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert "GFX_SYNC_NOTIFY_URL" in done.stderr and "SECRETPATH" not in done.stderr


# -- end to end --------------------------------------------------------------------------------


@pytest.mark.e2e
def test_one_notification_when_upstream_is_cut_and_one_when_it_returns(
    tmp_path: Path, clean_db: infra.Database, fresh_gateway: infra.Gateway
) -> None:
    nas = tmp_path / "nas"
    build_nas(nas, pcs=2, sessions_per_pc=2, seed=25)
    with webhook_receiver() as hook:
        env = agent_env(
            nas=nas,
            queue=tmp_path / "queue",
            gateway_url=fresh_gateway.url,
            key=fresh_gateway.key,
            upstream_probe_interval=1,
            venue="Venue N",
            notify_url=hook.url("/T0/B0/SECRETHOOK"),
        )
        with running_agent(env, tmp_path / "agent.log") as agent:
            agent.wait_event("notify_ready", timeout=30)
            wait_healthy(agent.url)
            assert hook.bodies(None) == [], "the first status after start is no change"
            fresh_gateway.blackout = True
            (cut,) = hook.wait_for(1, timeout=60)
            assert (cut["kind"], cut["previous"], cut["status"]) == (
                "health",
                "healthy",
                "degraded",
            )
            assert "supabase unreachable" in cut["reason"]
            agent_id = (tmp_path / "queue" / "agent_id").read_text().strip()
            assert (cut["venue"], cut["agent_id"]) == ("Venue N", agent_id)
            fresh_gateway.blackout = False
            cut_and_back = hook.wait_for(2, timeout=60)
            back = cut_and_back[1]
            assert (back["kind"], back["previous"], back["status"]) == (
                "health",
                "degraded",
                "healthy",
            )
            # five more probe intervals and two monitor rounds: nothing repeated
            time.sleep(5)
            assert len(hook.bodies(None)) == 2, hook.bodies(None)
        log_text = (tmp_path / "agent.log").read_text()
    assert "SECRETHOOK" not in log_text
    assert '"host": "127.0.0.1"' in log_text or '"host":"127.0.0.1"' in log_text


def wait_healthy(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=5).json()["status"] == "healthy":
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("the agent never became healthy")
        time.sleep(0.3)
