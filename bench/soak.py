"""Soak: the agent against the real stack for --minutes while PokerGFX keeps writing and the
world misbehaves (blackouts, 429 bursts with Retry-After, slow answers, SIGKILL + restart).
At the end the table must equal the NAS and the dead letter must be empty. Not run in CI.

    .venv/bin/python bench/soak.py --minutes 10 [--seed 1] [--pcs 10] [--sessions 300]

With --simulate, the project's simulator plays instead (`trio-gfxsync simulate --pcs N
--hand-seconds S`: a hand every 0.7-1.3 x S per PC) into an empty NAS, with nothing wrong
upstream, at the agent's default settings: it counts the `health_changed` lines to anything
but healthy (there should be none) and the largest `sync_lag_seconds` /api/status showed
(sampled every second), then checks the table equals the NAS. An older checkout of the agent
runs with PYTHONPATH=/path/to/checkout (the agent subprocess inherits it).

    .venv/bin/python bench/soak.py --simulate --minutes 20 --pcs 10 --hand-seconds 1.5
"""

from __future__ import annotations

import argparse
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson
from common import infra, real_stack

from tests.support.agent import AgentProcess, agent_env
from tests.support.tree import build_nas, grow, make_session, write_session
from tests.support.waits import queue_figures, wait_for, wait_until_equal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pcs", type=int, default=10)
    parser.add_argument("--sessions", type=int, default=300)
    parser.add_argument("--simulate", action="store_true", help="the simulator plays, no faults")
    parser.add_argument("--hand-seconds", type=float, default=1.5, help="with --simulate")
    args = parser.parse_args()
    if args.simulate:
        simulated(args)
        return
    rng = random.Random(args.seed)
    counts = {"rewrites": 0, "new": 0, "blackouts": 0, "429": 0, "slow": 0, "kills": 0}
    with real_stack() as (db, _, gateway), tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        nas = tmp / "nas"
        sessions = build_nas(
            nas, pcs=args.pcs, sessions_per_pc=args.sessions // args.pcs, seed=args.seed
        )
        env = agent_env(
            nas=nas,
            queue=tmp / "queue",
            gateway_url=gateway.url,
            key=gateway.key,
            poll_interval=2.0,
            log_level="INFO",
        )
        log = tmp / "agent.log"
        agent = AgentProcess(env, log).start()
        deadline = time.monotonic() + args.minutes * 60
        fault_until = 0.0
        try:
            while time.monotonic() < deadline:
                time.sleep(rng.uniform(0.05, 0.5))
                for path in rng.sample(sorted(sessions), rng.randint(1, 5)):
                    grow(path, sessions[path], rng)
                    counts["rewrites"] += 1
                if rng.random() < 0.02:
                    new = make_session(10_000 + counts["new"], 1, rng)
                    path = nas / f"PC{rng.randint(1, args.pcs):02d}" / "1022" / new.file_name
                    write_session(path, new)
                    sessions[path] = new
                    counts["new"] += 1
                now = time.monotonic()
                if now > fault_until:
                    gateway.blackout = False
                    gateway.fault = None
                    choice = rng.random()
                    if choice < 0.01:
                        gateway.blackout = True
                        fault_until = now + rng.uniform(5, 40)
                        counts["blackouts"] += 1
                    elif choice < 0.02:
                        body = orjson.dumps({"message": "rate limited"})
                        gateway.fault = lambda request, b=body: (
                            (429, {"retry-after": "2"}, b) if request.method == "POST" else None
                        )
                        fault_until = now + rng.uniform(3, 10)
                        counts["429"] += 1
                    elif choice < 0.03:
                        gateway.fault = lambda request: time.sleep(rng.uniform(0.5, 3))
                        fault_until = now + rng.uniform(3, 10)
                        counts["slow"] += 1
                    elif choice < 0.04:
                        agent.proc.send_signal(signal.SIGKILL)
                        agent.wait_exit(10)
                        agent = AgentProcess(env, log).start()
                        counts["kills"] += 1
            gateway.blackout = False
            gateway.fault = None
            settled = time.monotonic()
            took = wait_until_equal(nas, db.dsn, timeout=120, since=settled)
            figures = queue_figures(tmp / "queue")
            seconds = agent.stop_cleanly()  # exit 0 within 10 s, or the soak fails
        finally:
            gateway.blackout = False
            gateway.fault = None
            agent.kill()
        rows = infra.query(db.dsn, "select count(*) as n from gfx_sessions")[0]["n"]
    print(f"soak {args.minutes} min, seed {args.seed}: {counts}")
    print(
        f"table equal to the NAS ({rows} sessions) {took:.2f}s after the faults stopped; "
        f"queue {figures}; SIGTERM -> exit 0 in {seconds:.2f}s"
    )
    if figures["refused"] or figures["pending"]:
        raise SystemExit(f"soak failed: records left behind: {figures}")


def simulated(args: argparse.Namespace) -> None:
    """The simulator at a hand every --hand-seconds per PC for --minutes: /health must stay
    healthy throughout (issue 28: it flapped to degraded on a busy file's rewrites)."""
    seconds = args.minutes * 60
    with real_stack() as (db, _, gateway), tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        nas = tmp / "nas"
        nas.mkdir()
        env = agent_env(
            nas=nas, queue=tmp / "queue", gateway_url=gateway.url, key=gateway.key, log_level="INFO"
        )
        env.pop("GFX_SYNC_POLL_INTERVAL")  # the agent's defaults throughout
        agent = AgentProcess(env, tmp / "agent.log").start()
        simulator = None
        try:
            wait_for(lambda: status(agent, "/health")["status"] == "healthy", 60, "healthy")
            since = len(agent.read_events())
            play = ["--pcs", str(args.pcs), "--hand-seconds", str(args.hand_seconds)]
            play += ["--seed", str(args.seed), "--duration", str(seconds), "--nas", str(nas)]
            simulator = subprocess.Popen(
                [sys.executable, "-m", "trio_gfxsync", "simulate", *play],
                stdout=subprocess.DEVNULL,
            )
            largest = 0.0
            while simulator.poll() is None:
                time.sleep(1.0)
                pcs = status(agent, "/api/status")["pcs"]
                largest = max([largest, *(pc["sync_lag_seconds"] for pc in pcs)])
            took = wait_until_equal(nas, db.dsn, timeout=120)
            changes = [e for e in agent.read_events()[since:] if e.get("event") == "health_changed"]
            agent.stop_cleanly()
        finally:
            if simulator is not None and simulator.poll() is None:
                simulator.kill()
            agent.kill()
        hands = infra.query(db.dsn, "select count(*) as n, sum(hand_count) as h from gfx_sessions")
    left = [c for c in changes if c["status"] != "healthy"]
    print(
        f"simulate {args.minutes} min, {args.pcs} PCs, a hand every {0.7 * args.hand_seconds:.2f}"
        f"-{1.3 * args.hand_seconds:.2f} s each: {hands[0]['n']} sessions, {hands[0]['h']} hands"
    )
    print(f"health_changed away from healthy: {len(left)}; largest sync_lag_seconds {largest}")
    for change in left[:5]:
        print(f"  {change['status']}: {change['reasons']}")
    print(f"table equal to the NAS {took:.2f}s after the simulator stopped")


def status(agent: AgentProcess, path: str) -> dict:
    return httpx.get(f"{agent.url}{path}", timeout=5).json()


if __name__ == "__main__":
    main()
