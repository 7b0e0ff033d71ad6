"""Operating the agent: /health in each state, /metrics against the database, /api/status and
SSE, the dashboard token, the CLI (check, healthcheck, status, scan), JSON logs, and the key
never appearing anywhere. The agent runs as a real subprocess behind the gateway stand-in.
"""

from __future__ import annotations

import json
import random
import re
import time
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import infra
from tests.support.agent import agent_env, run_cli, running_agent
from tests.support.tree import build_nas, grow, make_session, write_session
from tests.support.waits import dead_letters, queue_figures, wait_for, wait_until_equal

pytestmark = pytest.mark.e2e

SECRET = "sb_secret_RECOGNISABLE_do_not_leak_7f3a9c1e5b"
TOKEN = "dash-TOKEN-recognisable-42"


@pytest.fixture
def secret_gateway(postgrest: infra.PostgrestServer):
    gateway = infra.start_gateway(postgrest.url, postgrest.jwt_secret, SECRET)
    try:
        yield gateway
    finally:
        gateway.close()


@pytest.fixture
def ops(tmp_path: Path, clean_db: infra.Database, secret_gateway: infra.Gateway):
    nas = tmp_path / "nas"
    sessions = build_nas(nas, pcs=3, sessions_per_pc=8, seed=42, max_hands=3)
    env = agent_env(
        nas=nas,
        queue=tmp_path / "queue",
        gateway_url=secret_gateway.url,
        key=SECRET,
        log_level="DEBUG",
    )
    return {
        "nas": nas,
        "sessions": sessions,
        "env": env,
        "tmp": tmp_path,
        "dsn": clean_db.dsn,
        "gateway": secret_gateway,
    }


def env_with(ops: dict, **overrides: object) -> dict[str, str]:
    env = dict(ops["env"])
    env.update({f"GFX_SYNC_{k.upper()}": str(v) for k, v in overrides.items()})
    return env


cli = run_cli


def port_of(url: str) -> str:
    return url.rsplit(":", 1)[1]


