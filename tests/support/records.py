"""One factory of SessionRecords for the unit tests, three shapes:

parsed_record(n)   a minimal export (`ID` 10**17 + n) through the real parser
export_record(...) a realistic export (players, events, 7-digit times) through the parser
sized_record(...)  a record built directly, its `row` exactly `row_size` bytes (byte limits)
"""

from __future__ import annotations

import hashlib
import random

import orjson

from tests.support.tree import make_session
from trio_gfxsync.pokergfx import SessionRecord, parse_session
from trio_gfxsync.records import FileVersion

SESSION_ID = 638966318331324926  # the real samples' session that grows from 6 to 130 hands


def parsed_record(
    n: int,
    *,
    pc: str = "PC01",
    hands: int = 0,
    mtime_ns: int | None = None,
    padding: int = 0,
    rel_path: str | None = None,
) -> SessionRecord:
    """`{"ID": 10**17 + n, "Hands": [...]}`: `hands` empty hands; with `padding`, the first hand
    holds one player whose name is that many bytes (to make rows of a chosen size)."""
    hand_list: list[dict[str, object]] = [{} for _ in range(hands)]
    if padding:
        hand_list[:1] = [{"Players": [{"Name": "x" * padding}]}]
    return parse_session(
        orjson.dumps({"ID": 10**17 + n, "Hands": hand_list}),
        pc_id=pc,
        rel_path=rel_path or f"{n}.json",
        mtime_ns=10**18 + n if mtime_ns is None else mtime_ns,
        max_file_bytes=10**8,
    )


def export_record(
    pc: str,
    rel: str,
    hands: int,
    *,
    index: int = 1,
    mtime_ns: int = 10**18,
    session_id: int = SESSION_ID,
) -> SessionRecord:
    """A realistic PokerGFX export of `hands` hands for `session_id`, parsed."""
    session = make_session(index, hands, random.Random(index))
    session.session_id = session_id
    return parse_session(
        session.to_bytes(), pc_id=pc, rel_path=rel, mtime_ns=mtime_ns, max_file_bytes=10**8
    )


def sized_record(
    pc_id: str = "PC01",
    session_id: int = SESSION_ID,
    *,
    hand_count: int = 1,
    mtime_ns: int = 1_000,
    sha: str | None = None,
    rel_path: str | None = None,
    row_size: int = 64,
) -> SessionRecord:
    """A record whose `row` is a JSON object of exactly `row_size` bytes (at least ~100)."""
    sha = (
        sha or hashlib.sha256(f"{pc_id}/{session_id}/{hand_count}/{mtime_ns}".encode()).hexdigest()
    )
    rel_path = rel_path or f"GameID={session_id}.json"
    head = {"gfx_pc_id": pc_id, "session_id": session_id, "file_hash": sha, "pad": ""}
    row = orjson.dumps(head)
    pad = max(0, row_size - len(row))
    row = orjson.dumps({**head, "pad": "x" * pad})
    return SessionRecord(
        version=FileVersion(pc_id, rel_path, row_size, mtime_ns, sha),
        session_id=session_id,
        file_name=rel_path.rsplit("/", 1)[-1],
        table_type="FINAL_TABLE",
        event_title=None,
        software_version=None,
        hand_count=hand_count,
        player_count=0,
        session_created_at=None,
        row=row,
    )


def written(body: bytes) -> dict[tuple[str, int], str | None]:
    """What a target that stored every row of an upsert body answers (targets.base.Target):
    each row's key with the file_hash stored."""
    return {(row["gfx_pc_id"], row["session_id"]): row["file_hash"] for row in orjson.loads(body)}
