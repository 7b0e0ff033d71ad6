"""What "no part of a key" means, checked by brute force on an output (issue 22): the oracle
of the redaction tests, written apart from `logs.scrub`.

A key's secret part is the text after `sb_secret_`, or a JWT's payload and signature. An output
shows a piece of it when any RUN (8) consecutive characters of the part appear anywhere, or
when the text ends in TAIL (4) or more of its leading characters (a cut echo).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

RUN, TAIL, REDACTED = 8, 4, "[REDACTED]"


def secret_of(key: str) -> list[str]:
    if key.startswith("sb_secret_"):
        return [key.removeprefix("sb_secret_")]
    if key.startswith("eyJ") and key.count(".") == 2:
        return key.split(".")[1:]
    return [key]


def leaks(output: str, part: str) -> list[str]:
    """Every piece of `part` the output shows, at every position. The redaction marker counts
    as no character of any secret."""
    text = output.replace(REDACTED, "\0")
    found = [text[i : i + RUN] for i in range(len(text) - RUN + 1) if text[i : i + RUN] in part]
    found += [
        part[:k] for k in range(TAIL, min(len(part), len(text)) + 1) if text.endswith(part[:k])
    ]
    return found


def leaks_as(output: str, part: str, escape: Callable[[str], str]) -> list[str]:
    """The runs of `part` (RUN characters, or its first TAIL or more at the end) the output
    shows as `escape` writes them (a JSON string's escapes): a run is counted in the key's own
    characters, so `00\\"0000` is 7 of them, not 8."""
    text = output.replace(REDACTED, "\0")
    found = [
        part[i : i + RUN] for i in range(len(part) - RUN + 1) if escape(part[i : i + RUN]) in text
    ]
    found += [part[:k] for k in range(TAIL, len(part) + 1) if text.endswith(escape(part[:k]))]
    return found


def texts_of(document: Any) -> list[str]:
    """Every string in a JSON document (each one is a text: its end counts as an end)."""
    if isinstance(document, str):
        return [document]
    if isinstance(document, dict):
        return [t for k, v in document.items() for t in [str(k), *texts_of(v)]]
    if isinstance(document, list):
        return [t for v in document for t in texts_of(v)]
    return []


def pieces_in(output: str, key: str) -> list[str]:
    """The pieces of `key` an output shows: the whole text, and each string of each JSON line
    in it (a log, a served document)."""
    texts = [output]
    for line in output.splitlines():
        try:
            texts += texts_of(json.loads(line))
        except ValueError:
            continue
    return [piece for text in texts for part in secret_of(key) for piece in leaks(text, part)]
