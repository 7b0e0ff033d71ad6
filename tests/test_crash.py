"""Crash tests: SIGKILL the agent at random moments while it is uploading, inside the window
where PostgREST has committed a batch and the agent has not seen the answer, and inside the
opposite window (records acknowledged locally in the offline queue, not yet in the table); then
restart, and the database must equal the NAS exactly. Two agents on one NAS must agree too, each
carrying on alone when the other is killed.

Seeds are fixed (GFXSYNC_CRASH_SEED overrides, for a longer hunt outside CI).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support import infra
from tests.support.agent import STOP_WITHIN, AgentProcess, agent_env, running_agent
from tests.support.tree import build_nas, grow, make_session, write_session
from tests.support.waits import queue_figures, wait_for, wait_until_equal

pytestmark = pytest.mark.e2e

SEED = int(os.environ.get("GFXSYNC_CRASH_SEED", "20261126"))
ROUNDS = 18  # a third each: mid-upload, committed-not-acknowledged, queued-not-committed
UPLOAD_LATENCY = 0.08  # per upsert at the gateway: a round's backfill lasts about a second


class ResponseHold:
    """Holds the answer to one committed upsert until released (then drops it)."""

    def __init__(self) -> None:
        self.armed = False
        self.held = threading.Event()
        self.release = threading.Event()

    def __call__(self, request: infra.GatewayRequest, status: int) -> bool:
        upsert = request.method == "POST" and request.path == "/gfx_sessions"
        if not (self.armed and upsert and 200 <= status < 300):
            return False  # probes (GET, or an empty POST) commit nothing
        if request.body == b"[]":
            return False
        self.armed = False
        self.held.set()
        self.release.wait(30)
        return True  # the agent never sees this answer

    def arm(self) -> None:
        self.held.clear()
        self.release.clear()
        self.armed = True


class SlowUpserts:
    """Every upsert takes UPLOAD_LATENCY at the gateway; counts them as they arrive."""

    def __init__(self) -> None:
        self.arrived = 0
        self.first = threading.Event()
        self.failing = False  # answer 500 (upstream down) instead: nothing reaches the table

    def __call__(self, request: infra.GatewayRequest) -> infra.FaultAnswer | None:
        if request.method != "POST" or request.path != "/gfx_sessions" or request.body == b"[]":
            return None
        self.arrived += 1
        self.first.set()
        if self.failing:
            return 500, {"content-type": "application/json"}, b'{"message":"internal error"}'
        time.sleep(UPLOAD_LATENCY)
        return None


def rows_in_table(dsn: str) -> int:
    return int(infra.query(dsn, "select count(*) as n from gfx_sessions")[0]["n"])


def test_sigkill_at_random_moments_loses_nothing(
    tmp_path: Path, clean_db: infra.Database, fresh_gateway: infra.Gateway
) -> None:
    rng = random.Random(SEED)
    nas = tmp_path / "nas"
    sessions = build_nas(nas, pcs=10, sessions_per_pc=20, seed=SEED, max_hands=4)
    env = agent_env(
        nas=nas,
        queue=tmp_path / "queue",
        gateway_url=fresh_gateway.url,
        key=fresh_gateway.key,
        batch_size=10,
        log_level="INFO",
    )
    hold, slow = ResponseHold(), SlowUpserts()
    fresh_gateway.after_upstream = hold
    fresh_gateway.fault = slow
    log_path = tmp_path / "agent.log"
    kills = {"mid_upload": 0, "committed_not_acked": 0, "queued_not_committed": 0}
    index = 1000
    for round_no in range(ROUNDS):
        kind = ("mid_upload", "committed_not_acked", "queued_not_committed")[round_no % 3]
        # each round brings new sessions, so there is always a backfill to interrupt
        for _ in range(40):
            index += 1
            session = make_session(index, rng.randrange(1, 5), rng)
            path = nas / f"PC{rng.randrange(1, 11):02d}" / f"11{round_no:02d}" / session.file_name
            write_session(path, session)
            sessions[path] = session
        slow.first.clear()
        slow.failing = kind == "queued_not_committed"
        if kind == "committed_not_acked":
            hold.arm()
        agent = AgentProcess(env, log_path).start()
        try:
            if kind == "mid_upload":
                assert slow.first.wait(30), "no upload this round"
                time.sleep(rng.uniform(0.0, 0.6))
                expected = len({(p.parts[-3], s.session_id) for p, s in sessions.items()})
                if rows_in_table(clean_db.dsn) < expected:
                    kills[kind] += 1  # the table was still behind: a backfill was under way
            elif kind == "committed_not_acked":
                if hold.held.wait(30):
                    kills[kind] += 1
            else:
                # upstream answers 500: batches go to the offline queue (acknowledged there)
                pending = wait_for(
                    lambda: queue_figures(tmp_path / "queue")["pending"], 60, "queued records"
                )
                if pending:
                    kills[kind] += 1
            # PokerGFX keeps writing while the agent dies and restarts
            for path in rng.sample(sorted(sessions), 3):
                grow(path, sessions[path], rng)
        finally:
            if agent.proc is not None:
                agent.proc.send_signal(signal.SIGKILL)
                agent.wait_exit(10)
            hold.armed = False
            hold.release.set()
            slow.failing = False
    print(f"{ROUNDS} SIGKILLs: {kills}")
    for kind, count in kills.items():
        assert count >= ROUNDS // 3 - 1, f"the {kind} window was not reached: {kills}"

    fresh_gateway.fault = None  # the last restart's figure is the agent's, not the latency's
    restarted = time.monotonic()
    with running_agent(env, log_path, ready=None):
        took = wait_until_equal(nas, clean_db.dsn, timeout=90, since=restarted)
        print(f"table equal to the NAS {took:.2f}s after the last restart")
        assert wait_for(lambda: queue_figures(tmp_path / "queue")["pending"] == 0, 30, "empty")
        assert queue_figures(tmp_path / "queue")["refused"] == 0
        assert queue_figures(tmp_path / "queue")["quarantined"] == 0


def upserts_stored(gateway: infra.Gateway) -> int:
    return sum(
        1
        for r in gateway.records
        if r.method == "POST" and r.path == "/gfx_sessions" and 200 <= r.status < 300
    )


def test_two_agents_on_one_nas_each_carries_on_when_the_other_is_killed(
    tmp_path: Path,
    clean_db: infra.Database,
    fresh_gateway: infra.Gateway,
    postgrest: infra.PostgrestServer,
) -> None:
    """An HA pair: each agent behind its own gateway (to count each one's upserts).

    Each agent is killed while it holds work nobody else has stored: its gateway answers 500
    until the agent has rows waiting in its offline queue, then SIGKILL. The other agent must
    carry every change on alone, and the killed one, restarted, must not lose what it held.
    A's clock runs an hour fast until it is killed, and is correct (an hour back) after its
    restart: its rows carry stamps an hour ahead of B's, and its queue holds them."""
    rng = random.Random(SEED + 1)
    nas = tmp_path / "nas"
    sessions = build_nas(nas, pcs=4, sessions_per_pc=40, seed=SEED + 1, max_hands=4)
    other = infra.start_gateway(postgrest.url, postgrest.jwt_secret, fresh_gateway.key)
    gateways = {"a": fresh_gateway, "b": other}

    def env_for(name: str) -> dict[str, str]:
        return agent_env(
            nas=nas,
            queue=tmp_path / f"queue-{name}",
            gateway_url=gateways[name].url,
            key=fresh_gateway.key,
            batch_size=20,
            log_level="INFO",
        )

    def fast_agent() -> AgentProcess:
        """Agent A on a machine whose clock runs an hour fast (tests/support/shifted_clock)."""
        env = {
            **env_for("a"),
            "GFX_TEST_CLOCK_OFFSET": "3600",
            "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        }
        agent = AgentProcess(env, tmp_path / "agent-a.log")
        agent.command = (sys.executable, "-m", "tests.support.shifted_clock")
        return agent.start()

    def play(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:  # the crew keeps playing
            for path in rng.sample(sorted(sessions), 4):
                grow(path, sessions[path], rng)
            time.sleep(0.3)

    def kill_holding_work(name: str, agent: AgentProcess) -> None:
        """SIGKILL an agent while rows it read wait, unsent, in its own offline queue."""
        failing = SlowUpserts()
        failing.failing = True  # its upstream looks down: what it reads is queued, not stored
        gateways[name].fault = failing
        deadline = time.monotonic() + 60
        while queue_figures(tmp_path / f"queue-{name}")["pending"] == 0:
            assert time.monotonic() < deadline, f"agent {name} never queued work to hold"
            play(0.6)
        assert agent.proc is not None
        agent.proc.send_signal(signal.SIGKILL)
        agent.wait_exit(10)
        assert failing.arrived >= 1, f"agent {name} never tried to upload before the kill"
        assert queue_figures(tmp_path / f"queue-{name}")["pending"] > 0
        gateways[name].fault = None

    try:
        a = fast_agent()
        b = AgentProcess(env_for("b"), tmp_path / "agent-b.log").start()
        try:
            play(4)
            took = wait_until_equal(nas, clean_db.dsn, timeout=60)
            print(f"two agents: table equal to the NAS {took:.2f}s after the last write")
            assert upserts_stored(gateways["a"]) >= 1 and upserts_stored(gateways["b"]) >= 1

            kill_holding_work("a", a)  # B alone must take every change from here
            before = upserts_stored(gateways["b"])
            play(3)
            took = wait_until_equal(nas, clean_db.dsn, timeout=60)
            print(f"A killed: B alone equal to the NAS {took:.2f}s after the last write")
            assert upserts_stored(gateways["b"]) > before

            # restarted with its clock corrected: an hour back, below every stamp it wrote
            a = AgentProcess(env_for("a"), tmp_path / "agent-a.log").start()
            a.wait_event("agent_started")
            kill_holding_work("b", b)  # and now A alone
            before = upserts_stored(gateways["a"])
            play(3)
            took = wait_until_equal(nas, clean_db.dsn, timeout=60)
            print(f"B killed: A alone equal to the NAS {took:.2f}s after the last write")
            assert upserts_stored(gateways["a"]) > before
            # what A held when it was killed has left its queue (the table kept the newer rows)
            wait_for(lambda: queue_figures(tmp_path / "queue-a")["pending"] == 0, 60, "A's queue")

            b = AgentProcess(env_for("b"), tmp_path / "agent-b.log").start()
            wait_for(lambda: queue_figures(tmp_path / "queue-b")["pending"] == 0, 60, "B's queue")
            wait_until_equal(nas, clean_db.dsn, timeout=60)
            b.stop_cleanly()
            a.stop_cleanly()
            for name in gateways:  # drained into the table, not into the dead-letter queue
                figures = queue_figures(tmp_path / f"queue-{name}")
                assert (figures["refused"], figures["quarantined"]) == (0, 0), (name, figures)
        finally:
            a.kill()
            b.kill()
    finally:
        other.close()


class AnswerHold:
    """Holds the answer to the first upsert that carries rows, committed upstream, until
    `release` is set; then relays it (an agent still waiting gets its answer)."""

    def __init__(self) -> None:
        self.held = threading.Event()
        self.release = threading.Event()

    def __call__(self, request: infra.GatewayRequest, status: int) -> bool:
        upsert = request.method == "POST" and request.path == "/gfx_sessions"
        if not upsert or request.body == b"[]" or self.held.is_set():
            return False
        self.held.set()
        self.release.wait(60)
        return False


@pytest.mark.parametrize("drain", [1.0, 7.0])
def test_sigterm_gives_the_upload_in_flight_the_shutdown_timeout_and_loses_nothing(
    tmp_path: Path, clean_db: infra.Database, fresh_gateway: infra.Gateway, drain: float
) -> None:
    """GFX_SYNC_SHUTDOWN_TIMEOUT, measured: the agent exits no sooner than the drain after
    SIGTERM (a 7 s one is not the 5 s default), and it does not wait for the gateway's answer
    beyond it: with a 1 s drain it has exited before the answer comes at 9.5 s (a drain as
    long as Docker's grace would still be waiting). A restart then sends what was left."""
    nas = tmp_path / "nas"
    build_nas(nas, pcs=3, sessions_per_pc=30, seed=SEED + 2)
    env = agent_env(
        nas=nas,
        queue=tmp_path / "queue",
        gateway_url=fresh_gateway.url,
        key=fresh_gateway.key,
        batch_size=10,
        shutdown_timeout=drain,
        log_level="INFO",
    )
    hold = AnswerHold()
    fresh_gateway.after_upstream = hold
    answer_at = 9.5 if drain < 5 else 60.0
    try:
        with running_agent(env, tmp_path / "agent.log", ready=None, stop=False) as agent:
            assert hold.held.wait(20), "no upload reached the gateway"
            assert agent.proc is not None
            signalled = time.monotonic()
            agent.proc.send_signal(signal.SIGTERM)
            try:
                agent.proc.wait(answer_at)
                still_waiting = False
            except subprocess.TimeoutExpired:
                still_waiting = True
            exited = time.monotonic() - signalled
            hold.release.set()  # the answer, if the agent is still there to get it
            code = agent.wait_exit(STOP_WITHIN)
            assert not still_waiting, (
                f"{answer_at}s after SIGTERM with a {drain}s drain, the agent still waited for "
                f"its upload's answer (exit {code} after {time.monotonic() - signalled:.2f}s)"
            )
            assert code == 0, agent.tail()
            assert exited >= drain, f"exit {exited:.2f}s after SIGTERM, before the {drain}s drain"
            print(f"SIGTERM with an upload hanging, {drain}s drain: exit 0 in {exited:.2f}s")
            assert queue_figures(tmp_path / "queue")["pending"] > 0  # the rest spilled, durably
    finally:
        hold.release.set()
    fresh_gateway.after_upstream = None
    with running_agent(env, tmp_path / "agent.log", ready=None):
        took = wait_until_equal(nas, clean_db.dsn, timeout=30)
        print(f"after the restart: table equal to the NAS in {took:.2f}s")


def test_a_second_signal_skips_the_drain(
    tmp_path: Path, clean_db: infra.Database, fresh_gateway: infra.Gateway
) -> None:
    """Ctrl-C, seen to start the 60 s drain (`shutdown_requested`), then Ctrl-C again: the agent
    exits 0 while the gateway still holds its upload's answer, without spilling to the queue;
    the restart sends everything."""
    nas = tmp_path / "nas"
    build_nas(nas, pcs=3, sessions_per_pc=30, seed=SEED + 3)
    env = agent_env(
        nas=nas,
        queue=tmp_path / "queue",
        gateway_url=fresh_gateway.url,
        key=fresh_gateway.key,
        batch_size=10,
        shutdown_timeout=60,
        log_level="INFO",
    )
    hold = AnswerHold()
    fresh_gateway.after_upstream = hold
    try:
        with running_agent(env, tmp_path / "agent.log", ready=None, stop=False) as agent:
            assert hold.held.wait(20), "no upload reached the gateway"
            assert agent.proc is not None
            agent.proc.send_signal(signal.SIGINT)
            agent.wait_event("shutdown_requested", signal="SIGINT", timeout=10)
            assert agent.running, "the first Ctrl-C ended the agent: nothing left to skip"
            agent.proc.send_signal(signal.SIGINT)
            try:
                agent.proc.wait(30)  # half the drain: the answer is still held meanwhile
                still_waiting = False
            except subprocess.TimeoutExpired:
                still_waiting = True
            hold.release.set()
            code = agent.wait_exit(STOP_WITHIN)
            assert not still_waiting, "after a second Ctrl-C the agent still drained"
            assert code == 0, agent.tail()
            events = [e["event"] for e in agent.read_events()]
            assert "shutdown_forced" in events, agent.tail()
    finally:
        hold.release.set()
    fresh_gateway.after_upstream = None
    with running_agent(env, tmp_path / "agent.log", ready=None):
        wait_until_equal(nas, clean_db.dsn, timeout=30)