def metrics_of(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{url}/metrics").text
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_health_metrics_status_and_no_secret_anywhere(ops: dict) -> None:
    outputs: list[str] = []
    with running_agent(env_with(ops), ops["tmp"] / "agent.log") as agent:
        url = agent.url
        wait_until_equal(ops["nas"], ops["dsn"], timeout=60)
        health = wait_for(
            lambda: (r := httpx.get(f"{url}/health")).json()["status"] == "healthy" and r,
            20,
            "healthy",
        )
        doc = health.json()
        assert health.status_code == 200
        assert doc["reasons"] == [] and doc["alerts"] == []
        assert doc["components"]["supabase"] == "connected"
        assert doc["watched_pcs"] == ["PC01", "PC02", "PC03"]
        assert doc["last_sync"] and doc["last_sync"].endswith("Z")
        outputs.append(health.text)

        # /metrics, parsed as Prometheus does, matches the database
        rows = infra.query(
            ops["dsn"], "select gfx_pc_id, count(*) as n from gfx_sessions group by gfx_pc_id"
        )
        per_pc = {r["gfx_pc_id"]: r["n"] for r in rows}

        def metrics_match() -> dict | None:
            m = metrics_of(url)
            synced = {pc: m.get(("gfxsync_sessions_synced", (("pc", pc),))) for pc in per_pc}
            return m if synced == {pc: float(n) for pc, n in per_pc.items()} else None

        m = wait_for(metrics_match, 30, "sessions_synced to match the table")
        for pc, n in per_pc.items():
            assert m[("gfxsync_sessions_upserted_total", (("pc", pc),))] >= n
            assert m[("gfxsync_files_seen_total", (("pc", pc),))] >= n
        assert m[("gfxsync_offline_pending", ())] == 0
        assert m[("gfxsync_upstream_up", ())] == 1
        assert m[("gfxsync_alert", (("level", "review"), ("name", "dead_letters")))] == 0
        assert m[("gfxsync_upload_seconds_count", ())] >= 1
        assert ("gfxsync_scan_seconds_count", (("pc", "PC01"),)) in m
        outputs.append(httpx.get(f"{url}/metrics").text)

        # sync_events: batched, best-effort rows with counts, once no session data waits
        created = wait_for(
            lambda: (
                infra.query(
                    ops["dsn"],
                    "select coalesce(sum(record_count), 0) as n from sync_events"
                    " where event_type = 'created'",
                )[0]["n"]
                >= len(ops["sessions"])
            ),
            15,
            "sync_events rows",
        )
        assert created

        # /api/status: ids as exact strings, PCs with their counts
        status = httpx.get(f"{url}/api/status").json()
        assert [pc["id"] for pc in status["pcs"]] == ["PC01", "PC02", "PC03"]
        assert {pc["id"]: pc["sessions_synced"] for pc in status["pcs"]} == per_pc
        ids = {str(s.session_id) for s in ops["sessions"].values()}
        event_ids = {e["session_id"] for e in status["events"] if e["session_id"]}
        assert event_ids and event_ids <= ids, "session ids travel as exact strings"
        assert len(status["throughput"]) == 60
        assert sum(b["sessions"] for b in status["throughput"]) >= len(ids)
        outputs.append(json.dumps(status))

        # SSE: a status event at once, then a push for a session that did not exist before
        with httpx.stream("GET", f"{url}/api/events", timeout=10) as stream:
            lines = stream.iter_lines()
            assert next(lines) == "event: status"
            first = json.loads(next(lines).removeprefix("data: "))
            assert first["status"] == "healthy"
            outputs.append(json.dumps(first))
            new = make_session(9000, 2, random.Random(11))
            write_session(ops["nas"] / "PC02" / "1021" / new.file_name, new)
            rel = f"1021/{new.file_name}"
            landed = time.monotonic()
            deadline = landed + 30
            seen = None
            for line in lines:  # the server pushes at least once a second: the loop ends
                if time.monotonic() > deadline:
                    break
                if not line.startswith("data: "):
                    continue
                outputs.append(line)
                data = json.loads(line[6:])
                created = any(
                    e["kind"] == "created" and e["path"] == rel and e["pc_id"] == "PC02"
                    for e in data["events"]
                )
                pc02 = next(pc for pc in data["pcs"] if pc["id"] == "PC02")
                if created and pc02["sessions_synced"] == per_pc["PC02"] + 1:
                    seen = time.monotonic() - landed
                    break
            assert seen is not None, "no SSE push showed the new session as synced within 30 s"
            print(f"SSE: new session shown synced {seen:.2f}s after the write (poll 1.0 s)")
        assert infra.query(
            ops["dsn"], "select 1 from gfx_sessions where session_id = %s", (new.session_id,)
        ), "what SSE showed is in the table"

        # the dashboard page itself
        page = httpx.get(f"{url}/")
        assert page.status_code == 200 and "data-testid" in page.text
        outputs.append(page.text)
        outputs.append(httpx.get(f"{url}/static/dashboard.js").text)

        # degraded: the gateway is down and records queue
        ops["gateway"].blackout = True
        for path in sorted(ops["sessions"])[1:4]:
            grow(path, ops["sessions"][path], random.Random(2))
        degraded = wait_for(
            lambda: (r := httpx.get(f"{url}/health")).json()["status"] == "degraded" and r,
            30,
            "degraded",
        )
        doc = degraded.json()
        assert degraded.status_code == 200
        assert doc["components"]["supabase"] == "offline"
        wait_for(
            lambda: (
                httpx.get(f"{url}/health").json()["components"]["offline_queue"]["pending_count"]
                >= 1
            ),
            20,
            "queued records in /health",
        )
        assert any(
            "supabase unreachable" in r for r in httpx.get(f"{url}/health").json()["reasons"]
        )
        outputs.append(httpx.get(f"{url}/health").text)
        outputs.append(httpx.get(f"{url}/api/status").text)
        health_cli = cli({**ops["env"], "GFX_SYNC_HEALTH_PORT": port_of(url)}, "healthcheck")
        assert health_cli.returncode == 0, health_cli.stdout + health_cli.stderr
        outputs.append(health_cli.stdout + health_cli.stderr)
        as_json = health_json(ops, url)
        assert as_json.returncode == 0, as_json.stdout + as_json.stderr
        assert_is_the_health_document(as_json.stdout, "degraded", url)
        outputs.append(as_json.stdout + as_json.stderr)
        ops["gateway"].blackout = False
        wait_until_equal(ops["nas"], ops["dsn"], timeout=30)

        # unhealthy: Supabase rejects the key
        ops["gateway"].key = "sb_secret_SOMETHING_ELSE_entirely_000"
        grow(
            sorted(ops["sessions"])[5],
            ops["sessions"][sorted(ops["sessions"])[5]],
            random.Random(3),
        )
        unhealthy = wait_for(
            lambda: (r := httpx.get(f"{url}/health")).status_code == 503 and r, 30, "unhealthy"
        )
        assert unhealthy.json()["components"]["supabase"] == "rejected"
        assert unhealthy.json()["status"] == "unhealthy"
        outputs.append(unhealthy.text)
        health_cli = cli({**ops["env"], "GFX_SYNC_HEALTH_PORT": port_of(url)}, "healthcheck")
        assert health_cli.returncode == 1
        outputs.append(health_cli.stdout + health_cli.stderr)
        as_json = health_json(ops, url)
        assert as_json.returncode == 1, "the same exit code as without --json"
        assert_is_the_health_document(as_json.stdout, "unhealthy", url)
        outputs.append(as_json.stdout + as_json.stderr)
        status_cli = cli({**ops["env"], "GFX_SYNC_HEALTH_PORT": port_of(url)}, "status")
        assert status_cli.returncode == 0 and "PC02" in status_cli.stdout
        assert "rejected" in status_cli.stdout
        outputs.append(status_cli.stdout + status_cli.stderr)
        ops["gateway"].key = SECRET
    log_text = (ops["tmp"] / "agent.log").read_text()
    outputs.append(log_text)
    # every log line is one JSON object with an event name
    for line in log_text.splitlines():
        assert "event" in json.loads(line), line
    for text in outputs:
        assert SECRET not in text
    assert ops["gateway"].bad_bearer_count == 0


def test_no_secret_reaches_dead_letters_sync_events_dlq_or_sse(ops: dict) -> None:
    """A proxy that echoes the request's apikey in its error text: the agent keeps the refusal
    (dead letter, sync_events row), shows it (dlq, /api/status, SSE) and logs it; the key is
    in none of them, and the echo is visibly redacted (so the check is not vacuous)."""
    victim = ops["sessions"][sorted(ops["sessions"])[4]]
    marker = f'"session_id":{victim.session_id},'.encode()

    def echo_key(request: infra.GatewayRequest) -> infra.FaultAnswer | None:
        if request.method == "POST" and request.path == "/gfx_sessions" and marker in request.body:
            key = request.headers.get("apikey", "")
            body = orjson.dumps(
                {"code": "23514", "message": f"refused for apikey={key}", "details": f'"{key}"'}
            )
            return 400, {"content-type": "application/json"}, body
        return None

    ops["gateway"].fault = echo_key
    queue = ops["tmp"] / "queue"
    outputs: list[str] = []
    with running_agent(env_with(ops, max_retries=0), ops["tmp"] / "agent.log") as agent:
        entries = wait_for(lambda: dead_letters(queue), 60, "the refused record's dead letter")
        assert [e["session_id"] for e in entries] == [victim.session_id]
        assert "[REDACTED]" in entries[0]["message"], entries[0]["message"]
        outputs += [str(e["message"]) for e in entries]
        rows = wait_for(
            lambda: infra.query(
                ops["dsn"],
                "select error_message from sync_events where event_type = 'error'"
                " and error_message like %s",
                ("%dead letter%",),
            ),
            30,
            "the dead letter's sync_events row",
        )
        assert all("[REDACTED]" in r["error_message"] for r in rows), rows
        outputs += [r["error_message"] for r in rows]
        for args in (("dlq", "list"), ("dlq", "show", str(entries[0]["id"]))):
            shown = cli(ops["env"], *args)
            assert shown.returncode == 0, shown.stderr
            outputs.append(shown.stdout + shown.stderr)
        assert "[REDACTED]" in outputs[-1]
        outputs.append(httpx.get(f"{agent.url}/api/status").text)
        with httpx.stream("GET", f"{agent.url}/api/events", timeout=10) as stream:
            lines = stream.iter_lines()
            assert next(lines) == "event: status"
            outputs.append(next(lines))
        assert "[REDACTED]" in outputs[-1], "the SSE document carries the redacted message"
        outputs.append(httpx.get(f"{agent.url}/health").text)
    outputs.append((ops["tmp"] / "agent.log").read_text())
    for text in outputs:
        assert SECRET not in text


def test_a_legacy_jwt_key_works_end_to_end_and_never_leaks(
    tmp_path: Path, clean_db: infra.Database, postgrest: infra.PostgrestServer
) -> None:
    """A legacy service_role JWT goes in `apikey` and as the bearer: the gateway passes the
    bearer on to PostgREST, which would refuse (anon has no grants) if it were missing."""
    jwt = postgrest.service_role_jwt()
    gateway = infra.start_gateway(postgrest.url, postgrest.jwt_secret, jwt)
    try:
        nas = tmp_path / "nas"
        build_nas(nas, pcs=2, sessions_per_pc=5, seed=3)
        env = agent_env(nas=nas, queue=tmp_path / "queue", gateway_url=gateway.url, key=jwt)
        outputs: list[str] = []
        with running_agent(env, tmp_path / "agent.log") as agent:
            wait_until_equal(nas, clean_db.dsn, timeout=60)
            assert (
                gateway.count("POST", "/gfx_sessions", status=201)
                + gateway.count("POST", "/gfx_sessions", status=200)
                >= 1
            )
            for path in ("/health", "/api/status", "/metrics"):
                outputs.append(httpx.get(f"{agent.url}{path}").text)
            checked = cli(env, "check")
            assert checked.returncode == 0, checked.stdout + checked.stderr
            outputs.append(checked.stdout + checked.stderr)
            status_cli = cli({**env, "GFX_SYNC_HEALTH_PORT": port_of(agent.url)}, "status")
            outputs.append(status_cli.stdout + status_cli.stderr)
        outputs.append((tmp_path / "agent.log").read_text())
        for text in outputs:
            assert jwt not in text
            assert jwt.split(".")[2] not in text  # not even the signature alone
        assert gateway.bad_bearer_count == 0
    finally:
        gateway.close()


class BrokenClient:
    """A client with a bug: the uploader stage dies on its first batch."""

    async def upsert_sessions(self, body: bytes) -> None:
        raise RuntimeError("simulated bug in the upload stage")

    async def probe(self) -> None:
        return None

    async def insert_sync_events(self, body: bytes) -> None:
        return None

    async def aclose(self) -> None:
        return None


async def test_core_stage_death_is_reported_unhealthy_then_raised(tmp_path: Path) -> None:
    """A core stage that dies is a bug: /health says so (503, with the reason) for a moment,
    then `run` fails, which the CLI turns into exit 1 for Docker to restart."""
    import trio

    from trio_gfxsync.agent import Agent
    from trio_gfxsync.settings import load_settings

    build_nas(tmp_path / "nas", pcs=1, sessions_per_pc=2, seed=1)
    settings = load_settings(
        nas_base_path=tmp_path / "nas",
        queue_db_path=tmp_path / "queue" / "pending.db",
        supabase_url="http://127.0.0.1:9",
        supabase_secret_key=SECRET,
        health_host="127.0.0.1",
        health_port=0,
        poll_interval=0.2,
    )
    agent = Agent(settings, target=BrokenClient())
    seen: list[tuple[int, dict]] = []

    async def watch_health() -> None:
        while not agent.http_urls:
            await trio.sleep(0.05)
        async with httpx.AsyncClient(base_url=agent.http_urls[0]) as client:
            while True:
                try:
                    response = await client.get("/health")
                except httpx.HTTPError:
                    return
                seen.append((response.status_code, response.json()))
                await trio.sleep(0.1)

    with trio.fail_after(30):
        with pytest.raises(BaseExceptionGroup) as raised:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch_health)
                await agent.run()
    assert raised.group_contains(RuntimeError, match="simulated bug")
    died = [doc for code, doc in seen if code == 503]
    assert died, seen[-3:]
    assert any("core stage died: RuntimeError" in r for r in died[-1]["reasons"])


