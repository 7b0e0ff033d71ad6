"""A temporary NAS tree built from the real exports, and the database state it must produce.

The expected state is computed here with the standard library's json, independently of the
agent's parser, so the two cannot share a bug.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support import infra

PC_FOLDER = "table-pokercaster"
GROWING_SESSION = 638966318331324926  # 6 hands in 1017/, 130 hands in 1021/


def copy_samples(samples: Path, nas: Path) -> Path:
    """`<nas>/<pc folder>/<day>/*` with the .txt exports beside the JSON files; writable."""
    for source in sorted(samples.rglob("*")):
        if source.is_file() and source.name != "README.md":
            target = nas / source.relative_to(samples)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    return nas


def set_mtime(path: Path, seconds: float) -> None:
    os.utime(path, (seconds, seconds))


@dataclass(frozen=True)
class ExpectedRow:
    pc_id: str
    session_id: int
    rel_path: str
    sha256: str
    hand_count: int
    document: dict[str, Any]
    mtime_ns: int
    ctime_ns: int


def expected_rows(nas: Path) -> dict[tuple[str, int], ExpectedRow]:
    """Per (pc, session): the copy with most hands, then the newest mtime."""
    best: dict[tuple[str, int], ExpectedRow] = {}
    for pc_dir in sorted(p for p in nas.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if pc_dir.name == "config":
            continue
        for path in sorted(pc_dir.rglob("*.json")):
            data = path.read_bytes()
            document = json.loads(data)
            session_id = document.get("ID")
            if not isinstance(session_id, int):
                session_id = int(re.search(r"GameID=(\d+)", path.name).group(1))
            row = ExpectedRow(
                pc_id=pc_dir.name,
                session_id=session_id,
                rel_path=path.relative_to(pc_dir).as_posix(),
                sha256=hashlib.sha256(data).hexdigest(),
                hand_count=len(document.get("Hands") or []),
                document=document,
                mtime_ns=path.stat().st_mtime_ns,
                ctime_ns=path.stat().st_ctime_ns,
            )
            key = (row.pc_id, session_id)
            current = best.get(key)
            if current is None or _rank(row) > _rank(current):
                best[key] = row
    return best


def _rank(row: ExpectedRow) -> tuple[int, int, str]:
    """DESIGN 3.4, written here apart from the agent's keep_newest.py: the most hands, then
    the newer mtime (never later than the file's ctime, the NAS's own clock), then the path."""
    return (row.hand_count, min(row.mtime_ns, row.ctime_ns), row.rel_path)


def table_rows(dsn: str) -> dict[tuple[str, int], dict[str, Any]]:
    rows = infra.query(
        dsn,
        "select gfx_pc_id, session_id, session_key, file_name, file_path, file_hash, file_size,"
        " hand_count, player_count, table_type, raw_json, session_created_at from gfx_sessions",
    )
    return {(r["gfx_pc_id"], r["session_id"]): r for r in rows}


def sqlite_rows(path: Path) -> dict[tuple[str, int], dict[str, Any]]:
    """The embedded target's table, in the shape of `table_rows`."""
    if not path.exists():
        return {}
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    conn.row_factory = sqlite3.Row
    try:
        try:
            rows = [dict(r) for r in conn.execute("select * from gfx_sessions")]
        except sqlite3.OperationalError:
            return {}  # not created yet
    finally:
        conn.close()
    for row in rows:
        row["raw_json"] = json.loads(row["raw_json"])
    return {(r["gfx_pc_id"], r["session_id"]): r for r in rows}


def mismatches(nas: Path, dsn: str | Path) -> list[str]:
    """Every way the table differs from the NAS; empty when they are equal. `dsn`: a
    PostgreSQL DSN, or the path of the embedded SQLite target."""
    want = expected_rows(nas)
    have = sqlite_rows(dsn) if isinstance(dsn, Path) else table_rows(dsn)
    problems = [f"missing {key}" for key in want.keys() - have.keys()]
    problems += [f"unexpected {key}" for key in have.keys() - want.keys()]
    for key in want.keys() & have.keys():
        exp, row = want[key], have[key]
        checks = {
            "session_key": (row["session_key"], str(exp.session_id)),
            "hand_count": (row["hand_count"], exp.hand_count),
            "file_hash": (row["file_hash"], exp.sha256),
            "file_path": (row["file_path"], exp.rel_path),
            "raw_json": (row["raw_json"] == exp.document, True),
        }
        problems += [
            f"{key} {name}: table has {got!r}, NAS has {expected!r}"
            for name, (got, expected) in checks.items()
            if got != expected
        ]
    return problems
