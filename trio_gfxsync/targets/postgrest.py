"""The PostgREST target: Supabase's REST API over one httpx.AsyncClient, auth headers, typed
answers (the first implementation of `targets.base.Target`).

Every failure is raised as `UpstreamError` (errors.py) with the HTTP `status`, PostgREST's `code`
and `message`, and `retry_after`; its verdict is `policy.classify(status, code)`, and the policy
decides what to do with it. A transport failure has `status` None and `kind` names it. Messages
never contain the key: httpx puts only the URL in its exceptions, and the URL carries no
credentials (settings refuse them).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx
import orjson

from ..errors import UpstreamError
from ..keep_newest import StoredRow
from ..logs import clip, get_logger, register_secret
from ..pokergfx import ROW_COLUMNS
from ..policy import Verdict, capped_retry_after, retry_after_seconds
from ..records import Written
from ..settings import Settings

log = get_logger("postgrest")

CONFLICT_KEY = "gfx_pc_id,session_id"
# The rows written come back (only their keys and hashes): a row the keep-newest trigger skipped
# is absent, which is how the agent knows it was not stored although the answer is a 2xx.
WRITTEN = "gfx_pc_id,session_id,file_hash"
UPSERT_PARAMS = {"on_conflict": CONFLICT_KEY, "columns": ",".join(ROW_COLUMNS), "select": WRITTEN}
UPSERT_PREFER = "resolution=merge-duplicates,return=representation"
STORED_COLUMNS = "session_id,version_stamp,file_hash,file_path"
IDS_PER_READ = 100  # session ids in one `in.(...)` filter: the URL stays a few KB


def is_jwt(key: str) -> bool:
    """A legacy Supabase key is a JWT (eyJ... three base64url parts); `sb_secret_` keys are not."""
    parts = key.split(".")
    return len(parts) == 3 and key.startswith("eyJ") and all(parts)


def auth_headers(key: str) -> dict[str, str]:
    """`sb_secret_` keys go in `apikey` only: Supabase's gateway may refuse a non-JWT bearer."""
    headers = {"apikey": key}
    if is_jwt(key):
        headers["Authorization"] = f"Bearer {key}"
    return headers


MESSAGE_LIMIT = 500  # characters of upstream's message kept (logs, /health, dead letters)
PAGE_LIMIT = 200  # of a body that is not PostgREST's JSON (a proxy's or a portal's page)
TRANSPORT_LIMIT = 300


def error_from_response(response: httpx.Response, secrets: tuple[str, ...] = ()) -> UpstreamError:
    """Upstream's text may echo a header back (a proxy's error page, a debug message) into
    logs, /health, the dead letter and sync_events: it is redacted whole (`logs.scrub`, which
    knows the key), and only then cut. `secrets`: registered first, for a caller that has not."""
    for secret in secrets:
        register_secret(secret)
    code: str | None = None
    message = response.reason_phrase or ""
    try:
        body = orjson.loads(response.content) if response.content else None
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict):
        raw_code = body.get("code")
        code = str(raw_code) if raw_code is not None else None
        parts = [str(body.get(k)) for k in ("message", "details", "hint") if body.get(k)]
        message = clip(" | ".join(parts), MESSAGE_LIMIT) or message
    elif response.content:
        page = response.content.decode("utf-8", "replace")
        message = clip(page.strip(), PAGE_LIMIT).strip() or message
    return UpstreamError(
        response.status_code,
        code,
        clip(message, MESSAGE_LIMIT),
        retry_after=retry_after_seconds(response.headers.get("retry-after")),
    )


def not_postgrest(response: httpx.Response) -> None:
    """A 2xx acknowledges records only when PostgREST gave it: with return=minimal its answer
    has no body. A page in its place (a captive portal, a login proxy, a misrouted URL) stores
    nothing, and must not count as stored: the request itself is wrong, so it pauses."""
    if not response.content.strip():
        return
    kind = response.headers.get("content-type", "").split(";")[0].strip() or "no content type"
    raise UpstreamError(
        response.status_code,
        None,
        f"a {response.status_code} answer with a body ({kind}, {len(response.content)} bytes) "
        "where PostgREST answers with none: not PostgREST (a captive portal or a proxy?); "
        "check GFX_SYNC_SUPABASE_URL",
        verdict=Verdict.UNEXPECTED,
    )


