"""Nothing lost whatever the clocks or the answers (issue 22), against a running agent.

The agent is a real subprocess, the real PostgREST behind the gateway stand-in. Each test is a
failure a user reproduced on an earlier main: a row stamped by a clock an hour ahead that kept
every later hand out of the table, one record answered 504 every time that froze the queue
and was blamed on the network, a file whose newer content carries an older mtime sent again at
every restart, and a clock an hour off that nobody was told about."""

from __future__ import annotations

import hashlib
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import infra
from tests.support.agent import agent_env, run_cli, running_agent
from tests.support.tree import Session, build_nas, grow, make_session, write_session
from tests.support.waits import queue_figures, wait_for, wait_until_equal

pytestmark = pytest.mark.e2e

HOUR_NS = 3600 * 10**9


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


def health(url: str) -> dict:
    return httpx.get(f"{url}/health", timeout=5).json()


def row(dsn: str, session_id: int) -> dict | None:
    rows = infra.query(
        dsn,
        "select hand_count, version_stamp, file_hash from gfx_sessions where session_id = %s",
        (session_id,),
    )
    return rows[0] if rows else None


def one_session(tmp_path: Path, *, seed: int, index: int) -> tuple[random.Random, Session, Path]:
    """A NAS with one PC and one session of three hands."""
    rng = random.Random(seed)
    session = make_session(index, 3, rng)
    path = tmp_path / "nas" / "PC01" / "1016" / session.file_name
    write_session(path, session)
    return rng, session, path


def upserts_of(gateway: infra.Gateway) -> int:
    return gateway.count("POST", "/gfx_sessions")


def test_a_row_stamped_by_a_clock_an_hour_ahead_still_takes_every_later_hand(
    tmp_path: Path, env_for: dict[str, str], clean_db: infra.Database
) -> None:
    rng, session, path = one_session(tmp_path, seed=22, index=1)
    with running_agent(env_for, tmp_path / "agent.log") as agent:
        wait_for(lambda: (r := row(clean_db.dsn, session.session_id)) and r, 30, "the row")
        # what the other agent of an HA pair writes when its clock runs an hour fast (or this
        # NAS before NTP corrected its clock, then a restart)
        infra.query(
            clean_db.dsn,
            "update gfx_sessions set version_stamp = version_stamp + %s where session_id = %s",
            (HOUR_NS, session.session_id),
        )
        grow(path, session, rng)  # the fourth hand ends
        stored = wait_for(
            lambda: (r := row(clean_db.dsn, session.session_id))["hand_count"] == 4 and r,
            30,
            "the fourth hand in the table",
        )
        assert stored["version_stamp"] > time.time_ns() + HOUR_NS // 2, "above the fast stamp"
        agent.wait_event("row_replaced", session_id=str(session.session_id))
        grow(path, session, rng)  # and the next hand goes straight in: the stamps follow
        wait_for(
            lambda: row(clean_db.dsn, session.session_id)["hand_count"] == 5, 30, "a fifth hand"
        )
        assert health(agent.url)["status"] == "healthy"


def test_a_row_another_agent_holds_with_newer_bytes_is_left_to_it(
    tmp_path: Path, env_for: dict[str, str], clean_db: infra.Database
) -> None:
    """The other side of the rule: a skipped row whose stored bytes are the NAS's current
    winner is never written over, whatever stamp this agent could issue."""
    rng, session, path = one_session(tmp_path, seed=23, index=2)
    with running_agent(env_for, tmp_path / "agent.log") as agent:
        wait_for(lambda: row(clean_db.dsn, session.session_id), 30, "the row")
        agent.stop_cleanly()
    # while this agent was down, the file grew, and another (fast) agent stored it
    grow(path, session, rng)
    infra.query(
        clean_db.dsn,
        "update gfx_sessions set version_stamp = version_stamp + %s, hand_count = 4,"
        " file_hash = %s where session_id = %s",
        (HOUR_NS, hashlib.sha256(path.read_bytes()).hexdigest(), session.session_id),
    )
    before = row(clean_db.dsn, session.session_id)
    with running_agent(env_for, tmp_path / "agent.log") as agent:
        agent.wait_event("row_skipped", session_id=str(session.session_id), decision="stored")
        # the table held the NAS's bytes: acknowledged as stored, no replace, nothing queued
        assert row(clean_db.dsn, session.session_id) == before
        wait_for(lambda: queue_figures(tmp_path / "queue")["pending"] == 0, 10, "empty queue")


