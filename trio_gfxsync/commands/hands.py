"""`trio-gfxsync hands rebuild [--pc X]`, the hand-table lines of `check`, `schema --hands`.

The hand tables (`deploy/supabase/migrations/*_gfx_hands*.sql`, optional: the tables, then the
security delay and Broadcast of 20261205110000) are derived by the database itself, inside
every upsert of gfx_sessions; the agent never writes them. This module talks to the two
functions those migrations expose to service_role through PostgREST RPC:

    gfx_hands_rebuild(pc, after_pc, after_session, max_sessions, force)
        re-derives one chunk of sessions, ordered by (gfx_pc_id, session_id), and answers
        {"sessions", "hands", "written", "errors", "busy", "orphans_removed",
         "next_pc", "next_session", "next_session_key"}; next_* are null once done
    gfx_hands_status()
        {"version", "schema", "sessions", "derived", "missing", "stale", "inconsistent",
         "orphaned", "hands", "hand_errors", "release"}, where "release" (from 20261205110000)
        is {"delay_seconds", "delays": {pc: seconds}, "release_scheduled" (null without
        pg_cron), "release_schedule", "waiting", "overdue"}

Every failure surfaces as `UpstreamError` (an answer of the wrong shape too, with the verdict
UNEXPECTED), so callers handle one exception type.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import trio

from ..errors import UpstreamError
from ..policy import Verdict
from ..settings import Settings
from ..targets.postgrest import PostgrestClient
from .hands_delay import ReleaseStatus, release_lines
from .results import CheckResult
from .schema import hands_migration_files

# The version gfx_hands_status() reports for the hand tables this agent documents.
HANDS_VERSION = "20261205110000"
HANDS_MIGRATION = f"deploy/supabase/migrations/{HANDS_VERSION}_gfx_hands_delay.sql"

REBUILD_FUNCTION = "gfx_hands_rebuild"
STATUS_FUNCTION = "gfx_hands_status"
# PostgREST 12 answers an unknown function with 404 PGRST202.
NOT_INSTALLED_CODES = frozenset({"PGRST202", "42883"})

FIRST_CHUNK = 20
MAX_CHUNK = 500
# A chunk is one HTTP request and one transaction holding its sessions' rows: keep it short.
CHUNK_TARGET_SECONDS = 2.0
MAX_RETRIES = 4
MAX_PASSES = 3

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# Every lower-case word `public` of the migrations names the hand tables' schema, except in
# `public.gfx_sessions` and `public.gfx_access` (the project's claim, shared with other objects);
# the role PUBLIC is written in capitals.
_HAND_SCHEMA = re.compile(r"\bpublic\b(?!\.(?:gfx_sessions|gfx_access)\b)")


class RpcClient(Protocol):
    """What these commands need of a target: `PostgrestClient.rpc`."""

    async def rpc(self, function: str, args: dict[str, object]) -> object: ...


# ---------------------------------------------------------------------------------------------
# The migration text (`schema --hands`)
# ---------------------------------------------------------------------------------------------


def sql_for_schema(sql: str, schema: str) -> str:
    """The migration with its hand tables, views and functions in `schema` instead of public.

    gfx_sessions stays where it is. `schema` must be a plain lower-case identifier (it is
    pasted into SQL), and PostgREST must expose it (PGRST_DB_SCHEMAS / "Exposed schemas")."""
    if not _SCHEMA_NAME.fullmatch(schema):
        raise ValueError(
            f"schema {schema!r}: use a plain lower-case identifier (letters, digits, _)"
        )
    if schema == "public":
        return sql
    return _HAND_SCHEMA.sub(schema, sql)


def hands_migration_sql(schema: str = "public") -> str:
    """The hand-table migrations as shipped in the package, in order, for
    `trio-gfxsync schema --hands`: the whole text applies to a database with or without them."""
    return "\n".join(sql_for_schema(f.read_text("utf-8"), schema) for f in hands_migration_files())


# ---------------------------------------------------------------------------------------------
# Answers
# ---------------------------------------------------------------------------------------------


def _unexpected(function: str, why: str) -> UpstreamError:
    return UpstreamError(200, None, f"{function} answered {why}", verdict=Verdict.UNEXPECTED)


def _object(function: str, answer: object) -> Mapping[str, object]:
    if not isinstance(answer, dict):
        raise _unexpected(function, f"a JSON {type(answer).__name__}, not an object")
    return answer


def _count(function: str, obj: Mapping[str, object], key: str) -> int:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _unexpected(function, f"{key}={value!r}, not a count")
    return value


@dataclass(frozen=True, slots=True)
class RebuildChunk:
    """One answer of gfx_hands_rebuild."""

    sessions: int
    hands: int
    written: int
    errors: int
    busy: int
    orphans_removed: int
    next_pc: str | None
    next_session: int | None

    @classmethod
    def from_json(cls, answer: object) -> RebuildChunk:
        obj = _object(REBUILD_FUNCTION, answer)
        next_pc = obj.get("next_pc")
        next_session = obj.get("next_session")
        if next_pc is not None and not isinstance(next_pc, str):
            raise _unexpected(REBUILD_FUNCTION, f"next_pc={next_pc!r}")
        # orjson reads 18-digit integers exactly; a float would have lost the low digits
        if next_session is not None and (
            isinstance(next_session, bool) or not isinstance(next_session, int)
        ):
            raise _unexpected(REBUILD_FUNCTION, f"next_session={next_session!r}")
        if (next_pc is None) != (next_session is None):
            raise _unexpected(REBUILD_FUNCTION, "only half a cursor")
        return cls(
            sessions=_count(REBUILD_FUNCTION, obj, "sessions"),
            hands=_count(REBUILD_FUNCTION, obj, "hands"),
            written=_count(REBUILD_FUNCTION, obj, "written"),
            errors=_count(REBUILD_FUNCTION, obj, "errors"),
            busy=_count(REBUILD_FUNCTION, obj, "busy"),
            orphans_removed=_count(REBUILD_FUNCTION, obj, "orphans_removed"),
            next_pc=next_pc,
            next_session=next_session,
        )

    @property
    def done(self) -> bool:
        return self.next_pc is None


@dataclass(slots=True)
class RebuildTotals:
    """What a rebuild did so far (over every chunk and pass)."""

    sessions: int = 0
    hands: int = 0
    written: int = 0
    errors: int = 0
    orphans_removed: int = 0
    requests: int = 0
    passes: int = 0
    busy: int = 0  # of the last pass: sessions the agent was writing when the chunk ran

    def add(self, chunk: RebuildChunk) -> None:
        self.sessions += chunk.sessions
        self.hands += chunk.hands
        self.written += chunk.written
        self.errors += chunk.errors
        self.orphans_removed += chunk.orphans_removed
        self.busy += chunk.busy
        self.requests += 1

    def progress_line(self) -> str:
        return f"hands rebuild: {self.sessions} sessions, {self.hands} hands, {self.errors} errors"


@dataclass(frozen=True, slots=True)
class HandsStatus:
    """The answer of gfx_hands_status."""

    version: str
    schema: str
    sessions: int
    derived: int
    missing: int
    stale: int
    inconsistent: int
    orphaned: int
    hands: int
    hand_errors: int
    release: ReleaseStatus | None = None  # from 20261205110000 on

    @classmethod
    def from_json(cls, answer: object) -> HandsStatus:
        obj = _object(STATUS_FUNCTION, answer)
        version, schema = obj.get("version"), obj.get("schema")
        if not isinstance(version, str) or not isinstance(schema, str):
            raise _unexpected(STATUS_FUNCTION, f"version={version!r} schema={schema!r}")
        counts = {
            key: _count(STATUS_FUNCTION, obj, key)
            for key in (
                "sessions",
                "derived",
                "missing",
                "stale",
                "inconsistent",
                "orphaned",
                "hands",
                "hand_errors",
            )
        }
        return cls(version=version, schema=schema, **counts, release=_release(obj.get("release")))

    @property
    def consistent(self) -> bool:
        return not (self.missing or self.stale or self.inconsistent or self.orphaned)


def _release(release: object) -> ReleaseStatus | None:
    """The "release" part of gfx_hands_status (absent before 20261205110000)."""
    if release is None:
        return None
    if not isinstance(release, dict):
        raise _unexpected(STATUS_FUNCTION, f"release={release!r}, not an object")
    try:
        return ReleaseStatus.from_json(release)
    except ValueError as exc:
        raise _unexpected(STATUS_FUNCTION, str(exc)) from None


def not_installed(exc: UpstreamError) -> bool:
    """The RPC does not exist: the optional hand-table migration was never applied."""
    return exc.status == 404 and exc.code in NOT_INSTALLED_CODES


# ---------------------------------------------------------------------------------------------
# Rebuild
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Chunking:
    """Chunk size that adapts to how long the database takes per chunk."""

    size: int = FIRST_CHUNK
    target: float = CHUNK_TARGET_SECONDS
    limits: tuple[int, int] = field(default=(1, MAX_CHUNK))

    def after(self, elapsed: float, full: bool) -> None:
        low, high = self.limits
        if elapsed > self.target:
            self.size = max(low, self.size // 2)
        elif full and elapsed < self.target / 4:
            self.size = min(high, self.size * 2)

    def shrink(self) -> bool:
        """Smaller after a timeout; False when it cannot shrink any more."""
        if self.size <= self.limits[0]:
            return False
        self.size = max(self.limits[0], self.size // 2)
        return True


async def _chunk(
    client: RpcClient, args: dict[str, object], chunking: _Chunking
) -> tuple[RebuildChunk, float]:
    """One chunk, retried smaller when the database or the network was too slow."""
    retries = 0
    while True:
        started = trio.current_time()
        try:
            answer = await client.rpc(REBUILD_FUNCTION, {**args, "max_sessions": chunking.size})
        except UpstreamError as exc:
            slow = exc.verdict in (Verdict.DOWN, Verdict.SLOW_DOWN)
            retries += 1
            if not slow or retries > MAX_RETRIES:
                raise
            # a statement timeout, a 503, a dropped connection: the chunk is idempotent
            chunking.shrink()
            await trio.sleep(min(2.0**retries, 10.0))
            continue
        return RebuildChunk.from_json(answer), trio.current_time() - started


async def rebuild_hands(
    client: RpcClient,
    pc: str | None = None,
    *,
    force: bool = False,
    report: Callable[[RebuildTotals], None] | None = None,
    chunk_sessions: int = FIRST_CHUNK,
    max_chunk: int = MAX_CHUNK,
    chunk_target: float = CHUNK_TARGET_SECONDS,
) -> RebuildTotals:
    """Page through gfx_hands_rebuild until done; again while sessions were busy (being
    written by the agent at that moment), at most MAX_PASSES times. Raises UpstreamError.

    Chunks start at `chunk_sessions` sessions and adapt (up to `max_chunk`) so that one takes
    about `chunk_target` seconds."""
    totals = RebuildTotals()
    chunking = _Chunking(
        size=min(chunk_sessions, max_chunk), target=chunk_target, limits=(1, max_chunk)
    )
    while True:
        totals.passes += 1
        totals.busy = 0
        after_pc: str | None = None
        after_session: int | None = None
        while True:
            args: dict[str, object] = {
                "pc": pc,
                "after_pc": after_pc,
                "after_session": after_session,
                "force": force,
            }
            chunk, elapsed = await _chunk(client, args, chunking)
            totals.add(chunk)
            if report is not None:
                report(totals)
            if chunk.done:
                break
            chunking.after(elapsed, full=chunk.sessions >= chunking.size)
            after_pc, after_session = chunk.next_pc, chunk.next_session
        if totals.busy == 0 or totals.passes >= MAX_PASSES:
            return totals


def _print_progress(totals: RebuildTotals) -> None:
    print(totals.progress_line(), flush=True)


async def run_hands_rebuild(settings: Settings, pc: str | None) -> int:
    """`trio-gfxsync hands rebuild [--pc X]`: exit 0 when every session was re-derived."""
    async with PostgrestClient(settings) as client:
        try:
            totals = await rebuild_hands(client, pc, report=_print_progress)
        except UpstreamError as exc:
            if not_installed(exc):
                print(
                    "hands rebuild: the hand tables are not installed: apply "
                    f"{HANDS_MIGRATION} (`trio-gfxsync schema --hands`)",
                    flush=True,
                )
            else:
                print(f"hands rebuild failed: {exc.summary}", flush=True)
            return 1
    print(
        f"hands rebuild done: {totals.sessions} sessions, {totals.hands} hands "
        f"({totals.written} rewritten), {totals.errors} errors, "
        f"{totals.orphans_removed} orphaned sessions removed, {totals.requests} requests",
        flush=True,
    )
    if totals.errors:
        print("hands that could not be derived are listed in gfx_hand_errors", flush=True)
    if totals.busy:
        print(
            f"{totals.busy} sessions were being written by the agent on every pass: "
            "run `trio-gfxsync hands rebuild` again",
            flush=True,
        )
        return 1
    return 0


# ---------------------------------------------------------------------------------------------
# check
# ---------------------------------------------------------------------------------------------


async def check_hands(client: RpcClient) -> list[CheckResult]:
    """Lines for `trio-gfxsync check`: are the hand tables installed, current and consistent?

    Not installed is fine (they are optional); an older version, or tables that disagree with
    gfx_sessions (sessions stored before the migration, rows removed by hand), fail."""
    try:
        status = HandsStatus.from_json(await client.rpc(STATUS_FUNCTION, {}))
    except UpstreamError as exc:
        if not_installed(exc):
            return [
                CheckResult(
                    "hand tables", True, "not installed (optional: `trio-gfxsync schema --hands`)"
                )
            ]
        return [CheckResult("hand tables", False, exc.summary)]
    results: list[CheckResult] = []
    if status.version < HANDS_VERSION:
        results.append(
            CheckResult(
                "hand tables",
                False,
                f"version {status.version} in schema {status.schema}, this agent documents "
                f"{HANDS_VERSION}: apply {HANDS_MIGRATION} (`trio-gfxsync schema --hands`)",
            )
        )
    else:
        results.append(
            CheckResult("hand tables", True, f"version {status.version} in schema {status.schema}")
        )
    errors = (
        f", {status.hand_errors} hands not derivable (see gfx_hand_errors)"
        if status.hand_errors
        else ""
    )
    if status.consistent:
        detail = f"{status.sessions} sessions, {status.hands} hands{errors}"
    else:
        problems = ", ".join(
            f"{count} {name}"
            for name, count in (
                ("missing", status.missing),
                ("stale", status.stale),
                ("inconsistent", status.inconsistent),
                ("orphaned", status.orphaned),
            )
            if count
        )
        detail = (
            f"{problems} of {status.sessions} sessions{errors}: run `trio-gfxsync hands rebuild`"
        )
    results.append(CheckResult("hand tables match gfx_sessions", status.consistent, detail))
    if status.release is not None:
        results += release_lines(status.release)
    return results
