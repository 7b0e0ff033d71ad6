"""No part of a key: `logs.scrub` (the one redaction), and upstream's answers redacted before
they are cut (issue 22, "Redact, then cut").

"No part" means: no RUN (8) consecutive characters of a key's secret part (after `sb_secret_`,
or a JWT's payload and signature; a token or a webhook URL's path) appear anywhere, and no text
ends in TAIL (4) or more of its leading characters. The oracle below checks that on the output
by brute force, every position, apart from how `scrub` finds the pieces (tests/support/pieces.py).
"""

from __future__ import annotations

import contextlib
import json
import string
from collections.abc import Iterator

import httpx
import orjson
import pytest
import trio
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from tests.support.pieces import REDACTED, TAIL, leaks, leaks_as, secret_of
from trio_gfxsync import logs
from trio_gfxsync.observe.status import AgentStatus
from trio_gfxsync.observe.sync_event_buffer import MAX_ERROR_TEXT, SyncEventBuffer
from trio_gfxsync.settings import load_settings
from trio_gfxsync.targets.postgrest import error_from_response, transport_error
from trio_gfxsync.web.app import build_app, served

B64URL = string.ascii_letters + string.digits + "-_"
JWT_HEADER = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@contextlib.contextmanager
def only_secret(*values: str) -> Iterator[None]:
    """The registry holding just these secrets for the length of the block."""
    saved = logs._secrets, logs._parts
    logs._secrets, logs._parts = set(), {}
    try:
        for value in values:
            logs.register_secret(value)
        yield
    finally:
        logs._secrets, logs._parts = saved


sb_keys = st.text(B64URL, min_size=20, max_size=64).map(lambda s: "sb_secret_" + s)
jwt_keys = st.tuples(
    st.text(B64URL, min_size=20, max_size=160), st.text(B64URL, min_size=20, max_size=64)
).map(lambda ps: f"{JWT_HEADER}.eyJ{ps[0]}.{ps[1]}")
# a dashboard token: any printable text, quotes and backslashes included
tokens = st.text(string.printable.strip(), min_size=10, max_size=40)
keys = st.one_of(sb_keys, jwt_keys, tokens)


@st.composite
def key_and_text(draw: st.DrawFn) -> tuple[str, str]:
    """A key and a text embedding random slices of its secret part among random characters,
    maybe ending in a few of its leading characters (a proxy's cut echo)."""
    key = draw(keys)
    parts = secret_of(key)
    pieces = []
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.booleans()):
            pieces.append(draw(st.text(max_size=30)))
        else:
            part = draw(st.sampled_from(parts))
            start = draw(st.integers(0, len(part) - 1))
            pieces.append(part[start : start + draw(st.integers(1, len(part)))])
    if draw(st.booleans()):
        part = draw(st.sampled_from(parts))
        pieces.append(part[: draw(st.integers(TAIL, len(part)))])
    return key, "".join(pieces)


@PROPERTY
@given(key_and_text())
def test_no_run_of_eight_and_no_leading_four_at_the_end_survive(case: tuple[str, str]) -> None:
    key, text = case
    with only_secret(key):
        out = logs.scrub(text)
    for part in secret_of(key):
        assert not leaks(out, part), (key, text, out)


@PROPERTY
@given(key_and_text(), st.integers(0, 400))
# a text with no piece of the key, cut right after 4 of its first characters
@example(("sb_secret_00011000000000000000", "0001000"), 4)
def test_redacted_then_cut_anywhere_leaves_no_piece(case: tuple[str, str], limit: int) -> None:
    key, text = case
    with only_secret(key):
        out = logs.clip(text, limit)
    assert len(out) <= limit
    for part in secret_of(key):
        # a cut may split the marker, never leave a piece of the key
        assert not [p for p in leaks(out, part) if p not in REDACTED], (key, text, out)


@PROPERTY
@given(key_and_text())
@example(('000"000000', '00"0000'))  # 7 of the key's characters, 8 once escaped: no leak
def test_json_escaped_forms_are_redacted_and_the_line_stays_json(case: tuple[str, str]) -> None:
    key, text = case
    for escaped in (
        lambda v: orjson.dumps(v).decode(),
        json.dumps,  # ASCII escapes: \uXXXX
        lambda v: json.dumps(v).replace("/", "\\/"),
    ):
        with only_secret(key):
            out = logs.dumps_redacted({"message": text, "nested": [text]})
            raw = logs.scrub(escaped({"message": text}))
        for part in secret_of(key):
            for escape in (
                lambda s: s,
                lambda s: orjson.dumps(s).decode()[1:-1],
                lambda s: json.dumps(s)[1:-1],
            ):
                assert not leaks_as(out, part, escape), (key, text, out)
                assert not leaks_as(raw, part, escape), (key, text, raw)
        decoded = json.loads(out)  # a log line or a served document stays one JSON object
        for part in secret_of(key):
            assert not leaks(decoded["message"], part)


