"""The documents (issue 26): README's settings table agrees with deploy/.env.example line for
line, every setting of the Settings class is in both, and no document points outside the
repository (a link, or a file name such as a design document that only lives elsewhere)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from trio_gfxsync.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
ENV_EXAMPLE = ROOT / "deploy" / ".env.example"
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
TABLE_HEADER = "| variable | value in `.env.example` | what it does |"
ASSIGNMENT = re.compile(r"^(?:#\s*)?([A-Z][A-Z0-9_]*)=(.*)$")


def documents() -> list[Path]:
    """Every Markdown file of the repository (tracked or not, outside tool folders)."""
    skip = {".git", ".venv", ".tools", "node_modules", ".pytest_cache", "artifacts"}
    return sorted(
        path
        for path in ROOT.rglob("*.md")
        if not skip & set(path.relative_to(ROOT).parts) and "egg-info" not in str(path)
    )


# -- the settings table ----------------------------------------------------------------------------


def compose_pins() -> dict[str, str]:
    service = yaml.safe_load(COMPOSE.read_text())["services"]["gfxsync"]
    return {name: str(value) for name, value in (service.get("environment") or {}).items()}


def comment_above(lines: list[str], index: int) -> list[str]:
    """The comment lines right above line `index` (a section rule or an assignment ends them)."""
    found: list[str] = []
    for line in reversed(lines[:index]):
        if not line.startswith("#") or line.startswith("# ---") or ASSIGNMENT.match(line):
            break
        found.insert(0, line.lstrip("# ").strip())
    return found


def expected_table() -> list[str]:
    """The table README must hold: one row per assignment of .env.example (commented ones
    too), in its order, with its value and the comment line above it; what compose sets says so."""
    pins = compose_pins()
    rows = [TABLE_HEADER, "|---|---|---|"]
    lines = ENV_EXAMPLE.read_text().splitlines()
    for index, line in enumerate(lines):
        match = ASSIGNMENT.match(line)
        if not match:
            continue
        name, value = match.groups()
        comment = " ".join(comment_above(lines, index))
        shown = f"`{value}`" if value else "(empty)"
        if name in pins:
            shown = f"**set by compose**: `{pins[name]}`"
        rows.append(f"| `{name}` | {shown} | {comment} |")
    return rows


def readme_table() -> list[str]:
    lines = README.read_text().splitlines()
    assert TABLE_HEADER in lines, f"README has no table starting with {TABLE_HEADER!r}"
    start = lines.index(TABLE_HEADER)
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return lines[start:end]


def test_readme_settings_table_agrees_with_env_example_line_for_line() -> None:
    expected = expected_table()
    assert readme_table() == expected, (
        "README's settings table must be deploy/.env.example's lines, in order; paste:\n"
        + "\n".join(expected)
    )


def test_every_setting_is_in_env_example_and_in_readme() -> None:
    settings = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
    in_example = {
        m.group(1) for line in ENV_EXAMPLE.read_text().splitlines() if (m := ASSIGNMENT.match(line))
    }
    in_readme = {re.match(r"\| `([A-Z0-9_]+)`", row).group(1) for row in readme_table()[2:]}  # type: ignore[union-attr]
    assert not settings - in_example, f"not in .env.example: {sorted(settings - in_example)}"
    assert not settings - in_readme, f"not in README's table: {sorted(settings - in_readme)}"
    # and the table names nothing that is neither a setting nor a NAS-side value compose reads
    compose_reads = set(re.findall(r"\$\{(\w+)", COMPOSE.read_text()))
    assert in_readme - settings <= compose_reads, sorted(in_readme - settings - compose_reads)


def test_what_compose_sets_is_marked() -> None:
    pins = compose_pins()
    assert {"GFX_SYNC_NAS_BASE_PATH", "GFX_SYNC_HEALTH_PORT"} <= set(pins)
    marked = [row for row in readme_table() if "**set by compose**" in row]
    assert len(marked) == len(pins)


# -- nothing outside the repository ---------------------------------------------------------------

LINK = re.compile(r"\]\(([^)\s]+)\)")
MD_NAME = re.compile(r"(?<![\w./-])([\w./-]*[\w-]+\.md)\b")
# a section of a design document that is not in the repository ("DESIGN 3.4", "DESIGN.md")
OUTSIDE_DESIGN = re.compile(r"\bDESIGN(\.md|\s+(section\s+)?\d)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = path.read_text()
    found = {slug(m.group(1)) for m in re.finditer(r"(?m)^#{1,6} (.+)$", text)}
    found |= set(re.findall(r'<a id="([^"]+)"', text))
    return found


def outside_references(doc: Path, root: Path, names: set[str]) -> list[str]:
    """What in `doc` points outside `root`: links that leave it or lead nowhere (a missing
    file or heading), and names of Markdown files or design sections that are not in it."""
    problems = []
    text = doc.read_text()
    where = doc.relative_to(root)
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (doc.parent / path_part).resolve() if path_part else doc
        if root not in resolved.parents and resolved != root:
            problems.append(f"{where}: ({target}) leaves the repository")
        elif not resolved.exists():
            problems.append(f"{where}: ({target}) does not exist")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{where}: ({target}) has no heading #{anchor}")
    for name in MD_NAME.findall(text):
        if Path(name).name not in names:
            problems.append(f"{where} names {name}, which is not in the repository")
    for match in OUTSIDE_DESIGN.finditer(text):
        problems.append(f"{where} refers to {match.group(0)!r}, which is not in the repository")
    return problems


def test_no_document_refers_outside_the_repository() -> None:
    names = {path.name for path in documents()}
    problems = [p for doc in documents() for p in outside_references(doc, ROOT, names)]
    assert not problems, "\n".join(problems)


def test_the_reference_check_finds_each_kind(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "ok.md").write_text("# A heading, with words\n")
    doc = tmp_path / "README.md"
    doc.write_text(
        "[fine](docs/ok.md#a-heading-with-words) [web](https://supabase.com/docs)\n"
        "[up](../outside.md) [gone](docs/missing.md) [anchor](docs/ok.md#nowhere)\n"
        "as DESIGN.md says, and DESIGN 3.4 too; see also NOTES.md\n"
    )
    found = outside_references(doc, tmp_path, {"README.md", "ok.md"})
    assert found == [
        "README.md: (../outside.md) leaves the repository",
        "README.md: (docs/missing.md) does not exist",
        "README.md: (docs/ok.md#nowhere) has no heading #nowhere",
        "README.md names ../outside.md, which is not in the repository",
        "README.md names docs/missing.md, which is not in the repository",
        "README.md names DESIGN.md, which is not in the repository",
        "README.md names NOTES.md, which is not in the repository",
        "README.md refers to 'DESIGN.md', which is not in the repository",
        "README.md refers to 'DESIGN 3', which is not in the repository",
    ], found
