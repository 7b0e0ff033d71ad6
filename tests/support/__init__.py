"""What the tests and the benchmark scripts share: real parts, agents, trees and waits.

infra            PostgreSQL, the real PostgREST, the gateway stand-in (Supabase's API gateway)
agent            `running_agent(...)`: the agent as a subprocess, its env, its JSON log;
                 `run_cli(...)` for one-shot commands
tree             NAS trees of synthetic PokerGFX exports shaped like the real ones
records          one factory of SessionRecords for the unit tests
truth            the table a NAS tree must produce, computed without the agent's parser
pieces           what "no part of a key" means, checked on an output by brute force
stale_mount      the agent with one folder hanging like a stale SMB mount
waits            wait for a condition (never for a fixed time), read the agent's SQLite
browser          Debian's Chromium through Playwright (fixtures)
canned_dashboard a stand-in for the agent's HTTP side, for the static dashboard tests
"""
