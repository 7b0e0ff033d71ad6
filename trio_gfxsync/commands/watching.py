"""`trio-gfxsync pcs list | forget ID...` and `trio-gfxsync registry show | forget`: what the
agent should be watching, as its queue database keeps it (registry_watcher.py).

They open the agent's SQLite file beside a running agent (WAL allows it); the agent reads what
they changed at its next registry read (every few seconds).
"""

from __future__ import annotations

import argparse
import sys

import trio

from ..errors import RegistryError, StoreError
from ..intake.registry_kept import registry_in_force, when
from ..settings import Settings
from ..state.store import Store


def add_pcs_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="the PCs watched so far (a missing one stays listed)")
    forget = actions.add_parser(
        "forget",
        help="stop listing a PC whose folder is gone for good (its rows in the table stay)",
    )
    forget.add_argument("ids", nargs="+", metavar="ID")


def add_registry_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("show", help="which registry is in force, and its PCs")
    actions.add_parser(
        "forget",
        help="forget the kept registry: with no registry file, PC folders are discovered again",
    )


async def _open(settings: Settings) -> Store | None:
    if not settings.queue_db_path.exists():
        print(f"no queue database at {settings.queue_db_path}: nothing kept yet")
        return None
    return await Store.open(settings.queue_db_path, recover=False)


async def run_pcs(settings: Settings, args: argparse.Namespace) -> int:
    try:
        store = await _open(settings)
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if store is None:
        return 0 if args.action == "list" else 1
    try:
        if args.action == "list":
            for pc_id, watch_path in (await store.known_pcs()).items():
                print(f"{pc_id}\t{watch_path}")
            return 0
        gone = await store.forget_pcs(args.ids)
    finally:
        await store.close()
    for pc_id in args.ids:
        if pc_id in gone:
            print(
                f"{pc_id}: forgotten (its rows in the table stay; a registry naming it still does)"
            )
        else:
            print(f"{pc_id}: not among the PCs watched", file=sys.stderr)
    return 0 if len(gone) == len(set(args.ids)) else 1


async def run_registry(settings: Settings, args: argparse.Namespace) -> int:
    try:
        store = await _open(settings)
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if store is None:
        return 0 if args.action == "show" else 1
    try:
        kept = await store.kept_registry()
        if args.action == "show":
            try:
                registry, source = await trio.to_thread.run_sync(registry_in_force, settings, kept)
            except (RegistryError, OSError) as exc:
                print(f"registry: {exc}", file=sys.stderr)
                return 1
            print(f"in force: {source}")
            for pc in registry.pcs:
                print(f"{pc.id}\t{pc.watch_path}\t{'enabled' if pc.enabled else 'disabled'}")
            return 0
        if settings.registry_file.exists():
            print(
                f"{settings.registry_file} is still there: the agent keeps what it reads; "
                "remove the file first",
                file=sys.stderr,
            )
            return 1
        if kept is None or not await store.forget_registry():
            print("no registry kept: PC folders are discovered already")
            return 0
        print(
            f"the registry kept from {when(kept)} is forgotten: the agent discovers PC folders "
            "at its next registry read"
        )
        return 0
    finally:
        await store.close()
