"""No single file or answer stops the agent, and /health never hides a problem (issue 10).

The agent is a real subprocess against the real PostgREST behind the gateway stand-in; each
test is one of the failures a user reproduced on an earlier main (a crash loop, a day without
requests, an outage an idle agent did not see, a quarantined file behind a `healthy`)."""

from __future__ import annotations

import contextlib
import os
import random
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.support import infra
from tests.support.agent import agent_env, running_agent
from tests.support.tree import build_nas, make_session, write_session
from tests.support.truth import mismatches
from tests.support.waits import dead_letters, queue_figures, wait_for, wait_until_equal

pytestmark = pytest.mark.e2e

YEAR_2300_NS = 10_413_792_000 * 10**9  # beyond SQLite's 64-bit INTEGER in nanoseconds


@pytest.fixture
def env_for(
    tmp_path: Path, clean_db: infra.Database, fresh_gateway: infra.Gateway
) -> Iterator[dict[str, str]]:
    yield agent_env(
        nas=tmp_path / "nas",
        queue=tmp_path / "queue",
        gateway_url=fresh_gateway.url,
        key=fresh_gateway.key,
        poll_interval=0.5,
        log_level="INFO",
    )


def health(url: str) -> tuple[int, dict]:
    answer = httpx.get(f"{url}/health", timeout=5)
    return answer.status_code, answer.json()


def stored(dsn: str) -> dict[tuple[str, int], dict]:
    rows = infra.query(dsn, "select gfx_pc_id, session_id, file_path, file_hash from gfx_sessions")
    return {(r["gfx_pc_id"], r["session_id"]): r for r in rows}


def test_odd_names_and_timestamps_affect_only_their_file(
    tmp_path: Path, env_for: dict[str, str], clean_db: infra.Database
) -> None:
    nas = tmp_path / "nas"
    sessions = build_nas(nas, pcs=2, sessions_per_pc=3, seed=11)
    pc = nas / "PC01"
    (pc / "1021").mkdir(exist_ok=True)
    raw_pc = os.fsencode(pc)
    # a day folder and a file whose names are not UTF-8, each holding a valid session
    odd_dir = raw_pc + b"/10\xff\xfe"
    os.mkdir(odd_dir)
    odd_dir_session = make_session(9001, 3, random.Random(1))
    with open(odd_dir + b"/" + os.fsencode(odd_dir_session.file_name), "wb") as f:
        f.write(orjson.dumps(odd_dir_session.document()))
    odd_name_session = make_session(9002, 2, random.Random(2))
    odd_name = (
        raw_pc
        + b"/1021/PGFX_live_data_export GameID="
        + str(odd_name_session.session_id).encode()
        + b" \xe9t\xe9.json"
    )
    with open(odd_name, "wb") as f:
        f.write(orjson.dumps(odd_name_session.document()))
    # a PC with a broken clock (2300) and one at the epoch: both valid sessions
    future = make_session(9003, 4, random.Random(3))
    future_path = pc / "1021" / future.file_name
    write_session(future_path, future)
    os.utime(future_path, ns=(YEAR_2300_NS, YEAR_2300_NS))
    epoch = make_session(9004, 1, random.Random(4))
    epoch_path = pc / "1021" / epoch.file_name
    write_session(epoch_path, epoch)
    os.utime(epoch_path, ns=(0, 0))
    # entries that are not session files at all: each ignored or quarantined, never fatal
    os.mkfifo(pc / "1021" / "PGFX_live_data_export GameID=1.json")
    (pc / "1021" / "PGFX_live_data_export GameID=2.json").symlink_to("/dev/zero")
    (pc / "1021" / "PGFX_live_data_export GameID=3.json").symlink_to(pc / "nowhere")
    (pc / "1021" / "PGFX_live_data_export GameID=4.json").mkdir()
    (pc / "1021" / "PGFX_live_data_export GameID=5.json").write_bytes(b"")
    with socket.socket(socket.AF_UNIX) as sock:
        short = tmp_path.parent / f"s{os.getpid()}.sock"  # a socket path has 108 bytes at most
        sock.bind(str(short))
        short.rename(pc / "1021" / "PGFX_live_data_export GameID=6.json")
    (pc / "1021" / ("x" * 250 + ".json")).write_bytes(b"{}")
    (pc / "1021" / "new\nline.json").write_bytes(b"[]")

    expected = {(p.relative_to(nas).parts[0], s.session_id) for p, s in sessions.items()}
    expected |= {("PC01", s.session_id) for s in (odd_dir_session, odd_name_session, future, epoch)}
    with running_agent(env_for, tmp_path / "agent.log") as agent:
        wait_for(lambda: set(stored(clean_db.dsn)) == expected, 60, "every valid session stored")
        rows = stored(clean_db.dsn)
        # the row names the file printably: each byte that is not UTF-8 as \xNN
        assert rows[("PC01", odd_dir_session.session_id)]["file_path"].startswith("10\\xff\\xfe/")
        assert rows[("PC01", odd_name_session.session_id)]["file_path"].endswith(
            " \\xe9t\\xe9.json"
        )
        # the broken files are quarantined, and health says so (200, never plain healthy)
        code, document = wait_for(
            lambda: (h := health(agent.url))[1]["status"] == "degraded" and h,
            20,
            "health degraded by the quarantined files",
        )
        assert code == 200
        assert any("quarantined" in reason for reason in document["reasons"]), document
        # every poll goes on: /api/status still answers, with the odd names printable
        status = httpx.get(f"{agent.url}/api/status", timeout=5)
        assert status.status_code == 200
        assert agent.proc is not None and agent.proc.poll() is None, "the agent is still up"
        # a rewrite of the odd-named file after all that still reaches the table
        grown = odd_name_session.document()
        grown["Hands"] = [*grown["Hands"], dict(grown["Hands"][-1], HandNum=99)]
        with open(odd_name, "wb") as f:
            f.write(orjson.dumps(grown))
        wait_for(
            lambda: (
                infra.query(
                    clean_db.dsn,
                    "select hand_count from gfx_sessions where session_id = %s",
                    (odd_name_session.session_id,),
                )[0]["hand_count"]
                == len(grown["Hands"])
            ),
            20,
            "the rewrite of the file with the odd name",
        )
    # a restart over the same tree: no crash loop, nothing sent again
    with running_agent(env_for, tmp_path / "agent.log") as agent:
        scanned = agent.wait_event("pc_scanned", pc_id="PC01")
        assert scanned["backlog"] == 0


