"""What heartbeats cost an idle agent on the PostgREST target (issue 25).

    .venv/bin/python bench/heartbeat.py                       # 3 pairs of 60 s windows
    .venv/bin/python bench/heartbeat.py --pairs 5 --window 30 --interval 15 --json out.json

The same tree (10 PCs x 20 sessions), the real PostgREST behind the gateway stand-in
(bench/common.py). The agent runs idle with heartbeats off (GFX_SYNC_VENUE unset), then on
(GFX_SYNC_VENUE set, GFX_SYNC_HEARTBEAT_INTERVAL as given), in turn, `--pairs` times: pairing
keeps the comparison fair when the machine's speed drifts. Each run measures the agent's CPU
(utime + stime of every thread, /proc) over `--window` seconds once it is idle, and counts the
requests at the gateway in that window. Medians are quoted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from common import real_stack
from scale import cpu_seconds, idle

from tests.support.agent import AgentProcess, agent_env
from tests.support.tree import build_nas
from tests.support.waits import wait_for

PCS = 10


def measure(
    env: dict[str, str], log: Path, gateway: Any, window: float, heartbeats: bool
) -> dict[str, float]:
    agent = AgentProcess(env, log).start()
    try:
        if heartbeats:
            agent.wait_event("heartbeats_on", timeout=60)
        wait_for(lambda: idle(agent, PCS), 300, "an idle agent", interval=1.0)
        time.sleep(5)  # past the start's drain, alerts and first heartbeat
        assert agent.proc is not None
        pid = agent.proc.pid
        requests = len(gateway.records)
        before, at = cpu_seconds(pid), time.monotonic()
        time.sleep(window)
        spent, took = cpu_seconds(pid) - before, time.monotonic() - at
        return {
            "cpu_percent_of_one_core": round(100 * spent / took, 4),
            "requests_per_minute": round((len(gateway.records) - requests) * 60 / took, 1),
        }
    finally:
        agent.stop_cleanly()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--interval", type=float, default=15.0, help="heartbeat interval (s)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    with real_stack() as (_db, _server, gateway), tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        build_nas(tmp / "nas", pcs=PCS, sessions_per_pc=20, seed=25)
        base = agent_env(
            nas=tmp / "nas",
            queue=tmp / "queue",
            gateway_url=gateway.url,
            key=gateway.key,
            poll_interval=2.0,
            log_level="INFO",
        )
        with_heartbeats = {
            **base,
            "GFX_SYNC_VENUE": "Bench venue",
            "GFX_SYNC_HEARTBEAT_INTERVAL": str(args.interval),
        }
        for pair in range(args.pairs):
            for mode, env in (("off", base), ("on", with_heartbeats)):
                figures = measure(env, tmp / f"{mode}.log", gateway, args.window, mode == "on")
                runs[mode].append(figures)
                print(f"pair {pair + 1} heartbeats {mode}: {figures}", flush=True)
    result = {
        "window_seconds": args.window,
        "heartbeat_interval": args.interval,
        "runs": runs,
        "median": {
            mode: {
                key: statistics.median(r[key] for r in values)
                for key in ("cpu_percent_of_one_core", "requests_per_minute")
            }
            for mode, values in runs.items()
        },
    }
    print(json.dumps(result["median"], indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
