"""Crash tests: SIGKILL the agent at random moments of a 500-session backfill, including the
window where PostgREST has committed a batch and the agent has not yet seen the answer; then
restart, and the database must equal the NAS exactly. Two agents on one NAS must agree too.

Seeds are fixed (GFXSYNC_CRASH_SEED overrides, for a longer hunt outside CI).
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.support import infra
from tests.support.agent import AgentProcess, agent_env
from tests.support.tree import build_nas, grow
from tests.support.waits import queue_figures, wait_until_equal

pytestmark = pytest.mark.e2e

SEED = int(os.environ.get("GFXSYNC_CRASH_SEED", "20261126"))
ROUNDS = 20
HOLD_EVERY = 4  # every 4th round kills inside the committed-but-not-acknowledged window


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


def test_sigkill_at_random_moments_loses_nothing(
    tmp_path: Path, clean_db: infra.Database, fresh_gateway: infra.Gateway
) -> None:
    rng = random.Random(SEED)
    nas = tmp_path / "nas"
    sessions = build_nas(nas, pcs=10, sessions_per_pc=50, seed=SEED, max_hands=4)
    assert len(sessions) == 500
    env = agent_env(
        nas=nas,
        queue=tmp_path / "queue",
        gateway_url=fresh_gateway.url,
        key=fresh_gateway.key,
        batch_size=25,
        log_level="INFO",
    )
    hold = ResponseHold()
    fresh_gateway.after_upstream = hold
    log_path = tmp_path / "agent.log"
    held_kills = 0
    for round_no in range(ROUNDS):
        agent = AgentProcess(env, log_path).start()
        try:
            if round_no % HOLD_EVERY == HOLD_EVERY - 1:
                hold.arm()
                if hold.held.wait(20):
                    held_kills += 1
            else:
                time.sleep(rng.uniform(0.2, 2.5))
            # PokerGFX keeps writing while the agent dies and restarts
            for path in rng.sample(sorted(sessions), 3):
                grow(path, sessions[path], rng)
        finally:
            if agent.proc is not None:
                agent.proc.send_signal(signal.SIGKILL)
                agent.wait_exit(10)
            hold.armed = False
            hold.release.set()
    assert held_kills >= ROUNDS // HOLD_EVERY - 1, "the commit window was not reached"

    restarted = time.monotonic()
    agent = AgentProcess(env, log_path).start()
    try:
        took = wait_until_equal(nas, clean_db.dsn, timeout=60, since=restarted)
        print(
            f"{ROUNDS} SIGKILLs ({held_kills} inside the commit window): "
            f"table equal to the NAS {took:.2f}s after the last restart"
        )
        assert queue_figures(tmp_path / "queue")["refused"] == 0
        assert queue_figures(tmp_path / "queue")["quarantined"] == 0
        code, seconds = agent.stop()
        assert code == 0 and seconds < 10, agent.tail()
    finally:
        agent.kill()


def test_two_agents_on_one_nas_end_in_the_same_exact_state(
    tmp_path: Path, clean_db: infra.Database, fresh_gateway: infra.Gateway
) -> None:
    rng = random.Random(SEED + 1)
    nas = tmp_path / "nas"
    sessions = build_nas(nas, pcs=4, sessions_per_pc=40, seed=SEED + 1, max_hands=4)
    agents = [
        AgentProcess(
            agent_env(
                nas=nas,
                queue=tmp_path / f"queue-{name}",
                gateway_url=fresh_gateway.url,
                key=fresh_gateway.key,
                batch_size=20,
                log_level="INFO",
            ),
            tmp_path / f"agent-{name}.log",
        ).start()
        for name in ("a", "b")
    ]
    try:
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:  # the crew keeps playing while both agents sync
            for path in rng.sample(sorted(sessions), 4):
                grow(path, sessions[path], rng)
            time.sleep(0.3)
        took = wait_until_equal(nas, clean_db.dsn, timeout=60)
        print(f"two agents: table equal to the NAS {took:.2f}s after the last write")
        for agent in agents:
            code, seconds = agent.stop()
            assert code == 0 and seconds < 10, agent.tail()
    finally:
        for agent in agents:
            agent.kill()


def test_sigterm_with_an_upload_hanging_exits_0_within_10s_and_loses_nothing(
    tmp_path: Path, clean_db: infra.Database, fresh_gateway: infra.Gateway
) -> None:
    nas = tmp_path / "nas"
    build_nas(nas, pcs=3, sessions_per_pc=30, seed=SEED + 2)
    env = agent_env(
        nas=nas,
        queue=tmp_path / "queue",
        gateway_url=fresh_gateway.url,
        key=fresh_gateway.key,
        batch_size=10,
        log_level="INFO",
    )
    hold = ResponseHold()
    fresh_gateway.after_upstream = hold
    hold.arm()
    agent = AgentProcess(env, tmp_path / "agent.log").start()
    try:
        assert hold.held.wait(20), "no upload reached the gateway"
        code, seconds = agent.stop()  # the upload in flight never gets its answer
        print(f"SIGTERM with an upload hanging: exit {code} in {seconds:.2f}s")
        assert code == 0 and seconds < 10, agent.tail()
        assert queue_figures(tmp_path / "queue")["pending"] > 0  # the rest was spilled, durably
    finally:
        hold.release.set()
        agent.kill()
    agent = AgentProcess(env, tmp_path / "agent.log").start()
    try:
        took = wait_until_equal(nas, clean_db.dsn, timeout=30)
        print(f"after the restart: table equal to the NAS in {took:.2f}s")
        assert agent.stop()[0] == 0
    finally:
        agent.kill()
