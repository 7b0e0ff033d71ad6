"""trio-gfxsync: live PokerGFX session files from a broadcast NAS into Supabase."""

__version__ = "0.1.0"
