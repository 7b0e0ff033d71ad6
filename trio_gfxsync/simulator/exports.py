"""PokerGFX exports, made up but shaped exactly like the real ones: pure, deterministic, no I/O.

What the real files (../shared/samples/pokergfx) are, and so what these are:
- one JSON object per session, written compact with sorted keys and ASCII escapes, i.e.
  `json.dumps(doc, separators=(",", ":"), sort_keys=True)` reproduces a real file byte for byte;
- top-level keys CreatedDateTimeUTC, EventTitle, Hands, ID, Payouts, SoftwareVersion, Type;
- `ID` is the .NET ticks (100 ns since 0001-01-01) of CreatedDateTimeUTC, which has 7 fractional
  digits (`2025-10-16T10:58:07.5783819Z` <-> 638962090875783819);
- each hand: blinds, board, 8-9 players with stacks and statistics, its betting events; about
  4.8 KB of JSON per hand;
- the file name is `PGFX_live_data_export GameID=<ID>.json`, in a day folder named MMDD.

Everything comes from the `random.Random` passed in, so the same seed gives the same bytes.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

TICKS_PER_SECOND = 10_000_000
EPOCH = datetime(1, 1, 1, tzinfo=UTC)
NAMES = (
    "SOKRUTA", "Beketov", "Ding", "Raffoul", "SPASOV", "Blebea", "Gleb", "Mike", "Dari",
    "Kovalski", "Nguyen", "Okafor", "Lindqvist", "Moreau", "Tanaka", "Silva", "Horvath",
    "Petrenko", "Haddad", "Oyelaran", "Schmidt", "Rossi", "Alvarez", "Chen",
)  # fmt: skip
RANKS = "23456789tjqka"
SUITS = "shdc"
ACTIONS = ("FOLD", "CHECK", "CALL", "BET", "ALL IN")

Document = dict[str, Any]


def ticks_of(when: datetime) -> int:
    delta = when - EPOCH
    return (delta.days * 86_400 + delta.seconds) * TICKS_PER_SECOND + delta.microseconds * 10


def utc_text(ticks: int) -> str:
    """.NET ticks as PokerGFX writes the time: seconds with 7 fractional digits, then Z."""
    seconds, fraction = divmod(ticks, TICKS_PER_SECOND)
    when = EPOCH + timedelta(seconds=seconds)
    return when.strftime("%Y-%m-%dT%H:%M:%S") + f".{fraction:07d}Z"


def duration_text(ticks: int) -> str:
    """ISO 8601 as PokerGFX writes durations: `PT3M18.0255475S` (days as `P739539DT...`)."""
    seconds, fraction = divmod(ticks, TICKS_PER_SECOND)
    days, seconds = divmod(seconds, 86_400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    text = f"P{days}D" if days else "P"
    text += "T"
    if hours or days:
        text += f"{hours}H"
    if minutes or hours or days:
        text += f"{minutes}M"
    return text + f"{seconds}.{fraction:07d}S"


def file_name(session_id: int) -> str:
    return f"PGFX_live_data_export GameID={session_id}.json"


def day_folder(ticks: int) -> str:
    seconds = ticks // TICKS_PER_SECOND
    return (EPOCH + timedelta(seconds=seconds)).strftime("%m%d")


def to_bytes(document: Document) -> bytes:
    """Exactly how PokerGFX writes a file (checked byte for byte against the real samples)."""
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode("ascii")


@dataclass
class Seat:
    num: int
    name: str
    stack: int
    hands: int = 0
    vpip: int = 0
    pfr: int = 0
    aggressive: int = 0
    showdowns: int = 0
    winnings: int = 0


@dataclass
class Session:
    """One session of one table as it grows: `hand()` plays the next hand and returns it."""

    rng: random.Random
    created_ticks: int
    table_type: str = "FEATURE_TABLE"
    big_blind: int = 1000
    seats: list[Seat] = field(default_factory=list)
    hands: list[Document] = field(default_factory=list)
    clock: int = 0  # ticks: when the next hand starts
    eliminated: int = 0

    def __post_init__(self) -> None:
        if not self.seats:
            names = self.rng.sample(NAMES, self.rng.choice((8, 9)))
            stack = 60 * self.big_blind
            self.seats = [Seat(num, name, stack) for num, name in enumerate(names, start=2)]
        self.clock = self.created_ticks + self.rng.randrange(60, 2400) * TICKS_PER_SECOND

    @property
    def session_id(self) -> int:
        return self.created_ticks

    def document(self) -> Document:
        return {
            "CreatedDateTimeUTC": utc_text(self.created_ticks),
            "EventTitle": "",
            "Hands": self.hands,
            "ID": self.created_ticks,
            "Payouts": [0] * 10,
            "SoftwareVersion": "PokerGFX 3.2",
            "Type": self.table_type,
        }

    def to_bytes(self) -> bytes:
        return to_bytes(self.document())

    def hand(self) -> Document:
        """Play one hand: blinds, board, bets, a winner; stacks carry over to the next hand."""
        rng = self.rng
        live = [s for s in self.seats if s.stack > 0]
        if len(live) < 2:  # the table is down to one player: a new table would start
            for seat in self.seats:
                seat.stack = 40 * self.big_blind
            live = list(self.seats)
        number = len(self.hands) + 1
        button = live[number % len(live)]
        small = live[(number + 1) % len(live)]
        big = live[(number + 2) % len(live)]
        deck = [r + s for r in RANKS for s in SUITS]
        rng.shuffle(deck)
        starts = {seat.num: seat.stack for seat in self.seats}
        ante = self.big_blind
        pot = 0
        events: list[Document] = []
        in_hand = list(live)
        committed = {seat.num: 0 for seat in live}

        def put(seat: Seat, amount: int) -> int:
            amount = min(amount, seat.stack)
            seat.stack -= amount
            committed[seat.num] += amount
            return amount

        pot += put(big, ante) + put(small, self.big_blind // 2) + put(big, self.big_blind)
        boards: list[str] = []
        for street in range(4):
            if street:
                for _ in range(3 if street == 1 else 1):
                    card = deck.pop()
                    boards.append(card)
                    events.append(_event("BOARD CARD", 0, 0, 0, board=card))
            # a round of betting, and the answers to it
            for seat in list(in_hand) * 2:
                if len(in_hand) < 2:
                    break
                if seat not in in_hand:
                    continue
                action = rng.choices(ACTIONS, weights=(30, 25, 25, 15, 2))[0]
                if action == "FOLD" and not (street == 0 and seat is big):
                    in_hand.remove(seat)
                    events.append(_event("FOLD", seat.num, 0, 0))
                    continue
                if action in ("CHECK", "FOLD"):
                    events.append(_event("CHECK", seat.num, 0, pot))
                    continue
                amount = {
                    "CALL": self.big_blind,
                    "BET": rng.randrange(2, 8) * self.big_blind,
                    "ALL IN": seat.stack,
                }[action]
                paid = put(seat, amount)
                pot += paid
                if action != "CALL":
                    seat.aggressive += 1
                if street == 0:
                    seat.vpip += 1
                    seat.pfr += action != "CALL"
                events.append(_event(action, seat.num, paid, pot))
        winner = rng.choice(in_hand)
        winner.stack += pot
        showdown = len(in_hand) > 1
        duration = rng.randrange(40, 400) * TICKS_PER_SECOND + rng.randrange(TICKS_PER_SECOND)
        players = []
        for seat in self.seats:
            if seat.num not in committed and starts[seat.num] == 0:
                continue  # busted earlier: no longer dealt in
            seat.hands += 1
            seat.showdowns += showdown and seat in in_hand
            seat.winnings += seat.stack - starts[seat.num]
            if seat.stack == 0 and starts[seat.num] > 0:
                self.eliminated += 1
            players.append(
                {
                    "AggressionFrequencyPercent": _percent(seat.aggressive, seat.hands),
                    "BlindBetStraddleAmt": 0,
                    "CumulativeWinningsAmt": seat.winnings,
                    "EliminationRank": (
                        len(self.seats) - self.eliminated + 1 if seat.stack == 0 else -1
                    ),
                    "EndStackAmt": seat.stack,
                    "HoleCards": [f"{deck.pop()} {deck.pop()}"],
                    "LongName": seat.name.upper(),
                    "Name": seat.name,
                    "PlayerNum": seat.num,
                    "PreFlopRaisePercent": _percent(seat.pfr, seat.hands),
                    "SittingOut": False,
                    "StartStackAmt": starts[seat.num],
                    "VPIPPercent": _percent(seat.vpip, seat.hands),
                    "WentToShowDownPercent": _percent(seat.showdowns, seat.hands),
                }
            )
        hand = {
            "AnteAmt": ante,
            "BetStructure": "NOLIMIT",
            "BombPotAmt": 0,
            "Description": "",
            "Duration": duration_text(duration),
            "Events": events,
            "FlopDrawBlinds": {
                "AnteType": "BB_ANTE_BB1ST",
                "BigBlindAmt": self.big_blind,
                "BigBlindPlayerNum": big.num,
                "BlindLevel": 0,
                "ButtonPlayerNum": button.num,
                "SmallBlindAmt": self.big_blind // 2,
                "SmallBlindPlayerNum": small.num,
                "ThirdBlindAmt": 0,
                "ThirdBlindPlayerNum": 0,
            },
            "GameClass": "FLOP",
            "GameVariant": "HOLDEM",
            "HandNum": number,
            "NumBoards": 1,
            "Players": players,
            "RecordingOffsetStart": duration_text(self.clock - ticks_of(EPOCH)),
            "RunItNumTimes": 1,
            "StartDateTimeUTC": utc_text(self.clock),
            "StudLimits": {
                "BringInAmt": 0,
                "BringInPlayerNum": 1,
                "HighLimitAmt": 0,
                "LowLimitAmt": 0,
            },
        }
        self.hands.append(hand)
        self.clock += duration + rng.randrange(5, 90) * TICKS_PER_SECOND
        return hand

    def void_last_hand(self) -> None:
        """PokerGFX after a hand is voided: the same file, one hand fewer."""
        if self.hands:
            self.hands.pop()


def _event(kind: str, player: int, bet: int, pot: int, *, board: str | None = None) -> Document:
    return {
        "BetAmt": bet,
        "BoardCards": board,
        "BoardNum": 1 if board else 0,
        "DateTimeUTC": None,
        "EventType": kind,
        "NumCardsDrawn": 0,
        "PlayerNum": player,
        "Pot": pot,
    }


def _percent(count: int, total: int) -> int:
    return round(100 * count / total) if total else 0


def new_session(rng: random.Random, when: datetime, table_type: str = "FEATURE_TABLE") -> Session:
    """A session created at `when` (its id: the ticks, with a random 100 ns digit)."""
    created = ticks_of(when) + rng.randrange(10)
    return Session(rng, created, table_type=table_type)
