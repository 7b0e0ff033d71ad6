"""The PC registry: which GFX PC folders to watch, as `PcEntry`s.

Two sources: the registry file `<nas_base_path>/<registry_path>` (DESIGN 3.3), or, when there is no
such file, auto-discovery (every top-level folder of the base is a PC named after it). Parsing and
validation are pure; `load_pcs` does the I/O and must run in a worker thread (it touches the NAS).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import orjson

from ..errors import RegistryError

MAX_ID_LENGTH = 128


# Folders a NAS or an SMB client keeps for itself: never PCs, never scanned
SYSTEM_FOLDERS = frozenset(
    name.casefold()
    for name in ("#recycle", "#snapshot", "$RECYCLE.BIN", "System Volume Information")
)


def is_system_folder(name: str) -> bool:
    """Dot-folders, Synology's @eaDir/@tmp/#recycle, Windows' recycle bin."""
    return name.startswith((".", "@")) or name.casefold() in SYSTEM_FOLDERS


@dataclass(frozen=True, slots=True)
class PcEntry:
    id: str
    watch_path: str  # relative to nas_base_path, '/'-separated
    enabled: bool = True
    name: str | None = None
    ip: str | None = None
    description: str | None = None


@dataclass(frozen=True, slots=True)
class Registry:
    pcs: tuple[PcEntry, ...]
    source: str  # "file", "kept" (the stored last good file, while the file is gone), "discovered"

    @property
    def enabled(self) -> dict[str, PcEntry]:
        return {pc.id: pc for pc in self.pcs if pc.enabled}


def _check_id(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise RegistryError(f"{where}: `id` must be a non-empty string")
    if len(value) > MAX_ID_LENGTH:
        raise RegistryError(f"{where}: `id` is longer than {MAX_ID_LENGTH} characters")
    if "/" in value or "\\" in value or not value.isprintable():
        raise RegistryError(f"{where}: `id` {value!r} must be printable and contain no '/'")
    return value


def _check_watch_path(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise RegistryError(f"{where}: `watch_path` must be a non-empty string")
    if not value.isprintable():
        raise RegistryError(f"{where}: `watch_path` {value!r} contains control characters")
    posix = value.replace("\\", "/")
    path = PurePosixPath(posix)
    if path.is_absolute() or (len(posix) > 1 and posix[1] == ":"):
        raise RegistryError(f"{where}: `watch_path` {value!r} must be relative to the NAS base")
    if ".." in path.parts:
        raise RegistryError(f"{where}: `watch_path` {value!r} must not contain '..'")
    normalised = str(path)
    if normalised in (".", ""):
        raise RegistryError(f"{where}: `watch_path` must name a folder below the NAS base")
    return normalised


def _optional_text(entry: dict[str, Any], key: str, where: str) -> str | None:
    value = entry.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RegistryError(f"{where}: `{key}` must be a string")
    return value


def parse_registry(data: bytes) -> tuple[PcEntry, ...]:
    """Validate the registry file's bytes; unknown fields are ignored (older files load as is)."""
    try:
        document = orjson.loads(data.removeprefix(b"\xef\xbb\xbf"))
    except orjson.JSONDecodeError as exc:
        raise RegistryError(f"not valid JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("pcs"), list):
        raise RegistryError('must be an object with a "pcs" list')
    entries: list[PcEntry] = []
    seen: set[str] = set()
    for index, raw in enumerate(document["pcs"]):
        where = f"pcs[{index}]"
        if not isinstance(raw, dict):
            raise RegistryError(f"{where}: must be an object")
        pc_id = _check_id(raw.get("id"), where)
        if pc_id in seen:
            raise RegistryError(f"{where}: duplicate id {pc_id!r}")
        seen.add(pc_id)
        enabled = raw.get("enabled", True)
        if not isinstance(enabled, bool):
            raise RegistryError(f"{where}: `enabled` must be true or false")
        entries.append(
            PcEntry(
                id=pc_id,
                watch_path=_check_watch_path(raw.get("watch_path"), where),
                enabled=enabled,
                name=_optional_text(raw, "name", where),
                ip=_optional_text(raw, "ip", where),
                description=_optional_text(raw, "description", where),
            )
        )
    return tuple(entries)


def discovery_excludes(registry_path: str, error_folder_name: str) -> frozenset[str]:
    """Top-level folders that are never PCs: the registry's folder and the error folder."""
    first = PurePosixPath(registry_path).parts[0] if PurePosixPath(registry_path).parts else ""
    return frozenset({"config", first, error_folder_name} - {""})


def discover_pcs(base: Path, excludes: frozenset[str]) -> tuple[PcEntry, ...]:
    """Every top-level folder of the base is a PC; its name is its id (spaces allowed)."""
    found: list[PcEntry] = []
    with os.scandir(base) as entries:
        for entry in entries:
            if is_system_folder(entry.name) or entry.name in excludes:
                continue
            if not entry.is_dir(follow_symlinks=False):
                continue
            if not entry.name.isprintable() or len(entry.name) > MAX_ID_LENGTH:
                continue
            found.append(PcEntry(id=entry.name, watch_path=entry.name))
    return tuple(sorted(found, key=lambda pc: pc.id))


def resolve_watch_path(base: Path, pc: PcEntry) -> Path:
    """The PC's folder on disk; refuses a symlink that leads out of the base."""
    root = base.resolve()
    try:
        target = (base / pc.watch_path).resolve()
    except ValueError as exc:  # an embedded NUL, from a registry edited by hand
        raise RegistryError(f"PC {pc.id!r}: watch_path is not a usable path: {exc}") from None
    except (RuntimeError, OSError):  # Python 3.11 raises RuntimeError on a symlink loop
        raise RegistryError(
            f"PC {pc.id!r}: watch_path {pc.watch_path!r} is a symbolic link loop"
        ) from None
    if target != root and root not in target.parents:
        raise RegistryError(
            f"PC {pc.id!r}: watch_path {pc.watch_path!r} leads outside the NAS base"
        )
    return target


def load_registry(base: Path, registry_file: Path, excludes: frozenset[str]) -> Registry:
    """Blocking: read the registry file, or discover PCs when it does not exist (the agent and
    the commands look at the kept registry first: registry_kept.py)."""
    data = read_registry_file(registry_file)
    if data is None:
        return Registry(discover_pcs(base, excludes), "discovered")
    return registry_from_bytes(base, data)


def read_registry_file(registry_file: Path) -> bytes | None:
    """Blocking: the registry file's bytes, None when there is no such file."""
    try:
        return registry_file.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RegistryError(f"cannot read {registry_file}: {exc.strerror}") from None


def registry_from_bytes(base: Path, data: bytes, source: str = "file") -> Registry:
    """Blocking (it resolves each watch_path on the NAS): a registry file's bytes, checked."""
    pcs = parse_registry(data)
    refuse_overlaps([(pc, resolve_watch_path(base, pc)) for pc in pcs])
    return Registry(pcs, source)


def base_entries(base: Path) -> int | None:
    """Blocking: how many entries the NAS base holds (None: it is missing or not a folder)."""
    try:
        with os.scandir(base) as entries:
            return sum(1 for _ in entries)
    except (FileNotFoundError, NotADirectoryError):
        return None


def refuse_overlaps(roots: list[tuple[PcEntry, Path]]) -> None:
    """Two PCs watching the same folder, or one inside the other, would store every session of
    the inner folder twice (under two gfx_pc_ids): the registry is refused, naming both."""
    for i, (pc, root) in enumerate(roots):
        for other, other_root in roots[i + 1 :]:
            if root == other_root or root in other_root.parents or other_root in root.parents:
                raise RegistryError(
                    f"PCs {pc.id!r} and {other.id!r}: watch_paths {pc.watch_path!r} and "
                    f"{other.watch_path!r} overlap (one folder inside, or the same as, the "
                    "other): give each PC its own folder"
                )