def test_dashboard_token_protects_dashboard_and_api_but_not_health(ops: dict) -> None:
    with running_agent(env_with(ops, dashboard_token=TOKEN), ops["tmp"] / "agent.log") as agent:
        url = agent.url
        # /health and /metrics need no token: Docker and Prometheus know none
        wait_until_equal(ops["nas"], ops["dsn"], timeout=60)
        health = wait_for(
            lambda: (r := httpx.get(f"{url}/health")).json()["status"] == "healthy" and r,
            20,
            "healthy without a token",
        )
        assert health.status_code == 200
        assert httpx.get(f"{url}/metrics").status_code == 200
        assert httpx.get(f"{url}/api/status").status_code == 401
        assert httpx.get(f"{url}/api/status", params={"token": "wrong"}).status_code == 401
        assert httpx.get(f"{url}/api/status", params={"token": TOKEN}).status_code == 200
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert httpx.get(f"{url}/api/status", headers=bearer).status_code == 200
        assert httpx.get(f"{url}/").status_code == 401
        assert httpx.get(f"{url}/", params={"token": TOKEN}).status_code == 200
        assert TOKEN not in httpx.get(f"{url}/api/status", params={"token": TOKEN}).text
        status_cli = cli(
            {**ops["env"], "GFX_SYNC_HEALTH_PORT": port_of(url), "GFX_SYNC_DASHBOARD_TOKEN": TOKEN},
            "status",
        )
        assert status_cli.returncode == 0, status_cli.stderr
        assert TOKEN not in status_cli.stdout + status_cli.stderr
    assert TOKEN not in (ops["tmp"] / "agent.log").read_text()


