"""The agent's states end to end: a real subprocess behind the gateway stand-in (or behind a
PostgREST of its own), checked on the database, the gateway's request records and the SQLite
file, never on the agent's own counters alone.

Schema mismatch and split answers from upstream, an unreadable file, NAS system folders, a full
offline queue, a PC folder hanging like a stale SMB mount, a corrupt queue database at start,
PostgREST down behind the gateway, a deleted source file; and `Store.recent_dead_letters`,
which feeds the dashboard's list.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.support import infra
from tests.support.agent import AgentProcess, agent_env, running_agent
from tests.support.installed import APP_UID, as_image_user
from tests.support.tree import build_nas, make_session, write_session
from tests.support.truth import table_rows
from tests.support.waits import queue_figures, wait_for, wait_until_equal
from trio_gfxsync.intake.tracker import BLOCKED_RETRY_POLLS
from trio_gfxsync.records import FileVersion
from trio_gfxsync.state import store as store_module
from trio_gfxsync.state.store import Store

pytestmark = pytest.mark.e2e


def is_upsert(request: infra.GatewayRequest) -> bool:
    return request.method == "POST" and request.path == "/gfx_sessions"


def rows_of(request: infra.GatewayRequest) -> list[dict[str, Any]]:
    return orjson.loads(request.body) if request.body else []


class Upserts:
    """Every upsert body that reached the gateway, and those PostgREST stored (2xx)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: list[list[tuple[str, int]]] = []
        self.stored: list[list[tuple[str, int]]] = []

    def attach(self, gateway: infra.Gateway, fault: infra.FaultHook | None = None) -> None:
        def before(request: infra.GatewayRequest) -> infra.FaultAnswer | None:
            if is_upsert(request):
                with self.lock:
                    self.seen.append(keys(rows_of(request)))
            return fault(request) if fault is not None else None

        def after(request: infra.GatewayRequest, status: int) -> None:
            if is_upsert(request) and 200 <= status < 300:
                with self.lock:
                    self.stored.append(keys(rows_of(request)))

        gateway.fault = before
        gateway.after_upstream = after

    def stored_keys(self) -> list[tuple[str, int]]:
        with self.lock:
            return [key for body in self.stored for key in body]

    def seen_keys(self) -> set[tuple[str, int]]:
        with self.lock:
            return {key for body in self.seen for key in body}


def keys(rows: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(row["gfx_pc_id"], row["session_id"]) for row in rows]


def json_answer(status: int, body: dict[str, Any]) -> infra.FaultAnswer:
    return status, {"content-type": "application/json"}, orjson.dumps(body)


def health(agent: AgentProcess) -> tuple[int, dict[str, Any]]:
    response = httpx.get(f"{agent.url}/health", timeout=5)
    return response.status_code, response.json()


def wait_health(
    agent: AgentProcess, status: str, timeout: float, reason: str | None = None
) -> tuple[int, dict[str, Any]]:
    def matches() -> tuple[int, dict[str, Any]] | None:
        code, doc = health(agent)
        if doc["status"] != status:
            return None
        if reason is not None and not any(reason in r for r in doc["reasons"]):
            return None
        return code, doc

    return wait_for(matches, timeout, f"/health {status} {reason or ''}", interval=0.2)


def pc_figures(agent: AgentProcess, pc_id: str) -> tuple[int, int]:
    """(completed polls, file versions read) of one PC, from /api/status."""
    pcs = httpx.get(f"{agent.url}/api/status", timeout=5).json()["pcs"]
    pc = next(pc for pc in pcs if pc["id"] == pc_id)
    return pc["polls"], pc["files_seen"]


def nas_keys(sessions: dict[Path, Any], nas: Path) -> set[tuple[str, int]]:
    return {(path.relative_to(nas).parts[0], s.session_id) for path, s in sessions.items()}


def file_states(queue: Path) -> set[tuple[str, str]]:
    conn = sqlite3.connect(f"file:{queue / 'pending.db'}?mode=ro", uri=True, timeout=10)
    try:
        return set(conn.execute("SELECT pc_id, rel_path FROM file_state"))
    finally:
        conn.close()


def queued_attempts(queue: Path) -> list[int]:
    """The refusal count of every record in the offline queue."""
    conn = sqlite3.connect(f"file:{queue / 'pending.db'}?mode=ro", uri=True, timeout=10)
    try:
        return [attempts for (attempts,) in conn.execute("SELECT attempts FROM pending_sync")]
    finally:
        conn.close()