def test_an_acknowledged_file_replaced_by_a_fifo_is_quarantined_and_hangs_nothing(
    tmp_path: Path, clean_db: infra.Database, fresh_gateway: infra.Gateway
) -> None:
    """A FIFO that takes the place of an acknowledged session file reaches the reader: a hot
    file's stat (every hot tick) sees a new inode before the folder is listed again. The
    reader opens it without blocking and quarantines it as not a regular file, and the PC's
    next read (a rewrite of the other file) is not held behind it."""
    nas = tmp_path / "nas"
    queue = tmp_path / "queue"
    day = nas / "PC01" / "1016"
    kept, replaced = make_session(1, 2, random.Random(1)), make_session(2, 2, random.Random(2))
    for session in (kept, replaced):
        write_session(day / session.file_name, session)
    env = agent_env(
        nas=nas,
        queue=queue,
        gateway_url=fresh_gateway.url,
        key=fresh_gateway.key,
        poll_interval=30,  # folders listed again only at start: the hot tick meets the FIFO
        hot_poll_interval=0.2,
        nas_read_timeout=300,  # a read blocked on the FIFO would hold the PC for the test
        log_level="INFO",
    )
    fifo = day / replaced.file_name
    rel = f"1016/{replaced.file_name}"
    try:
        with running_agent(env, tmp_path / "agent.log"):
            wait_until_equal(nas, clean_db.dsn, timeout=30)  # both acknowledged
            fifo.unlink()
            os.mkfifo(fifo)
            quarantined = wait_for(
                lambda: [d for d in dead_letters(queue) if d["rel_path"] == rel],
                20,
                "the FIFO quarantined",
            )
            assert [(d["kind"], d["reason"]) for d in quarantined] == [
                ("quarantine", "not_a_regular_file")
            ], quarantined
            # the PC's reads go on: a rewrite of the other file reaches the table
            kept.hands.append(dict(kept.hands[-1], HandNum=3))
            write_session(day / kept.file_name, kept)
            wait_for(
                lambda: hand_count(clean_db.dsn, kept.session_id) == 3, 20, "the rewrite stored"
            )
    finally:
        with contextlib.suppress(OSError):  # a reader blocked in open(): let it go
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def hand_count(dsn: str, session_id: int) -> int | None:
    rows = infra.query(
        dsn, "select hand_count from gfx_sessions where session_id = %s", (session_id,)
    )
    return rows[0]["hand_count"] if rows else None


