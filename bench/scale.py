"""The scale benchmark: every figure of "fast at scale", each beside its baseline, one command.

    .venv/bin/python bench/scale.py                  # the full run (about half an hour)
    .venv/bin/python bench/scale.py --quick          # a smaller smoke run (a few minutes)
    .venv/bin/python bench/scale.py --only idle,restart --json artifacts/bench.json

It builds its trees with the simulator, starts a throwaway PostgreSQL database, the real
PostgREST and the gateway stand-in (tests/support/infra.py), runs the agent as a subprocess and
measures it from outside (/proc, the database, the gateway's request records):

  backfill    10 PCs x 10,000 one-hand sessions (about 100 day folders per PC): agent start to
              every session in the table; the backfill's log lines
  idle        the agent's CPU over 60 s (x3, /proc/<pid>/stat), per poll; watchdog's
              DirectorySnapshot of the same tree (x3) in the same run; the ratio
  latency     the active session of a PC rewritten -> row updated; a new file in an existing
              day folder and in a new one -> row stored (p50, p95); an archived file rewritten
              -> row updated, against full_sweep_interval
  memory      peak RSS (VmHWM) with 10,000 sessions in the offline queue (upstream blacked out)
  restart     start -> every PC scanned and idle (x3); upserts counted at the gateway
  throughput  2,000 sessions in the real samples' shape (1-200 hands) into PostgREST: agent
              start -> table equal to the NAS (x3), against a bare client posting the same
              records with batches of 100, 500 and 1,000, with and without `columns=`

It prints a table and writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from common import REPO, infra, real_stack

from tests.support.agent import AgentProcess, agent_env
from tests.support.waits import queue_figures, wait_for
from trio_gfxsync.pokergfx import parse_session
from trio_gfxsync.settings import Settings
from trio_gfxsync.simulator.exports import new_session, to_bytes
from trio_gfxsync.simulator.virtual_pc import write_archive, write_file
from trio_gfxsync.targets.postgrest import UPSERT_PARAMS, UPSERT_PREFER

CLK_TCK = os.sysconf("SC_CLK_TCK")
START = datetime(2025, 1, 6, 10, 0, tzinfo=UTC)
Figures = dict[str, Any]


def ensure_watchdog() -> None:
    if importlib.util.find_spec("watchdog") is None:
        print("installing watchdog for the benchmark (the bench extra)", flush=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "-c",
                "constraints.txt",
                "watchdog",
            ],
            check=True,
            cwd=REPO,
        )


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of the process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def rows_in_table(dsn: str) -> int:
    return int(infra.query(dsn, "select count(*) as n from gfx_sessions")[0]["n"])


def hands_of(dsn: str, pc: str, session_id: int) -> int | None:
    rows = infra.query(
        dsn,
        "select hand_count from gfx_sessions where gfx_pc_id = %s and session_id = %s",
        (pc, session_id),
    )
    return rows[0]["hand_count"] if rows else None


def status_of(agent: AgentProcess) -> dict[str, Any]:
    return dict(httpx.get(f"{agent.url}/api/status", timeout=10).json())


def idle(agent: AgentProcess, pcs: int) -> bool:
    doc = status_of(agent)
    return (
        len(doc["pcs"]) == pcs
        and all(pc["state"] == "running" and pc["backlog"] == 0 for pc in doc["pcs"])
        and doc["queue"]["batch_pending"] == 0
        and doc["queue"]["pending"] == 0
    )


def add_hand(path: Path) -> int:
    """A hand ends: the whole file rewritten in place with one more hand (its HandNum next)."""
    document = json.loads(path.read_bytes())
    hand = dict(document["Hands"][-1])
    hand["HandNum"] = hand["HandNum"] + 1
    document["Hands"].append(hand)
    write_file(path, to_bytes(document))
    return len(document["Hands"])


def timed(what: str, deadline: float, check: Callable[[], bool], interval: float = 0.02) -> float:
    started = time.monotonic()
    wait_for(check, deadline, what, interval=interval)
    return time.monotonic() - started


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.quick = args.quick
        self.figures: Figures = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {"cores": os.cpu_count(), "python": sys.version.split()[0]},
            "quick": self.quick,
        }
        self.rng = random.Random(8)
        self.pcs = 10
        self.per_pc = 1_000 if self.quick else 10_000
        self.poll = 2.0
        self.sweep = 30.0 if self.quick else None  # None: the agent's default

    def wanted(self, part: str) -> bool:
        return not self.args.only or part in self.args.only

    def run(self) -> Figures:
        with real_stack() as (db, server, gateway), tempfile.TemporaryDirectory() as folder:
            tmp = Path(folder)
            if any(self.wanted(p) for p in ("backfill", "idle", "latency", "memory", "restart")):
                self.scale(tmp, db, gateway)
            if self.wanted("throughput"):
                self.throughput(tmp, db, server)
        return self.figures

    # -- the 10^5-file tree --

    def scale(self, tmp: Path, db: infra.Database, gateway: infra.Gateway) -> None:
        nas = tmp / "nas"
        began = time.monotonic()
        paths = write_archive(
            nas,
            pcs=self.pcs,
            sessions=self.pcs * self.per_pc,
            seed=1,
            start=START,
            hands=(1, 1),
            gap_seconds=(300, 1200),
        )
        folders = sum(1 for p in nas.glob("*/*") if p.is_dir())
        self.figures["tree"] = {
            "files": len(paths),
            "pcs": self.pcs,
            "day_folders": folders,
            "bytes": sum(p.stat().st_size for p in paths),
            "build_seconds": round(time.monotonic() - began, 1),
        }
        print(f"tree: {len(paths)} files, {folders} day folders", flush=True)
        newest = {p.parts[-3]: p for p in paths}  # the archive writes oldest first
        extra = {} if self.sweep is None else {"full_sweep_interval": self.sweep}
        env = agent_env(
            nas=nas,
            queue=tmp / "queue",
            gateway_url=gateway.url,
            key=gateway.key,
            poll_interval=self.poll,
            log_level="INFO",
            max_queue_size=50_000,
            **extra,
        )
        log = tmp / "agent.log"
        agent = AgentProcess(env, log).start()
        started = time.monotonic()
        try:
            total = len(paths)
            took = timed("the backfill", 3600, lambda: rows_in_table(db.dsn) >= total, 1.0)
            events = agent.read_events()
            self.figures["backfill"] = {
                "sessions": total,
                "seconds": round(time.monotonic() - started, 1),
                "sessions_per_second": round(total / (time.monotonic() - started), 1),
                "file_created_lines": sum(e.get("event") == "file_created" for e in events),
                "backfill_progress_lines": sum(
                    e.get("event") == "backfill_progress" for e in events
                ),
            }
            print(f"backfill: {total} sessions in {took:.1f}s", flush=True)
            wait_for(lambda: idle(agent, self.pcs), 600, "an idle agent", interval=1.0)
            done = [e for e in agent.read_events() if e.get("event") == "backfill_done"]
            self.figures["backfill"]["backfill_done"] = done[0] if done else None
            if self.wanted("idle"):
                self.idle(agent, nas)
            if self.wanted("latency"):
                self.latency(agent, nas, db, paths, newest)
            if self.wanted("memory"):
                self.memory(agent, nas, db, gateway, tmp)
            if self.wanted("restart"):
                agent = self.restart(agent, env, log, gateway)
            agent.stop_cleanly()
        finally:
            gateway.blackout = False
            agent.kill()

    def idle(self, agent: AgentProcess, nas: Path) -> None:
        assert agent.proc is not None
        pid = agent.proc.pid
        time.sleep(5)  # past the last queue drain and alerts
        window = 20.0 if self.quick else 60.0
        runs = []
        for _ in range(3):
            before, at = cpu_seconds(pid), time.monotonic()
            time.sleep(window)
            runs.append((cpu_seconds(pid) - before) / (time.monotonic() - at))
        share = statistics.median(runs)
        per_poll = share * self.poll
        ensure_watchdog()
        from watchdog.utils.dirsnapshot import DirectorySnapshot

        passes = []
        for _ in range(3):
            before = time.process_time()
            DirectorySnapshot(str(nas), recursive=True)
            passes.append(time.process_time() - before)
        watchdog_pass = statistics.median(passes)
        self.figures["idle"] = {
            "window_seconds": window,
            "cpu_share_runs": [round(r, 5) for r in runs],
            "cpu_percent_of_one_core": round(100 * share, 3),
            "cpu_ms_per_poll": round(1000 * per_poll, 2),
            "watchdog_snapshot_cpu_ms_runs": [round(1000 * p, 1) for p in passes],
            "watchdog_snapshot_cpu_ms": round(1000 * watchdog_pass, 1),
            "watchdog_over_agent_per_poll": round(watchdog_pass / per_poll, 1)
            if per_poll
            else None,
        }
        print(f"idle: {self.figures['idle']}", flush=True)

    def latency(
        self,
        agent: AgentProcess,
        nas: Path,
        db: infra.Database,
        paths: list[Path],
        newest: dict[str, Path],
    ) -> None:
        rng = self.rng
        n = 6 if self.quick else 20
        active = []
        for _ in range(n):
            time.sleep(rng.uniform(0, self.poll))  # anywhere in the poll cycle
            pc = rng.choice(sorted(newest))
            path = newest[pc]
            session_id = json.loads(path.read_bytes())["ID"]
            hands = add_hand(path)
            active.append(
                timed(
                    "the rewrite",
                    60,
                    lambda pc=pc, sid=session_id, n=hands: hands_of(db.dsn, pc, sid) == n,
                )
            )
        fresh: dict[str, list[float]] = {"existing_folder": [], "new_folder": []}
        for i in range(n):
            for kind in fresh:
                time.sleep(rng.uniform(0, self.poll))
                pc = rng.choice(sorted(newest))
                session = new_session(rng, datetime.now(UTC))
                session.hand()
                folder = newest[pc].parent if kind == "existing_folder" else nas / pc / f"n{i}"
                path = folder / f"PGFX_live_data_export GameID={session.session_id}.json"
                write_file(path, session.to_bytes())
                newest[pc] = path
                sid = session.session_id
                fresh[kind].append(
                    timed("the new file", 60, lambda pc=pc, sid=sid: hands_of(db.dsn, pc, sid) == 1)
                )
        # archived files, far from the newest: only the sweep finds their rewrites
        # the agent's default (what the CPU figures hold at), unless --quick shortened it
        sweep = self.sweep or float(Settings.model_fields["full_sweep_interval"].default)
        old = rng.sample(paths[: len(paths) // 2], 3 if self.quick else 5)
        expected = {}
        for path in old:
            expected[path] = (path.parts[-3], json.loads(path.read_bytes())["ID"], add_hand(path))
        written = time.monotonic()
        archived = {}
        deadline = written + sweep + 60
        while expected and time.monotonic() < deadline:
            for path, (pc, sid, hands) in list(expected.items()):
                if hands_of(db.dsn, pc, sid) == hands:
                    archived[str(path)] = time.monotonic() - written
                    del expected[path]
            time.sleep(0.5)
        self.figures["latency"] = {
            "active_rewrite": _spread(active),
            "new_file_existing_folder": _spread(fresh["existing_folder"]),
            "new_file_new_folder": _spread(fresh["new_folder"]),
            "archived_rewrite_seconds": sorted(round(v, 1) for v in archived.values()),
            "archived_missed": len(expected),
            "full_sweep_interval": sweep,
            "poll_interval": self.poll,
        }
        print(f"latency: {self.figures['latency']}", flush=True)

    def memory(
        self,
        agent: AgentProcess,
        nas: Path,
        db: infra.Database,
        gateway: infra.Gateway,
        tmp: Path,
    ) -> None:
        assert agent.proc is not None
        queued = 1_000 if self.quick else 10_000
        before = rows_in_table(db.dsn)
        gateway.blackout = True
        write_archive(
            nas,
            pcs=self.pcs,
            sessions=queued,
            seed=2,
            start=datetime(2026, 3, 2, tzinfo=UTC),
            hands=(1, 1),
            gap_seconds=(300, 1200),
        )
        wait_for(
            lambda: queue_figures(tmp / "queue")["pending"] >= queued,
            1800,
            f"{queued} sessions in the offline queue",
            interval=1.0,
        )
        pid = agent.proc.pid
        figures = {
            "files_watched": before + queued,
            "sessions_queued": queue_figures(tmp / "queue")["pending"],
            "peak_rss_mib": round(memory_kib(pid, "VmHWM") / 1024, 1),
            "rss_now_mib": round(memory_kib(pid, "VmRSS") / 1024, 1),
        }
        gateway.blackout = False
        began = time.monotonic()
        wait_for(lambda: rows_in_table(db.dsn) >= before + queued, 1800, "the drain", 1.0)
        figures["drain_seconds"] = round(time.monotonic() - began, 1)
        wait_for(lambda: idle(agent, self.pcs), 600, "an idle agent", interval=1.0)
        figures["peak_rss_after_drain_mib"] = round(memory_kib(pid, "VmHWM") / 1024, 1)
        self.figures["memory"] = figures
        print(f"memory: {figures}", flush=True)

    def restart(
        self, agent: AgentProcess, env: dict[str, str], log: Path, gateway: infra.Gateway
    ) -> AgentProcess:
        times, upserts = [], []
        for _ in range(3):
            agent.stop_cleanly()
            gateway.reset()
            began = time.monotonic()
            agent = AgentProcess(env, log).start()
            agent.wait_event("http_listening", timeout=60)
            wait_for(lambda a=agent: idle(a, self.pcs), 600, "every PC scanned", interval=0.1)
            times.append(time.monotonic() - began)
            time.sleep(3)  # a few more polls: anything re-sent would show at the gateway
            upserts.append(gateway.count("POST", "/gfx_sessions"))
        self.figures["restart"] = {
            "seconds_runs": [round(t, 2) for t in times],
            "seconds_median": round(statistics.median(times), 2),
            "upserts_after_restart": upserts,
        }
        print(f"restart: {self.figures['restart']}", flush=True)
        return agent

    # -- throughput against a bare client --

    def throughput(self, tmp: Path, db: infra.Database, server: infra.PostgrestServer) -> None:
        nas = tmp / "nas-real-shape"
        sessions = 200 if self.quick else 2_000
        paths = write_archive(nas, pcs=10, sessions=sessions, seed=3, start=START)
        size = sum(p.stat().st_size for p in paths)
        expected = {}
        for path in paths:
            document = json.loads(path.read_bytes())
            expected[(path.parts[-3], document["ID"])] = path
        key = server.service_role_jwt()
        baseline: dict[str, float] = {}
        for batch in (100, 500, 1000):
            for columns in (True, False):
                infra.truncate_tables(db.dsn)
                name = f"batch {batch}{' columns=' if columns else ''}"
                baseline[name] = bare_client(server.url, key, nas, batch, columns)
                assert rows_in_table(db.dsn) == sessions
                print(f"baseline {name}: {baseline[name]:.2f}s", flush=True)
        best_name = min(baseline, key=baseline.__getitem__)
        best = [baseline[best_name]]
        batch, columns = best_name.split()[1], best_name.endswith("columns=")
        for _ in range(2):  # the best configuration again, for a median of three
            infra.truncate_tables(db.dsn)
            best.append(bare_client(server.url, key, nas, int(batch), columns))
        agent_times = []
        for run in range(3):
            infra.truncate_tables(db.dsn)
            env = agent_env(
                nas=nas,
                queue=tmp / f"queue-throughput-{run}",
                gateway_url=server.url,
                key=key,
                rest_path="",
                log_level="WARNING",
            )
            began = time.monotonic()
            agent = AgentProcess(env, tmp / "throughput.log").start()
            try:
                wait_for(lambda: rows_in_table(db.dsn) >= sessions, 1800, "every row", 0.05)
                agent_times.append(time.monotonic() - began)
                stored = {
                    (r["gfx_pc_id"], r["session_id"]): r["file_hash"]
                    for r in infra.query(
                        db.dsn, "select gfx_pc_id, session_id, file_hash from gfx_sessions"
                    )
                }
                assert set(stored) == set(expected)
                agent.stop_cleanly()
            finally:
                agent.kill()
            print(f"agent run {run}: {agent_times[-1]:.2f}s", flush=True)
        agent_median, base_median = statistics.median(agent_times), statistics.median(best)
        self.figures["throughput"] = {
            "sessions": sessions,
            "mib": round(size / 2**20, 1),
            "baseline_seconds": {k: round(v, 2) for k, v in baseline.items()},
            "baseline_best": best_name,
            "baseline_best_runs": [round(v, 2) for v in best],
            "agent_runs": [round(v, 2) for v in agent_times],
            "agent_sessions_per_second": round(sessions / agent_median, 1),
            "baseline_sessions_per_second": round(sessions / base_median, 1),
            "agent_over_baseline_throughput": round(base_median / agent_median, 2),
        }
        print(f"throughput: {self.figures['throughput']}", flush=True)


def bare_client(url: str, key: str, nas: Path, batch: int, columns: bool) -> float:
    """Read, parse and upsert every file in order, `batch` rows a request: PostgREST alone."""
    params = dict(UPSERT_PARAMS)
    if not columns:
        params.pop("columns")
    headers = {
        "apikey": key,
        "Authorization": f"Bearer {key}",
        "Content-Type": "application/json",
        "Prefer": UPSERT_PREFER,
    }
    began = time.monotonic()
    with httpx.Client(base_url=url, headers=headers, timeout=600) as client:
        rows: list[bytes] = []

        def send() -> None:
            if rows:
                response = client.post("/gfx_sessions", content=b"[" + b",".join(rows) + b"]")
                response.raise_for_status()
                rows.clear()

        for pc in sorted(nas.iterdir()):
            for path in sorted(pc.rglob("*.json")):
                record = parse_session(
                    path.read_bytes(),
                    pc_id=pc.name,
                    rel_path=path.relative_to(pc).as_posix(),
                    mtime_ns=path.stat().st_mtime_ns,
                    max_file_bytes=2**27,
                )
                rows.append(record.row)
                if len(rows) >= batch:
                    send()
        send()
    return time.monotonic() - began


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": round(statistics.median(values), 3),
        "p95": round(percentile(values, 0.95), 3),
        "max": round(max(values), 3),
    }


def print_table(f: Figures) -> None:
    lines = [f"scale benchmark {f['date']} ({f['machine']['cores']} cores)"]
    if "backfill" in f:
        b = f["backfill"]
        lines.append(
            f"backfill     {b['sessions']} sessions in {b['seconds']}s "
            f"({b['sessions_per_second']}/s); file_created lines {b['file_created_lines']}, "
            f"backfill_progress lines {b['backfill_progress_lines']}"
        )
    if "idle" in f:
        i = f["idle"]
        lines.append(
            f"idle         {i['cpu_percent_of_one_core']}% of a core, {i['cpu_ms_per_poll']} ms "
            f"CPU per poll; watchdog snapshot {i['watchdog_snapshot_cpu_ms']} ms; ratio "
            f"{i['watchdog_over_agent_per_poll']}x"
        )
    if "latency" in f:
        lat = f["latency"]
        for name in ("active_rewrite", "new_file_existing_folder", "new_file_new_folder"):
            s = lat[name]
            lines.append(f"latency      {name}: p50 {s['p50']}s p95 {s['p95']}s max {s['max']}s")
        lines.append(
            f"latency      archived rewrite: {lat['archived_rewrite_seconds']} s "
            f"(sweep {lat['full_sweep_interval']} s, missed {lat['archived_missed']})"
        )
    if "memory" in f:
        m = f["memory"]
        lines.append(
            f"memory       peak RSS {m['peak_rss_mib']} MiB watching {m['files_watched']} files "
            f"with {m['sessions_queued']} queued; drained in {m['drain_seconds']}s"
        )
    if "restart" in f:
        r = f["restart"]
        lines.append(
            f"restart      to idle {r['seconds_runs']} s (median {r['seconds_median']}); "
            f"upserts {r['upserts_after_restart']}"
        )
    if "throughput" in f:
        t = f["throughput"]
        lines.append(
            f"throughput   {t['sessions']} sessions ({t['mib']} MiB): agent "
            f"{t['agent_sessions_per_second']}/s {t['agent_runs']}, best bare client "
            f"({t['baseline_best']}) {t['baseline_sessions_per_second']}/s; "
            f"ratio {t['agent_over_baseline_throughput']}"
        )
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller trees, shorter windows")
    parser.add_argument(
        "--only",
        type=lambda text: set(text.split(",")),
        default=set(),
        help="comma-separated: backfill, idle, latency, memory, restart, throughput",
    )
    parser.add_argument("--json", type=Path, default=REPO / "artifacts" / "bench-scale.json")
    args = parser.parse_args()
    figures = Bench(args).run()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=2))
    print_table(figures)
    print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