def queued_bytes(queue: Path) -> int:
    """The bytes of the records in the offline queue, as the queue counts them."""
    conn = sqlite3.connect(f"file:{queue / 'pending.db'}?mode=ro", uri=True, timeout=10)
    try:
        return int(conn.execute("SELECT coalesce(sum(nbytes), 0) FROM pending_sync").fetchone()[0])
    finally:
        conn.close()


def new_session(folder: Path, index: int, hands: int = 2, session_id: int | None = None) -> Any:
    """A new export in `folder` (its name from its session id); returns the Session."""
    session = make_session(index, hands, random.Random(index))
    if session_id is not None:
        session.session_id = session_id
    write_session(folder / session.file_name, session)
    return session


# ---------------------------------------------------------------------------------------------
# answers from upstream
# ---------------------------------------------------------------------------------------------

PGRST204 = {
    "code": "PGRST204",
    "details": None,
    "hint": None,
    "message": "Could not find the 'player_count' column of 'gfx_sessions' in the schema cache",
}


def test_a_schema_mismatch_queues_everything_unhealthy_then_resumes_once_fixed(
    tmp_path: Path, clean_db: infra.Database, fresh_gateway: infra.Gateway
) -> None:
    nas = tmp_path / "nas"
    sessions = build_nas(nas, pcs=2, sessions_per_pc=4, seed=11)
    queue = tmp_path / "queue"
    mismatch = threading.Event()
    mismatch.set()

    def fault(request: infra.GatewayRequest) -> infra.FaultAnswer | None:
        if mismatch.is_set() and is_upsert(request):
            return json_answer(400, PGRST204)  # a column the migration adds is missing
        return None

    upserts = Upserts()
    upserts.attach(fresh_gateway, fault)
    env = agent_env(
        nas=nas, queue=queue, gateway_url=fresh_gateway.url, key=fresh_gateway.key, linger=0.5
    )
    with running_agent(env, tmp_path / "agent.log") as agent:
        wait_for(lambda: queue_figures(queue)["pending"] == 8, 30, "every session queued")
        code, doc = wait_health(agent, "unhealthy", 20, reason="schema mismatch")
        assert code == 503
        assert doc["components"]["supabase"] == "schema_mismatch"
        assert any("PGRST204" in r for r in doc["reasons"])
        assert table_rows(clean_db.dsn) == {}
        figures = queue_figures(queue)
        assert figures["refused"] == 0 and figures["quarantined"] == 0, "never dead-lettered"
        assert figures["files"] == 8, "queued counts as acknowledged"
        assert queued_attempts(queue) == [0] * 8, "a pause is no refusal"

        mismatch.clear()  # the operator applied the migration
        wait_until_equal(nas, clean_db.dsn, timeout=60)  # the 30 s re-probe, then the drain
        wait_for(lambda: queue_figures(queue)["pending"] == 0, 15, "an empty queue")
        assert sorted(upserts.stored_keys()) == sorted(nas_keys(sessions, nas))
        assert wait_health(agent, "healthy", 15)[0] == 200
    assert queue_figures(queue)["refused"] == 0
    # What the paused agent sent, measured at the gateway: from the write that met the
    # mismatch to the first write stored, only empty upserts (the probe), none of them sooner
    # than 25 s (PAUSED_PROBE, "about every 30 s") after the one before.
    records = sorted(fresh_gateway.records, key=lambda r: r.arrived)
    refused = [r for r in records if r.status == 400 and r.path == "/gfx_sessions"]
    assert refused and refused[0].body_size > len(b"[]"), "the first refusal carried rows"
    paused_at = refused[0].arrived
    fixed_at = next(r.arrived for r in records if r.method == "POST" and 200 <= r.status < 300)
    while_paused = [r for r in records if paused_at < r.arrived <= fixed_at]
    assert while_paused, "no probe while paused"
    assert all(r.method == "POST" and r.body_size == len(b"[]") for r in while_paused), [
        (r.method, r.path, r.status, r.body_size) for r in while_paused
    ]
    times = [paused_at] + [r.arrived for r in while_paused]
    gaps = [round(b - a, 2) for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 25.0, f"paused probes {gaps} s apart (about 30 s expected)"


PGRST106 = {
    "code": "PGRST106",
    "details": None,
    "hint": None,
    "message": "The schema must be one of the following: public, graphql_public",
}


def test_any_other_4xx_about_the_request_pauses_uploading_until_fixed(
    tmp_path: Path, clean_db: infra.Database, fresh_gateway: infra.Gateway
) -> None:
    """A 4xx about the request rather than the records (406 PGRST106, a proxy or schema
    setting): nothing is dead-lettered, uploading pauses (`request_rejected`, unhealthy), and
    the records wait in the queue until the operator has fixed it."""
    nas = tmp_path / "nas"
    build_nas(nas, pcs=1, sessions_per_pc=4, seed=17)
    queue = tmp_path / "queue"
    rejecting = threading.Event()
    rejecting.set()

    def fault(request: infra.GatewayRequest) -> infra.FaultAnswer | None:
        if rejecting.is_set() and is_upsert(request):
            return json_answer(406, PGRST106)
        return None

    fresh_gateway.fault = fault
    env = agent_env(
        nas=nas, queue=queue, gateway_url=fresh_gateway.url, key=fresh_gateway.key, linger=0.5
    )
    with running_agent(env, tmp_path / "agent.log") as agent:
        wait_for(lambda: queue_figures(queue)["pending"] == 4, 30, "every session queued")
        code, doc = wait_health(agent, "unhealthy", 20)
        assert code == 503
        assert doc["components"]["supabase"] == "request_rejected", doc
        assert any("PGRST106" in r for r in doc["reasons"]), doc
        first = min(r.arrived for r in fresh_gateway.records if r.status == 406)
        time.sleep(3)  # watched for three seconds at least: nothing more is tried
        after = [r for r in fresh_gateway.records if r.arrived > first and r.method == "POST"]
        assert after == [], after
        assert table_rows(clean_db.dsn) == {}
        figures = queue_figures(queue)
        assert (figures["refused"], figures["quarantined"]) == (0, 0), "never dead-lettered"
        assert queued_attempts(queue) == [0] * 4, "a pause is no refusal"
    rejecting.clear()  # the operator fixed the setting and restarts the agent
    with running_agent(env, tmp_path / "agent.log"):
        wait_until_equal(nas, clean_db.dsn, timeout=30)
        wait_for(lambda: queue_figures(queue)["pending"] == 0, 15, "an empty queue")
    assert queue_figures(queue)["refused"] == 0


def test_a_split_answer_splits_the_batch_stores_all_and_logs_an_error(
    tmp_path: Path, clean_db: infra.Database, fresh_gateway: infra.Gateway
) -> None:
    nas = tmp_path / "nas"
    build_nas(nas, pcs=2, sessions_per_pc=5, seed=12)
    queue = tmp_path / "queue"
    split_batch: list[list[tuple[str, int]]] = []

    def fault(request: infra.GatewayRequest) -> infra.FaultAnswer | None:
        rows = rows_of(request)
        if is_upsert(request) and not split_batch and len(rows) > 1:
            split_batch.append(keys(rows))
            return json_answer(
                400,
                {
                    "code": "21000",
                    "details": None,
                    "hint": "Ensure that no rows proposed for insertion within the same "
                    "command have duplicate constrained values.",
                    "message": "ON CONFLICT DO UPDATE command cannot affect row a second time",
                },
            )
        return None

    upserts = Upserts()
    upserts.attach(fresh_gateway, fault)
    env = agent_env(
        nas=nas, queue=queue, gateway_url=fresh_gateway.url, key=fresh_gateway.key, linger=1.0
    )
    with running_agent(env, tmp_path / "agent.log") as agent:
        wait_until_equal(nas, clean_db.dsn, timeout=45)
        assert len(split_batch) == 1
        (batch,) = split_batch
        assert fresh_gateway.count("POST", "/gfx_sessions", 400) == 1
        half = (len(batch) + 1) // 2
        with upserts.lock:
            stored_with = {key: len(body) for body in upserts.stored for key in body}
        for key in batch:
            assert stored_with[key] <= half, (key, stored_with[key], len(batch))
        event = agent.wait_event("batch_invariant_broken", timeout=10)
        assert event["level"] == "error" and event["code"] == "21000"
        figures = queue_figures(queue)
        assert figures["refused"] == 0 and figures["pending"] == 0


# ---------------------------------------------------------------------------------------------
# the NAS side
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def world_readable_tmp() -> Iterator[Path]:
    """A folder the image's unprivileged user can use (pytest's tmp_path is root's 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="gfxsync-states-"))
    try:
        folder.chmod(0o755)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def unprivileged(request: pytest.FixtureRequest) -> tuple[str, ...] | None:
    """The agent's command as the image runs it (uid 1000, no capabilities) when we are root,
    who reads a mode-000 file anyway: the image's install (tests/support/installed.py), which
    uid 1000 can run wherever this checkout is; None when we are not root (mode 000 stops us
    already, and the checkout is ours)."""
    if os.geteuid() != 0:
        return None
    venv: Path = request.getfixturevalue("installed_venv")
    return tuple(as_image_user([str(venv / "bin" / "trio-gfxsync")]))


def test_an_unreadable_file_is_tried_again_after_the_retry_window_and_synced_once_readable(
    clean_db: infra.Database, fresh_gateway: infra.Gateway, request: pytest.FixtureRequest
) -> None:
    """Root reads a mode-000 file, so the agent runs as the image does: uid 1000, no
    privileges. The permission is fixed with chmod, which changes no size or mtime."""
    with world_readable_tmp() as tmp:
        nas = tmp / "nas"
        sessions = build_nas(nas, pcs=1, sessions_per_pc=3, seed=13)
        day = nas / "PC01" / "1019"
        victim = make_session(50, 3, random.Random(50))
        victim_path = day / victim.file_name
        victim_key = ("PC01", victim.session_id)
        victim_rel = victim_path.relative_to(nas / "PC01").as_posix()
        queue = tmp / "queue"
        queue.mkdir()
        command = unprivileged(request)
        if command is not None:
            os.chown(queue, APP_UID, APP_UID)  # the image's chown of /app/queue
        env = agent_env(
            nas=nas,
            queue=queue,
            gateway_url=fresh_gateway.url,
            key=fresh_gateway.key,
            poll_interval=0.2,
        )
        with running_agent(env, tmp / "agent.log", command=command) as agent:

            def unreadable_reads() -> list[dict[str, Any]]:
                return [
                    e
                    for e in agent.read_events()
                    if e.get("event") == "file_unreadable" and e.get("path") == victim_rel
                ]

            wait_for(
                lambda: set(table_rows(clean_db.dsn)) == nas_keys(sessions, nas),
                30,
                "the readable sessions",
            )
            # polls counted before the file exists: at most the poll of its first read
            polls_before, _ = pc_figures(agent, "PC01")
            hidden = day / ".victim.tmp"  # a dot file: never listed
            write_session(hidden, victim)
            hidden.chmod(0o000)
            hidden.rename(victim_path)  # appears whole, unreadable
            mtime_before = victim_path.stat().st_mtime_ns
            wait_for(lambda: len(unreadable_reads()) == 1, 30, "the failed read")
            _, failed_reads = pc_figures(agent, "PC01")
            assert victim_key not in table_rows(clean_db.dsn)
            assert ("PC01", victim_rel) not in file_states(queue), "a failed read is not done"
            assert queue_figures(queue)["quarantined"] == 0, "a bad read is not a bad file"

            # still unreadable: read again once the window has passed, not at every poll (the
            # log line is not repeated within a minute: count the reads instead)
            retry = wait_for(
                lambda: (f := pc_figures(agent, "PC01"))[1] > failed_reads and f,
                60,
                "the retry",
                interval=0.05,
            )
            retry_polls, retry_reads = retry
            assert retry_reads == failed_reads + 1, "one read per window"
            # the window is 30 polls (about a minute at the default 2 s): the retry's poll
            # counted after it, the first read's counted before it, so the difference is never
            # below the window, however late either figure is read
            assert retry_polls - polls_before >= 30, retry_polls - polls_before
            assert victim_key not in table_rows(clean_db.dsn)

            victim_path.chmod(0o644)  # the operator fixes the permission on the NAS
            assert victim_path.stat().st_mtime_ns == mtime_before
            wait_for(
                lambda: victim_key in table_rows(clean_db.dsn),
                BLOCKED_RETRY_POLLS * 0.2 + 30,
                "the fixed file stored",
            )
            wait_until_equal(nas, clean_db.dsn, timeout=10)
            assert ("PC01", victim_rel) in file_states(queue)


SYSTEM_FOLDERS = ["@eaDir", "#recycle", "$RECYCLE.BIN", ".snapshot", "#snapshot", "@tmp"]


def test_nas_system_folders_are_never_scanned(
    tmp_path: Path, clean_db: infra.Database, fresh_gateway: infra.Gateway
) -> None:
    nas = tmp_path / "nas"
    sessions = build_nas(nas, pcs=1, sessions_per_pc=3, seed=14)
    hidden: set[int] = set()
    for n, name in enumerate(SYSTEM_FOLDERS):
        # at the share's root (never a PC) and inside the PC folder, at two depths
        for where in (nas / name / "1016", nas / "PC01" / name, nas / "PC01" / "1016" / name):
            hidden.add(new_session(where, index=100 + 10 * n + len(hidden), hands=2).session_id)
    (nas / "System Volume Information").mkdir()
    hidden.add(new_session(nas / "System Volume Information", index=300).session_id)
    upserts = Upserts()
    upserts.attach(fresh_gateway)
    queue = tmp_path / "queue"
    env = agent_env(nas=nas, queue=queue, gateway_url=fresh_gateway.url, key=fresh_gateway.key)
    with running_agent(env, tmp_path / "agent.log") as agent:
        wait_for(
            lambda: set(table_rows(clean_db.dsn)) == nas_keys(sessions, nas), 30, "PC01's files"
        )
        # the sentinel: a later session in a normal folder is stored, so later polls ran too
        sentinel = new_session(nas / "PC01" / "1017", index=400)
        wait_for(
            lambda: ("PC01", sentinel.session_id) in table_rows(clean_db.dsn), 30, "the sentinel"
        )
        assert {sid for _, sid in table_rows(clean_db.dsn)}.isdisjoint(hidden)
        assert {sid for _, sid in upserts.seen_keys()}.isdisjoint(hidden), "never even sent"
        assert all(not any(name in rel for name in SYSTEM_FOLDERS) for _, rel in file_states(queue))
        assert health(agent)[1]["watched_pcs"] == ["PC01"]


# ---------------------------------------------------------------------------------------------
# the queue
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("full_at", ["max_queue_size", "max_queue_bytes"])
def test_a_full_offline_queue_is_unhealthy_and_everything_drains_after_the_blackout(
    tmp_path: Path, clean_db: infra.Database, fresh_gateway: infra.Gateway, full_at: str
) -> None:
    """At MAX_QUEUE_SIZE (3 sessions) or MAX_QUEUE_BYTES (1 MiB, of sessions that hold about
    2 MiB compressed) intake waits, and nothing is dropped: the table ends equal to the NAS."""
    nas = tmp_path / "nas"
    by_bytes = full_at == "max_queue_bytes"
    sessions = build_nas(nas, pcs=2, sessions_per_pc=6, seed=15)
    if by_bytes:
        # the queue counts its records compressed: each session gets 240 KB of base64 noise
        # (in a field of its hands that the table keeps in raw_json), about 2 MiB compressed
        noise = random.Random(15)
        for path, session in sessions.items():
            document = session.document()
            for hand in document["Hands"]:
                blob = noise.randbytes(180_000 // len(document["Hands"]))
                hand["Note"] = base64.b64encode(blob).decode()
            path.write_bytes(orjson.dumps(document))
    queue = tmp_path / "queue"
    fresh_gateway.blackout = True  # Supabase unreachable from the start
    limit = {"max_queue_bytes": 2**20} if by_bytes else {"max_queue_size": 3}
    env = agent_env(
        nas=nas,
        queue=queue,
        gateway_url=fresh_gateway.url,
        key=fresh_gateway.key,
        batch_size=2,
        **limit,
    )
    with running_agent(env, tmp_path / "agent.log") as agent:
        code, doc = wait_health(agent, "unhealthy", 30, reason="offline queue full")
        assert code == 503
        assert any(r.startswith("supabase unreachable") for r in doc["reasons"])
        figures = queue_figures(queue)
        assert figures["pending"] < len(sessions), "intake paused: the rest waits on the NAS"
        if by_bytes:
            assert queued_bytes(queue) >= 2**20, "full by its bytes"
        else:
            assert figures["pending"] >= 3
        assert figures["refused"] == 0
        assert set(queued_attempts(queue)) == {0}, "an outage is no refusal"
        assert table_rows(clean_db.dsn) == {}
        assert fresh_gateway.count(status=0) >= 1, "it tried, and the connection was dropped"

        fresh_gateway.blackout = False
        wait_until_equal(nas, clean_db.dsn, timeout=60)
        wait_for(lambda: queue_figures(queue)["pending"] == 0, 15, "an empty queue")
        code, _ = wait_health(agent, "healthy", 20)
        assert code == 200
    assert queue_figures(queue)["refused"] == 0


# ---------------------------------------------------------------------------------------------
# a PC folder that hangs (a stale SMB mount)
# ---------------------------------------------------------------------------------------------


def test_a_pc_folder_hanging_like_a_stale_mount_degrades_health_naming_it_and_the_rest_go_on(
    tmp_path: Path, clean_db: infra.Database, fresh_gateway: infra.Gateway
) -> None:
    """A stale SMB mount raises nothing: its stats never return. The heartbeat must leave that
    PC out, /health must name it (degraded, 200: the others still sync), and once the mount
    answers again its changes must arrive and /health go back to healthy."""
    rng = random.Random(22)
    nas = tmp_path / "nas"
    build_nas(nas, pcs=2, sessions_per_pc=4, seed=22)
    flag = tmp_path / "mount-is-stale"
    env = agent_env(
        nas=nas, queue=tmp_path / "queue", gateway_url=fresh_gateway.url, key=fresh_gateway.key
    )
    env.update(
        GFX_TEST_STALE_FOLDER=str(nas / "PC02"),
        GFX_TEST_STALE_FLAG=str(flag),
        PYTHONPATH=str(Path(__file__).resolve().parents[1]),
    )
    command = (sys.executable, "-m", "tests.support.stale_mount")
    with running_agent(env, tmp_path / "agent.log", command=command) as agent:
        wait_until_equal(nas, clean_db.dsn, timeout=30)
        wait_health(agent, "healthy", 20)

        flag.touch()  # PC02's mount stops answering
        new = {}
        for n, pc in enumerate(("PC01", "PC02")):
            session = make_session(500 + n, 2, rng)
            path = nas / pc / "1020" / session.file_name
            write_session(path, session)
            new[pc] = session
        agent.wait_event("pc_scan_hung", timeout=40, pc_id="PC02")

        def only_pc02_named() -> bool:
            # until the heartbeat gives up on the stuck thread (tick_deadline) PC01 waits too
            code, doc = health(agent)
            about_pcs = [r for r in doc["reasons"] if r.startswith("PC ")]
            # one reason: its last poll's figures claim nothing else about PC02
            only_stale = len(about_pcs) == 1 and about_pcs[0].startswith("PC PC02: no complete")
            return (code, doc["status"], only_stale) == (200, "degraded", True)

        wait_for(only_pc02_named, 40, "/health degraded, naming PC02 only", interval=0.2)
        # PC01 goes on while PC02 hangs: its new session reaches the table, its polls go on
        wait_for(lambda: ("PC01", new["PC01"].session_id) in table_rows(clean_db.dsn), 30, "PC01")
        polls, _ = pc_figures(agent, "PC01")
        wait_for(lambda: pc_figures(agent, "PC01")[0] >= polls + 2, 20, "PC01 polls")
        code, doc = health(agent)
        assert (code, doc["status"]) == (200, "degraded"), doc  # PC02 is still hung

        flag.unlink()  # the mount answers again
        wait_until_equal(nas, clean_db.dsn, timeout=60)
        code, _ = wait_health(agent, "healthy", 30)
        assert code == 200
    assert queue_figures(tmp_path / "queue")["refused"] == 0


def test_a_corrupt_queue_database_is_moved_aside_at_start_and_a_rescan_resends_everything(
    tmp_path: Path, clean_db: infra.Database, fresh_gateway: infra.Gateway
) -> None:
    nas = tmp_path / "nas"
    sessions = build_nas(nas, pcs=2, sessions_per_pc=4, seed=16)
    queue = tmp_path / "queue"
    db_path = queue / "pending.db"
    env = agent_env(nas=nas, queue=queue, gateway_url=fresh_gateway.url, key=fresh_gateway.key)
    with running_agent(env, tmp_path / "agent.log", stop=False) as agent:
        wait_until_equal(nas, clean_db.dsn, timeout=45)
        wait_for(lambda: queue_figures(queue)["files"] == 8, 15, "every file acknowledged")
        agent.kill()  # no clean close: the -wal and -shm files stay, as after a power cut
    wal, shm = Path(f"{db_path}-wal"), Path(f"{db_path}-shm")
    assert wal.exists() and shm.exists()
    ids_before = {k: r["id"] for k, r in table_rows_with_ids(clean_db.dsn).items()}
    # the disk damaged the file and its log (garbage in the main file alone is no damage:
    # the pages that matter may all still be in the -wal)
    garbage = b"this is not an SQLite database\x00" * 512
    db_path.write_bytes(garbage)
    wal.write_bytes(garbage[:4096])

    upserts = Upserts()
    upserts.attach(fresh_gateway)
    with running_agent(env, tmp_path / "agent.log") as agent:
        event = agent.wait_event("queue_db_recreated", timeout=30)
        assert event["level"] == "error" and event["rescan"] is True
        moved = sorted(queue.glob("pending.db.corrupt-*"))
        (main,) = [p for p in moved if not p.name.endswith(("-wal", "-shm"))]
        assert main.read_bytes() == garbage, "the damaged file is kept for a post-mortem"
        assert main.name in event["reason"]
        # (that its -wal and -shm go with it: test_a_corrupt_database_is_moved_aside_with_...)
        # the new database knows nothing: the rescan sends every session again
        wait_for(
            lambda: sorted(upserts.stored_keys()) == sorted(nas_keys(sessions, nas)),
            45,
            "every session re-sent",
        )
        wait_until_equal(nas, clean_db.dsn, timeout=15)
        wait_for(lambda: queue_figures(queue)["files"] == 8, 15, "every file acknowledged again")
    ids_after = {k: r["id"] for k, r in table_rows_with_ids(clean_db.dsn).items()}
    assert ids_after == ids_before, "idempotent: the same rows, upserted again"


async def test_a_corrupt_database_is_moved_aside_with_its_wal_and_shm(tmp_path: Path) -> None:
    """DESIGN 8: moving a corrupt database aside moves its -wal and -shm files too (in-process:
    the files as a power cut leaves them, then damaged)."""
    live = tmp_path / "live.db"
    conn = sqlite3.connect(live, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (1)")
    queue = tmp_path / "queue"
    queue.mkdir()
    path = queue / "pending.db"
    for suffix in ("", "-wal", "-shm"):  # a snapshot of the files while the database is open
        shutil.copyfile(f"{live}{suffix}", f"{path}{suffix}")
    conn.close()
    garbage = b"not a database\x00" * 1024
    path.write_bytes(garbage)
    Path(f"{path}-wal").write_bytes(garbage[:4096])

    store = await Store.open(path)
    try:
        assert store.recovered is not None
    finally:
        await store.close()
    moved_files = queue.glob("pending.db.corrupt-*")
    (moved,) = [p for p in moved_files if not p.name.endswith(("-wal", "-shm"))]
    assert moved.read_bytes() == garbage
    assert Path(f"{moved}-wal").read_bytes() == garbage[:4096]
    assert Path(f"{moved}-shm").exists()  # a volatile index: SQLite may rewrite it on open


def table_rows_with_ids(dsn: str) -> dict[tuple[str, int], dict[str, Any]]:
    rows = infra.query(dsn, "select gfx_pc_id, session_id, id from gfx_sessions")
    return {(r["gfx_pc_id"], r["session_id"]): r for r in rows}


# ---------------------------------------------------------------------------------------------
# PostgREST itself down behind the gateway
# ---------------------------------------------------------------------------------------------


def test_postgrest_down_behind_the_gateway_queues_degraded_then_drains_when_it_is_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nas = tmp_path / "nas"
    sessions = build_nas(nas, pcs=2, sessions_per_pc=3, seed=17)
    queue = tmp_path / "queue"
    with infra.database() as db:
        server = infra.start_postgrest(db)
        gateway = infra.start_gateway(server.url, server.jwt_secret)
        try:
            env = agent_env(nas=nas, queue=queue, gateway_url=gateway.url, key=gateway.key)
            with running_agent(env, tmp_path / "agent.log") as agent:
                wait_until_equal(nas, db.dsn, timeout=45)
                port = int(server.url.rsplit(":", 1)[1])
                admin_port = int(server.admin_url.rsplit(":", 1)[1])
                server.close()  # PostgREST stops; the gateway answers 502 as Kong does

                later = {
                    pc: new_session(nas / f"PC0{pc}" / "1021", index=60 + pc).session_id
                    for pc in (1, 2)
                }
                wait_for(lambda: queue_figures(queue)["pending"] == 2, 30, "the new ones queued")
                code, doc = wait_health(agent, "degraded", 20, reason="supabase unreachable")
                assert code == 200 and doc["components"]["supabase"] == "offline"
                assert gateway.count("POST", "/gfx_sessions", 502) >= 1
                assert not set(later.values()) & {sid for _, sid in table_rows(db.dsn)}
                assert queue_figures(queue)["refused"] == 0

                # PostgREST comes back on the same address
                ports = iter([port, admin_port])
                monkeypatch.setattr(infra, "free_port", lambda: next(ports))
                server = infra.start_postgrest(db)
                monkeypatch.undo()
                gateway.jwt_secret = server.jwt_secret  # the new instance's secret
                wait_until_equal(nas, db.dsn, timeout=45)
                wait_for(lambda: queue_figures(queue)["pending"] == 0, 15, "an empty queue")
                assert wait_health(agent, "healthy", 20)[0] == 200
                assert nas_keys(sessions, nas) | {("PC01", later[1]), ("PC02", later[2])} == set(
                    table_rows(db.dsn)
                )
        finally:
            gateway.close()
            server.close()


# ---------------------------------------------------------------------------------------------
# a deleted source file
# ---------------------------------------------------------------------------------------------


def test_a_deleted_file_keeps_its_row_is_forgotten_and_its_session_can_come_back_elsewhere(
    tmp_path: Path, clean_db: infra.Database, fresh_gateway: infra.Gateway
) -> None:
    nas = tmp_path / "nas"
    sessions = build_nas(nas, pcs=2, sessions_per_pc=3, seed=18)
    queue = tmp_path / "queue"
    upserts = Upserts()
    upserts.attach(fresh_gateway)
    env = agent_env(nas=nas, queue=queue, gateway_url=fresh_gateway.url, key=fresh_gateway.key)
    with running_agent(env, tmp_path / "agent.log") as agent:
        wait_until_equal(nas, clean_db.dsn, timeout=45)
        doomed = sorted(p for p in sessions if p.parts[-3] == "PC01")[0]
        doomed_session = sessions[doomed]
        key = ("PC01", doomed_session.session_id)
        rel = doomed.relative_to(nas / "PC01").as_posix()
        row_before = table_rows(clean_db.dsn)[key]
        assert ("PC01", rel) in file_states(queue)
        with upserts.lock:
            sent_before = len(upserts.seen)
        doomed.unlink()

        wait_for(lambda: ("PC01", rel) not in file_states(queue), 30, "its state forgotten")
        # the anchor: a later session in another folder is stored after the deletion
        sentinel = new_session(nas / "PC02" / "1020", index=70)
        wait_for(
            lambda: ("PC02", sentinel.session_id) in table_rows(clean_db.dsn), 30, "the sentinel"
        )
        assert table_rows(clean_db.dsn)[key] == row_before, "a deletion never deletes a row"
        with upserts.lock:
            sent_after = [k for body in upserts.seen[sent_before:] for k in body]
        assert key not in sent_after, "nothing re-sent for the deleted file"

        # the same session turns up in another day folder, a hand further on
        moved = nas / "PC01" / "1021" / doomed_session.file_name
        new_session(
            moved.parent,
            index=71,
            hands=len(doomed_session.hands) + 1,
            session_id=doomed_session.session_id,
        )
        wait_for(
            lambda: table_rows(clean_db.dsn)[key]["file_path"] == "1021/" + moved.name,
            30,
            "the session stored from its new file",
        )
        wait_until_equal(nas, clean_db.dsn, timeout=15)
        assert ("PC01", "1021/" + moved.name) in file_states(queue)
        assert health(agent)[1]["status"] == "healthy"


# ---------------------------------------------------------------------------------------------
# Store.recent_dead_letters (in-process): what the dashboard lists
# ---------------------------------------------------------------------------------------------


async def test_recent_dead_letters_are_bounded_newest_first_and_a_requarantine_moves_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1_760_000_000.0]

    def tick() -> float:
        now[0] += 1.0
        return now[0]

    # the store's clock only: every entry gets its own, later, last_seen
    monkeypatch.setattr(store_module, "time", types.SimpleNamespace(time=tick))
    store = await Store.open(tmp_path / "pending.db")
    try:
        for n in range(8):
            version = FileVersion("PC01", f"{n}.json", n + 1, n + 1, f"{n:064x}")
            await store.quarantine(version, "not_json", f"bad {n}")
        recent = await store.recent_dead_letters(5)
        newest_first = [e.rel_path for e in reversed(recent)]  # as the dashboard shows them
        assert newest_first == ["7.json", "6.json", "5.json", "4.json", "3.json"]
        assert [e.last_seen for e in recent] == sorted(e.last_seen for e in recent)

        first_id = next(e.id for e in await store.dead_letters() if e.rel_path == "1.json")
        again = FileVersion("PC01", "1.json", 99, 99, "f" * 64)
        await store.quarantine(again, "bad_encoding", "changed and still broken")
        recent = await store.recent_dead_letters(5)
        newest = recent[-1]
        assert (newest.rel_path, newest.reason, newest.id) == ("1.json", "bad_encoding", first_id)
        assert [e.rel_path for e in reversed(recent)] == [
            "1.json",
            "7.json",
            "6.json",
            "5.json",
            "4.json",
        ]
        assert len(await store.recent_dead_letters(100)) == 8
        assert await store.recent_dead_letters(0) == []
    finally:
        await store.close()