def test_one_record_that_always_times_out_holds_back_nothing_else(
    tmp_path: Path,
    env_for: dict[str, str],
    clean_db: infra.Database,
    fresh_gateway: infra.Gateway,
) -> None:
    nas = tmp_path / "nas"
    sessions = build_nas(nas, pcs=2, sessions_per_pc=15, seed=24)
    stuck = sorted(sessions.items(), key=lambda item: item[1].session_id)[7]
    stuck_id = str(stuck[1].session_id).encode()

    def statement_timeout(request: infra.GatewayRequest) -> infra.FaultAnswer | None:
        # the answer Supabase's gateway gives when the database took too long for one record
        if request.method == "POST" and stuck_id in request.body:
            time.sleep(0.2)
            return 504, {"content-type": "application/json"}, b'{"message":"timed out"}'
        return None

    fresh_gateway.blackout = True  # an outage: everything read waits in the offline queue
    with running_agent(env_for, tmp_path / "agent.log") as agent:
        wait_for(lambda: queue_figures(tmp_path / "queue")["pending"] == 30, 60, "30 queued")
        fresh_gateway.fault = statement_timeout
        fresh_gateway.blackout = False  # upstream is back
        others = {p: s for p, s in sessions.items() if p != stuck[0]}
        stuck[0].rename(tmp_path / "aside.json")  # the truth without the stuck session
        try:
            wait_until_equal(nas, clean_db.dsn, timeout=60)
        finally:
            (tmp_path / "aside.json").rename(stuck[0])
        assert len(others) == 29
        # a new live session is not queued behind it either
        live = make_session(99, 2, random.Random(99))
        write_session(nas / "PC01" / "1020" / live.file_name, live)
        wait_for(lambda: row(clean_db.dsn, live.session_id), 20, "the live session")
        # /health blames the record, not the network
        document = wait_for(
            lambda: (h := health(agent.url))["alerts"] and h, 20, "the record_failing alert"
        )
        assert [a["name"] for a in document["alerts"]] == ["record_failing"], document
        assert "PC0" in document["alerts"][0]["message"]
        assert str(stuck[1].session_id) in document["alerts"][0]["message"]
        assert document["components"]["supabase"] == "connected", document
        assert not any("unreachable" in reason for reason in document["reasons"]), document
        agent.wait_event("record_failing", session_id=str(stuck[1].session_id))
        # it is retried with a backoff of its own, and once it goes through, it is stored
        fresh_gateway.fault = None
        wait_until_equal(nas, clean_db.dsn, timeout=90)
        wait_for(lambda: not health(agent.url)["alerts"], 20, "the alert to clear")


def test_newer_content_with_an_older_mtime_is_not_sent_again_after_a_restart(
    tmp_path: Path,
    env_for: dict[str, str],
    clean_db: infra.Database,
    fresh_gateway: infra.Gateway,
) -> None:
    rng, session, path = one_session(tmp_path, seed=25, index=3)
    old_mtime = path.stat().st_mtime_ns
    with running_agent(env_for, tmp_path / "agent.log") as agent:
        wait_for(lambda: row(clean_db.dsn, session.session_id), 30, "the row")
        # new content with an older mtime: a backup restored with its times, a PC clock
        # corrected between two writes
        grow(path, session, rng)
        os.utime(path, ns=(old_mtime - HOUR_NS, old_mtime - HOUR_NS))
        wait_until_equal(tmp_path / "nas", clean_db.dsn, timeout=30)
        agent.wait_event("file_modified", hands=4)
    fresh_gateway.reset()
    with running_agent(env_for, tmp_path / "agent.log") as agent:
        agent.wait_event("pc_scanned", pc_id="PC01")
        time.sleep(2)  # a few polls: a re-send would have gone out by now
        assert upserts_of(fresh_gateway) == 0, fresh_gateway.records
    check = run_cli(env_for, "reconcile")
    assert check.returncode == 0, check.stderr
    assert "the table holds every acknowledged session's winner" in check.stdout, check.stdout


def test_a_clock_an_hour_off_shows_in_health_and_in_check(
    tmp_path: Path,
    env_for: dict[str, str],
    fresh_gateway: infra.Gateway,
) -> None:
    build_nas(tmp_path / "nas", pcs=1, sessions_per_pc=1, seed=26)
    fresh_gateway.clock_offset = -3600.0  # Supabase's clock an hour behind this machine's
    with running_agent(env_for, tmp_path / "agent.log") as agent:
        document = wait_for(
            lambda: (h := health(agent.url))["alerts"] and h, 20, "the clock_skew alert"
        )
        alert = document["alerts"][0]
        assert alert["name"] == "clock_skew" and alert["level"] == "review", document
        assert "3600 s ahead of Supabase" in alert["message"] or "3599 s" in alert["message"]
        check = run_cli(env_for, "check")
        assert "clock" in check.stdout and "ahead of Supabase" in check.stdout, check.stdout
        assert check.returncode == 1, check.stdout
        fresh_gateway.clock_offset = 0.0
        wait_for(lambda: not health(agent.url)["alerts"], 20, "the alert to clear")
