"""Live latency: a PokerGFX file rewritten with one more hand -> its row updated in the table.

Target (issue 2): poll_interval + 1 s. Runs the agent as a subprocess with the default
poll_interval (2.0 s) against the real stack, rewrites one session file N times at random
moments within the poll cycle, and prints the median, with the ratio to the target beside it.

    .venv/bin/python bench/latency.py [--runs 9] [--poll-interval 2.0]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

from common import infra, real_stack, summary

from tests.support.agent import agent_env, running_agent
from tests.support.tree import build_nas, grow
from tests.support.waits import wait_for, wait_until_equal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--poll-interval", type=float, default=2.0)
    args = parser.parse_args()
    rng = random.Random(1)
    with real_stack() as (db, _, gateway), tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        nas = tmp / "nas"
        sessions = build_nas(nas, pcs=4, sessions_per_pc=25, seed=1, max_hands=20)
        env = agent_env(
            nas=nas,
            queue=tmp / "queue",
            gateway_url=gateway.url,
            key=gateway.key,
            poll_interval=args.poll_interval,
            log_level="WARNING",
        )
        with running_agent(env, tmp / "agent.log"):
            wait_until_equal(nas, db.dsn, timeout=120)
            latencies = []
            for _ in range(args.runs):
                time.sleep(rng.uniform(0, args.poll_interval))  # land anywhere in the poll cycle
                path = rng.choice(sorted(sessions))
                session = sessions[path]
                grow(path, session, rng)
                written = time.monotonic()

                def stored(sid: int = session.session_id, hands: int = len(session.hands)) -> bool:
                    rows = infra.query(
                        db.dsn, "select hand_count from gfx_sessions where session_id = %s", (sid,)
                    )
                    return bool(rows) and rows[0]["hand_count"] == hands

                wait_for(stored, 60, "the rewritten session's row", interval=0.01)
                latencies.append(time.monotonic() - written)
    target = args.poll_interval + 1.0
    print(f"rewrite -> row updated, poll_interval {args.poll_interval}s: {summary(latencies)}")
    print(
        f"target poll_interval + 1 s = {target:.1f}s; median/target = "
        f"{statistics.median(latencies) / target:.2f}; worst/target = {max(latencies) / target:.2f}"
    )


if __name__ == "__main__":
    main()
