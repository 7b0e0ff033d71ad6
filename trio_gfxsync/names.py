"""File names that are not UTF-8, as a NAS share written by other clients can hold.

Python lists them with `surrogateescape` (each undecodable byte becomes U+DC80..U+DCFF), which
opens the file again losslessly but cannot be encoded as UTF-8: not by orjson, not by SQLite.
The agent keeps that exact name wherever it goes back to the file (the queue database stores it
as a BLOB of the original bytes, state/store.py) and shows a printable form wherever it is
only read by people or other programs: rows (`file_path`, `file_name`), logs, /health, the
dashboard, where each byte that is not UTF-8 is written as `\\xNN`. Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

import orjson


def is_utf8(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(text: str) -> str:
    """The name with each undecodable byte as `\\xNN` (a name that is UTF-8 is unchanged)."""
    if is_utf8(text):
        return text
    raw = text.encode("utf-8", "surrogateescape")
    return raw.decode("utf-8", "backslashreplace")


def storable(text: str) -> str | bytes:
    """What SQLite can bind: the text, or its original bytes when it is not UTF-8."""
    return text if is_utf8(text) else text.encode("utf-8", "surrogateescape")


def from_storage(value: str | bytes) -> str:
    """The name as stored by `storable`, back as the str that opens the file."""
    return value if isinstance(value, str) else value.decode("utf-8", "surrogateescape")


def json_safe(value: Any) -> Any:
    """A copy of a JSON-able value with every str made printable (dict keys too)."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {json_safe(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def dumps(value: Any, **options: Any) -> bytes:
    """orjson.dumps that never fails on a name: the common case costs one call."""
    try:
        return orjson.dumps(value, **options)
    except TypeError:
        return orjson.dumps(json_safe(value), **options)
