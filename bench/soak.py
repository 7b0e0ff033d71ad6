"""Soak: the agent against the real stack for --minutes while PokerGFX keeps writing and the
world misbehaves (blackouts, 429 bursts with Retry-After, slow answers, SIGKILL + restart).
At the end the table must equal the NAS and the dead letter must be empty. Not run in CI.

    .venv/bin/python bench/soak.py --minutes 10 [--seed 1] [--pcs 10] [--sessions 300]
"""

from __future__ import annotations

import argparse
import random
import signal
import tempfile
import time
from pathlib import Path

import orjson
from common import infra, real_stack

from tests.support.agent import AgentProcess, agent_env
from tests.support.tree import build_nas, grow, make_session, write_session
from tests.support.waits import queue_figures, wait_until_equal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pcs", type=int, default=10)
    parser.add_argument("--sessions", type=int, default=300)
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
