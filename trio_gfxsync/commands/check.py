"""`trio-gfxsync check`: one line per check, exit 0 when all pass and 1 otherwise."""

from __future__ import annotations

import os

import trio

from ..errors import RegistryError, StoreError, UpstreamError
from ..intake.registry import resolve_watch_path
from ..intake.registry_kept import registry_in_force, stored_registry
from ..policy import Verdict
from ..settings import Settings
from ..state.rows import KeptRegistry
from ..targets.postgrest import PostgrestClient
from ..targets.sqlite import SqliteTarget
from .hands import check_hands
from .results import CheckResult

SCHEMA_RULE = 2  # gfx_sync_schema_version() of the keep-newest rule this agent needs
FLEET_SCHEMA = 3  # gfx_sync_schema_version() once 20261205130000_gfx_fleet.sql is applied
FLEET_MIGRATION = "20261205130000_gfx_fleet.sql"


def check_nas(settings: Settings, kept: KeptRegistry | None = None) -> list[CheckResult]:
    base = settings.nas_base_path
    if not base.is_dir():
        return [CheckResult("nas", False, f"{base} is not a folder (GFX_SYNC_NAS_BASE_PATH)")]
    if not os.access(base, os.R_OK | os.X_OK):
        return [CheckResult("nas", False, f"{base} is not readable")]
    results = [CheckResult("nas", True, f"{base} readable")]
    try:
        registry, source = registry_in_force(settings, kept)
    except (RegistryError, OSError) as exc:
        return [*results, CheckResult("registry", False, str(exc))]
    enabled = registry.enabled
    results.append(
        CheckResult(
            "registry",
            # the file gone: the agent syncs with the kept one, and /health says registry_missing
            bool(enabled) and registry.source != "kept",
            f"{len(enabled)} enabled PC(s) from {source}"
            if enabled
            else f"no enabled PC in {source}",
        )
    )
    for pc in enabled.values():
        try:
            root = resolve_watch_path(base, pc)
        except RegistryError as exc:
            results.append(CheckResult(f"pc {pc.id}", False, str(exc)))
            continue
        ok = root.is_dir() and os.access(root, os.R_OK | os.X_OK)
        results.append(
            CheckResult(
                f"pc {pc.id}", ok, f"{root} {'readable' if ok else 'missing or unreadable'}"
            )
        )
    return results


def check_queue(settings: Settings) -> CheckResult:
    folder = settings.queue_db_path.parent
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    ok = os.access(probe, os.W_OK)
    return CheckResult(
        "queue", ok, f"{folder} {'writable' if ok else 'not writable (GFX_SYNC_QUEUE_DB_PATH)'}"
    )


async def check_supabase(settings: Settings) -> list[CheckResult]:
    async with PostgrestClient(settings) as client:
        try:
            await client.probe_write()
        except UpstreamError as exc:
            name = {
                Verdict.DOWN: "supabase reachable",
                Verdict.REJECTED: "supabase key",
                Verdict.SCHEMA_MISMATCH: "gfx_sessions table",
                Verdict.UNEXPECTED: "supabase request",
            }.get(exc.verdict, "supabase upsert")
            detail = exc.summary
            if exc.status == 404 and not exc.code:
                # PostgREST names a missing table (42P01); a bare 404 is a wrong address
                detail += (
                    f" (no PostgREST at {settings.rest_url}: check GFX_SYNC_SUPABASE_URL, and "
                    "GFX_SYNC_REST_PATH: /rest/v1 on Supabase, empty for a bare PostgREST)"
                )
            elif exc.verdict is Verdict.SCHEMA_MISMATCH:
                detail += " (apply the migrations: `trio-gfxsync schema` prints them)"
            return [CheckResult(name, False, detail)]
        results = [
            CheckResult("supabase reachable", True, settings.rest_url),
            CheckResult("supabase key", True, "accepted"),
            CheckResult(
                "gfx_sessions table",
                True,
                "columns and conflict key (gfx_pc_id, session_id) present",
            ),
        ]
        version = await schema_version(client)
        results.append(check_rule(version))
        results.append(await check_fleet(client, version))
        results += await check_hands(client)
        results.append(check_clock(client.clock_skew, settings.alert_clock_skew_seconds))
    return results


