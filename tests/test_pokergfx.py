"""PokerGFX file -> SessionRecord: the real exports, encodings, session ids, bad files, properties.

Expected values are computed independently with the stdlib `json` module (which keeps 18-digit
integers exact), never with the parser under test.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_gfxsync.errors import (
    BadEncoding,
    FileTooLarge,
    NoSessionId,
    NotASession,
    NotJson,
    ParseError,
)
from trio_gfxsync.pokergfx import ROW_COLUMNS, SessionRecord, parse_session

MiB = 1024 * 1024
GROWING_SESSION = 638966318331324926
NAME = f"PGFX_live_data_export GameID={GROWING_SESSION}.json"
NAME_WITHOUT_ID = "PGFX_live_data_export.json"
MTIME_NS = 1_760_612_287_578_381_900

HYPOTHESIS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def parse(
    data: bytes,
    rel_path: str = f"1017/{NAME}",
    *,
    pc_id: str = "table-pokercaster",
    mtime_ns: int = MTIME_NS,
    max_file_bytes: int = 50 * MiB,
) -> SessionRecord:
    return parse_session(
        data, pc_id=pc_id, rel_path=rel_path, mtime_ns=mtime_ns, max_file_bytes=max_file_bytes
    )


def expected_players(document: dict[str, Any]) -> int:
    names = set()
    for hand in document.get("Hands") or []:
        for player in hand.get("Players") or []:
            name = player.get("Name")
            if isinstance(name, str) and name.strip():
                names.add(name.strip())
    return len(names)


def small_document(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "CreatedDateTimeUTC": "2025-10-21T08:23:53.1324926Z",
        "EventTitle": "Zoë's café 김치 ♠",
        "Hands": [
            {"HandNum": 1, "Players": [{"Name": "Ann"}, {"Name": " Bob "}, {"Name": ""}]},
            {"HandNum": 2, "Players": [{"Name": "Bob"}, {"Name": "Çelik"}, {"Name": "   "}]},
        ],
        "ID": GROWING_SESSION,
        "Payouts": [0, 0],
        "SoftwareVersion": "PokerGFX 3.2",
        "Type": "FINAL_TABLE",
    }
    for key, value in changes.items():
        if value is _ABSENT:
            document.pop(key, None)
        else:
            document[key] = value
    return document


_ABSENT = object()


def dumps(document: Any, **kwargs: Any) -> bytes:
    return json.dumps(document, **kwargs).encode("utf-8")


# --------------------------------------------------------------------------- real exports


def sample_files(samples_dir: Path) -> list[Path]:
    files = sorted(samples_dir.rglob("*.json"))
    assert len(files) >= 10, f"expected the 10 real exports under {samples_dir}, found {len(files)}"
    return files


def test_every_real_export_parses_exactly(samples_dir: Path) -> None:
    for path in sample_files(samples_dir):
        data = path.read_bytes()
        document = json.loads(data)
        pc_folder = path.relative_to(samples_dir).parts[0]
        rel_path = path.relative_to(samples_dir / pc_folder).as_posix()

        record = parse(data, rel_path, pc_id=pc_folder)

        name_id = int(re.search(r"GameID=(\d+)\.json$", path.name).group(1))
        assert record.session_id == name_id == document["ID"], path
        assert record.key == (pc_folder, name_id)
        assert record.file_name == path.name
        assert record.hand_count == len(document["Hands"]), path
        assert record.player_count == expected_players(document), path
        assert record.table_type == document["Type"], path
        assert record.event_title == document["EventTitle"]
        assert record.software_version == document["SoftwareVersion"]
        # all 7 fractional digits survive (Python's datetime would keep only 6)
        assert record.session_created_at == document["CreatedDateTimeUTC"], path
        assert re.fullmatch(r".*\.\d{7}Z", record.session_created_at)
        assert record.version.sha256 == hashlib.sha256(data).hexdigest()
        assert record.version.size == len(data)
        assert record.version.rel_path == rel_path
        assert record.raw_json == data  # no BOM in the samples: sent as read

        row = orjson.loads(record.row)
        assert set(row) == set(ROW_COLUMNS) and len(row) == len(ROW_COLUMNS)
        assert row["file_hash"] == hashlib.sha256(data).hexdigest()
        assert row["file_path"] == rel_path
        assert row["gfx_pc_id"] == pc_folder
        # the spliced raw_json is the file's JSON exactly (stdlib json keeps 18-digit ints)
        assert data in record.row  # spliced verbatim, not re-serialised
        exact_row = json.loads(record.row)
        assert exact_row["raw_json"] == document, path
        assert exact_row["session_id"] == document["ID"]
        assert f'"session_id":{document["ID"]}'.encode() in record.row


def test_growing_session_keeps_the_130_hand_copy_in_both_directions(samples_dir: Path) -> None:
    copies = sorted(samples_dir.rglob(f"*GameID={GROWING_SESSION}.json"))
    assert len(copies) == 2
    records = {}
    for path in copies:
        data = path.read_bytes()
        # the early copy gets the newer mtime: hand count must still decide
        mtime = MTIME_NS + (10**9 if len(data) < 100_000 else 0)
        records[len(json.loads(data)["Hands"])] = parse(
            data, path.parent.name + "/" + path.name, mtime_ns=mtime
        )
    early, late = records[6], records[130]
    assert early.key == late.key
    assert late.is_newer_than(early)
    assert not early.is_newer_than(late)


# --------------------------------------------------------------------------- encodings


@pytest.mark.parametrize(
    ("label", "encode"),
    [
        ("utf-8", lambda text: text.encode("utf-8")),
        ("utf-8-bom", lambda text: b"\xef\xbb\xbf" + text.encode("utf-8")),
        ("utf-16-le-bom", lambda text: b"\xff\xfe" + text.encode("utf-16-le")),
        ("utf-16-be-bom", lambda text: b"\xfe\xff" + text.encode("utf-16-be")),
    ],
)
def test_encodings_with_bom_give_the_same_record(label: str, encode: Any) -> None:
    document = small_document()
    text = json.dumps(document, ensure_ascii=False)
    data = encode(text)
    reference = parse(text.encode("utf-8"))

    record = parse(data)

    for name in (
        "session_id",
        "file_name",
        "table_type",
        "event_title",
        "software_version",
        "hand_count",
        "player_count",
        "session_created_at",
    ):
        assert getattr(record, name) == getattr(reference, name), (label, name)
    assert record.event_title == "Zoë's café 김치 ♠"
    assert record.player_count == 3  # Ann, Bob, Çelik
    # PostgREST wants UTF-8: the spliced raw_json is UTF-8 without BOM, whatever was read
    assert record.raw_json == text.encode("utf-8")
    assert json.loads(record.row.decode("utf-8"))["raw_json"] == document
    # the version is of the bytes actually read
    assert record.version.sha256 == hashlib.sha256(data).hexdigest()
    assert record.version.size == len(data)


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_utf16_without_bom_and_non_ascii_text_is_bad_encoding(codec: str) -> None:
    data = json.dumps(small_document(), ensure_ascii=False).encode(codec)
    with pytest.raises(BadEncoding):
        parse(data)


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_utf16_without_bom_ascii_text_is_bad_encoding(codec: str) -> None:
    data = json.dumps(small_document(EventTitle="plain")).encode(codec)
    with pytest.raises(BadEncoding):
        parse(data)


def test_latin1_bytes_are_bad_encoding() -> None:
    data = '{"ID": 1, "EventTitle": "Café"}'.encode("latin-1")
    assert b"\xe9" in data
    with pytest.raises(BadEncoding) as info:
        parse(data)
    assert info.value.reason == "bad_encoding"


# --------------------------------------------------------------------------- session id


def test_absent_id_comes_from_the_file_name_exactly() -> None:
    record = parse(dumps(small_document(ID=_ABSENT)))
    assert record.session_id == GROWING_SESSION
    assert json.loads(record.row)["session_id"] == GROWING_SESSION


def test_float_id_is_not_trusted_and_the_name_is_used() -> None:
    # 638966318331324926.0 as a double is 638966318331324928: the low digits are lost
    record = parse(dumps(small_document(ID=float(GROWING_SESSION))))
    assert record.session_id == GROWING_SESSION


def test_float_id_without_game_id_in_name_is_no_session_id() -> None:
    with pytest.raises(NoSessionId):
        parse(dumps(small_document(ID=6.5e17)), NAME_WITHOUT_ID)


def test_id_as_string_of_digits_is_accepted() -> None:
    record = parse(dumps(small_document(ID="638962090875783819")))
    assert record.session_id == 638962090875783819  # the ID, not the name's GameID


def test_id_wins_over_the_file_name() -> None:
    record = parse(dumps(small_document(ID=638962090875783819)))
    assert record.session_id == 638962090875783819


def test_neither_id_nor_game_id_is_no_session_id() -> None:
    with pytest.raises(NoSessionId) as info:
        parse(dumps(small_document(ID=_ABSENT)), f"1017/{NAME_WITHOUT_ID}")
    assert info.value.reason == "no_session_id"


@pytest.mark.parametrize("too_big", [2**63, 2**64 - 1, 2**64, 10**20])
def test_id_above_bigint_falls_back_to_the_name(too_big: int) -> None:
    assert parse(dumps(small_document(ID=too_big))).session_id == GROWING_SESSION
    with pytest.raises(NoSessionId):
        parse(dumps(small_document(ID=too_big)), NAME_WITHOUT_ID)


def test_id_at_bigint_max_is_kept() -> None:
    assert parse(dumps(small_document(ID=2**63 - 1))).session_id == 2**63 - 1


@pytest.mark.parametrize("bad", [True, False, 0, -5, "", "12a", None, [1], {"x": 1}])
def test_unusable_id_is_not_used(bad: Any) -> None:
    assert parse(dumps(small_document(ID=bad))).session_id == GROWING_SESSION
    with pytest.raises(NoSessionId):
        parse(dumps(small_document(ID=bad)), NAME_WITHOUT_ID)


def test_game_id_above_bigint_in_name_is_no_session_id() -> None:
    with pytest.raises(NoSessionId):
        parse(dumps(small_document(ID=_ABSENT)), f"x GameID={2**63}.json")
    with pytest.raises(NoSessionId):
        parse(dumps(small_document(ID=_ABSENT)), "x GameID=12345678901234567890.json")


@pytest.mark.parametrize("bad", ["²", "①", "1" * 5000], ids=["superscript", "circled", "5000"])
def test_id_string_of_non_decimal_digits_is_not_used(bad: str) -> None:
    data = json.dumps(small_document(ID=bad), ensure_ascii=False).encode()
    assert parse(data).session_id == GROWING_SESSION


# --------------------------------------------------------------------------- other fields


@pytest.mark.parametrize("type_value", [_ABSENT, "", None, 7, ["FINAL_TABLE"]])
def test_missing_or_unusable_type_is_unknown(type_value: Any) -> None:
    record = parse(dumps(small_document(Type=type_value)))
    assert record.table_type == "UNKNOWN"
    assert json.loads(record.row)["table_type"] == "UNKNOWN"


@pytest.mark.parametrize(
    "created",
    [
        _ABSENT,
        None,
        "",
        "yesterday",
        638966318331324926,
        "2025-13-21T08:23:53.1324926Z",
        "2025-02-30T08:23:53Z",
        "2025-10-21T25:23:53Z",
        "2025-10-21 08:23:53Z",
    ],
)
def test_missing_or_invalid_created_at_is_none(created: Any) -> None:
    record = parse(dumps(small_document(CreatedDateTimeUTC=created)))
    assert record.session_created_at is None
    assert json.loads(record.row)["session_created_at"] is None


def test_created_at_without_zone_gets_z() -> None:
    record = parse(dumps(small_document(CreatedDateTimeUTC="2025-10-21T08:23:53.1324926")))
    assert record.session_created_at == "2025-10-21T08:23:53.1324926Z"


def test_created_at_with_offset_is_kept() -> None:
    record = parse(dumps(small_document(CreatedDateTimeUTC="2025-10-21T10:23:53.1324926+02:00")))
    assert record.session_created_at == "2025-10-21T10:23:53.1324926+02:00"


@pytest.mark.parametrize(
    "created", ["٢٠٢٥-10-21T08:23:53.1324926Z", "2025-10-21T08:23:53.1324926+99:99"]
)
def test_created_at_postgres_cannot_parse_is_none(created: str) -> None:
    data = json.dumps(small_document(CreatedDateTimeUTC=created), ensure_ascii=False).encode()
    assert parse(data).session_created_at is None


def test_event_title_and_software_version_only_when_text() -> None:
    record = parse(dumps(small_document(EventTitle=5, SoftwareVersion=_ABSENT)))
    assert record.event_title is None
    assert record.software_version is None


def test_hands_not_a_list_counts_zero() -> None:
    record = parse(dumps(small_document(Hands={"0": {"Players": [{"Name": "Ann"}]}})))
    assert record.hand_count == 0 and record.player_count == 0


def test_malformed_hands_and_players_are_skipped_in_player_count() -> None:
    hands = [
        "not a hand",
        {"Players": "nobody"},
        {"Players": [None, {"Name": 5}, {"Name": " Ann"}, {"NoName": "x"}]},
        {"Players": [{"Name": "Ann "}, {"Name": "ann"}]},
    ]
    record = parse(dumps(small_document(Hands=hands)))
    assert record.hand_count == 4
    assert record.player_count == 2  # "Ann" and "ann"


# --------------------------------------------------------------------------- bad files


def test_too_large() -> None:
    data = dumps(small_document())
    assert parse(data, max_file_bytes=len(data)).hand_count == 2
    with pytest.raises(FileTooLarge) as info:
        parse(data, max_file_bytes=len(data) - 1)
    assert info.value.reason == "too_large"


@pytest.mark.parametrize(
    "data",
    [b"", b"   ", b"{", b'{"ID": 1,}', b"{'ID': 1}", b'{"ID": NaN}', b'{"ID": 1} x'],
)
def test_not_json(data: bytes) -> None:
    with pytest.raises(NotJson) as info:
        parse(data)
    assert info.value.reason == "not_json"


def test_truncated_mid_write_is_not_json() -> None:
    data = dumps(small_document(), indent=2)
    for cut in range(0, len(data) - 1, 7):
        with pytest.raises(NotJson):
            parse(data[:cut])


@pytest.mark.parametrize("data", [b"[]", b'[{"ID": 1}]', b"1", b'"x"', b"null", b"true"])
def test_top_level_not_an_object(data: bytes) -> None:
    with pytest.raises(NotASession) as info:
        parse(data)
    assert info.value.reason == "not_a_session"


@pytest.mark.parametrize(
    "data",
    [
        b'{"ID": 1, "EventTitle": "a\\u0000b"}',
        b'{"ID": 1, "Hands": [{"Players": [{"Name": "\\u0000"}]}]}',
        b'{"ID": 1, "k\\u0000": 1}',
    ],
    ids=["string", "nested", "key"],
)
def test_nul_character_is_not_a_session(data: bytes) -> None:
    with pytest.raises(NotASession):
        parse(data)


def test_escaped_backslash_before_u0000_is_accepted() -> None:
    # JSON text "\\u0000": an escaped backslash, then the letters u0000 (no NUL character)
    data = b'{"ID": 1, "EventTitle": "\\\\u0000"}'
    assert data.count(b"\\") == 2
    record = parse(data)
    assert record.event_title == "\\u0000" and len(record.event_title) == 6
    assert json.loads(record.row)["raw_json"] == json.loads(data)


def test_parse_errors_carry_a_message() -> None:
    for data in (b"{", b"[]", b"\xff\x00\xfe"):
        with pytest.raises(ParseError) as info:
            parse(data)
        assert info.value.message and str(info.value) == info.value.message


# --------------------------------------------------------------------------- properties

created_at = st.builds(
    lambda stamp, ticks: stamp.isoformat(timespec="seconds") + f".{ticks:07d}Z",
    st.datetimes(),
    st.integers(0, 9_999_999),
)


ANY_TEXT = st.text()


def documents(text: st.SearchStrategy[str] = ANY_TEXT) -> st.SearchStrategy[dict[str, Any]]:
    player_names = st.lists(st.fixed_dictionaries({"Name": text}), max_size=5)
    hand_list = st.lists(
        st.fixed_dictionaries({"HandNum": st.integers(1, 999), "Players": player_names}),
        max_size=5,
    )
    return st.fixed_dictionaries(
        {
            "CreatedDateTimeUTC": created_at,
            "EventTitle": text,
            "Hands": hand_list,
            "ID": st.integers(10**17, 2**63 - 1),
        },
        optional={
            "Type": st.sampled_from(["FEATURE_TABLE", "FINAL_TABLE", "OUTER_TABLE"]),
            "SoftwareVersion": st.sampled_from(["3.2.0", "3.2.985.0"]),
            "Payouts": st.lists(st.integers(0, 10**6), max_size=3),
        },
    )


# text PostgreSQL's jsonb can store: no lone surrogates, no U+0000
storable_text = st.text(
    st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=12
)


def outcome(data: bytes, rel_path: str, max_file_bytes: int = 50 * MiB) -> SessionRecord | None:
    """The record, or None for a ParseError; anything else propagates and fails the test."""
    try:
        record = parse(data, rel_path, max_file_bytes=max_file_bytes)
    except ParseError as exc:
        assert exc.reason in {
            "too_large",
            "bad_encoding",
            "not_json",
            "not_a_session",
            "no_session_id",
        }
        return None
    assert isinstance(record, SessionRecord)
    assert orjson.loads(record.row)["session_id"] == record.session_id
    return record


@HYPOTHESIS
@given(
    data=st.binary(max_size=300),
    rel_path=st.sampled_from([NAME, NAME_WITHOUT_ID]),
    max_file_bytes=st.sampled_from([50 * MiB, 64]),
)
def test_random_bytes_end_in_a_record_or_a_parse_error(
    data: bytes, rel_path: str, max_file_bytes: int
) -> None:
    outcome(data, rel_path, max_file_bytes)


@st.composite
def mutated_documents(draw: st.DrawFn) -> bytes:
    text = json.dumps(draw(documents()), ensure_ascii=draw(st.booleans()))
    # surrogatepass: a lone surrogate becomes bytes that are not UTF-8, as a broken writer's would
    data = bytearray(text.encode("utf-8", "surrogatepass"))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["truncate", "flip", "insert", "delete"]))
        if kind == "truncate":
            del data[draw(st.integers(0, len(data))) :]
        elif kind == "flip" and data:
            index = draw(st.integers(0, len(data) - 1))
            data[index] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            data.insert(draw(st.integers(0, len(data))), draw(st.integers(0, 255)))
        elif kind == "delete" and data:
            start = draw(st.integers(0, len(data) - 1))
            del data[start : start + draw(st.integers(1, 20))]
    return bytes(data)


@HYPOTHESIS
@given(data=mutated_documents(), rel_path=st.sampled_from([NAME, NAME_WITHOUT_ID]))
def test_mutated_documents_end_in_a_record_or_a_parse_error(data: bytes, rel_path: str) -> None:
    outcome(data, rel_path)


@HYPOTHESIS
@given(
    document=documents(storable_text),
    ensure_ascii=st.booleans(),
    indent=st.sampled_from([None, 2]),
    bom=st.booleans(),
)
def test_generated_documents_round_trip(
    document: dict[str, Any], ensure_ascii: bool, indent: int | None, bom: bool
) -> None:
    text = json.dumps(document, ensure_ascii=ensure_ascii, indent=indent)
    data = (b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8")

    record = parse(data, f"1021/{NAME}")

    assert record.session_id == document["ID"]  # the ID wins over the name's GameID
    assert record.hand_count == len(document["Hands"])
    assert record.player_count == expected_players(document)
    assert record.table_type == document.get("Type", "UNKNOWN")
    assert record.event_title == document["EventTitle"]
    assert record.session_created_at == document["CreatedDateTimeUTC"]
    assert record.version.sha256 == hashlib.sha256(data).hexdigest()
    assert record.raw_json == text.encode("utf-8")
    assert record.raw_json in record.row  # spliced verbatim (whitespace and all)
    row = json.loads(record.row)
    assert row["raw_json"] == document
    assert set(row) == set(ROW_COLUMNS)
    # session_key = session_id::text in the database: the JSON number must be exact digits
    assert str(row["session_id"]) == str(document["ID"])
    assert f'"session_id":{document["ID"]},'.encode() in record.row
