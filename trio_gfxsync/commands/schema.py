"""`trio-gfxsync schema [--hands]`: the migration SQL, to paste into Supabase's SQL editor.

The migrations ship inside the package (trio_gfxsync/sql/), byte for byte the files of
deploy/supabase/migrations (a test holds them equal), so that a copy of the package alone, or
a repository copied without its symlinks (Synology's File Station), still has them.

The optional hand tables are the files named `<timestamp>_gfx_hands*.sql` (the tables, then
their upgrades); every other file is a migration the agent needs.
"""

from __future__ import annotations

import re
from importlib import resources
from importlib.resources.abc import Traversable

_HANDS_FILE = re.compile(r"[0-9]+_gfx_hands(_[a-z0-9_]+)?\.sql")


def migrations() -> list[Traversable]:
    """Every migration file, oldest first (the Supabase CLI's <UTC timestamp>_name.sql)."""
    folder = resources.files("trio_gfxsync").joinpath("sql")
    return sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)


def is_hands_migration(name: str) -> bool:
    return bool(_HANDS_FILE.fullmatch(name))


def migration_sql() -> str:
    """The migrations the agent needs, in order; each can be applied again without harm."""
    return "\n".join(
        f.read_text(encoding="utf-8") for f in migrations() if not is_hands_migration(f.name)
    )


def hands_migration_files() -> list[Traversable]:
    """The hand tables' migrations, oldest first: applied in this order, each after the last."""
    found = [f for f in migrations() if is_hands_migration(f.name)]
    if not found:
        raise FileNotFoundError("no *_gfx_hands*.sql migration in the package")
    return found