def check_clock(skew: float | None, limit: float) -> CheckResult:
    """This machine's clock against Supabase's (the Date of its answers). The data is safe
    whatever the clocks (keep_newest.py), but logs, ages and alerts read wrong."""
    if skew is None:
        return CheckResult("clock", True, "Supabase's answers carry no Date: not compared")
    side = "ahead of" if skew > 0 else "behind"
    detail = f"this machine's clock is {abs(skew):.1f} s {side} Supabase's"
    if abs(skew) > limit:
        return CheckResult(
            "clock",
            False,
            f"{detail} (> {limit:.0f} s, GFX_SYNC_ALERT_CLOCK_SKEW_SECONDS): fix NTP",
        )
    return CheckResult("clock", True, detail)


async def schema_version(client: PostgrestClient) -> int | str:
    """gfx_sync_schema_version(), or why it could not be asked."""
    try:
        version = await client.rpc("gfx_sync_schema_version", {})
    except UpstreamError as exc:
        return exc.summary
    return version if isinstance(version, int) else f"unexpected answer {version!r}"


def check_rule(version: int | str) -> CheckResult:
    """Is the keep-newest trigger the one this agent needs (migration 2, version stamps)?"""
    if isinstance(version, str):
        return CheckResult(
            "keep-newest rule",
            False,
            f"migration 20261202100000_gfx_sync_keep_newest.sql not applied ({version})",
        )
    ok = version >= SCHEMA_RULE
    return CheckResult(
        "keep-newest rule",
        ok,
        f"rule {version} installed" + ("" if ok else f", this agent needs {SCHEMA_RULE}"),
    )


async def check_fleet(client: PostgrestClient, version: int | str) -> CheckResult:
    """The fleet's tables are there (heartbeats need them), and no PC id is reported by the
    agents of two venues: gfx_sessions has no venue, so their sessions would mix."""
    if isinstance(version, str) or version < FLEET_SCHEMA:
        return CheckResult(
            "fleet",
            False,
            f"migration {FLEET_MIGRATION} not applied (heartbeats need it: "
            "`trio-gfxsync schema` prints it)",
        )
    try:
        conflicts = await client.fleet_conflicts()
    except UpstreamError as exc:
        return CheckResult("fleet", False, f"gfx_fleet unreadable ({exc.summary})")
    if conflicts:
        named = "; ".join(
            f"{venue} ({agent_id}): {', '.join(pcs)}" for venue, agent_id, pcs in conflicts
        )
        return CheckResult(
            "fleet",
            False,
            f"PC ids reported by agents of two venues: {named} "
            "(PC ids must be unique across a Supabase project)",
        )
    return CheckResult("fleet", True, "gfx_fleet present, no PC id claimed by two venues")


async def check_sqlite(settings: Settings) -> list[CheckResult]:
    target = SqliteTarget(settings.sqlite_target_file)
    try:
        await target.probe_write()
    except UpstreamError as exc:
        return [CheckResult("sqlite target", False, f"{settings.sqlite_target_file}: {exc}")]
    finally:
        await target.aclose()
    return [CheckResult("sqlite target", True, f"{settings.sqlite_target_file} writable")]


async def run_checks(settings: Settings) -> int:
    results = [CheckResult("configuration", True, "valid")]
    try:
        kept = await stored_registry(settings)
    except StoreError as exc:
        results.append(CheckResult("queue database", False, str(exc)))
        kept = None
    results += await trio.to_thread.run_sync(check_nas, settings, kept)
    results.append(check_queue(settings))
    with trio.move_on_after(settings.request_timeout + 5) as scope:
        if settings.target_kind == "sqlite":
            results += await check_sqlite(settings)
        else:
            results += await check_supabase(settings)
    if scope.cancelled_caught:
        results.append(CheckResult("supabase reachable", False, "no answer in time"))
    for result in results:
        print(result.line(), flush=True)
    return 0 if all(r.ok for r in results) else 1