def test_a_day_long_retry_after_is_capped(
    tmp_path: Path, env_for: dict[str, str], clean_db: infra.Database, fresh_gateway: infra.Gateway
) -> None:
    """Measured at the gateway: after a 429 asking for a day, no request arrives for the
    capped 3 s (GFX_SYNC_MAX_RETRY_AFTER), and then the sessions are stored."""
    nas = tmp_path / "nas"
    build_nas(nas, pcs=1, sessions_per_pc=4, seed=12)
    limited = threading.Event()

    def fault(request: infra.GatewayRequest) -> infra.FaultAnswer | None:
        if request.method == "POST" and request.path == "/gfx_sessions" and not limited.is_set():
            limited.set()
            body = orjson.dumps({"message": "Too Many Requests"})
            return 429, {"retry-after": "86400", "content-type": "application/json"}, body
        return None

    fresh_gateway.fault = fault
    env = {**env_for, "GFX_SYNC_MAX_RETRY_AFTER": "3"}
    with running_agent(env, tmp_path / "agent.log") as agent:
        took = wait_until_equal(nas, clean_db.dsn, timeout=30)
        records = fresh_gateway.records
        assert [r.status for r in records].count(429) == 1, records
        limited_at = next(r.arrived for r in records if r.status == 429)
        after = [r.arrived for r in records if r.arrived > limited_at]
        assert after, "nothing was sent after the 429"
        waited = min(after) - limited_at
        assert waited >= 3.0, f"a request {waited:.2f}s after a 429 capped at 3 s: {records}"
        capped = agent.wait_event("retry_after_capped")
        assert (capped["asked"], capped["honoured"]) == (86400.0, 3.0)
    print(
        f"Retry-After 86400 capped at 3 s: next request after {waited:.2f}s, equal at {took:.2f}s"
    )


def test_an_idle_agent_notices_an_outage(
    tmp_path: Path, env_for: dict[str, str], clean_db: infra.Database, fresh_gateway: infra.Gateway
) -> None:
    nas = tmp_path / "nas"
    build_nas(nas, pcs=1, sessions_per_pc=2, seed=13)
    env = {**env_for, "GFX_SYNC_UPSTREAM_PROBE_INTERVAL": "2"}
    with running_agent(env, tmp_path / "agent.log") as agent:
        wait_until_equal(nas, clean_db.dsn, timeout=30)
        wait_for(lambda: health(agent.url)[1]["status"] == "healthy", 20, "healthy when idle")
        fresh_gateway.blackout = True
        down_at = time.monotonic()
        wait_for(
            lambda: health(agent.url)[1]["components"]["supabase"] == "offline",
            15,
            "offline in /health",
        )
        print(f"idle agent: outage in /health {time.monotonic() - down_at:.2f}s after it began")
        fresh_gateway.blackout = False
        wait_for(lambda: health(agent.url)[1]["status"] == "healthy", 30, "healthy again")


def test_health_is_never_healthy_while_a_session_is_missing(
    tmp_path: Path, env_for: dict[str, str], clean_db: infra.Database, fresh_gateway: infra.Gateway
) -> None:
    """Upstream answers its probe but every upsert hangs: the sessions are neither stored nor
    failed. Past 2 polls + a flush, /health says they are missing (degraded, with the sync
    lag); once the upserts get through it is healthy again, and not before the table is."""
    nas = tmp_path / "nas"
    build_nas(nas, pcs=1, sessions_per_pc=2, seed=17)
    hang = {"on": False}

    def fault(request: infra.GatewayRequest) -> infra.FaultAnswer | None:
        while hang["on"] and request.method == "POST" and request.path == "/gfx_sessions":
            time.sleep(0.05)  # held until released: the agent's request neither ends nor fails
        return None

    fresh_gateway.fault = fault
    env = {**env_for, "GFX_SYNC_FLUSH_INTERVAL": "1", "GFX_SYNC_REQUEST_TIMEOUT": "120"}
    with running_agent(env, tmp_path / "agent.log") as agent:
        wait_until_equal(nas, clean_db.dsn, timeout=30)
        wait_for(lambda: health(agent.url)[1]["status"] == "healthy", 20, "healthy when synced")
        hang["on"] = True
        written = time.monotonic()
        late = make_session(99, 3, random.Random(17))
        write_session(nas / "PC01" / late.file_name, late)
        code, document = wait_for(
            lambda: (h := health(agent.url))[1]["status"] != "healthy" and h, 30, "not healthy"
        )
        noticed = time.monotonic() - written
        assert code == 200 and document["status"] == "degraded", document
        assert any("not in the table yet" in r or "offline queue" in r for r in document["reasons"])
        status = httpx.get(f"{agent.url}/api/status", timeout=5).json()
        (pc,) = status["pcs"]
        assert pc["files_waiting"] + status["queue"]["pending"] >= 1, status
        # healthy never shows while the row is missing
        for _ in range(10):
            assert health(agent.url)[1]["status"] != "healthy"
            time.sleep(0.1)
        hang["on"] = False
        wait_for(lambda: health(agent.url)[1]["status"] == "healthy", 60, "healthy again")
        assert mismatches(nas, clean_db.dsn) == []
        print(
            f"a missing session showed in /health {noticed:.2f}s after its file was written:",
            document["reasons"],
        )