@PROPERTY
@given(keys, st.text(string.ascii_letters + " .,:;!?()", max_size=200))
def test_text_without_a_piece_of_the_key_is_left_alone(key: str, text: str) -> None:
    assume(all(not leaks(text, part) for part in secret_of(key)))
    assume(not any(c in text for c in key if c not in string.ascii_letters + " .,:;!?()"))
    with only_secret(key):
        out = logs.scrub(text)
    # what cannot hold a piece is unchanged (ordinary words are not redacted)
    if all(len(set(text) & set(part)) == 0 for part in secret_of(key)):
        assert out == text


def test_a_webhook_url_and_a_short_token_are_secrets_too() -> None:
    hook = "https://hooks.example.com/services/T0AAA/B0BBB/XyZ123abc456DEF789"
    with only_secret(hook, "venue-2026-token"):
        out = logs.scrub(f"posting to {hook[:-5]}... with venue-2026-tok")
    assert "XyZ123abc" not in out and "2026-tok" not in out, out
    assert out.startswith("posting to https://hooks.example.com"), "the host is no secret"


# --------------------------------------------------------------------------- upstream's answers


def page_echoing(key: str, before: int) -> bytes:
    """A proxy's HTML error page that echoes the request's apikey after `before` bytes."""
    return (
        b"<html><head><title>403 Forbidden</title></head><body>"
        + b"x" * before
        + f"<pre>apikey: {key}</pre></body></html>".encode()
    )


@PROPERTY
@given(st.one_of(sb_keys, jwt_keys), st.integers(0, 260))
def test_a_page_echoing_the_key_is_redacted_before_it_is_cut(key: str, before: int) -> None:
    """The page is cut to 200 characters for the message; wherever the key lies across that
    cut, not a piece of it is left (main cut first and redacted what was left: a whole key
    only, so the key's first characters showed)."""
    with only_secret():  # nobody registered it: the client passes its own key
        error = error_from_response(httpx.Response(403, content=page_echoing(key, before)), (key,))
        summary = error.summary
    for part in secret_of(key):
        assert not leaks(error.message, part), error.message
        assert not leaks(summary, part), summary


def test_the_key_is_redacted_whole_before_the_page_is_cut() -> None:
    """Redacted first, the key takes the marker's room, not its own: what follows it on the
    page still fits in the message (cut first, the message would end inside the key)."""
    key = "sb_secret_" + "Zx9" * 14
    with only_secret(key):
        error = error_from_response(httpx.Response(403, content=page_echoing(key, 100)))
    assert "apikey: [REDACTED]</pre></body>" in error.message, error.message


def test_transport_errors_and_sync_events_are_redacted_before_they_are_cut() -> None:
    key = "sb_secret_" + "Qw3rTy" * 8
    with only_secret(key):
        error = transport_error(httpx.ConnectError("x" * 285 + key))
        buffer = SyncEventBuffer()
        buffer.note("PC01", "error", "a.json", "y" * (MAX_ERROR_TEXT - 16) + key)
        (row,) = buffer.take_rows()
    message = str(row["error_message"])
    for text in (error.message, message):
        assert not leaks(text, secret_of(key)[0]), text


def test_what_the_http_side_serves_is_redacted_and_stays_json() -> None:
    """The last line of defence, as for the log: a key or the dashboard token that reached the
    status by any way (an exception's text as a core stage died) is not served, and the
    document is still JSON (a token may hold a quote)."""
    key = "sb_secret_" + "Pm4" * 14
    token = 'venue"board\\2026-Xq'
    with only_secret(key, token):
        body = served(
            {
                "reasons": [f"core stage died: KeyError: {key[:30]}"],
                "pcs": [{"last_error": f"bad header {token[:12]}"}],
            }
        )
    document = json.loads(body)
    for text in (body.decode(), *document["reasons"], document["pcs"][0]["last_error"]):
        assert not leaks(text, secret_of(key)[0]) and not leaks(text, token), text


def test_the_dashboard_token_is_a_secret_of_the_http_side_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = "Dashboard-Token-Pa55"
    monkeypatch.setenv("GFX_SYNC_TARGET", "sqlite")
    monkeypatch.setenv("GFX_SYNC_DASHBOARD_TOKEN", token)
    with only_secret():
        build_app(AgentStatus(), load_settings(), trio.Event())
        assert logs.scrub(f"token={token[:9]}") == f"token={REDACTED}"
