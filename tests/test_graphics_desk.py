"""docs/graphics-desk.md's page, as printed there, in Chromium against the real PostgREST.

The page is taken from the document (only its two marked lines, the project's URL and key, are
replaced), served by a stand-in of the parts of Supabase it talks to: Auth's token endpoint
(password and refresh_token grants, JWTs shaped as Supabase Auth mints them: role
`authenticated`, `aud`, `sub`, `app_metadata.gfx_access`, signed with PostgREST's secret) and
the API gateway, which checks the `apikey` and forwards the user's bearer token to PostgREST
(tests/support/infra.py's gateway with a legacy anon key). The database holds every migration
of deploy/supabase/migrations, applied in name order as the README's quick start does.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.support import infra
from tests.support.tree import make_session
from trio_gfxsync.pokergfx import parse_session
from trio_gfxsync.targets.postgrest import UPSERT_PARAMS, UPSERT_PREFER

pytestmark = pytest.mark.e2e

DOC = Path(__file__).resolve().parents[1] / "docs" / "graphics-desk.md"
EMAIL, PASSWORD = "desk@example.tv", "correct horse battery staple"
TOKEN_SECONDS = 62  # the page renews a minute before expiry: after 2 s here


def doc_page(url: str, key: str) -> str:
    """The document's HTML page with the project's URL and publishable key filled in."""
    (page,) = re.findall(r"```html\n(.*?)```", DOC.read_text(), re.S)
    for name, value in (("SUPABASE_URL", url), ("PUBLISHABLE_KEY", key)):
        page, found = re.subn(rf"(?m)^const {name} = '[^']*';", f"const {name} = '{value}';", page)
        assert found == 1, f"the page must keep its marked line `const {name} = '...';`"
    return page


@dataclass
class Supabase:
    """Auth and the gateway of one project, on one origin that also serves the page."""

    jwt_secret: str
    rest_url: str  # the gateway, in front of PostgREST
    key: str  # the publishable (legacy anon) key
    page: str = ""
    url: str = ""
    grants: list[str] = field(default_factory=list)
    api_keys: set[str] = field(default_factory=set)
    refresh_tokens: dict[str, str] = field(default_factory=dict)
    user_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def access_token(self) -> str:
        now = int(time.time())
        return infra.make_jwt(
            self.jwt_secret,
            {
                "aud": "authenticated",
                "exp": now + TOKEN_SECONDS,
                "iat": now,
                "iss": f"{self.url}/auth/v1",
                "sub": self.user_id,
                "email": EMAIL,
                "role": "authenticated",
                "aal": "aal1",
                "session_id": str(uuid.uuid4()),
                "is_anonymous": False,
                "app_metadata": {"provider": "email", "providers": ["email"], "gfx_access": "live"},
                "user_metadata": {"gfx_access": "none"},  # never counts
            },
        )

    def token(self, grant: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.grants.append(grant)
        if grant == "password":
            if (body.get("email"), body.get("password")) != (EMAIL, PASSWORD):
                return 400, {
                    "code": 400,
                    "error_code": "invalid_credentials",
                    "msg": "Invalid login credentials",
                }
        elif grant == "refresh_token":
            if self.refresh_tokens.pop(body.get("refresh_token", ""), None) is None:
                return 400, {
                    "code": 400,
                    "error_code": "refresh_token_not_found",
                    "msg": "Invalid Refresh Token",
                }
        else:
            return 400, {"msg": f"unsupported grant_type {grant}"}
        refresh = secrets.token_urlsafe(16)
        self.refresh_tokens[refresh] = self.user_id
        return 200, {
            "access_token": self.access_token(),
            "token_type": "bearer",
            "expires_in": TOKEN_SECONDS,
            "expires_at": int(time.time()) + TOKEN_SECONDS,
            "refresh_token": refresh,
            "user": {"id": self.user_id, "email": EMAIL, "app_metadata": {"gfx_access": "live"}},
        }


def _handler(project: Supabase) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            if parts.path == "/current-hand.html":
                self.answer(200, project.page.encode(), "text/html; charset=utf-8")
                return
            if parts.path.startswith("/rest/v1/"):
                project.api_keys.add(self.headers.get("apikey", ""))
                headers = {"apikey": self.headers.get("apikey", "")}
                if self.headers.get("authorization"):
                    headers["authorization"] = self.headers["authorization"]
                response = httpx.get(project.rest_url + self.path, headers=headers, timeout=30)
                self.answer(response.status_code, response.content, "application/json")
                return
            self.answer(404, b"{}", "application/json")

        def do_POST(self) -> None:
            parts = urlsplit(self.path)
            body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
            project.api_keys.add(self.headers.get("apikey", ""))
            if parts.path != "/auth/v1/token" or self.headers.get("apikey") != project.key:
                self.answer(401, b'{"message":"Invalid API key"}', "application/json")
                return
            (grant,) = parse_qs(parts.query)["grant_type"]
            status, document = project.token(grant, body)
            self.answer(status, json.dumps(document).encode(), "application/json")

    return Handler


@dataclass
class Stack:
    db: infra.Database
    agent: httpx.Client  # the service role, as the agent writes
    project: Supabase


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with contextlib.ExitStack() as cleanup:
        try:
            db = infra.create_database(migrate=False)
        except infra.InfraError as exc:
            pytest.fail(str(exc), pytrace=False)
        cleanup.callback(infra.drop_database, db.name)
        for migration in sorted(infra.MIGRATIONS_DIR.glob("*.sql")):  # pasted in name order
            infra.apply_migration(db.dsn, migration)
        server = infra.start_postgrest(db)
        cleanup.callback(server.close)
        service = infra.start_gateway(server.url, server.jwt_secret)
        cleanup.callback(service.close)
        browser_gateway = infra.start_gateway(server.url, server.jwt_secret, key=server.anon_jwt())
        cleanup.callback(browser_gateway.close)
        project = Supabase(server.jwt_secret, browser_gateway.url, browser_gateway.key)
        http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(project))
        project.url = f"http://127.0.0.1:{http.server_address[1]}"
        project.page = doc_page(project.url, project.key)
        threading.Thread(target=http.serve_forever, daemon=True).start()
        cleanup.callback(http.server_close)
        cleanup.callback(http.shutdown)
        agent = httpx.Client(
            base_url=f"{service.url}/rest/v1", headers={"apikey": service.key}, timeout=60
        )
        cleanup.callback(agent.close)
        yield Stack(db, agent, project)


def store(stack: Stack, pc: str, data: bytes) -> None:
    """What the agent does with a session file: one upsert with the secret key."""
    record = parse_session(
        data, pc_id=pc, rel_path=f"1019/{pc}.json", mtime_ns=time.time_ns(), max_file_bytes=2**26
    )
    response = stack.agent.post(
        "/gfx_sessions",
        params=UPSERT_PARAMS,
        content=b"[" + record.row + b"]",
        headers={"content-type": "application/json", "prefer": UPSERT_PREFER},
    )
    assert response.status_code in (200, 201), response.text


def current_hand(stack: Stack, pc: str) -> dict[str, Any]:
    (row,) = infra.query(
        stack.db.dsn,
        "select hand_num, board_cards, players from public.gfx_current_hand where gfx_pc_id = %s",
        (pc,),
    )
    return row


def test_the_documented_page_signs_in_and_follows_the_current_hand(
    stack: Stack, page: Page
) -> None:
    rng = random.Random(26)
    session = make_session(1, 3, rng)
    store(stack, "PC02", make_session(2, 2, rng).to_bytes())  # another table, not shown
    store(stack, "PC01", session.to_bytes())
    hand = current_hand(stack, "PC01")

    page.goto(f"{stack.project.url}/current-hand.html?pc=PC01")
    page.fill("#email", EMAIL)
    page.fill("#password", "wrong")
    page.click("button")
    expect(page.locator("#status")).to_have_text("Invalid login credentials")
    page.fill("#password", PASSWORD)
    page.click("button")

    expect(page.locator("#num")).to_have_text(str(hand["hand_num"]))
    expect(page.locator("#pc")).to_have_text("PC01")
    expect(page.locator("#board")).to_have_text(" ".join(hand["board_cards"]) or "-")
    rows = page.locator("#players tr")
    expect(rows).to_have_count(len(hand["players"]))
    for index, player in enumerate(hand["players"]):
        expect(rows.nth(index)).to_contain_text(player["player_name"])
        if player["hole_cards"]:
            expect(rows.nth(index)).to_contain_text(" ".join(player["hole_cards"]))

    # the next hand ends on the GFX PC: the page follows within its 2 s poll
    session.hands.append({**session.hands[-1], "HandNum": session.hands[-1]["HandNum"] + 1})
    store(stack, "PC01", session.to_bytes())
    newer = current_hand(stack, "PC01")
    assert newer["hand_num"] == hand["hand_num"] + 1
    expect(page.locator("#num")).to_have_text(str(newer["hand_num"]), timeout=15_000)
    expect(page.locator("#status")).to_have_text("")

    # the token was renewed before it expired, and the page never held any key but the public one
    deadline = time.monotonic() + 15
    while "refresh_token" not in stack.project.grants and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    assert stack.project.grants[:2] == ["password", "password"]
    assert "refresh_token" in stack.project.grants
    assert stack.project.api_keys == {stack.project.key}
    page.wait_for_timeout(2500)  # a poll with the renewed token
    expect(page.locator("#status")).to_have_text("")
