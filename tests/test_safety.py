"""Nothing lost whatever the reads or the settings (issue 22, the error folder, redaction and
NAS deadline bullets), end to end: the agent as a real subprocess against the real PostgREST
behind the gateway stand-in, a NAS folder hanging like a stale SMB mount (tests/support/
stale_mount.py), and each assertion on what the agent did (the table, the files on disk, its
served documents, its log), never on what the test itself recorded.

Each test is one of the troubles a user reproduced on an earlier main: an error folder that
deleted an operator's file, a proxy page that leaked the key's first characters, a NAS read
that hung every PC, a SIGTERM that never ended.
"""

from __future__ import annotations

import os
import random
import sqlite3
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import infra
from tests.support.agent import STOP_WITHIN, AgentProcess, agent_env, running_agent
from tests.support.pieces import pieces_in
from tests.support.tree import build_nas, make_session, write_session
from tests.support.truth import table_rows
from tests.support.waits import wait_for, wait_until_equal

pytestmark = pytest.mark.e2e

MiB = 2**20
REPO = Path(__file__).resolve().parents[1]
BROKEN = b'{"ID": 638966318331324926, "Hands": ['  # a PC's export cut short, never finished


def health(agent: AgentProcess) -> tuple[int, dict[str, Any]]:
    answer = httpx.get(f"{agent.url}/health", timeout=5)
    return answer.status_code, answer.json()


def pc_status(agent: AgentProcess, pc_id: str) -> dict[str, Any]:
    pcs = httpx.get(f"{agent.url}/api/status", timeout=5).json()["pcs"]
    return next(pc for pc in pcs if pc["id"] == pc_id)


def sparse_file(path: Path, size: int) -> Path:
    """An operator's large file (a capture, a backup), old: the first a size-based pruner
    would take. Sparse, so the test writes nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    os.truncate(path, size)
    os.utime(path, (1_600_000_000, 1_600_000_000))
    return path


def stale_env(
    tmp: Path, gateway: infra.Gateway, pc: str, calls: str, **settings: object
) -> dict[str, str]:
    """The agent's environment with `<nas>/<pc>` behind the stale-mount harness, `calls` the
    kinds of call that hang while the flag file is there."""
    env = agent_env(
        nas=tmp / "nas", queue=tmp / "queue", gateway_url=gateway.url, key=gateway.key, **settings
    )
    folder = tmp / "nas" / pc
    env.update(
        GFX_TEST_STALE_FOLDER=str(folder),
        GFX_TEST_STALE_FLAG=str(tmp / "mount-is-stale"),
        GFX_TEST_STALE_LOG=str(tmp / "stale.log"),
        GFX_TEST_STALE_CALLS=calls,
        PYTHONPATH=str(REPO),
    )
    return env


STALE_COMMAND = (sys.executable, "-m", "tests.support.stale_mount")


def hung_calls(tmp: Path) -> list[tuple[str, str, str]]:
    path = tmp / "stale.log"
    if not path.exists():
        return []
    return [tuple(line.split()) for line in path.read_text().splitlines()]  # type: ignore[misc]


def most_at_once(calls: list[tuple[str, str, str]], kinds: set[str]) -> int:
    """The most calls of these kinds hanging at the same time, from the harness's log."""
    out = most = 0
    for what, kind, _ in calls:
        if kind in kinds:
            out += 1 if what == "hang" else -1
            most = max(most, out)
    return most


# ---------------------------------------------------------------------------------------------
# the error folder
# ---------------------------------------------------------------------------------------------