def written_rows(response: httpx.Response) -> Written:
    """The rows an upsert wrote, from its `return=representation` answer: a JSON array of
    {gfx_pc_id, session_id, file_hash}, one per row written (a subset of the batch: the rows
    keep-newest skipped are absent). Anything else is not PostgREST (a portal's page, a proxy's
    empty 200): it stored nothing we can tell of, so nothing may be acknowledged."""
    try:
        rows = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        rows = None
    written: Written = {}
    if isinstance(rows, list):
        for row in rows:
            pc_id = row.get("gfx_pc_id") if isinstance(row, dict) else None
            session_id = row.get("session_id") if isinstance(row, dict) else None
            if not isinstance(pc_id, str) or type(session_id) is not int:
                break
            file_hash = row.get("file_hash")
            written[(pc_id, session_id)] = file_hash if isinstance(file_hash, str) else None
        else:
            return written
    raise not_postgrest_read(response, "an upsert asking for the rows written")


def not_postgrest_read(response: httpx.Response, what: str) -> UpstreamError:
    """A read answered with something that is not PostgREST's JSON (a portal's page)."""
    kind = response.headers.get("content-type", "").split(";")[0].strip() or "none"
    return UpstreamError(
        response.status_code,
        None,
        f"{what} answered with something else ({kind}): not PostgREST "
        "(a captive portal or a proxy?); check GFX_SYNC_SUPABASE_URL",
        verdict=Verdict.UNEXPECTED,
    )


def clock_skew(date: str | None, received_at: float, elapsed: float) -> float | None:
    """Seconds this machine's clock is ahead of upstream's (negative: behind), from an answer's
    `Date` header. The header has whole seconds, written somewhere between the request leaving
    and the answer arriving: its middle against the middle of that window, so the figure is
    within half the round trip plus half a second of the truth (the alert's threshold is a
    minute)."""
    if not date:
        return None
    try:
        stamped = parsedate_to_datetime(date)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if stamped.tzinfo is None:
        stamped = stamped.replace(tzinfo=UTC)
    return (received_at - elapsed / 2) - (stamped.timestamp() + 0.5)


def transport_error(exc: httpx.HTTPError, secrets: tuple[str, ...] = ()) -> UpstreamError:
    for secret in secrets:
        register_secret(secret)
    text = clip(str(exc), TRANSPORT_LIMIT) or type(exc).__name__
    return UpstreamError(None, None, text, kind=type(exc).__name__)


