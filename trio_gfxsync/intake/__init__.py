"""Intake: from the NAS to `SessionRecord`s.

    registry          which PC folders to watch (the registry file, or one PC per folder)
    registry_watcher  keeps one supervised scanner per enabled PC, reloads the registry live
    scanner           pure-Python stat polling of one PC folder -> `FileChange`
    reader            stat, read, stat again, parse -> `SessionRecord`, or quarantine

Nothing here talks to Supabase; what leaves intake is a record on a memory channel.
"""
