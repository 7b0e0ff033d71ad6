"""PokerGFX export file -> SessionRecord. Bytes in, record out: no I/O here.

A PokerGFX 3.x export is one JSON object per session with the keys
`CreatedDateTimeUTC, EventTitle, Hands, ID, Payouts, SoftwareVersion, Type`. `ID` is an 18-digit
integer (above 2**53), timestamps carry 7 fractional digits. The file's own JSON text is kept
as it is for `raw_json`: re-serialising it could round numbers or reorder keys.

Errors the caller acts on (quarantine with the reason, or retry when the file settles) are the
`ParseError` branch of the tree in `errors.py`: FileTooLarge, BadEncoding, NotJson, NotASession,
NoSessionId.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import orjson

from .errors import BadEncoding, FileTooLarge, NoSessionId, NotASession, NotJson
from .names import printable
from .records import UNKNOWN, FileVersion, Key

BIGINT_MAX = 2**63 - 1
_BOM_STARTS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")
_GAME_ID = re.compile(r"GameID=(\d{1,19})(?!\d)")
# [0-9], not \d: \d matches other scripts' digits, which PostgreSQL refuses (22007)
_TIMESTAMP = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]{1,9})?"
    r"(Z|[+-]([0-9]{2}):?([0-9]{2}))?"
)
# Columns of gfx_sessions the agent writes; every row carries all of them (PGRST102 otherwise).
ROW_COLUMNS = (
    "gfx_pc_id",
    "session_id",
    "file_name",
    "file_path",
    "file_hash",
    "file_size",
    "file_mtime",
    "raw_json",
    "table_type",
    "event_title",
    "software_version",
    "hand_count",
    "player_count",
    "session_created_at",
    "version_stamp",
)


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """One row of gfx_sessions, ready to upsert (`row` is its JSON, raw_json spliced in)."""

    version: FileVersion
    session_id: int
    file_name: str
    table_type: str
    event_title: str | None
    software_version: str | None
    hand_count: int
    player_count: int
    session_created_at: str | None
    row: bytes = field(repr=False)
    # where the file's own JSON sits in `row` (kept once in memory, not twice)
    raw_span: tuple[int, int] = (0, 0)
    live: bool = True  # False for the startup backfill: a live change goes first everywhere
    # the stamp of the read (keep_newest.StampClock): the database keeps the larger
    version_stamp: int | None = None
    # HandNum of the file's last hand (the hand being played is the next one); None without
    # hands or without a usable HandNum
    last_hand_num: int | None = None

    @property
    def raw_json(self) -> bytes:
        """The file's JSON text as sent in `raw_json` (UTF-8, BOM removed)."""
        return self.row[self.raw_span[0] : self.raw_span[1]]

    @property
    def key(self) -> Key:
        """The conflict key of gfx_sessions."""
        return (self.version.pc_id, self.session_id)

    @property
    def attempts(self) -> int:
        """A record read from the NAS has not been refused yet (queued ones count theirs)."""
        return 0

    def is_newer_than(self, other: SessionRecord) -> bool:
        """The database's rule: the larger version stamp (the later read) wins. Without
        stamps (records built by hand), more hands, then the newer file mtime; the last
        tie-breaks (hash, path) only make the choice independent of arrival order."""

        def order(r: SessionRecord) -> tuple[int, int, int, str, str]:
            stamp = -1 if r.version_stamp is None else r.version_stamp
            v = r.version
            return (stamp, r.hand_count, v.mtime_ns, v.sha256, v.rel_path)

        return order(self) > order(other)


def restamp(record: SessionRecord, version_stamp: int) -> SessionRecord:
    """The same record with another version stamp (the last key of `row`, after raw_json)."""
    old = b"null" if record.version_stamp is None else str(record.version_stamp).encode()
    tail = b'"version_stamp":' + old + b"}"
    if not record.row.endswith(tail):
        raise ValueError("the row does not end with its version stamp")
    row = record.row[: -len(tail)] + b'"version_stamp":' + str(version_stamp).encode() + b"}"
    version = replace(record.version, version_stamp=version_stamp)
    return replace(record, row=row, version_stamp=version_stamp, version=version)


