"""Shared steps of the subprocess tests: wait for the table to equal the NAS, read the queue."""

from __future__ import annotations

import queue
import re
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

from tests.support.truth import mismatches


def wait_until_equal(
    nas: Path, dsn: str | Path, timeout: float, *, since: float | None = None
) -> float:
    """Poll until the table equals the NAS; return the seconds it took (from `since`)."""
    started = since if since is not None else time.monotonic()
    deadline = time.monotonic() + timeout
    while True:
        problems = mismatches(nas, dsn)
        if not problems:
            return time.monotonic() - started
        if time.monotonic() > deadline:
            raise AssertionError(
                f"table differs from the NAS after {timeout}s ({len(problems)} problems):\n"
                + "\n".join(problems[:15])
            )
        time.sleep(0.25)


def queue_figures(queue_dir: Path) -> dict[str, int]:
    """Read the agent's SQLite (read-only, beside the running agent)."""
    path = queue_dir / "pending.db"
    if not path.exists():
        return {"pending": 0, "refused": 0, "quarantined": 0, "files": 0}
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        if conn.execute("PRAGMA user_version").fetchone()[0] < 2:
            return {"pending": 0, "refused": 0, "quarantined": 0, "files": 0}  # still migrating
        pending = conn.execute("SELECT count(*) FROM pending_sync").fetchone()[0]
        refused = conn.execute("SELECT count(*) FROM dead_letter WHERE kind='refused'").fetchone()[
            0
        ]
        quarantined = conn.execute(
            "SELECT count(*) FROM dead_letter WHERE kind='quarantine'"
        ).fetchone()[0]
        files = conn.execute("SELECT count(*) FROM file_state").fetchone()[0]
    finally:
        conn.close()
    return {"pending": pending, "refused": refused, "quarantined": quarantined, "files": files}


def dead_letters(queue_dir: Path) -> list[dict]:
    if not (queue_dir / "pending.db").exists():
        return []
    conn = sqlite3.connect(f"file:{queue_dir / 'pending.db'}?mode=ro", uri=True, timeout=10)
    conn.row_factory = sqlite3.Row
    try:
        if conn.execute("PRAGMA user_version").fetchone()[0] < 2:
            return []
        return [dict(r) for r in conn.execute("SELECT * FROM dead_letter ORDER BY id")]
    finally:
        conn.close()


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def read_until(proc: subprocess.Popen[str], pattern: str, timeout: float) -> re.Match[str]:
    """Read a subprocess's output until a line matches; kill it and say what it printed if
    none does in time. The deadline holds while a line is awaited too: each line is read by a
    thread of its own, and a process that prints nothing more is killed at the deadline (which
    ends that read)."""
    assert proc.stdout is not None
    stdout = proc.stdout
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    lines: queue.Queue[str] = queue.Queue()
    while True:
        reader = threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True)
        reader.start()
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            proc.kill()
            reader.join(10)
            raise AssertionError(
                f"no line matching {pattern!r} within {timeout}s:\n" + "".join(seen)
            ) from None
        if not line:
            break
        seen.append(line)
        if match := re.search(pattern, line):
            return match
    proc.kill()
    raise AssertionError(f"no line matching {pattern!r} (output ended):\n" + "".join(seen))
