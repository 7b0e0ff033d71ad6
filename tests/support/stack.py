"""`scripts/stack`: a real local stack for integrators, the one the tests run on.

A throwaway PostgreSQL cluster with Supabase's roles and the migrations applied, and the real
PostgREST 12.0.2 in front of it; prints the GFX_SYNC_* lines that point an agent at it (the key
is a service_role JWT signed for this PostgREST), then waits. Ctrl-C or SIGTERM stops both and
deletes the cluster.

    scripts/stack [--port 3000] [--hands] [--env-file stack.env]
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from tests.support import infra
from tests.support.cluster import ClusterError, start_cluster


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--port", type=int, default=0, help="PostgREST's port (default: free)")
    parser.add_argument("--hands", action="store_true", help="also the hand tables migration")
    parser.add_argument("--env-file", type=Path, help="also write the GFX_SYNC_* lines here")
    args = parser.parse_args()
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        cluster = start_cluster()
    except ClusterError as exc:
        print(f"stack: {exc}", file=sys.stderr)
        return 1
    infra.use_cluster(cluster)
    try:
        db = infra.create_database()
        if args.hands:
            infra.apply_hands_migrations(db.dsn)
        server = infra.start_postgrest(db, port=args.port or None)
        try:
            lines = [
                f"GFX_SYNC_SUPABASE_URL={server.url}",
                "GFX_SYNC_REST_PATH=",
                f"GFX_SYNC_SUPABASE_SECRET_KEY={server.service_role_jwt()}",
            ]
            if args.env_file is not None:
                args.env_file.write_text("\n".join(lines) + "\n")
            print("stack: PostgreSQL (a throwaway cluster) and PostgREST 12.0.2 are up")
            print(f"stack: psql '{db.dsn}'")
            print("stack: point an agent at it with:\n")
            print("\n".join(lines), flush=True)
            print("\nstack: Ctrl-C stops and deletes it", flush=True)
            while not stop.wait(0.5):
                if server.process.poll() is not None:
                    print(f"stack: PostgREST exited:\n{server.log()}", file=sys.stderr)
                    return 1
        finally:
            server.close()
    finally:
        infra.use_cluster(None)
        cluster.stop()
    print("stack: stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