def test_the_error_folder_never_deletes_a_file_the_agent_did_not_make(
    tmp_path: Path, clean_db: infra.Database, fresh_gateway: infra.Gateway
) -> None:
    """With GFX_SYNC_ERROR_FOLDER set to the queue's folder, the first quarantine deleted an
    operator's 600 MiB file beside the queue (pruning took the oldest regular files of any kind
    until the folder was under 512 MiB; the queue database would have gone too). Now that
    setting stops the agent (exit 2), and with the default folder, a file an operator put
    into it stays: pruning removes only the copies the agent recorded making."""
    nas, queue = tmp_path / "nas", tmp_path / "queue"
    build_nas(nas, pcs=1, sessions_per_pc=2, seed=221)
    (nas / "PC01" / "1016" / "PGFX_live_data_export GameID=9.json").write_bytes(BROKEN)
    capture = sparse_file(queue / "capture.mov", 600 * MiB)
    env = agent_env(nas=nas, queue=queue, gateway_url=fresh_gateway.url, key=fresh_gateway.key)

    over_the_queue = dict(env, GFX_SYNC_ERROR_FOLDER=str(queue))
    agent = AgentProcess(over_the_queue, tmp_path / "refused.log").start()
    try:
        wait_for(
            lambda: (
                not agent.running
                or any(e["event"] == "file_quarantined" for e in agent.read_events())
            ),
            30,
            "the agent to stop, or to quarantine (and copy) the broken file",
        )
        assert capture.exists() and capture.stat().st_size == 600 * MiB, (
            "the operator's file beside the queue was deleted"
        )
        assert agent.wait_exit(10) == 2
    finally:
        agent.kill()
    said = (tmp_path / "refused.log").read_text()
    assert said.startswith("GFX_SYNC_ERROR_FOLDER: "), said
    assert "Traceback" not in said

    # the default folder, beside the queue: an operator keeps a file in it
    notes = sparse_file(queue / "_error" / "PC01" / "operator-notes.bin", 600 * MiB)
    with running_agent(env, tmp_path / "agent.log") as running:
        event = running.wait_event("file_quarantined", timeout=30)
        copy = Path(event["copied_to"])
        assert copy.read_bytes() == BROKEN and copy.is_relative_to(queue / "_error")
        assert notes.exists() and notes.stat().st_size == 600 * MiB, (
            "pruning removed a file the agent did not make"
        )
        assert capture.exists() and (queue / "pending.db").exists()
        with sqlite3.connect(f"file:{queue / 'pending.db'}?mode=ro", uri=True) as conn:
            made = {row[0] for row in conn.execute("SELECT path FROM error_copy")}
        assert made == {str(copy)}, "every copy is recorded in the queue database"


# ---------------------------------------------------------------------------------------------
# redaction
# ---------------------------------------------------------------------------------------------


def test_a_proxy_page_echoing_the_key_shows_no_part_of_it_anywhere(
    tmp_path: Path, clean_db: infra.Database, fresh_gateway: infra.Gateway
) -> None:
    """A firewall's HTML page that echoes the request's apikey: main cut non-JSON bodies to 200
    bytes before redacting the whole key, so the key's first characters reached /health,
    /api/status and the log. No run of 8 characters of its secret part may show, nor its
    first 4 where a text ends."""
    nas = tmp_path / "nas"
    build_nas(nas, pcs=1, sessions_per_pc=2, seed=222)
    key = fresh_gateway.key
    head = "<html><head><title>403 Forbidden</title></head><body><h1>Request blocked</h1><p>"

    def proxy_page(request: infra.GatewayRequest) -> infra.FaultAnswer:
        echoed = request.headers.get("apikey", "")
        # the key straddles byte 200: a cut there leaves its first 20 characters
        echo = f"apikey: {echoed}</p></body></html>"
        body = f"{head}{'.' * (180 - len(head) - len('apikey: '))}{echo}"
        return 403, {"content-type": "text/html"}, body.encode()

    fresh_gateway.fault = proxy_page
    env = agent_env(nas=nas, queue=tmp_path / "queue", gateway_url=fresh_gateway.url, key=key)
    with running_agent(env, tmp_path / "agent.log") as agent:
        code, doc = wait_for(
            lambda: (h := health(agent))[1]["components"]["supabase"] == "rejected" and h,
            30,
            "the refusal on /health",
        )
        assert code == 503
        status = httpx.get(f"{agent.url}/api/status", timeout=5)
        assert "Request blocked" in status.json()["upstream"]["reason"]
        outputs = {"/health": httpx.get(f"{agent.url}/health", timeout=5).text}
        outputs["/api/status"] = status.text
        agent.wait_event("upstream_state", timeout=10, state="rejected")
    outputs["log"] = (tmp_path / "agent.log").read_text()
    assert "Request blocked" in outputs["log"]
    for where, text in outputs.items():
        assert not pieces_in(text, key), f"{where} shows {pieces_in(text, key)}"
    (reason,) = [r for r in doc["reasons"] if "Request blocked" in r]
    assert "[REDACTED]" in reason, "the echo is visibly redacted: the check is not vacuous"


# ---------------------------------------------------------------------------------------------
# NAS reads with a deadline
# ---------------------------------------------------------------------------------------------


