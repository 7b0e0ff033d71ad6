"""Synthetic PokerGFX exports shaped like the real ones (for tests that must run everywhere).

The shape follows ../shared/samples/pokergfx: top-level keys CreatedDateTimeUTC (7 fractional
digits), EventTitle, Hands, ID (.NET ticks of the creation time, 18 digits), Payouts,
SoftwareVersion, Type; file name `PGFX_live_data_export GameID=<ID>.json`.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

TICKS_EPOCH = datetime(1, 1, 1, tzinfo=UTC)
NAMES = ["SOKRUTA", "Beketov", "Ding", "Raffoul", "SPASOV", "Blebea", "Gleb ", "Mike", "Dari"]


def ticks(when: datetime) -> int:
    delta = when - TICKS_EPOCH
    return (delta.days * 86_400 + delta.seconds) * 10_000_000 + delta.microseconds * 10


def make_hand(number: int, rng: random.Random) -> dict:
    players = [
        {
            "Name": name,
            "LongName": name.strip().upper(),
            "PlayerNum": seat,
            "StartStackAmt": rng.randrange(10_000, 200_000),
            "EndStackAmt": rng.randrange(0, 200_000),
            "HoleCards": [f"{rng.choice('akqj')}{rng.choice('shdc')} 9h"],
            "SittingOut": False,
            "VPIPPercent": rng.randrange(0, 101),
        }
        for seat, name in enumerate(rng.sample(NAMES, 6), start=1)
    ]
    return {
        "HandNum": number,
        "GameVariant": "HOLDEM",
        "BetStructure": "NOLIMIT",
        "Duration": f"PT{rng.randrange(1, 9)}M{rng.randrange(0, 60)}.{rng.randrange(10**7):07d}S",
        "StartDateTimeUTC": "2025-10-16T11:00:00.1234567Z",
        "Players": players,
        "Events": [
            {"EventType": "BET", "BetAmt": rng.randrange(100, 5000), "PlayerNum": 2, "Pot": 0}
            for _ in range(rng.randrange(2, 6))
        ],
    }


@dataclass
class Session:
    session_id: int
    created: str
    hands: list[dict]
    table_type: str = "FEATURE_TABLE"

    @property
    def file_name(self) -> str:
        return f"PGFX_live_data_export GameID={self.session_id}.json"

    def document(self) -> dict:
        return {
            "CreatedDateTimeUTC": self.created,
            "EventTitle": "",
            "Hands": self.hands,
            "ID": self.session_id,
            "Payouts": [0] * 10,
            "SoftwareVersion": "PokerGFX 3.2",
            "Type": self.table_type,
        }

    def to_bytes(self) -> bytes:
        return json.dumps(self.document(), indent=2).encode()


def make_session(index: int, hands: int, rng: random.Random) -> Session:
    created = datetime(2025, 10, 16, 10, 0, tzinfo=UTC) + timedelta(
        minutes=index * 7, microseconds=rng.randrange(10**6)
    )
    extra_digit = rng.randrange(10)
    session_id = ticks(created) + extra_digit
    text = created.strftime("%Y-%m-%dT%H:%M:%S.") + f"{created.microsecond:06d}{extra_digit}Z"
    return Session(session_id, text, [make_hand(n, rng) for n in range(1, hands + 1)])


def write_session(path: Path, session: Session, mtime: float | None = None) -> None:
    """Write in place (as PokerGFX does) and optionally set the mtime."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(session.to_bytes())
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def build_nas(
    nas: Path, *, pcs: int, sessions_per_pc: int, seed: int, max_hands: int = 4
) -> dict[Path, Session]:
    """`<nas>/PC01..PCnn/<day>/<file>.json`, with .txt exports beside them (ignored)."""
    rng = random.Random(seed)
    written: dict[Path, Session] = {}
    index = 0
    for pc in range(1, pcs + 1):
        for n in range(sessions_per_pc):
            session = make_session(index, rng.randrange(1, max_hands + 1), rng)
            index += 1
            day = f"10{16 + n % 5}"
            path = nas / f"PC{pc:02d}" / day / session.file_name
            write_session(path, session)
            written[path] = session
        (nas / f"PC{pc:02d}" / "1016" / "PGFX_live_data_export.txt").write_text("GAME,PokerGFX\n")
    return written


def grow(path: Path, session: Session, rng: random.Random, hands: int = 1) -> None:
    """A hand (or a few) ends: append and rewrite the whole file."""
    start = len(session.hands) + 1
    session.hands.extend(make_hand(n, rng) for n in range(start, start + hands))
    write_session(path, session)
