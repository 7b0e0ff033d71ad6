"""`trio-gfxsync dlq list | show ID | replay ID|--all | purge ID`: the dead letters, for operators.

It opens the agent's SQLite file beside a running agent (WAL allows it); the agent notices a
replay within a poll interval and sends it.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from ..errors import StoreError
from ..settings import Settings
from ..state.rows import DeadLetter
from ..state.store import Store


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _mtime(ns: int | None) -> str:
    return "-" if ns is None else _when(ns / 1e9)


def format_table(entries: list[DeadLetter]) -> str:
    headers = ("ID", "KIND", "PC", "SESSION", "REASON", "CODE", "TRIES", "LAST SEEN", "PATH")
    rows = [
        (
            str(e.id),
            e.kind,
            e.pc_id,
            str(e.session_id) if e.session_id is not None else "-",
            e.reason,
            e.code or (str(e.status) if e.status else "-"),
            str(e.attempts),
            _when(e.last_seen),
            e.rel_path,
        )
        for e in entries
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def format_entry(e: DeadLetter) -> str:
    fields = [
        ("id", e.id),
        ("kind", e.kind),
        ("pc", e.pc_id),
        ("path", e.rel_path),
        ("session_id", e.session_id if e.session_id is not None else "-"),
        ("reason", e.reason),
        ("http status", e.status or "-"),
        ("code", e.code or "-"),
        ("message", e.message or "-"),
        ("attempts", e.attempts),
        ("size", e.size if e.size is not None else "-"),
        ("mtime", _mtime(e.mtime_ns)),
        ("sha256", e.sha256 or "-"),
        ("hands", e.hand_count if e.hand_count is not None else "-"),
        ("first seen", _when(e.first_seen)),
        ("last seen", _when(e.last_seen)),
        ("replay", "re-sends the stored record" if e.has_payload else "re-reads the file"),
    ]
    if e.reason in REMEDIES:
        fields.append(("remedy", REMEDIES[e.reason]))
    return "\n".join(f"{name:<12} {value}" for name, value in fields)


# What an operator does about a record that kept failing alone (delivery/failing.py).
REMEDIES = {
    "timed_out": (
        "the database took too long for this one record (a very large session; Supabase's API "
        "roles stop a statement after 8 s). Raise the timeout for the role the key uses, e.g. "
        "`alter role service_role set statement_timeout = '60s'; notify pgrst, 'reload "
        "config';` in the SQL editor, then `trio-gfxsync dlq replay ID`. With the hand tables "
        "installed, the derivation of a session with thousands of hands is the usual cause: "
        "replay it, then `trio-gfxsync hands rebuild --pc PC` if its hands are missing."
    ),
    "server_error": (
        "the database answered this one record with an error of its own (a trigger failing on "
        "it, say): read the message above and the database's log (Supabase: Logs > Postgres), "
        "fix the cause, then `trio-gfxsync dlq replay ID`"
    ),
}


async def run_dlq(settings: Settings, args: argparse.Namespace) -> int:
    if not settings.queue_db_path.exists():
        print(f"no queue database at {settings.queue_db_path}: nothing dead-lettered yet")
        return 0 if args.action == "list" else 1
    try:
        store = await Store.open(settings.queue_db_path, recover=False)
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        return await _act(store, args)
    finally:
        await store.close()


async def _act(store: Store, args: argparse.Namespace) -> int:
    if args.action == "list":
        entries = await store.dead_letters()
        if not entries:
            print("no dead letters")
            return 0
        print(format_table(entries))
        refused = sum(e.kind == "refused" for e in entries)
        print(f"\n{len(entries)} entries: {refused} refused, {len(entries) - refused} quarantined")
        return 0
    if args.action == "show":
        entry = await store.get_dead_letter(args.id)
        if entry is None:
            print(f"no dead letter with id {args.id}", file=sys.stderr)
            return 1
        print(format_entry(entry))
        return 0
    if args.action == "replay":
        ids = None if args.all else [args.id]
        replayed = await store.replay(ids)
        if not replayed:
            print("nothing to replay" if args.all else f"no dead letter with id {args.id}")
            return 0 if args.all else 1
        print(f"replayed {len(replayed)}: {', '.join(map(str, replayed))}")
        print("the running agent sends them within a poll interval")
        return 0
    if args.action == "purge":
        if not await store.purge(args.id):
            print(f"no dead letter with id {args.id}", file=sys.stderr)
            return 1
        print(f"purged {args.id}")
        return 0
    raise AssertionError(args.action)
