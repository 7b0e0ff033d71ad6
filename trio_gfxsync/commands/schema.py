"""`trio-gfxsync schema [--hands]`: the migration SQL, to paste into Supabase's SQL editor.

The migrations ship inside the package (trio_gfxsync/sql/), byte for byte the files of
deploy/supabase/migrations (a test holds them equal), so that a copy of the package alone, or
a repository copied without its symlinks (Synology's File Station), still has them.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable

HANDS_SUFFIX = "_gfx_hands.sql"


def migrations() -> list[Traversable]:
    """Every migration file, oldest first (the Supabase CLI's <UTC timestamp>_name.sql)."""
    folder = resources.files("trio_gfxsync").joinpath("sql")
    return sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)


def migration_sql() -> str:
    """The migrations the agent needs, in order; each can be applied again without harm."""
    return "\n".join(
        f.read_text(encoding="utf-8") for f in migrations() if not f.name.endswith(HANDS_SUFFIX)
    )


def hands_migration_file() -> Traversable:
    (found,) = [f for f in migrations() if f.name.endswith(HANDS_SUFFIX)]
    return found
