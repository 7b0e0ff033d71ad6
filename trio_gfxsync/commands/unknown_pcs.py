"""`trio-gfxsync reconcile --unknown-pcs [--apply]`: rows under PC ids the registry does not name.

Such rows were written before the registry was in force (discovery uploads every folder under
its folder name, a disabled PC's included), or by an agent that lost its registry for a moment
(before the registry was kept). A dry run lists them, one line per id; `--apply` deletes them
(the hand tables' trigger takes their hand rows) and drops what the local queue still holds
for those ids, so that the drainer cannot write them again. Only with a registry (the file, or
the kept one): with discovery every folder is a PC, so no id is unknown.
"""

from __future__ import annotations

import argparse
import sys

import trio

from ..agent import make_target
from ..errors import RegistryError, StoreError, UpstreamError
from ..intake.registry_kept import registry_in_force
from ..names import printable
from ..settings import Settings
from ..state.rows import KeptRegistry
from ..state.store import Store


async def run_unknown_pcs(settings: Settings, args: argparse.Namespace) -> int:
    store: Store | None = None
    kept: KeptRegistry | None = None
    try:
        if settings.queue_db_path.exists():
            store = await Store.open(settings.queue_db_path, recover=False)
            kept = await store.kept_registry()
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    target = make_target(settings)
    try:
        try:
            registry, source = await trio.to_thread.run_sync(registry_in_force, settings, kept)
        except (RegistryError, OSError) as exc:
            print(f"registry: {exc}", file=sys.stderr)
            return 1
        if registry.source == "discovered":
            print(
                "no registry in force (every folder is a PC): no id is unknown",
                file=sys.stderr,
            )
            return 1
        named = {pc.id for pc in registry.pcs}
        print(f"registry: {source} ({len(named)} PC(s))")
        unknown = {
            pc_id: n for pc_id, n in (await target.pcs_in_table()).items() if pc_id not in named
        }
        if not unknown:
            print("every row of the table is under a PC id the registry names")
            return 0
        for pc_id, n in sorted(unknown.items()):
            print(f"{printable(pc_id):<12} {n:>7} row(s) under an id the registry does not name")
        if not args.apply:
            print(
                f"{sum(unknown.values())} row(s) under {len(unknown)} unknown id(s): run with "
                "--apply to delete them and their hand rows (dry run, nothing changed)"
            )
            return 0
        if store is not None:
            queued = await store.drop_pcs(unknown)
            if queued:
                print(f"dropped {queued} queued record(s) of those ids from the local queue")
        for pc_id in sorted(unknown):
            deleted = await target.delete_pc_rows(pc_id)
            print(f"{printable(pc_id):<12} deleted {deleted} row(s)")
        return 0
    except UpstreamError as exc:
        print(f"the table could not be read or changed: {exc.summary}", file=sys.stderr)
        return 1
    finally:
        await target.aclose()
        if store is not None:
            await store.close()