def test_a_hard_hung_read_holds_its_pc_only_and_its_changes_arrive_when_it_returns(
    tmp_path: Path, clean_db: infra.Database, fresh_gateway: infra.Gateway
) -> None:
    """A mount whose metadata still answers while every open and read hangs: on main each
    change of that PC pinned one of the four readers for ever, and after four every PC
    stopped. Now a read past GFX_SYNC_NAS_READ_TIMEOUT marks its PC hung (/health, /api/status),
    at most one read of it is out, the other PCs go on, and its changes are read once the
    stuck thread returns."""
    rng = random.Random(223)
    nas = tmp_path / "nas"
    build_nas(nas, pcs=2, sessions_per_pc=2, seed=223)
    env = stale_env(tmp_path, fresh_gateway, "PC02", "open,read,fstat", nas_read_timeout=2)
    flag = tmp_path / "mount-is-stale"
    with running_agent(env, tmp_path / "agent.log", command=STALE_COMMAND) as agent:
        wait_until_equal(nas, clean_db.dsn, timeout=30)
        flag.touch()
        for n in range(6):  # more changes than there are readers
            write_session(nas / "PC02" / "1020" / f"s{n}.json", make_session(600 + n, 2, rng))
        wait_for(lambda: hung_calls(tmp_path), 20, "a read of PC02 hanging")
        live = make_session(700, 3, rng)
        write_session(nas / "PC01" / "1020" / live.file_name, live)
        wait_for(
            lambda: ("PC01", live.session_id) in table_rows(clean_db.dsn),
            30,
            "PC01's new session in the table while PC02's reads hang",
        )
        agent.wait_event("pc_read_hung", timeout=20, pc_id="PC02")
        code, doc = wait_for(
            lambda: (h := health(agent))[1]["status"] == "degraded" and h, 20, "degraded"
        )
        assert code == 200
        assert any(r.startswith("PC PC02: a read has not returned") for r in doc["reasons"]), doc
        assert pc_status(agent, "PC02")["read_hung"], "the PC shows it in /api/status"
        assert pc_status(agent, "PC01")["read_hung"] is None
        # PC01 goes on: another of its changes arrives while PC02 is still hung
        later = make_session(701, 1, rng)
        write_session(nas / "PC01" / "1021" / later.file_name, later)
        wait_for(lambda: ("PC01", later.session_id) in table_rows(clean_db.dsn), 30, "PC01")
        calls = hung_calls(tmp_path)
        assert most_at_once(calls, {"open", "read", "fstat"}) == 1, Counter(c[:2] for c in calls)

        flag.unlink()  # the mount answers again: every change of PC02 is read, none dropped
        wait_until_equal(nas, clean_db.dsn, timeout=60)
        wait_for(lambda: pc_status(agent, "PC02")["read_hung"] is None, 20, "PC02 recovered")
        agent.wait_event("pc_read_recovered", timeout=10, pc_id="PC02")


def test_sigterm_ends_in_time_while_a_reconcile_read_hangs(
    tmp_path: Path, clean_db: infra.Database, fresh_gateway: infra.Gateway
) -> None:
    """A reconcile pass reading a winner again from a hung mount: on main that read was not
    even abandonable, and SIGTERM never ended (Docker kills it after its grace period). Now
    SIGTERM ends within GFX_SYNC_SHUTDOWN_TIMEOUT plus a second whatever the NAS does."""
    nas = tmp_path / "nas"
    build_nas(nas, pcs=1, sessions_per_pc=3, seed=224)
    env = stale_env(
        tmp_path,
        fresh_gateway,
        "PC01",
        "open,read,fstat",
        reconcile_interval=1,
        shutdown_timeout=2,
        nas_read_timeout=120,  # the read is still in progress when SIGTERM comes
    )
    with running_agent(env, tmp_path / "agent.log", command=STALE_COMMAND, stop=False) as agent:
        wait_until_equal(nas, clean_db.dsn, timeout=30)
        (tmp_path / "mount-is-stale").touch()
        # a row deleted by hand: the next reconcile pass reads its winner again from the NAS
        infra.query(
            clean_db.dsn,
            "delete from gfx_sessions where ctid in (select ctid from gfx_sessions limit 1)",
        )
        wait_for(lambda: hung_calls(tmp_path), 30, "the reconcile read hanging")
        code, seconds = agent.stop()
        assert code == 0, agent.tail()
        assert seconds < STOP_WITHIN, f"SIGTERM took {seconds:.1f} s"
        print(f"SIGTERM with a hung reconcile read: exit 0 in {seconds:.2f} s")
