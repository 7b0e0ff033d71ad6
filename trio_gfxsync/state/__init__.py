"""State: the one SQLite file that survives a restart (`queue_db_path`).

    schema   tables, migrations (`PRAGMA user_version`), opening and recovery of the file
    rows     the typed rows read back (acknowledged files, queued records, dead letters)
    store    every query, run in a worker thread through a CapacityLimiter(1)
    ledger   `FileLedger.acknowledge`: the one path by which a file version becomes done

A file version is "acknowledged" in exactly one place: `FileLedger` (ledger.py), which writes
`file_state` in the same transaction as the outcome that justifies it.
"""
