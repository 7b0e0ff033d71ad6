"""README: "a live rewrite is never queued behind a backfill", end to end.

5,000 archived sessions wait on the NAS when the agent starts; the gateway slows every upsert,
so the backfill takes minutes. The PC's current session is rewritten (three hands end) while
the backfill is under way: its new hand count must be in the table while more than 4,000 of
the archived sessions are still missing from it. Both figures are read from PostgreSQL in one
statement, so they describe the same moment.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from tests.support import infra
from tests.support.agent import agent_env, running_agent
from tests.support.tree import grow, make_session, write_session
from tests.support.waits import wait_for

pytestmark = pytest.mark.e2e

ARCHIVED = 5000
BACKLOG_FLOOR = 4000  # archived sessions still missing from the table when the rewrite is stored
UPLOAD_LATENCY = 0.2  # seconds the gateway holds every upsert: ~50 sessions/s at batch size 10
DAY = 86_400


def build_archive(nas: Path, rng: random.Random) -> list[int]:
    """5,000 one-hand sessions in five day folders of PC01, written days ago."""
    ids = []
    old = time.time() - 30 * DAY
    for n in range(ARCHIVED):
        session = make_session(n, 1, rng)
        path = nas / "PC01" / f"10{16 + n % 5}" / session.file_name
        write_session(path, session, mtime=old + n)
        ids.append(session.session_id)
    return ids


def figures(dsn: str, live_id: int) -> tuple[int, int | None]:
    """(archived sessions in the table, the live session's stored hand count), one snapshot."""
    row = infra.query(
        dsn,
        "select count(*) filter (where session_id <> %(live)s) as archived,"
        " max(hand_count) filter (where session_id = %(live)s) as live_hands"
        " from public.gfx_sessions where gfx_pc_id = 'PC01'",
        {"live": live_id},
    )[0]
    return int(row["archived"]), row["live_hands"]


@pytest.mark.timeout(240)
def test_a_live_rewrite_is_stored_while_the_backfill_has_barely_begun(
    tmp_path: Path, clean_db: infra.Database, fresh_gateway: infra.Gateway
) -> None:
    rng = random.Random(27)
    nas = tmp_path / "nas"
    archived = set(build_archive(nas, rng))
    live = make_session(ARCHIVED + 1, 2, rng)
    live_path = nas / "PC01" / "1021" / live.file_name
    write_session(live_path, live)  # the table's current session: the newest file

    def slow_upserts(request: infra.GatewayRequest) -> None:
        if request.method == "POST" and request.path == "/gfx_sessions":
            time.sleep(UPLOAD_LATENCY)

    fresh_gateway.fault = slow_upserts
    env = agent_env(
        nas=nas,
        queue=tmp_path / "queue",
        gateway_url=fresh_gateway.url,
        key=fresh_gateway.key,
        batch_size=10,
        log_level="INFO",
    )
    with running_agent(env, tmp_path / "agent.log"):
        # the newest file goes first; then the backfill is under way
        wait_for(
            lambda: figures(clean_db.dsn, live.session_id)[1] == 2, 60, "the live session stored"
        )
        wait_for(
            lambda: figures(clean_db.dsn, live.session_id)[0] >= 20, 60, "the backfill under way"
        )
        stored_before, _ = figures(clean_db.dsn, live.session_id)
        assert ARCHIVED - stored_before > BACKLOG_FLOOR + 500, (
            "the rewrite comes during the backfill"
        )
        grow(live_path, live, rng, hands=3)  # three hands end: the file is rewritten in place
        rewritten_at = time.monotonic()
        while True:
            stored, live_hands = figures(clean_db.dsn, live.session_id)
            if live_hands == 5:
                break
            assert ARCHIVED - stored > BACKLOG_FLOOR, (
                f"the live rewrite is not stored {time.monotonic() - rewritten_at:.1f}s after it,"
                f" and only {ARCHIVED - stored} archived sessions are still missing"
            )
            time.sleep(0.1)
        print(
            f"live rewrite stored {time.monotonic() - rewritten_at:.2f}s after it, with"
            f" {ARCHIVED - stored} of {ARCHIVED} archived sessions still missing"
        )
        assert ARCHIVED - stored > BACKLOG_FLOOR
        ids = {
            r["session_id"]
            for r in infra.query(clean_db.dsn, "select session_id from public.gfx_sessions")
        }
        assert ids <= archived | {live.session_id}
        fresh_gateway.fault = None  # the stop need not wait on a slowed upload
