"""`trio-gfxsync reconcile [--apply] [--pc PC]`: the table against the NAS, once.
(`--unknown-pcs`: rows under ids the registry does not name, unknown_pcs.py.)

A dry run by default: one line per PC with what the table lacks. `--apply` reads those winners
again and puts them into the agent's offline queue; the running agent sends them within a poll
interval (it sees another process's commit), or the next start does. It never deletes a row.
"""

from __future__ import annotations

import argparse
import sys
import time

from ..agent import make_target
from ..errors import RegistryError, StoreError, UpstreamError
from ..intake.reconciler import Resent, nas_read_again, plan_for, read_again
from ..intake.registry import resolve_watch_path
from ..intake.registry_kept import registry_in_force, stored_registry
from ..keep_newest import StampClock
from ..names import printable
from ..nas_calls import NasCalls, NasHung
from ..pokergfx import SessionRecord
from ..reconciliation import Plan
from ..settings import Settings
from ..state.store import Store
from .unknown_pcs import run_unknown_pcs


def format_plan(found: Plan, resent: Resent | None) -> str:
    line = (
        f"{printable(found.pc_id):<10} on NAS {found.on_nas:>6}  in table {found.in_table:>6}  "
        f"missing {found.missing:>5}  different {found.different:>5}  waiting {found.busy:>4}"
    )
    if resent is not None:
        line += f"  -> queued {resent.queued}"
        if resent.changed:
            line += f", {resent.changed} changed since (the scanner sends them)"
        if resent.unreadable:
            line += f", {resent.unreadable} unreadable now"
    return line


async def run_reconcile(settings: Settings, args: argparse.Namespace) -> int:
    if getattr(args, "unknown_pcs", False):
        return await run_unknown_pcs(settings, args)
    if not settings.queue_db_path.exists():
        print(f"no queue database at {settings.queue_db_path}: the agent has acknowledged nothing")
        return 0
    base = settings.nas_base_path
    try:
        # the registry the agent runs with: the file, else the one it kept, else discovery
        registry, _ = registry_in_force(settings, await stored_registry(settings))
    except (RegistryError, OSError) as exc:
        print(f"registry: {exc}", file=sys.stderr)
        return 1
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    pcs = {pc_id: pc for pc_id, pc in registry.enabled.items() if args.pc in (None, pc_id)}
    if not pcs:
        which = f"PC {args.pc}" if args.pc else "PC"
        print(f"no enabled {which} in the registry", file=sys.stderr)
        return 1
    try:
        store = await Store.open(settings.queue_db_path, recover=False)
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    target = make_target(settings)
    nas = NasCalls(settings.nas_read_timeout)
    lacking = 0
    # stamps above every one the agent has recorded, whatever this machine's clock says
    stamps = StampClock(await store.largest_stamp())
    try:

        async def queue(records: list[SessionRecord]) -> None:
            await store.enqueue(records, [], front=True)

        for pc_id, pc in sorted(pcs.items()):
            found = await plan_for(store, target, pc_id)
            lacking += len(found.resend)
            resent = None
            if args.apply and found.resend:
                root = resolve_watch_path(base, pc)
                resent = await read_again(
                    root,
                    pc_id,
                    found.resend,
                    settings.max_file_bytes,
                    queue,
                    lambda: stamps.issue(time.time_ns()),
                    nas_read_again(nas, pc_id, settings.max_file_bytes),
                )
            print(format_plan(found, resent), flush=True)
    except UpstreamError as exc:
        print(f"the table could not be read: {exc.summary}", file=sys.stderr)
        return 1
    except RegistryError as exc:
        print(f"registry: {exc}", file=sys.stderr)
        return 1
    except NasHung as exc:
        print(f"the NAS did not answer: {exc.reason}", file=sys.stderr)
        return 1
    finally:
        await target.aclose()
        await store.close()
    if not lacking:
        print("the table holds every acknowledged session's winner")
    elif args.apply:
        print("queued: the running agent sends them within a poll interval (or at its next start)")
    else:
        print(f"{lacking} to send again: run with --apply to queue them (dry run, nothing changed)")
    return 0