def test_agent_warns_when_the_dashboard_is_open_on_the_network(ops: dict) -> None:
    open_env = env_with(ops, health_host="0.0.0.0")
    with running_agent(open_env, ops["tmp"] / "open.log") as agent:
        warning = agent.wait_event("dashboard_open")
        assert warning["level"] == "warning" and "GFX_SYNC_DASHBOARD_TOKEN" in warning["hint"]
        port = agent.url.rsplit(":", 1)[1]
        # it is open indeed: the dashboard answers on a non-loopback bind without a token
        assert httpx.get(f"http://127.0.0.1:{port}/api/status").status_code == 200
    # with a token, or on loopback, no warning: agent_started comes after the HTTP side is up
    for env in (env_with(ops, health_host="0.0.0.0", dashboard_token=TOKEN), env_with(ops)):
        with running_agent(env, ops["tmp"] / "quiet.log", ready="agent_started") as agent:
            assert not [e for e in agent.read_events() if e["event"] == "dashboard_open"]


def test_check_good_and_bad(ops: dict) -> None:
    good = cli(ops["env"], "check")
    assert good.returncode == 0, good.stdout + good.stderr
    lines = good.stdout.splitlines()
    assert all(line.startswith("ok") for line in lines), good.stdout
    for name in ("configuration", "nas", "registry", "queue", "supabase key", "gfx_sessions table"):
        assert any(name in line for line in lines), name
    bad_key = cli(
        {**ops["env"], "GFX_SYNC_SUPABASE_SECRET_KEY": "sb_secret_wrong_key_123"}, "check"
    )
    assert bad_key.returncode == 1
    assert re.search(r"^FAIL\s+supabase key", bad_key.stdout, re.M), bad_key.stdout
    missing_nas = cli({**ops["env"], "GFX_SYNC_NAS_BASE_PATH": str(ops["tmp"] / "nope")}, "check")
    assert missing_nas.returncode == 1 and "FAIL  nas" in missing_nas.stdout
    unreachable = cli({**ops["env"], "GFX_SYNC_SUPABASE_URL": "http://127.0.0.1:9"}, "check")
    assert unreachable.returncode == 1 and "FAIL  supabase reachable" in unreachable.stdout
    bad_config = cli({**ops["env"], "GFX_SYNC_POLL_INTERVAL": "-1"}, "check")
    assert bad_config.returncode == 2 and "GFX_SYNC_POLL_INTERVAL:" in bad_config.stderr
    for result in (good, bad_key, missing_nas, unreachable, bad_config):
        assert SECRET not in result.stdout + result.stderr


