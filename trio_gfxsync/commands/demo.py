"""`trio-gfxsync demo`: see it work with no Supabase account and no NAS.

Three virtual GFX PCs play live into a folder, the agent syncs them into the embedded SQLite
target, the dashboard shows it, all under one nursery. Ctrl-C or SIGTERM stops everything: the
agent drains as in production, then the PCs stop; exit 0, nothing left running, no traceback
(a second Ctrl-C skips the drain).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import socket
import sys
from pathlib import Path

import trio

from ..agent import Agent
from ..logs import setup_logging
from ..settings import load_settings
from ..simulator.virtual_pc import run_live

DEFAULT_PORT = 8080


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dir", type=Path, default=Path(".demo"), help="where the demo keeps its files (.demo)"
    )
    parser.add_argument("--pcs", type=int, default=3, help="virtual GFX PCs (default 3)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="dashboard port (another if it is taken)"
    )
    parser.add_argument(
        "--hand-seconds", type=float, default=3.0, help="seconds between hands per PC"
    )


def free_port(preferred: int) -> int:
    """The preferred port if nothing listens there, else one the system picks."""
    for port in (preferred, 0):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(probe.getsockname()[1])
    raise OSError("no free port")


async def run_demo(args: argparse.Namespace) -> None:
    folder = args.dir.absolute()
    nas, queue = folder / "nas", folder / "queue"
    nas.mkdir(parents=True, exist_ok=True)
    queue.mkdir(parents=True, exist_ok=True)
    settings = load_settings(
        _env_file=None,
        nas_base_path=nas,
        queue_db_path=queue / "pending.db",
        target="sqlite",
        health_host="127.0.0.1",
        health_port=free_port(args.port),
        poll_interval=1.0,
        log_level="WARNING",
        log_format="console",
    )
    agent = Agent(settings)
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: run_live(
                nas, pcs=args.pcs, hand_seconds=args.hand_seconds, task_status=task_status
            )
        )
        await nursery.start(agent.run)
        url = agent.http_urls[0] if agent.http_urls else "(no HTTP side)"
        print(
            f"demo: {args.pcs} virtual GFX PCs write into {nas}\n"
            f"demo: the agent syncs them into {settings.sqlite_target_file}\n"
            f"demo: dashboard {url}/   (Ctrl-C stops)",
            flush=True,
        )
        await agent.finished.wait()
        nursery.cancel_scope.cancel()  # the agent has drained: the PCs stop
    print("demo: stopped", flush=True)


def main(args: argparse.Namespace) -> int:
    if args.pcs < 1:
        print("--pcs: at least 1", file=sys.stderr)
        return 2
    setup_logging("WARNING", "console")
    # a Ctrl-C after the agent has stopped lands outside its signal handler: the demo is over.
    # Once trio.run has returned, a late one is ignored: it would otherwise interrupt the exit
    # itself (the process then dies of SIGINT, exit -2, instead of exiting 0)
    with contextlib.suppress(KeyboardInterrupt):
        try:
            trio.run(run_demo, args)
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    return 0
