"""`trio-gfxsync schema`: the migration SQL, to paste into Supabase's SQL editor."""

from __future__ import annotations

from importlib import resources


def migration_sql() -> str:
    return resources.files("trio_gfxsync").joinpath("sql/gfx_sync.sql").read_text(encoding="utf-8")
