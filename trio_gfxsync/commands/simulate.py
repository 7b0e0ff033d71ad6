"""`trio-gfxsync simulate`: virtual GFX PCs writing PokerGFX exports into a NAS folder.

simulate --nas DIR --pcs 3                      live: a hand per PC every --hand-seconds
simulate --nas DIR --seed 7 --start 2025-10-16T10:00:00Z --archive 2000
                                                N finished sessions at once, same bytes
                                                for the same arguments
--trouble partial,truncated,bom,old-copy,void-hand   live trouble, at --trouble-rate
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import trio

from ..simulator.virtual_pc import TROUBLES, run_live, write_archive


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nas", type=Path, required=True, help="the NAS folder to write into")
    parser.add_argument("--pcs", type=int, default=3, help="virtual GFX PCs (default 3)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument(
        "--archive", type=int, metavar="N", help="write N historical sessions and exit"
    )
    parser.add_argument(
        "--start",
        default="2025-10-16T10:00:00Z",
        help="with --archive: when the first session starts (ISO 8601, UTC)",
    )
    parser.add_argument(
        "--max-hands", type=int, default=200, help="with --archive: hands per session at most"
    )
    parser.add_argument(
        "--hand-seconds", type=float, default=5.0, help="live: seconds between hands per PC"
    )
    parser.add_argument(
        "--hands-per-session", type=int, default=40, help="live: a new session after this many"
    )
    parser.add_argument(
        "--trouble",
        default="",
        help="live: comma-separated, any of " + ", ".join(TROUBLES),
    )
    parser.add_argument("--trouble-rate", type=float, default=0.05, help="live: per hand")
    parser.add_argument("--duration", type=float, default=None, help="live: stop after seconds")


def parse_start(text: str) -> datetime:
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def run_simulate(args: argparse.Namespace) -> int:
    if args.pcs < 1:
        print("--pcs: at least 1", file=sys.stderr)
        return 2
    if args.archive is not None:
        try:
            start = parse_start(args.start)
        except ValueError:
            print(f"--start: not an ISO 8601 time: {args.start!r}", file=sys.stderr)
            return 2
        began = time.monotonic()
        paths = write_archive(
            args.nas,
            pcs=args.pcs,
            sessions=args.archive,
            seed=0 if args.seed is None else args.seed,
            start=start,
            hands=(1, max(1, args.max_hands)),
        )
        size = sum(p.stat().st_size for p in paths)
        print(
            f"wrote {len(paths)} sessions ({size / 2**20:.1f} MiB) for {args.pcs} PCs into "
            f"{args.nas} in {time.monotonic() - began:.1f}s"
        )
        return 0
    troubles = frozenset(t.strip() for t in args.trouble.split(",") if t.strip())
    unknown = troubles - set(TROUBLES)
    if unknown:
        print(f"--trouble: unknown {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    print(f"{args.pcs} virtual GFX PCs writing into {args.nas} (Ctrl-C stops)", flush=True)

    async def live() -> None:
        with trio.move_on_after(args.duration if args.duration else float("inf")):
            await run_live(
                args.nas,
                pcs=args.pcs,
                hand_seconds=args.hand_seconds,
                seed=args.seed,
                hands_per_session=args.hands_per_session,
                troubles=troubles,
                trouble_rate=args.trouble_rate,
            )

    try:
        trio.run(live)
    except KeyboardInterrupt:
        print("stopped")
    return 0
