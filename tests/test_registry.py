"""The PC registry (DESIGN 3.3): parsing and validation, auto-discovery, watch paths."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_gfxsync.errors import RegistryError
from trio_gfxsync.intake.registry import (
    MAX_ID_LENGTH,
    PcEntry,
    discover_pcs,
    discovery_excludes,
    load_registry,
    parse_registry,
    resolve_watch_path,
)

DESIGN_EXAMPLE = b"""{"pcs": [{"id": "PC01", "watch_path": "PC01", "enabled": true,
          "name": "Feature table", "ip": "192.168.1.101",
          "description": "Main feature table GFX PC"}],
 "version": "1.0"}"""


def registry(*pcs: dict[str, Any], **extra: Any) -> bytes:
    return json.dumps({"pcs": list(pcs), **extra}).encode()


def entry(pc_id: str = "PC01", watch_path: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": pc_id, "watch_path": watch_path if watch_path is not None else pc_id, **extra}


def test_design_example_loads() -> None:
    assert parse_registry(DESIGN_EXAMPLE) == (
        PcEntry(
            id="PC01",
            watch_path="PC01",
            enabled=True,
            name="Feature table",
            ip="192.168.1.101",
            description="Main feature table GFX PC",
        ),
    )


def test_unknown_fields_are_ignored_and_optional_fields_default() -> None:
    data = registry(
        entry("PC01", colour="red", gfx_version=3.2),
        entry("table GG", "tables/table GG", enabled=False),
        version="1.0",
        updated_by="ops",
    )
    pcs = parse_registry(data)
    assert pcs == (
        PcEntry("PC01", "PC01"),
        PcEntry("table GG", "tables/table GG", enabled=False),
    )


def test_utf8_bom_is_accepted() -> None:
    assert parse_registry(b"\xef\xbb\xbf" + DESIGN_EXAMPLE)[0].id == "PC01"


def test_empty_pc_list_is_valid() -> None:
    assert parse_registry(b'{"pcs": []}') == ()


def test_windows_separators_in_watch_path_are_normalised() -> None:
    assert parse_registry(registry(entry("PC01", "tables\\PC01")))[0].watch_path == "tables/PC01"


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        (entry("PC01"), "duplicate"),
        (entry("a/b", "ab"), "id"),
        (entry("a\\b", "ab"), "id"),
        (entry("x" * (MAX_ID_LENGTH + 1), "x"), "id"),
        (entry("PC\x07", "PC"), "id"),
        (entry("PC\n02", "PC"), "id"),
        (entry("", "PC"), "id"),
        ({"watch_path": "PC"}, "id"),
        (entry(5, "PC"), "id"),
        (entry("PC02", "/mnt/nas/PC02"), "watch_path"),
        (entry("PC02", "C:\\gfx\\PC02"), "watch_path"),
        (entry("PC02", "../PC02"), "watch_path"),
        (entry("PC02", "PC02/../../etc"), "watch_path"),
        (entry("PC02", "."), "watch_path"),
        (entry("PC02", ""), "watch_path"),
        ({"id": "PC02"}, "watch_path"),
        (entry("PC02", enabled="yes"), "enabled"),
        (entry("PC02", enabled=1), "enabled"),
        (entry("PC02", enabled=None), "enabled"),
        (entry("PC02", name=7), "name"),
        ("PC02", "object"),
    ],
)
def test_bad_entries_are_named(bad: Any, fragment: str) -> None:
    data = registry(entry("PC01"), bad)
    with pytest.raises(RegistryError) as info:
        parse_registry(data)
    message = str(info.value)
    assert message.startswith("pcs[1]"), message
    assert fragment in message, message


def test_id_of_128_printable_characters_with_spaces_is_allowed() -> None:
    pc_id = ("Feature table " * 10)[:MAX_ID_LENGTH]
    assert parse_registry(registry(entry(pc_id, "ft")))[0].id == pc_id


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{",
        b"pcs: []",
        b"\xff\xfe{}",
        b'{"pcs": [}',
        b"[]",
        b"{}",
        b'{"pcs": {}}',
        b'{"PCS": []}',
        b'{"pcs": null}',
        b"null",
        b'"pcs"',
    ],
)
def test_not_json_or_missing_pcs(data: bytes) -> None:
    with pytest.raises(RegistryError):
        parse_registry(data)


# --------------------------------------------------------------------------- discovery


def test_discover_pcs_from_top_level_folders(tmp_path: Path) -> None:
    for folder in (
        "PC01",
        "table GG",
        "Table 3 (final)",
        "config",
        "_error",
        ".snapshot",
        ".recycle",
        "PC01/nested",
    ):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "notes.txt").write_text("not a PC")
    (tmp_path / "PGFX_live_data_export GameID=1.json").write_text("{}")

    pcs = discover_pcs(tmp_path, discovery_excludes("config/pc_registry.json", "_error"))

    assert pcs == (
        PcEntry("PC01", "PC01"),
        PcEntry("Table 3 (final)", "Table 3 (final)"),
        PcEntry("table GG", "table GG"),
    )


def test_discovery_excludes_the_registry_folder_and_error_folder(tmp_path: Path) -> None:
    for folder in ("settings", "quarantine", "config", "PC01"):
        (tmp_path / folder).mkdir()
    excludes = discovery_excludes("settings/pcs.json", "quarantine")
    assert [pc.id for pc in discover_pcs(tmp_path, excludes)] == ["PC01"]


def test_discovery_skips_symlinked_folders(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    base = tmp_path / "nas"
    base.mkdir()
    (base / "PC01").mkdir()
    (base / "escape").symlink_to(outside, target_is_directory=True)
    assert [pc.id for pc in discover_pcs(base, frozenset())] == ["PC01"]


def test_load_registry_without_file_discovers(tmp_path: Path) -> None:
    (tmp_path / "PC01").mkdir()
    loaded = load_registry(tmp_path, tmp_path / "config" / "pc_registry.json", frozenset())
    assert loaded.source == "discovered"
    assert list(loaded.enabled) == ["PC01"]


def test_load_registry_from_file(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    registry_file = tmp_path / "config" / "pc_registry.json"
    registry_file.write_bytes(registry(entry("PC01"), entry("PC02", enabled=False)))
    loaded = load_registry(tmp_path, registry_file, frozenset({"config"}))
    assert loaded.source == "file"
    assert [pc.id for pc in loaded.pcs] == ["PC01", "PC02"]
    assert list(loaded.enabled) == ["PC01"]


def test_nul_in_watch_path_is_a_registry_error(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    registry_file = tmp_path / "config" / "pc_registry.json"
    registry_file.write_bytes(registry(entry("PC01", "PC\u000001")))
    with pytest.raises(RegistryError):
        load_registry(tmp_path, registry_file, frozenset({"config"}))


# --------------------------------------------------------------------------- watch paths


def test_resolve_watch_path_inside_the_base(tmp_path: Path) -> None:
    (tmp_path / "tables" / "PC01").mkdir(parents=True)
    pc = PcEntry("PC01", "tables/PC01")
    assert resolve_watch_path(tmp_path, pc) == (tmp_path / "tables" / "PC01").resolve()


def test_resolve_watch_path_symlink_inside_the_base_is_allowed(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real", target_is_directory=True)
    assert resolve_watch_path(tmp_path, PcEntry("PC01", "alias")) == (tmp_path / "real").resolve()


@pytest.mark.parametrize("link_target", ["outside", "outside/deeper", "/"])
def test_resolve_watch_path_refuses_a_symlink_out_of_the_base(
    tmp_path: Path, link_target: str
) -> None:
    base = tmp_path / "nas"
    base.mkdir()
    target = Path(link_target) if link_target == "/" else tmp_path / link_target
    target.mkdir(parents=True, exist_ok=True)
    (base / "PC01").symlink_to(target, target_is_directory=True)
    with pytest.raises(RegistryError) as info:
        resolve_watch_path(base, PcEntry("PC01", "PC01"))
    assert "PC01" in str(info.value)


def test_load_registry_refuses_a_symlink_out_of_the_base(tmp_path: Path) -> None:
    base = tmp_path / "nas"
    (base / "config").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    (base / "PC01").symlink_to(tmp_path / "secret", target_is_directory=True)
    registry_file = base / "config" / "pc_registry.json"
    registry_file.write_bytes(registry(entry("PC01")))
    with pytest.raises(RegistryError):
        load_registry(base, registry_file, frozenset({"config"}))


# --------------------------------------------------------------------------- property

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
id_like = st.one_of(
    st.sampled_from(["PC01", "PC02", "table GG", "", "a/b", "..", "PC\x00", "x" * 129]),
    st.text(max_size=12),
    json_scalars,
)
path_like = st.one_of(
    st.sampled_from(["PC01", "../x", "/abs", "C:\\x", ".", "a/./b", "a//b", "a\\..\\b"]),
    st.text(max_size=12),
    json_scalars,
)
entries = st.one_of(
    st.fixed_dictionaries(
        {"id": id_like, "watch_path": path_like},
        optional={
            "enabled": json_scalars,
            "name": json_scalars,
            "ip": json_scalars,
            "description": json_scalars,
        },
    ),
    json_values,
)
registry_documents = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"pcs": st.lists(entries, max_size=5)}, optional={"version": json_values}
    ),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=registry_documents, ensure_ascii=st.booleans())
def test_any_json_value_ends_in_entries_or_registry_error(
    document: Any, ensure_ascii: bool
) -> None:
    data = json.dumps(document, ensure_ascii=ensure_ascii).encode("utf-8", "surrogatepass")
    try:
        pcs = parse_registry(data)
    except RegistryError as exc:
        assert str(exc)
        return
    assert isinstance(pcs, tuple)
    assert all(isinstance(pc, PcEntry) for pc in pcs)
    assert len({pc.id for pc in pcs}) == len(pcs)
    for pc in pcs:
        assert 1 <= len(pc.id) <= MAX_ID_LENGTH and "/" not in pc.id and pc.id.isprintable()
        assert not pc.watch_path.startswith("/") and ".." not in pc.watch_path.split("/")
        assert isinstance(pc.enabled, bool)


@pytest.mark.parametrize(
    ("first", "second"),
    [("PC01", "PC01"), ("PC01", "PC01/1021"), ("tables/PC02", "tables"), ("PC01/", "./PC01")],
)
def test_overlapping_watch_paths_are_refused(tmp_path: Path, first: str, second: str) -> None:
    for folder in (first, second):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
    registry = tmp_path / "config" / "pc_registry.json"
    registry.parent.mkdir()
    registry.write_text(
        json.dumps({"pcs": [{"id": "A", "watch_path": first}, {"id": "B", "watch_path": second}]})
    )
    with pytest.raises(RegistryError) as info:
        load_registry(tmp_path, registry, frozenset())
    assert "'A' and 'B'" in str(info.value) and "overlap" in str(info.value)


def test_a_symlink_loop_as_watch_path_is_a_registry_error(tmp_path: Path) -> None:
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    registry = tmp_path / "config" / "pc_registry.json"
    registry.parent.mkdir()
    registry.write_text(json.dumps({"pcs": [{"id": "A", "watch_path": "loop"}]}))
    with pytest.raises(RegistryError, match="symbolic link loop"):
        load_registry(tmp_path, registry, frozenset())