def test_a_captive_portal_200_acknowledges_nothing(
    tmp_path: Path, env_for: dict[str, str], clean_db: infra.Database, fresh_gateway: infra.Gateway
) -> None:
    nas = tmp_path / "nas"
    build_nas(nas, pcs=1, sessions_per_pc=3, seed=14)
    portal = {"on": True, "answered": 0}
    page = b"<html><body>Welcome to the venue Wi-Fi. Accept the terms.</body></html>"

    def fault(request: infra.GatewayRequest) -> infra.FaultAnswer | None:
        # the upserts only: the probe's read gets through, so the agent believes upstream is
        # there and sends; what answers its upsert is a page (the probe's case is below)
        if portal["on"] and request.method == "POST":
            portal["answered"] += 1
            return 200, {"content-type": "text/html"}, page
        return None

    fresh_gateway.fault = fault
    with running_agent(env_for, tmp_path / "agent.log") as agent:
        wait_for(lambda: portal["answered"] >= 1, 20, "the agent to meet the portal")
        code, document = wait_for(
            lambda: (h := health(agent.url))[1]["status"] != "healthy" and h, 20, "not healthy"
        )
        assert code == 503 and any("not PostgREST" in r for r in document["reasons"]), document
        # nothing was taken for stored: every record is still owed (queued, not acknowledged)
        assert infra.query(clean_db.dsn, "select count(*) as n from gfx_sessions")[0]["n"] == 0
        wait_for(lambda: queue_figures(tmp_path / "queue")["pending"] == 3, 20, "3 records owed")
    portal["on"] = False
    with running_agent(env_for, tmp_path / "agent.log"):
        took = wait_until_equal(nas, clean_db.dsn, timeout=30)
    print(f"captive portal gone: table equal to the NAS {took:.2f}s after the restart")


def test_a_captive_portal_answering_the_probe_is_not_upstream(
    tmp_path: Path, env_for: dict[str, str], fresh_gateway: infra.Gateway
) -> None:
    build_nas(tmp_path / "nas", pcs=1, sessions_per_pc=1, seed=16)
    page = b"<html><body>Sign in to the venue network</body></html>"
    fresh_gateway.fault = lambda request: (200, {"content-type": "text/html"}, page)
    with running_agent(env_for, tmp_path / "agent.log") as agent:
        code, document = wait_for(
            lambda: (h := health(agent.url))[1]["status"] == "unhealthy" and h, 20, "unhealthy"
        )
        assert code == 503 and any("not PostgREST" in r for r in document["reasons"]), document


@pytest.mark.parametrize("flicker", ["missing", "not_a_folder"])
def test_a_scanner_restarted_mid_backfill_forgets_nothing(
    tmp_path: Path,
    env_for: dict[str, str],
    clean_db: infra.Database,
    fresh_gateway: infra.Gateway,
    flicker: str,
) -> None:
    """Issue 8's reproduction: upstream down and a small queue hold most of a backfill in the
    scanner's backlog; the PC folder flickers away (an SMB hiccup) and back; once upstream
    returns, every session reaches the table without a restart."""
    nas = tmp_path / "nas"
    build_nas(nas, pcs=1, sessions_per_pc=300, seed=15, max_hands=2)
    (nas / "config").mkdir()
    (nas / "config" / "pc_registry.json").write_text(
        '{"pcs": [{"id": "PC01", "watch_path": "PC01"}]}'
    )
    fresh_gateway.blackout = True
    env = {**env_for, "GFX_SYNC_MAX_QUEUE_SIZE": "20", "GFX_SYNC_BATCH_SIZE": "10"}
    with running_agent(env, tmp_path / "agent.log") as agent:
        scanned = agent.wait_event("pc_scanned", pc_id="PC01")
        assert scanned["backlog"] > 200, scanned  # most of it waits behind the full queue
        away = nas / "PC01.away"
        (nas / "PC01").rename(away)
        if flicker == "not_a_folder":
            (nas / "PC01").write_bytes(b"")  # a file where the folder was: unreadable
        agent.wait_event("pc_scan_failed", pc_id="PC01")
        time.sleep(4)
        if flicker == "not_a_folder":
            (nas / "PC01").unlink()
        away.rename(nas / "PC01")

        def scans() -> int:
            events = agent.read_events()
            return sum(e.get("event") == "pc_scanned" and e.get("pc_id") == "PC01" for e in events)

        wait_for(lambda: scans() >= 2, 30, "PC01 scanned again after the flicker")
        fresh_gateway.blackout = False
        took = wait_until_equal(nas, clean_db.dsn, timeout=90)
        print(f"scanner restarted mid-backfill ({flicker}): table equal {took:.2f}s after upstream")
