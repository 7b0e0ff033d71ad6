"""Which registry is in force, as the agent decides it (registry_watcher.py), for the commands:
the registry file; while it is gone, the last good one kept in the queue database; discovery
only when none was ever stored."""

from __future__ import annotations

from datetime import UTC, datetime

from ..settings import Settings
from ..state.rows import KeptRegistry
from ..state.store import Store
from .registry import (
    Registry,
    discover_pcs,
    discovery_excludes,
    read_registry_file,
    registry_from_bytes,
)


async def stored_registry(settings: Settings) -> KeptRegistry | None:
    """The kept registry of the agent's queue database (None: no database, or none kept).
    Raises StoreError when the database cannot be opened."""
    if not settings.queue_db_path.exists():
        return None
    store = await Store.open(settings.queue_db_path, recover=False)
    try:
        return await store.kept_registry()
    finally:
        await store.close()


def when(kept: KeptRegistry) -> str:
    return datetime.fromtimestamp(kept.stored_at, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def registry_in_force(settings: Settings, kept: KeptRegistry | None) -> tuple[Registry, str]:
    """Blocking (reads the NAS): the registry the agent runs with, and where it comes from in
    words. Raises RegistryError (an invalid file) and OSError (an unreadable base)."""
    base = settings.nas_base_path
    data = read_registry_file(settings.registry_file)
    if data is not None:
        return registry_from_bytes(base, data), str(settings.registry_file)
    if kept is not None:
        return (
            registry_from_bytes(base, kept.data, "kept"),
            f"the last good registry from {when(kept)}, kept while {settings.registry_file} "
            "is missing (`trio-gfxsync registry forget` to discover folders instead)",
        )
    excludes = discovery_excludes(settings.registry_path.as_posix(), settings.error_folder.name)
    return Registry(discover_pcs(base, excludes), "discovered"), "auto-discovered folders"