class PostgrestClient:
    """Owns the one httpx.AsyncClient; close it with `aclose` (or `async with`)."""

    def __init__(
        self,
        settings: Settings,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        on_clock_skew: Callable[[float], None] | None = None,
    ):
        key = settings.secret_key
        register_secret(key)  # whoever builds a client: its key never shows (logs.scrub)
        self._secrets = (key,)
        # told the agent's clock minus upstream's (the Date of its answers), on every answer
        self._on_clock_skew = on_clock_skew
        self.clock_skew: float | None = None
        self._max_retry_after = settings.max_retry_after
        self._client = httpx.AsyncClient(
            base_url=settings.rest_url,
            headers={**auth_headers(key), "Accept": "application/json"},
            timeout=httpx.Timeout(
                settings.request_timeout, connect=min(10.0, settings.request_timeout)
            ),
            limits=httpx.Limits(max_connections=8, max_keepalive_connections=4),
            transport=transport,
        )

    def _error(self, response: httpx.Response) -> UpstreamError:
        error = error_from_response(response, self._secrets)
        honoured = capped_retry_after(error.retry_after, self._max_retry_after)
        if honoured != error.retry_after:
            log.warning(
                "retry_after_capped",
                status=error.status,
                asked=error.retry_after,
                honoured=honoured,
                setting="GFX_SYNC_MAX_RETRY_AFTER",
            )
            error.retry_after = honoured
        return error

    def _note_date(self, response: httpx.Response) -> None:
        skew = clock_skew(
            response.headers.get("date"), time.time(), response.elapsed.total_seconds()
        )
        if skew is not None:
            self.clock_skew = skew
            if self._on_clock_skew is not None:
                self._on_clock_skew(skew)

    async def __aenter__(self) -> PostgrestClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _post(
        self, path: str, body: bytes, params: dict[str, str], prefer: str
    ) -> httpx.Response:
        headers = {"Content-Type": "application/json"}
        if prefer:
            headers["Prefer"] = prefer
        try:
            response = await self._client.post(path, content=body, params=params, headers=headers)
        except httpx.HTTPError as exc:
            raise transport_error(exc, self._secrets) from None
        self._note_date(response)
        return response

    async def _request(
        self, method: str, path: str, params: dict[str, str], headers: dict[str, str] | None = None
    ) -> httpx.Response:
        """A read or a delete: its 2xx answer, or UpstreamError (transport or HTTP)."""
        try:
            response = await self._client.request(method, path, params=params, headers=headers)
        except httpx.HTTPError as exc:
            raise transport_error(exc, self._secrets) from None
        self._note_date(response)
        if not response.is_success:
            raise self._error(response)
        return response

    async def upsert_sessions(self, body: bytes) -> Written:
        """Upsert a JSON array of gfx_sessions rows: the rows written (a row keep-newest skipped
        is absent); raise UpstreamError unless 2xx."""
        response = await self._post("/gfx_sessions", body, UPSERT_PARAMS, UPSERT_PREFER)
        if not response.is_success:
            raise self._error(response)
        return written_rows(response)

    async def stored_versions(self, pc_id: str, session_ids: Sequence[int]) -> dict[int, StoredRow]:
        found: dict[int, StoredRow] = {}
        ids = sorted(set(session_ids))
        for start in range(0, len(ids), IDS_PER_READ):
            chunk = ",".join(str(i) for i in ids[start : start + IDS_PER_READ])
            params = {
                "select": STORED_COLUMNS,
                "gfx_pc_id": f"eq.{pc_id}",
                "session_id": f"in.({chunk})",
            }
            response = await self._request("GET", "/gfx_sessions", params)
            try:
                for row in orjson.loads(response.content):
                    found[int(row["session_id"])] = StoredRow(
                        row["version_stamp"], row["file_hash"], row["file_path"]
                    )
            except (orjson.JSONDecodeError, TypeError, KeyError, ValueError):
                raise not_postgrest_read(response, "a read of stored versions") from None
        return found

    async def replace_session(
        self, pc_id: str, session_id: int, row: bytes, expected_stamp: int | None
    ) -> bool:
        params = {
            "gfx_pc_id": f"eq.{pc_id}",
            "session_id": f"eq.{session_id}",
            # the condition: the row still carries the stamp the agent saw (else it moved)
            "version_stamp": "is.null" if expected_stamp is None else f"eq.{expected_stamp}",
            "select": "session_id",
        }
        headers = {"Content-Type": "application/json", "Prefer": "return=representation"}
        try:
            response = await self._client.patch(
                "/gfx_sessions", content=row, params=params, headers=headers
            )
        except httpx.HTTPError as exc:
            raise transport_error(exc, self._secrets) from None
        self._note_date(response)
        if not response.is_success:
            raise self._error(response)
        try:
            rows = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            rows = None
        if not isinstance(rows, list):
            raise not_postgrest_read(response, "a conditional replace")
        return len(rows) == 1

    async def insert_sync_events(self, body: bytes) -> None:
        response = await self._post("/sync_events", body, {}, "return=minimal")
        if not response.is_success:
            raise self._error(response)
        not_postgrest(response)

    async def rpc(self, function: str, args: dict[str, object]) -> object:
        """Call a database function through PostgREST (`POST /rpc/<function>`); its JSON answer.

        Raises UpstreamError unless 2xx. For operators' commands (`hands rebuild`): the agent
        itself only upserts."""
        response = await self._post(f"/rpc/{function}", orjson.dumps(args), {}, "")
        if not response.is_success:
            raise self._error(response)
        return orjson.loads(response.content) if response.content else None

    async def upsert_agent(self, body: bytes) -> None:
        """The heartbeat: upsert this agent's row of gfx_agents (its last_seen is set by the
        database's clock). Raises UpstreamError unless 2xx."""
        response = await self._post(
            "/gfx_agents",
            body,
            {"on_conflict": "agent_id"},
            "resolution=merge-duplicates,return=minimal",
        )
        if not response.is_success:
            raise self._error(response)

    async def fleet_conflicts(self) -> list[tuple[str, str, list[str]]]:
        """(venue, agent_id, PC ids) of each line of gfx_fleet whose PCs another venue reports
        too."""
        response = await self._request(
            "GET",
            "/gfx_fleet",
            {"select": "agent_id,venue,conflict_pcs", "pc_conflict": "is.true"},
        )
        try:
            rows = orjson.loads(response.content)
            return [
                (str(r["venue"]), str(r["agent_id"]), [str(pc) for pc in r["conflict_pcs"]])
                for r in rows
            ]
        except (orjson.JSONDecodeError, TypeError, KeyError):
            raise not_postgrest_read(response, "a read of gfx_fleet") from None

    async def probe(self) -> None:
        """Is upstream back, and does it take our key? A read of no rows naming every column
        (a missing column answers 400 42703). A GET, so it never counts as an upsert."""
        response = await self._request(
            "GET", "/gfx_sessions", {"select": ",".join(ROW_COLUMNS), "limit": "0"}
        )
        try:
            rows = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            rows = None
        if rows != []:
            raise not_postgrest_read(response, "a read of no rows")

    async def stored_hashes(
        self, pc_id: str, after: int | None, limit: int
    ) -> list[tuple[int, str | None]]:
        """One page of a PC's rows, keyed by session_id (keyset paging: an offset would skip
        or repeat rows while the agent writes)."""
        params = {
            "select": "session_id,file_hash",
            "gfx_pc_id": f"eq.{pc_id}",
            "order": "session_id.asc",
            "limit": str(limit),
        }
        if after is not None:
            params["session_id"] = f"gt.{after}"
        response = await self._request("GET", "/gfx_sessions", params)
        try:
            rows = orjson.loads(response.content)
            return [(int(row["session_id"]), row["file_hash"]) for row in rows]
        except (orjson.JSONDecodeError, TypeError, KeyError, ValueError):
            raise not_postgrest_read(response, "a read of rows") from None

    async def delete_sync_events(self, before: datetime, limit: int) -> int:
        """PostgREST's limited DELETE (an explicit order on the key, then `limit`), answering
        the ids it deleted so that the caller knows when it is done."""
        params = {
            "created_at": f"lt.{before.astimezone(UTC).isoformat()}",
            "order": "id.asc",
            "limit": str(limit),
            "select": "id",
        }
        response = await self._request(
            "DELETE", "/sync_events", params, {"Prefer": "return=representation"}
        )
        try:
            rows = orjson.loads(response.content)
            return len(rows) if isinstance(rows, list) else 0
        except orjson.JSONDecodeError:
            return 0

    async def pcs_in_table(self) -> dict[str, int]:
        # the pc_status view: one line per PC, whatever the table's size (a read of every
        # row's gfx_pc_id would be capped at Supabase's 1,000 rows)
        response = await self._request(
            "GET", "/pc_status", {"select": "gfx_pc_id,total_files", "total_files": "gt.0"}
        )
        try:
            rows = orjson.loads(response.content)
            return {str(row["gfx_pc_id"]): int(row["total_files"]) for row in rows}
        except (orjson.JSONDecodeError, TypeError, KeyError, ValueError):
            raise not_postgrest_read(response, "a read of pc_status") from None

    async def delete_pc_rows(self, pc_id: str) -> int:
        response = await self._request(
            "DELETE",
            "/gfx_sessions",
            {"gfx_pc_id": f"eq.{pc_id}"},
            {"Prefer": "return=minimal, count=exact"},
        )
        # Content-Range: */<count> (PostgREST's count of the rows the DELETE affected)
        total = response.headers.get("content-range", "").rpartition("/")[2]
        return int(total) if total.isdigit() else 0

    async def probe_write(self) -> None:
        """A write that writes nothing, for `check`: an empty upsert still checks the key, the
        INSERT grant, every column and the conflict key, because PostgreSQL plans it."""
        await self.upsert_sessions(b"[]")
