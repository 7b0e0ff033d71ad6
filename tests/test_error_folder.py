"""The error folder on real files and a real queue database (issue 22, "A safe error folder"):
every copy recorded, pruning removes only what the agent made, a copy never replaces a file
it did not make, and the settings refuse the places where it could do harm.

The property test drives random histories (quarantines of new and changed files, files dropped
into the folder by an operator, replaced copies, caps) and checks the folder against its own
bookkeeping, never against the module's: an operator's file is never touched.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.support.agent import run_cli
from trio_gfxsync.errors import ConfigError
from trio_gfxsync.intake.error_folder import ErrorFolder, make_copy
from trio_gfxsync.settings import load_settings
from trio_gfxsync.state.rows import ErrorCopy
from trio_gfxsync.state.store import Store

MiB = 2**20


async def open_folder(tmp_path: Path, **caps: int) -> tuple[ErrorFolder, Store, Path]:
    store = await Store.open(tmp_path / "queue" / "pending.db")
    folder = ErrorFolder(tmp_path / "queue" / "_error", store, **caps)
    return folder, store, tmp_path / "nas" / "PC01"


def bad_file(pc: Path, rel: str, content: bytes) -> Path:
    path = pc / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def recorded(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {row[0] for row in conn.execute("SELECT path FROM error_copy")}


async def test_a_copy_is_recorded_before_it_is_written_and_its_note_says_why(
    tmp_path: Path,
) -> None:
    folder, store, pc = await open_folder(tmp_path)
    try:
        source = bad_file(pc, "1016/bad.json", b'{"ID": 1, "Hands": [')
        copy = await folder.keep(source, "PC01", "1016/bad.json", "not_json", "unexpected end")
        assert copy == tmp_path / "queue" / "_error" / "PC01" / "1016" / "bad.json"
        assert isinstance(copy, Path) and copy.read_bytes() == source.read_bytes()
        note = Path(f"{copy}.reason.txt").read_text()
        assert note == "not_json: unexpected end\n"
        assert recorded(tmp_path / "queue" / "pending.db") == {str(copy)}
        (row,) = await store.oldest_error_copies(10)
        assert row.bytes == copy.stat().st_size + len(note)
        assert (row.device, row.inode) == (copy.stat().st_dev, copy.stat().st_ino)
    finally:
        await store.close()


def test_each_file_is_recorded_before_a_byte_is_written_into_it(tmp_path: Path) -> None:
    """A crash while copying leaves no file the agent made and does not know of."""
    source = bad_file(tmp_path / "nas" / "PC01", "bad.json", b"{broken" * 100)
    seen: list[tuple[int, int, int]] = []

    def record(copy: ErrorCopy) -> None:
        files = (Path(copy.path), Path(copy.note_path))
        seen.append((copy.bytes, *(f.stat().st_size for f in files)))

    target = tmp_path / "queue" / "_error" / "PC01" / "bad.json"
    made = make_copy(source, target, ("PC01", "bad.json"), "not_json: x", [], record, 10**6)
    assert seen[0] == (0, 0, 0), "recorded first, both files still empty"
    assert seen[-1][0] == made.bytes == 700 + len("not_json: x\n")


async def test_a_copy_never_replaces_a_file_the_agent_did_not_make(tmp_path: Path) -> None:
    folder, store, pc = await open_folder(tmp_path)
    try:
        theirs = tmp_path / "queue" / "_error" / "PC01" / "bad.json"
        bad_file(theirs.parent, "bad.json", b"an operator's notes")
        source = bad_file(pc, "bad.json", b"{broken")
        copy = await folder.keep(source, "PC01", "bad.json", "not_json", "x")
        assert theirs.read_bytes() == b"an operator's notes"
        assert copy == theirs.with_name("bad (2).json")
        assert isinstance(copy, Path) and copy.read_bytes() == b"{broken"
        # the file changed and is quarantined again: its own copy is replaced, theirs stays
        source.write_bytes(b"{broken again")
        again = await folder.keep(source, "PC01", "bad.json", "not_json", "y")
        assert again == copy and copy.read_bytes() == b"{broken again"
        assert theirs.read_bytes() == b"an operator's notes"
        assert recorded(tmp_path / "queue" / "pending.db") == {str(copy)}
    finally:
        await store.close()


async def test_its_own_copy_replaced_by_someone_else_is_left_alone(tmp_path: Path) -> None:
    folder, store, pc = await open_folder(tmp_path)
    try:
        source = bad_file(pc, "bad.json", b"{broken")
        copy = await folder.keep(source, "PC01", "bad.json", "not_json", "x")
        assert isinstance(copy, Path)
        copy.unlink()
        copy.write_bytes(b"the operator's edited copy")  # same name, not the agent's file
        again = await folder.keep(source, "PC01", "bad.json", "not_json", "y")
        assert copy.read_bytes() == b"the operator's edited copy"
        assert again == copy.with_name("bad (2).json")
    finally:
        await store.close()


async def test_pruning_removes_only_recorded_copies_oldest_first(tmp_path: Path) -> None:
    folder, store, pc = await open_folder(tmp_path, folder_max_bytes=3000, copy_max_bytes=1500)
    try:
        root = tmp_path / "queue" / "_error"
        root.mkdir(parents=True)
        big = root / "operator-capture.bin"
        big.touch()
        os.truncate(big, 600 * MiB)  # sparse: 600 MiB to a pruner reading sizes
        os.utime(big, (1, 1))  # the oldest file in the folder by far
        made = []
        for n in range(4):
            source = bad_file(pc, f"bad{n}.json", bytes([65 + n]) * 1000)
            copy = await folder.keep(source, "PC01", f"bad{n}.json", "not_json", "x")
            assert isinstance(copy, Path)
            made.append(copy)
        assert big.stat().st_size == 600 * MiB, "an operator's file is never pruned"
        assert (tmp_path / "queue" / "pending.db").exists()
        kept = [c for c in made if c.exists()]
        assert kept == made[-2:], "the oldest copies went first, until under the cap"
        assert all(not Path(f"{c}.reason.txt").exists() for c in made[:2])
        assert recorded(tmp_path / "queue" / "pending.db") == {str(c) for c in kept}
        assert await store.error_copy_bytes() <= 3000
    finally:
        await store.close()


async def test_a_large_file_is_copied_up_to_the_cap_and_the_note_says_so(tmp_path: Path) -> None:
    folder, store, pc = await open_folder(tmp_path, copy_max_bytes=1024)
    try:
        source = bad_file(pc, "big.json", b"x" * 5000)
        copy = await folder.keep(source, "PC01", "big.json", "too_large", "5000 bytes")
        assert isinstance(copy, Path) and copy.stat().st_size == 1024
        assert "(copy cut at 1024 bytes)" in Path(f"{copy}.reason.txt").read_text()
    finally:
        await store.close()


async def test_the_agents_caps_are_64_mib_a_copy_and_512_mib_in_all(tmp_path: Path) -> None:
    """The error folder as the agent makes it (no caps given): README's 64 MiB of one file and
    512 MiB in all, written out here, not read from the module. Eight quarantined files of
    65 MiB (sparse on the NAS side): each copy cut at 64 MiB; eight copies and their notes are
    a few bytes over 512 MiB, so the oldest is pruned."""
    store = await Store.open(tmp_path / "queue" / "pending.db")
    folder = ErrorFolder(tmp_path / "queue" / "_error", store)
    pc = tmp_path / "nas" / "PC01"
    try:
        copies = []
        for n in range(8):
            source = bad_file(pc, f"big{n}.json", b"")
            os.truncate(source, 65 * MiB)
            copy = await folder.keep(source, "PC01", f"big{n}.json", "too_large", "65 MiB")
            assert isinstance(copy, Path)
            assert copy.stat().st_size == 64 * MiB, n
            assert "(copy cut at 67108864 bytes)" in Path(f"{copy}.reason.txt").read_text()
            copies.append(copy)
        kept = [c for c in copies if c.exists()]
        assert kept == copies[1:], "the oldest copy went, to stay within 512 MiB"
        on_disk = sum(c.stat().st_size + Path(f"{c}.reason.txt").stat().st_size for c in kept)
        assert on_disk <= 512 * MiB
        assert await store.error_copy_bytes() == on_disk
    finally:
        await store.close()


async def test_no_copy_over_the_file_it_copies_nor_anywhere_on_the_nas(tmp_path: Path) -> None:
    """Outside Docker nothing stops an error folder at the NAS base but the settings; the copy
    code must not replace the file it copies (nor write into the PC folders) on its own."""
    store = await Store.open(tmp_path / "queue" / "pending.db")
    try:
        nas = tmp_path / "nas"
        source = bad_file(nas / "PC01", "1016/bad.json", b"{broken")
        folder = ErrorFolder(nas, store)  # <error>/<pc>/<path> is the source itself
        reason = await folder.keep(source, "PC01", "1016/bad.json", "not_json", "x")
        assert source.read_bytes() == b"{broken"
        assert isinstance(reason, str)
        guarded = ErrorFolder(nas, store, keep_out=(nas,))
        reason = await guarded.keep(source, "PC01", "1016/bad.json", "not_json", "x")
        assert isinstance(reason, str) and "NAS" in reason
        assert sorted(p.name for p in (nas / "PC01" / "1016").iterdir()) == ["bad.json"]
        assert recorded(tmp_path / "queue" / "pending.db") == set()
    finally:
        await store.close()


async def test_a_fifo_or_a_link_is_not_copied(tmp_path: Path) -> None:
    folder, store, pc = await open_folder(tmp_path)
    try:
        pc.mkdir(parents=True)
        os.mkfifo(pc / "fifo.json")
        (pc / "link.json").symlink_to("/etc/passwd")
        for name in ("fifo.json", "link.json"):
            reason = await folder.keep(pc / name, "PC01", name, "not_a_regular_file", "x")
            assert isinstance(reason, str)
        assert recorded(tmp_path / "queue" / "pending.db") == set()
    finally:
        await store.close()


# ------------------------------------------------------------------ random histories

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("quarantine"), st.integers(0, 3), st.integers(1, 900)),
        st.tuples(st.just("operator"), st.integers(0, 5), st.integers(0, 900)),
        st.tuples(st.just("replace_copy"), st.integers(0, 3), st.integers(0, 50)),
    ),
    max_size=14,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPS, st.integers(500, 4000))
# an operator's file first, then copies over the cap: the oldest file is the operator's
@example([("operator", 5, 900), ("quarantine", 0, 900), ("quarantine", 1, 900)], 1000)
def test_random_histories_never_touch_an_operators_file(ops: list, cap: int) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        trio.run(_history, Path(tmp), ops, cap)


async def _history(tmp: Path, ops: list, cap: int) -> None:
    store = await Store.open(tmp / "queue" / "pending.db")
    root = tmp / "queue" / "_error"
    folder = ErrorFolder(root, store, folder_max_bytes=cap, copy_max_bytes=1000)
    pc = tmp / "nas" / "PC01"
    theirs: dict[Path, bytes] = {}  # every file an operator put in the folder, with its bytes
    mine: dict[int, Path] = {}
    try:
        for op, n, size in ops:
            if op == "quarantine":
                source = bad_file(pc, f"d/bad{n}.json", os.urandom(size))
                copy = await folder.keep(source, "PC01", f"d/bad{n}.json", "not_json", "x")
                assert isinstance(copy, Path), copy
                mine[n] = copy
                assert copy.read_bytes() == source.read_bytes()[:1000]
            elif op == "operator":
                # a name the agent used or may use next: the operator's file wins it
                name = root / "PC01" / "d" / (f"bad{n}.json" if n < 4 else f"notes{n}.txt")
                if name.exists() or name in theirs:
                    continue
                name.parent.mkdir(parents=True, exist_ok=True)
                theirs[name] = os.urandom(size)
                name.write_bytes(theirs[name])
            elif n in mine and mine[n].exists():
                # the operator replaced one of the agent's copies with a file of their own
                mine[n].unlink()
                theirs[mine[n]] = os.urandom(size)
                mine[n].write_bytes(theirs[mine[n]])
            for name, data in theirs.items():
                assert name.read_bytes() == data, f"{name} was touched"
            assert await store.error_copy_bytes() <= cap + 1100  # the newest copy may exceed
        on_disk = {str(p) for p in root.rglob("*") if p.is_file()}
        made = recorded(tmp / "queue" / "pending.db")
        notes = {f"{p}.reason.txt" for p in made}
        assert on_disk - {str(p) for p in theirs} <= made | notes, "every file made is recorded"
    finally:
        await store.close()


# ------------------------------------------------------------------ settings


@pytest.fixture
def places(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in list(os.environ):
        if name.startswith("GFX_SYNC_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("GFX_SYNC_NAS_BASE_PATH", str(tmp_path / "nas"))
    monkeypatch.setenv("GFX_SYNC_QUEUE_DB_PATH", str(tmp_path / "queue" / "pending.db"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    "folder",
    [
        ".",  # the queue's folder itself: pruning would remove the queue database
        "..",  # above it
        "{tmp}",
        "/",
        "{tmp}/queue",
        "{tmp}/nas",  # the NAS base: a copy could replace the file it copies
        "{tmp}/nas/_error",  # on the NAS: the scanners would read the copies
        "{tmp}/nas/PC01/errors",
    ],
)
def test_an_error_folder_where_it_could_do_harm_is_refused(
    places: Path, monkeypatch: pytest.MonkeyPatch, folder: str
) -> None:
    monkeypatch.setenv("GFX_SYNC_ERROR_FOLDER", folder.format(tmp=places))
    with pytest.raises(ConfigError) as caught:
        load_settings()
    (problem,) = caught.value.problems
    assert problem.startswith("GFX_SYNC_ERROR_FOLDER: "), problem


def test_the_sqlite_targets_folder_is_refused_too(
    places: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GFX_SYNC_TARGET", "sqlite")
    monkeypatch.setenv("GFX_SYNC_SQLITE_TARGET_PATH", str(places / "rows" / "target.db"))
    monkeypatch.setenv("GFX_SYNC_ERROR_FOLDER", str(places / "rows"))
    with pytest.raises(ConfigError, match=r"^GFX_SYNC_ERROR_FOLDER: .*SQLITE_TARGET_PATH"):
        load_settings()


def test_a_link_to_the_queue_folder_is_seen_through(places: Path, monkeypatch) -> None:
    (places / "queue").mkdir()
    (places / "errors").symlink_to(places / "queue")
    monkeypatch.setenv("GFX_SYNC_ERROR_FOLDER", str(places / "errors"))
    with pytest.raises(ConfigError, match=r"^GFX_SYNC_ERROR_FOLDER: "):
        load_settings()


@pytest.mark.parametrize("folder", ["_error", "quarantine/bad", "{tmp}/elsewhere/errors"])
def test_a_sub_folder_of_the_queue_or_a_folder_apart_is_fine(
    places: Path, monkeypatch: pytest.MonkeyPatch, folder: str
) -> None:
    monkeypatch.setenv("GFX_SYNC_ERROR_FOLDER", folder.format(tmp=places))
    assert load_settings().error_dir.is_relative_to(places)


def test_run_with_an_error_folder_over_the_queue_exits_2_naming_it(tmp_path: Path) -> None:
    """A setting that ran before (and deleted what it should not) now stops the agent."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GFX_SYNC_")}
    (tmp_path / "nas").mkdir()
    env.update(
        GFX_SYNC_NAS_BASE_PATH=str(tmp_path / "nas"),
        GFX_SYNC_QUEUE_DB_PATH=str(tmp_path / "queue" / "pending.db"),
        GFX_SYNC_TARGET="sqlite",
        GFX_SYNC_ERROR_FOLDER=".",
    )
    result = run_cli(env, "run", cwd=tmp_path)
    assert result.returncode == 2, result
    assert result.stderr.startswith("GFX_SYNC_ERROR_FOLDER: "), result.stderr
    assert "Traceback" not in result.stderr
