"""Backfill throughput: N sessions across 10 PC folders, from agent start to table == NAS.

Baseline beside it: the same rows upserted straight to the same gateway by a bare loop (parse,
batch of 500 / 4 MiB, POST), i.e. the cost of PostgREST and PostgreSQL alone. The ratio says
what the agent adds (scan, SQLite ledger, process start). Medians of --repeat runs.

    .venv/bin/python bench/backfill.py [--sessions 2000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from common import infra, real_stack, summary

from tests.support.agent import agent_env, running_agent
from tests.support.tree import build_nas
from tests.support.waits import wait_for, wait_until_equal
from trio_gfxsync.delivery.batching import BatchBuffer
from trio_gfxsync.pokergfx import parse_session
from trio_gfxsync.targets.postgrest import UPSERT_PARAMS, UPSERT_PREFER


def baseline(nas: Path, gateway: infra.Gateway) -> float:
    started = time.monotonic()
    buffer = BatchBuffer(batch_size=500, max_batch_bytes=4 * 2**20, linger=0, flush_interval=1)
    with httpx.Client(base_url=f"{gateway.url}/rest/v1", headers={"apikey": gateway.key}) as client:

        def send() -> None:
            while len(buffer):
                body = buffer.take().body
                response = client.post(
                    "/gfx_sessions",
                    content=body,
                    params=UPSERT_PARAMS,
                    headers={"Prefer": UPSERT_PREFER, "Content-Type": "application/json"},
                )
                response.raise_for_status()

        for pc in sorted(nas.iterdir()):
            for path in sorted(pc.rglob("*.json")):
                stat = path.stat()
                buffer.add(
                    parse_session(
                        path.read_bytes(),
                        pc_id=pc.name,
                        rel_path=path.relative_to(pc).as_posix(),
                        mtime_ns=stat.st_mtime_ns,
                        max_file_bytes=2**26,
                    ),
                    0.0,
                )
                if buffer.full:
                    send()
        send()
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    agent_times, base_times = [], []
    n = args.sessions
    with real_stack() as (db, _, gateway), tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        nas = tmp / "nas"
        build_nas(nas, pcs=10, sessions_per_pc=args.sessions // 10, seed=2, max_hands=8)
        size = sum(p.stat().st_size for p in nas.rglob("*.json"))
        for run in range(args.repeat):
            infra.truncate_tables(db.dsn)
            base_times.append(baseline(nas, gateway))
            infra.truncate_tables(db.dsn)
            env = agent_env(
                nas=nas,
                queue=tmp / f"queue-{run}",
                gateway_url=gateway.url,
                key=gateway.key,
                log_level="WARNING",
            )
            started = time.monotonic()
            with running_agent(env, tmp / "agent.log", ready=None):
                # a cheap count while waiting (the full comparison reads every file and row)
                wait_for(
                    lambda: (
                        infra.query(db.dsn, "select count(*) as n from gfx_sessions")[0]["n"] >= n
                    ),
                    600,
                    f"{n} rows",
                    interval=0.02,
                )
                agent_times.append(wait_until_equal(nas, db.dsn, timeout=600, since=started))
    print(f"{n} sessions, {size / 2**20:.1f} MiB in 10 PC folders")
    print(f"agent    (start -> table == NAS): {summary(agent_times)}")
    print(f"baseline (bare parse + upsert):   {summary(base_times)}")
    med_agent, med_base = statistics.median(agent_times), statistics.median(base_times)
    print(
        f"agent {n / med_agent:.0f} sessions/s, baseline {n / med_base:.0f} sessions/s; "
        f"agent/baseline time ratio {med_agent / med_base:.2f}"
    )


if __name__ == "__main__":
    main()