def decode_text(data: bytes) -> str:
    """UTF-8 with or without BOM; UTF-16 and UTF-32 only with their BOM (as Windows writes them)."""
    boms = (
        (b"\xff\xfe\x00\x00", "utf-32-le"),
        (b"\x00\x00\xfe\xff", "utf-32-be"),
        (b"\xef\xbb\xbf", "utf-8"),
        (b"\xff\xfe", "utf-16-le"),
        (b"\xfe\xff", "utf-16-be"),
    )
    for bom, codec in boms:
        if data.startswith(bom):
            try:
                return data[len(bom) :].decode(codec)
            except UnicodeDecodeError as exc:
                raise BadEncoding(
                    f"invalid {codec} after its byte order mark: {exc.reason}"
                ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadEncoding(
            f"not UTF-8 (byte {exc.start}: {exc.reason}) and no UTF-16 byte order mark"
        ) from None
    if "\x00" in text:
        # ASCII text in UTF-16 is valid UTF-8 with a NUL every other byte
        raise BadEncoding("contains NUL bytes: UTF-16 without a byte order mark?")
    return text


def session_id_from_name(file_name: str) -> int | None:
    match = _GAME_ID.search(file_name)
    if match is None:
        return None
    value = int(match.group(1))
    return value if 0 < value <= BIGINT_MAX else None


def _usable_id(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        # isdigit() alone admits '²' and other digits int() refuses
        if not (text.isascii() and text.isdecimal() and len(text) <= 19):
            return None
        value = int(text)
    if isinstance(value, int) and 0 < value <= BIGINT_MAX:
        return value
    return None  # floats have already lost the low digits of an 18-digit id


def created_at_text(value: object) -> str | None:
    """`CreatedDateTimeUTC` as text PostgreSQL parses (all 7 digits kept), or None if unusable."""
    if not isinstance(value, str):
        return None
    match = _TIMESTAMP.fullmatch(value.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    if match.group(9) is not None and (int(match.group(9)) > 15 or int(match.group(10)) > 59):
        return None  # PostgreSQL's offset range (22008 otherwise)
    try:
        datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:
        return None
    if year < 1:
        return None
    text = value.strip()
    # The field is UTC by name; without a zone PostgreSQL would use the session's time zone.
    return text if match.group(8) else text + "Z"


def count_players(hands: list[object]) -> int:
    """Distinct non-empty player names over all hands (names compared without outer spaces)."""
    names: set[str] = set()
    for hand in hands:
        players = hand.get("Players") if isinstance(hand, dict) else None
        if not isinstance(players, list):
            continue
        for player in players:
            name = player.get("Name") if isinstance(player, dict) else None
            if isinstance(name, str) and name.strip():
                names.add(name.strip())
    return len(names)


def _contains_nul(value: object) -> bool:
    """PostgreSQL's jsonb cannot store U+0000 (error 22P05) in keys or strings."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def last_hand_num(hands: list[object]) -> int | None:
    """HandNum of the last hand written that has one (PokerGFX appends each finished hand)."""
    for hand in reversed(hands):
        num = hand.get("HandNum") if isinstance(hand, dict) else None
        if isinstance(num, int) and not isinstance(num, bool) and 0 <= num <= 2**31 - 1:
            return num
    return None


def _optional_text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def mtime_iso(mtime_ns: int) -> str:
    seconds, nanos = divmod(mtime_ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, UTC).replace(microsecond=nanos // 1000)
    return stamp.isoformat().replace("+00:00", "Z")


def parse_session(
    data: bytes,
    *,
    pc_id: str,
    rel_path: str,
    mtime_ns: int,
    max_file_bytes: int,
    ctime_ns: int = UNKNOWN,
    inode: int = UNKNOWN,
    version_stamp: int | None = None,
) -> SessionRecord:
    """Turn the bytes of one PokerGFX file into the record to upsert, or raise a ParseError.
    `version_stamp`: the stamp of this read (keep_newest.StampClock)."""
    if len(data) > max_file_bytes:
        raise FileTooLarge(f"{len(data)} bytes is above the limit of {max_file_bytes}")
    text = decode_text(data)
    # Plain UTF-8 is sent as read; a BOM or UTF-16 is normalised to UTF-8 (PostgREST wants UTF-8).
    raw = data if not data.startswith(_BOM_STARTS) else text.encode("utf-8")
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise NotJson(f"not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise NotASession(f"top level is a JSON {type(document).__name__}, not an object")
    if b"\\u0000" in raw and _contains_nul(document):
        raise NotASession("contains \\u0000, which PostgreSQL's jsonb cannot store")

    file_name = rel_path.rsplit("/", 1)[-1]
    session_id = _usable_id(document.get("ID"))
    if session_id is None:
        session_id = session_id_from_name(file_name)
    if session_id is None:
        raise NoSessionId(
            "no usable session id: `ID` is missing or not a positive 64-bit integer, "
            "and the file name has no GameID=<n>"
        )

    hands = document.get("Hands")
    hands = hands if isinstance(hands, list) else []
    table_type = document.get("Type")
    version = FileVersion(
        pc_id=pc_id,
        rel_path=rel_path,
        size=len(data),
        mtime_ns=mtime_ns,
        sha256=hashlib.sha256(data).hexdigest(),
        session_id=session_id,
        ctime_ns=ctime_ns,
        inode=inode,
        hand_count=len(hands),
        version_stamp=version_stamp,
    )
    record = SessionRecord(
        version=version,
        session_id=session_id,
        file_name=file_name,
        table_type=table_type if isinstance(table_type, str) and table_type else "UNKNOWN",
        event_title=_optional_text(document.get("EventTitle")),
        software_version=_optional_text(document.get("SoftwareVersion")),
        hand_count=len(hands),
        player_count=count_players(hands),
        session_created_at=created_at_text(document.get("CreatedDateTimeUTC")),
        row=b"",
        version_stamp=version_stamp,
        last_hand_num=last_hand_num(hands),
    )
    row = orjson.dumps(
        {
            "gfx_pc_id": pc_id,
            "session_id": session_id,
            # a name that is not UTF-8 as `\xNN` (names.py); the queue keeps the exact one
            "file_name": printable(file_name),
            "file_path": printable(rel_path),
            "file_hash": version.sha256,
            "file_size": version.size,
            "file_mtime": mtime_iso(mtime_ns),
            # spliced in verbatim: 18-digit integers and 7-digit fractions stay exact
            "raw_json": orjson.Fragment(raw),
            "table_type": record.table_type,
            "event_title": record.event_title,
            "software_version": record.software_version,
            "hand_count": record.hand_count,
            "player_count": record.player_count,
            "session_created_at": record.session_created_at,
            "version_stamp": version_stamp,
        }
    )
    # a `"raw_json":` before the fragment cannot come from a string value: JSON escapes its quotes
    start = row.index(b'"raw_json":') + len(b'"raw_json":')
    return replace(record, row=row, raw_span=(start, start + len(raw)))
