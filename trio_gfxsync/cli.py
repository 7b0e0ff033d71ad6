"""Command line: `trio-gfxsync run | check | schema | dlq | reconcile | status | scan | ...`.

Exit codes (DESIGN 3.1): 0 done, 1 failure or crash, 2 invalid configuration (a message naming
the variable, never a traceback; never the value, which may be a key).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

import trio

from . import __version__, names
from .errors import ConfigError
from .logs import get_logger, register_secret, setup_logging
from .malloc_tuning import tune_malloc
from .settings import Settings, check_folders, load_settings, require_target

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2

log = get_logger("cli")


def _settings_or_exit(*, target: bool = False, folders: bool = False) -> Settings:
    """Settings, or exit 2 with one `GFX_SYNC_<NAME>: why` line each. `target`: the command
    sends rows (run, check, scan); `folders`: it reads the NAS and writes the queue."""
    try:
        settings = load_settings()
        if target:
            require_target(settings)
        if folders:
            check_folders(settings)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None
    for secret in (settings.supabase_secret_key, settings.dashboard_token, settings.notify_url):
        if secret is not None:
            for value in secret.get_secret_value().split(","):
                register_secret(value)
    return settings


def cmd_run(args: argparse.Namespace) -> int:
    from .agent import Agent

    settings = _settings_or_exit(target=True, folders=True)
    setup_logging(settings.log_level, settings.log_format)
    tune_malloc()  # before trio starts any thread: see malloc_tuning.py
    try:
        trio.run(Agent(settings).run)
    except BaseException as exc:  # a core stage crashed: exit 1 and let Docker restart us
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        log.error("agent_crashed", exc_info=exc, error=f"{type(exc).__name__}: {exc}")
        return EXIT_FAILURE
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    from .commands.check import run_checks

    settings = _settings_or_exit(target=True)
    setup_logging("ERROR", settings.log_format)
    return trio.run(run_checks, settings)


def cmd_dlq(args: argparse.Namespace) -> int:
    from .commands.dlq import run_dlq

    settings = _settings_or_exit()
    setup_logging("ERROR", settings.log_format)
    return trio.run(run_dlq, settings, args)


def cmd_reconcile(args: argparse.Namespace) -> int:
    from .commands.reconcile import run_reconcile

    settings = _settings_or_exit(target=True)
    setup_logging("ERROR", settings.log_format)
    return trio.run(run_reconcile, settings, args)


def cmd_watching(args: argparse.Namespace) -> int:
    from .commands.watching import run_pcs, run_registry

    settings = _settings_or_exit()
    setup_logging("ERROR", settings.log_format)
    return trio.run(run_pcs if args.command == "pcs" else run_registry, settings, args)


def cmd_healthcheck(args: argparse.Namespace) -> int:
    from .commands.healthcheck import healthcheck

    return healthcheck(as_json=args.json)


def cmd_status(args: argparse.Namespace) -> int:
    import httpx

    from .commands.status import fetch_status, format_status

    settings = _settings_or_exit()
    token = settings.dashboard_token.get_secret_value() if settings.dashboard_token else None
    try:
        document = fetch_status(settings.health_host, settings.health_port, token)
    except httpx.HTTPStatusError as exc:
        print(f"the agent answered HTTP {exc.response.status_code}", file=sys.stderr)
        return EXIT_FAILURE
    except httpx.HTTPError as exc:
        print(
            f"the agent did not answer on port {settings.health_port} ({type(exc).__name__})",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    if args.json:
        import orjson

        sys.stdout.write(names.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(format_status(document))
    return EXIT_OK


def cmd_scan(args: argparse.Namespace) -> int:
    from .commands.scan import run_scan

    settings = _settings_or_exit(target=True, folders=True)
    setup_logging("WARNING" if sys.stdout.isatty() else settings.log_level, settings.log_format)
    return trio.run(run_scan, settings)


def cmd_schema(args: argparse.Namespace) -> int:
    if args.hands:
        from .commands.hands import hands_migration_sql

        try:
            sql = hands_migration_sql(args.hands_schema)
        except ValueError as exc:
            print(f"trio-gfxsync schema --hands --schema: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        sys.stdout.write(sql)
        return EXIT_OK
    from .commands.schema import migration_sql

    sys.stdout.write(migration_sql())
    return EXIT_OK


def cmd_hands(args: argparse.Namespace) -> int:
    from .commands.hands import run_hands_rebuild

    settings = _settings_or_exit(target=True)
    if settings.target_kind != "postgrest":
        print(
            "hands rebuild: the hand tables live in Supabase (PostgreSQL); "
            "GFX_SYNC_TARGET=sqlite has none",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    setup_logging("WARNING", settings.log_format)
    return trio.run(run_hands_rebuild, settings, args.pc)


def cmd_simulate(args: argparse.Namespace) -> int:
    from .commands.simulate import run_simulate

    setup_logging("INFO", "console")
    return run_simulate(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from .commands.demo import main as demo

    return demo(args)


def cmd_notify_test(args: argparse.Namespace) -> int:
    from .commands.notify_test import run_notify_test

    settings = _settings_or_exit()
    setup_logging("WARNING", settings.log_format)
    return trio.run(run_notify_test, settings)


def cmd_version(args: argparse.Namespace) -> int:
    from .state.schema import SCHEMA_VERSION

    # two lines a deploy script can read without Python: `deploy/nas` compares queue_schema
    # before a rollback (the queue database only migrates forward)
    print(f"trio-gfxsync {__version__}")
    print(f"queue_schema {SCHEMA_VERSION}")
    return EXIT_OK


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str]] = {
    "run": (cmd_run, "run the sync service (exit 0 after SIGTERM/SIGINT)"),
    "check": (cmd_check, "check configuration, NAS folders, registry and Supabase; one line each"),
    "schema": (cmd_schema, "print the migration SQL (paste it into Supabase's SQL editor)"),
    "hands": (cmd_hands, "re-derive the optional hand tables from gfx_sessions (after installing)"),
    "dlq": (cmd_dlq, "list, show, replay or purge dead letters and quarantined files"),
    "reconcile": (
        cmd_reconcile,
        "compare the table with the NAS; --apply queues what it lacks (--unknown-pcs: rows of "
        "PCs the registry does not name)",
    ),
    "pcs": (cmd_watching, "list the PCs watched so far, or forget one whose folder is gone"),
    "registry": (cmd_watching, "show the registry in force, or forget the kept one"),
    "healthcheck": (cmd_healthcheck, "exit 0 when the local /health answers 200 (Docker runs it)"),
    "status": (cmd_status, "the running agent's live status as a table"),
    "scan": (cmd_scan, "one-shot backfill of every PC folder, with progress, then exit"),
    "simulate": (cmd_simulate, "virtual GFX PCs writing PokerGFX exports into a NAS folder"),
    "demo": (cmd_demo, "virtual GFX PCs, the agent and its dashboard, no Supabase needed"),
    "notify-test": (cmd_notify_test, "send one test notification to every GFX_SYNC_NOTIFY_URL"),
    "version": (cmd_version, "the agent's version and the queue database schema it migrates to"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trio-gfxsync",
        description="Sync PokerGFX session files from a NAS into Supabase. "
        "Configured through GFX_SYNC_* environment variables or a .env file.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        if name == "dlq":
            _dlq_arguments(command)
        if name == "schema":
            command.add_argument(
                "--hands",
                action="store_true",
                help="the optional hand tables' migrations instead (gfx_hands, its views, tiers)",
            )
            command.add_argument(
                "--schema",
                dest="hands_schema",
                default="public",
                help="with --hands: the schema to create the hand tables in (default public)",
            )
        if name == "hands":
            actions = command.add_subparsers(dest="action", required=True, metavar="ACTION")
            rebuild = actions.add_parser(
                "rebuild", help="derive every stored session's hands again, in chunks"
            )
            rebuild.add_argument("--pc", help="only this GFX PC's sessions (gfx_pc_id)")
        if name == "reconcile":
            command.add_argument(
                "--apply",
                action="store_true",
                help="queue what the table lacks for the agent to send (default: a dry run)",
            )
            command.add_argument("--pc", help="only this GFX PC")
            command.add_argument(
                "--unknown-pcs",
                action="store_true",
                help="list rows under PC ids the registry does not name (--apply deletes them)",
            )
        if name == "status":
            command.add_argument("--json", action="store_true", help="the raw /api/status JSON")
        if name == "healthcheck":
            command.add_argument(
                "--json", action="store_true", help="print the /health document (same exit codes)"
            )
        if name in ("pcs", "registry"):
            from .commands import watching

            (watching.add_pcs_arguments if name == "pcs" else watching.add_registry_arguments)(
                command
            )
        if name == "simulate":
            from .commands.simulate import add_arguments

            add_arguments(command)
        if name == "demo":
            from .commands.demo import add_arguments as demo_arguments

            demo_arguments(command)
    return parser


def _dlq_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="one line per dead letter or quarantined file")
    show = actions.add_parser("show", help="everything known about one entry")
    show.add_argument("id", type=int)
    replay = actions.add_parser(
        "replay",
        help="send a dead letter again (back to the offline queue), or re-read a quarantined file",
    )
    target = replay.add_mutually_exclusive_group(required=True)
    target.add_argument("id", type=int, nargs="?")
    target.add_argument("--all", action="store_true", help="every entry")
    purge = actions.add_parser(
        "purge", help="delete one entry (its file is not read again until it changes)"
    )
    purge.add_argument("id", type=int)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = COMMANDS[args.command][0]
    return handler(args)