def test_healthcheck_without_an_agent_exits_1_not_2(ops: dict) -> None:
    result = cli({**ops["env"], "GFX_SYNC_HEALTH_PORT": str(infra.free_port())}, "healthcheck")
    assert result.returncode == 1
    as_json = cli(
        {**ops["env"], "GFX_SYNC_HEALTH_PORT": str(infra.free_port())}, "healthcheck", "--json"
    )
    assert as_json.returncode == 1 and as_json.stdout == "", "no document: nothing on stdout"
    assert "did not answer" in as_json.stderr


def health_json(ops: dict, url: str):  # type: ignore[no-untyped-def]
    """`trio-gfxsync healthcheck --json` against the agent at `url`."""
    return cli({**ops["env"], "GFX_SYNC_HEALTH_PORT": port_of(url)}, "healthcheck", "--json")


def assert_is_the_health_document(stdout: str, status: str, url: str) -> None:
    """One line of JSON with the keys /health has (the values move: compared where stable)."""
    assert stdout.endswith("\n") and stdout.count("\n") == 1, stdout
    document = json.loads(stdout)
    assert document["status"] == status, document
    live = httpx.get(f"{url}/health").json()
    assert set(document) == set(live), (sorted(document), sorted(live))
    assert document["components"]["supabase"] == live["components"]["supabase"]
    assert document["reasons"], "a document that is not healthy says why"


def test_scan_is_a_one_shot_backfill_with_progress(ops: dict) -> None:
    result = cli(ops["env"], "scan", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "scan done" in result.stdout and "24 sessions stored" in result.stdout
    assert re.search(r"^scan: \d+/\d+ files read", result.stdout, re.M), result.stdout
    assert wait_until_equal(ops["nas"], ops["dsn"], timeout=1) >= 0
    assert queue_figures(ops["tmp"] / "queue")["pending"] == 0
    again = cli(ops["env"], "scan", timeout=120)
    assert again.returncode == 0 and "0 sessions stored" in again.stdout
    for output in (result, again):
        assert SECRET not in output.stdout + output.stderr


def test_console_log_format_is_readable(ops: dict) -> None:
    console = env_with(ops, log_format="console", log_level="INFO")
    with running_agent(console, ops["tmp"] / "console.log", ready=None):
        wait_until_equal(ops["nas"], ops["dsn"], timeout=60)
    text = (ops["tmp"] / "console.log").read_text()
    assert re.search(r"^\S+ info\s+agent_started ", text, re.M), text[:500]
    assert SECRET not in text
