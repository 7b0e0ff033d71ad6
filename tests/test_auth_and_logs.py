"""Authentication headers, PostgREST error parsing, JSON log lines and secret scrubbing."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator

import httpx
import pytest

from trio_gfxsync import logs
from trio_gfxsync.errors import UpstreamError
from trio_gfxsync.logs import ConsoleFormatter, EventLogger, JsonFormatter, register_secret, scrub
from trio_gfxsync.targets.postgrest import auth_headers, error_from_response, is_jwt

SB_KEY = "sb_secret_N7fQx2LpZ9wR4tYv8KcM1hJ_3dGs6aEb"
JWT_KEY = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJyb2xlIjoic2VydmljZV9yb2xlIiwiaXNzIjoic3VwYWJhc2UifQ"
    ".Qm9ndXNTaWduYXR1cmVGb3JUZXN0c09ubHlfMTIzNDU2"
)

# --------------------------------------------------------------------------- auth


def test_sb_secret_key_goes_in_apikey_only() -> None:
    assert not is_jwt(SB_KEY)
    assert auth_headers(SB_KEY) == {"apikey": SB_KEY}


def test_jwt_key_goes_in_apikey_and_bearer() -> None:
    assert is_jwt(JWT_KEY)
    assert auth_headers(JWT_KEY) == {"apikey": JWT_KEY, "Authorization": f"Bearer {JWT_KEY}"}


@pytest.mark.parametrize(
    "key", ["eyJonly", "eyJa.b", "eyJa..c", "abc.def.ghi", "eyJa.b.c.d", "sb_publishable_x"]
)
def test_not_a_jwt_gets_no_bearer(key: str) -> None:
    assert not is_jwt(key)
    assert "Authorization" not in auth_headers(key)


# --------------------------------------------------------------------------- error_from_response


def response(
    status: int,
    body: object = None,
    *,
    content: bytes | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> httpx.Response:
    if content is None and body is not None:
        content = json.dumps(body).encode()
    return httpx.Response(status, content=content or b"", headers=headers or [])


def test_postgrest_error_body_is_parsed() -> None:
    body = {
        "code": "23502",
        "details": "Failing row contains (…).",
        "hint": None,
        "message": 'null value in column "gfx_pc_id" of relation "gfx_sessions" violates '
        "not-null constraint",
    }
    error = error_from_response(response(400, body))
    assert isinstance(error, UpstreamError)
    assert (error.status, error.code) == (400, "23502")
    assert error.message == f"{body['message']} | {body['details']}"
    assert error.retry_after is None
    assert "23502" in str(error) and "HTTP 400 23502" in error.summary


def test_message_details_and_hint_are_joined() -> None:
    body = {"code": "PGRST204", "message": "m", "details": "d", "hint": "h"}
    error = error_from_response(response(400, body))
    assert error.code == "PGRST204" and error.message == "m | d | h"


def test_numeric_code_becomes_text() -> None:
    assert error_from_response(response(400, {"code": 42501, "message": "x"})).code == "42501"


def test_retry_after_seconds_header() -> None:
    error = error_from_response(
        response(429, {"message": "slow down"}, headers=[(b"Retry-After", b"17")])
    )
    assert (error.status, error.code, error.retry_after) == (429, None, 17.0)


def test_retry_after_http_date_header() -> None:
    from datetime import UTC, datetime, timedelta
    from email.utils import format_datetime

    when = format_datetime(datetime.now(UTC) + timedelta(seconds=3600), usegmt=True)
    error = error_from_response(
        response(503, content=b"", headers=[(b"Retry-After", when.encode())])
    )
    assert error.retry_after is not None and 3590 <= error.retry_after <= 3600


def test_gateway_answer_without_code() -> None:
    error = error_from_response(response(401, {"message": "Invalid API key"}))
    assert (error.status, error.code, error.message) == (401, None, "Invalid API key")


def test_non_json_body_becomes_the_message() -> None:
    html = b"<html><body>502 Bad Gateway</body></html>" + b"x" * 1000
    error = error_from_response(response(502, content=html))
    assert error.code is None
    assert error.message.startswith("<html><body>502 Bad Gateway")
    assert len(error.message) <= 200


def test_invalid_utf8_body_is_handled() -> None:
    error = error_from_response(response(500, content=b"\xff\xfe broken \x80"))
    assert error.status == 500 and "broken" in error.message


def test_empty_body_uses_the_reason_phrase() -> None:
    error = error_from_response(response(503))
    assert error.message == "Service Unavailable" and error.code is None


def test_json_that_is_not_an_object() -> None:
    error = error_from_response(response(500, ["x"]))
    assert error.code is None and error.message == '["x"]'


def test_long_message_is_cut() -> None:
    error = error_from_response(response(400, {"code": "22P02", "message": "m" * 5000}))
    assert len(error.message) == 500


def test_strange_retry_after_header_is_ignored() -> None:
    error = error_from_response(response(429, headers=[(b"Retry-After", b"\xb2")]))
    assert error.status == 429 and error.retry_after is None


# --------------------------------------------------------------------------- logs


@pytest.fixture
def no_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "_secrets", set())
    monkeypatch.setattr(logs, "_parts", {})


@pytest.fixture
def captured(no_secrets: None) -> Iterator[tuple[EventLogger, logging.Logger, io.StringIO]]:
    name = f"tests.logs.{uuid.uuid4().hex}"
    logger = logging.getLogger(name)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield EventLogger(name), logger, stream
    finally:
        logger.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict]:
    text = stream.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_one_json_object_per_line_with_event_level_and_fields(captured) -> None:
    log, _, stream = captured
    log.info("file_changed", pc_id="PC01", path="1017/a\nb.json", session_id=638966318331324926)
    log.warning("upstream_slow", retry_after=1.5)
    log.debug("tick")
    records = lines(stream)
    assert len(records) == 3  # the newline inside a field did not split a line
    first = records[0]
    assert first["event"] == "file_changed" and first["level"] == "info"
    assert first["pc_id"] == "PC01" and first["path"] == "1017/a\nb.json"
    assert first["session_id"] == 638966318331324926  # exact, not rounded
    assert first["ts"].endswith("+00:00")
    assert records[1]["event"] == "upstream_slow" and records[1]["level"] == "warning"
    assert records[1]["retry_after"] == 1.5
    assert records[2]["level"] == "debug"


def test_unserialisable_fields_become_text(captured) -> None:
    log, _, stream = captured
    log.info("state", where=logs, pending={3})
    (record,) = lines(stream)
    assert "trio_gfxsync.logs" in record["where"]
    assert record["pending"] == "{3}"


def test_library_logs_become_library_log_events(captured) -> None:
    _, logger, stream = captured
    logger.warning("HTTP Request: %s %s", "POST", "http://x/rest/v1/gfx_sessions")
    (record,) = lines(stream)
    assert record["event"] == "library_log" and record["level"] == "warning"
    assert record["message"] == "HTTP Request: POST http://x/rest/v1/gfx_sessions"


def test_error_with_traceback(captured) -> None:
    log, _, stream = captured
    try:
        raise RuntimeError("boom")
    except RuntimeError as exc:
        log.error("stage_crashed", exc_info=exc, stage="uploader")
    (record,) = lines(stream)
    assert record["event"] == "stage_crashed" and record["level"] == "error"
    assert record["error_type"] == "RuntimeError"
    assert "RuntimeError: boom" in record["traceback"] and "Traceback" in record["traceback"]


def test_registered_secret_is_scrubbed_everywhere(captured) -> None:
    log, logger, stream = captured
    register_secret(SB_KEY)
    logger.error("client headers: %s", {"apikey": SB_KEY})
    log.info("config", url="https://x.supabase.co", key=SB_KEY, nested={"headers": [SB_KEY]})
    try:
        raise ValueError(f"refused key {SB_KEY}")
    except ValueError as exc:
        log.error("upload_failed", exc_info=exc)
    text = stream.getvalue()
    assert SB_KEY not in text
    assert SB_KEY[:20] not in text
    records = lines(stream)
    assert "[REDACTED]" in records[0]["message"]
    assert records[1]["key"] == "[REDACTED]"
    assert records[1]["nested"] == {"headers": ["[REDACTED]"]}
    assert "refused key [REDACTED]" in records[2]["traceback"]


def test_short_values_are_not_treated_as_secrets(no_secrets: None) -> None:
    register_secret("")
    register_secret("abc")
    assert scrub("abc def") == "abc def"
    register_secret("abcdef")
    assert scrub("xabcdefx") == "x[REDACTED]x"


def test_console_format_scrubs_too(no_secrets: None) -> None:
    register_secret(JWT_KEY)
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "connected", None, None)
    record.gfx_fields = {"key": JWT_KEY, "pc_id": "PC01"}
    text = ConsoleFormatter().format(record)
    assert JWT_KEY not in text and "[REDACTED]" in text and "connected" in text


def test_secret_with_json_escaped_characters_is_scrubbed(captured) -> None:
    log, _, stream = captured
    token = 'venue"token\\2026'
    register_secret(token)
    log.info("dashboard", token=token)
    (record,) = lines(stream)
    assert token not in json.dumps(record, ensure_ascii=False)
    assert record["token"] == "[REDACTED]"
