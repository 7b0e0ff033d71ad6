"""One-shot command-line commands (the service itself is `agent.Agent`).

check        configuration, NAS, registry, queue folder, target: one line each
scan         one backfill of every PC folder, with progress, then exit
dlq          list, show, replay or purge dead letters and quarantined files
status       the running agent's /api/status as a table
healthcheck  Docker's HEALTHCHECK: exit 0 when the local /health answers 200
schema       the migration SQL to paste into Supabase's SQL editor
"""
