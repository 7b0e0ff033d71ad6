"""The simulator's exports against the real PokerGFX files of ../shared: same keys and types at
every level, the same byte layout, id <-> timestamp, file names and day folders; archives are
byte-identical for the same arguments; live PCs rewrite whole files and make the trouble asked for.
"""

from __future__ import annotations

import json
import random
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import trio

from trio_gfxsync.pokergfx import parse_session
from trio_gfxsync.simulator.exports import (
    day_folder,
    new_session,
    ticks_of,
    to_bytes,
    utc_text,
)
from trio_gfxsync.simulator.virtual_pc import LivePc, run_live, write_archive

START = datetime(2025, 10, 16, 10, 0, tzinfo=UTC)
NAME = re.compile(r"^PGFX_live_data_export GameID=(\d{18})\.json$")
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z$")


def shape(value: Any) -> Any:
    """Keys and value types, recursively; lists by the shape of their elements."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in sorted(value.items())}
    if isinstance(value, list):
        shapes = {json.dumps(shape(item), sort_keys=True) for item in value}
        return ["list", sorted(shapes)]
    if value is None:
        return "null"
    return type(value).__name__


def merged_shapes(documents: list[Any], path: str) -> dict[str, set[str]]:
    """Every key seen at `path` (hand, player, event...) with the type names seen for it."""
    found: dict[str, set[str]] = {}
    for document in documents:
        for item in _at(document, path):
            for key, value in item.items():
                found.setdefault(key, set()).add("null" if value is None else type(value).__name__)
    return found


def _at(document: Any, path: str) -> list[dict[str, Any]]:
    items = [document]
    for part in path.split(".") if path else []:
        nxt: list[Any] = []
        for item in items:
            value = item[part]
            nxt.extend(value if isinstance(value, list) else [value])
        items = nxt
    return items


@pytest.fixture(scope="module")
def real(samples_dir_module: Path) -> list[tuple[Path, bytes, dict[str, Any]]]:
    files = sorted(samples_dir_module.rglob("*.json"))
    assert len(files) == 10
    return [(f, f.read_bytes(), json.loads(f.read_bytes())) for f in files]


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    nas = tmp_path_factory.mktemp("nas")
    return write_archive(nas, pcs=3, sessions=24, seed=11, start=START)


def test_the_real_files_are_exactly_what_to_bytes_writes(real) -> None:
    for path, raw, document in real:
        assert to_bytes(document) == raw, path.name


@pytest.mark.parametrize(
    "path",
    ["", "Hands", "Hands.Players", "Hands.Events", "Hands.FlopDrawBlinds", "Hands.StudLimits"],
)
def test_every_level_has_the_real_keys_and_types(real, archive, path: str) -> None:
    ours = merged_shapes([json.loads(p.read_bytes()) for p in archive], path)
    theirs = merged_shapes([document for _, _, document in real], path)
    assert set(ours) == set(theirs), f"{path or 'top'}: keys differ"
    for key, types in theirs.items():
        # `null` where the real files have a value sometimes is fine, a new type is not
        assert ours[key] <= types | {"null"}, f"{path}.{key}: {ours[key]} vs {types}"


def test_ids_times_names_and_folders(archive) -> None:
    for path in archive:
        document = json.loads(path.read_bytes())
        match = NAME.match(path.name)
        assert match and int(match.group(1)) == document["ID"]
        assert TIME.match(document["CreatedDateTimeUTC"])
        assert utc_text(document["ID"]) == document["CreatedDateTimeUTC"], "ID is the ticks"
        assert document["ID"] > 2**53
        assert path.parent.name == day_folder(document["ID"])
        for hand in document["Hands"]:
            assert TIME.match(hand["StartDateTimeUTC"])
            assert re.fullmatch(r"PT(\d+H)?(\d+M)?\d+\.\d{7}S", hand["Duration"])
        assert to_bytes(document) == path.read_bytes(), "compact, sorted, ASCII"
        # and the agent's parser agrees with a plain json.loads
        record = parse_session(
            path.read_bytes(),
            pc_id=path.parts[-3],
            rel_path=f"{path.parent.name}/{path.name}",
            mtime_ns=path.stat().st_mtime_ns,
            max_file_bytes=10**8,
        )
        assert record.session_id == document["ID"]
        assert record.hand_count == len(document["Hands"])
        assert record.session_created_at == document["CreatedDateTimeUTC"]
        assert json.loads(record.raw_json) == document


def test_hands_are_the_real_size_and_sessions_vary(archive) -> None:
    hands = [len(json.loads(p.read_bytes())["Hands"]) for p in archive]
    size = sum(p.stat().st_size for p in archive)
    per_hand = size / sum(hands)
    assert 3_500 < per_hand < 6_000, per_hand  # the samples: 3.2 to 5.0 KB per hand
    assert min(hands) >= 1 and max(hands) <= 200 and len(set(hands)) > 5


def test_an_archive_is_byte_identical_for_the_same_arguments(tmp_path: Path) -> None:
    def build(folder: str, seed: int) -> dict[str, tuple[bytes, int]]:
        paths = write_archive(tmp_path / folder, pcs=2, sessions=6, seed=seed, start=START)
        return {
            str(p.relative_to(tmp_path / folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in paths
        }

    first, again, other = build("a", 5), build("b", 5), build("c", 6)
    assert first == again
    assert first != other
    # files end when their last hand ends, after the session was created
    for rel, (data, mtime_ns) in first.items():
        created = json.loads(data)["ID"]
        unix_created = (created - ticks_of(datetime(1970, 1, 1, tzinfo=UTC))) * 100
        assert mtime_ns > unix_created, rel


def test_a_live_pc_rewrites_its_session_a_hand_at_a_time(tmp_path: Path) -> None:
    pc = LivePc(tmp_path, "PC01", random.Random(1), hands_per_session=3)
    sizes = []
    for _ in range(4):
        pc.next_hand()
        assert pc.session is not None
        files = sorted(tmp_path.rglob("*.json"))
        sizes.append([f.stat().st_size for f in files])
    assert [len(s) for s in sizes] == [1, 1, 1, 2], "a new session after 3 hands"
    assert sizes[0][0] < sizes[1][0] < sizes[2][0], "the whole file, growing"
    first = json.loads(sorted(tmp_path.rglob("*.json"))[0].read_bytes())
    assert [h["HandNum"] for h in first["Hands"]] == [1, 2, 3]


@pytest.mark.parametrize("trouble", ["partial", "truncated", "bom", "old-copy", "void-hand"])
def test_live_trouble(tmp_path: Path, trouble: str) -> None:
    pc = LivePc(tmp_path, "PC01", random.Random(2), 50, frozenset({trouble}), 0.0)
    pc.next_hand()
    pc.next_hand()
    pc.trouble_rate = 1.0
    happened = pc.next_hand()
    assert happened == [trouble]
    assert pc.session is not None
    path = sorted(tmp_path.rglob("*.json"), key=lambda p: p.parent.name)[0]
    data = path.read_bytes()
    full = pc.session.to_bytes()
    if trouble == "partial":
        assert data == full[: len(full) // 3]
        pc.finish_partial()
        assert path.read_bytes() == full
    elif trouble == "truncated":
        assert data == full[: len(full) // 2]
        with pytest.raises(json.JSONDecodeError):
            json.loads(data)
    elif trouble == "bom":
        assert data == b"\xef\xbb\xbf" + full
    elif trouble == "old-copy":
        copies = sorted(tmp_path.rglob(path.name))
        assert len(copies) == 2 and copies[0].parent != copies[1].parent
        assert copies[0].read_bytes() == copies[1].read_bytes()
    else:
        assert len(json.loads(data)["Hands"]) == 2, "the third hand was voided"


async def test_run_live_writes_for_every_pc(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            tables = await nursery.start(
                lambda task_status: run_live(
                    tmp_path, pcs=3, hand_seconds=0.05, seed=3, task_status=task_status
                )
            )
            while min(t.written for t in tables) < 3:
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["PC01", "PC02", "PC03"]
    for folder in tmp_path.iterdir():
        (session,) = folder.rglob("*.json")
        assert len(json.loads(session.read_bytes())["Hands"]) >= 3


def test_a_session_started_now_has_todays_folder() -> None:
    now = datetime.now(UTC)
    session = new_session(random.Random(4), now)
    assert day_folder(session.session_id) == now.strftime("%m%d")
    assert 0 <= session.session_id - ticks_of(now) < 10  # the ticks, and a 100 ns digit
