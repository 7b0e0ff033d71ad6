"""The fleet page's Supabase: the real PostgREST behind one gateway stand-in that holds the
project's two keys (the agents' secret one, the page's publishable one), serves Supabase Auth's
stand-in at /auth/v1 and answers a browser's CORS preflights, as a Supabase project does.

    with fleet_gateway(postgrest) as site:
        site.auth.add_user("ops@example.org", "pw", gfx_access="ops")
        page.goto(site.page_url(poll=1))          # the file itself, as from file://
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import httpx
from playwright.sync_api import Page, expect

from tests.support import infra
from tests.support.supabase_auth import SupabaseAuth

PUBLISHABLE_KEY = "sb_publishable_TESTKEY_" + "fedcba9876543210" * 2
FLEET_HTML = infra.REPO_ROOT / "trio_gfxsync" / "web" / "static" / "fleet.html"
PASSWORD = "correct horse battery staple"


@dataclass
class FleetSite:
    gateway: infra.Gateway
    auth: SupabaseAuth
    server: infra.PostgrestServer

    @property
    def url(self) -> str:
        return self.gateway.url

    def page_url(self, **params: object) -> str:
        """The page as a file, its project in the query string."""
        query = {"url": self.gateway.url, "key": PUBLISHABLE_KEY, **params}
        return f"{Path(FLEET_HTML).as_uri()}?{urlencode(query)}"

    def browser_client(self, access_token: str | None) -> httpx.Client:
        """What a browser holding the publishable key (and a user's token) may read."""
        headers = {"apikey": PUBLISHABLE_KEY}
        if access_token is not None:
            headers["authorization"] = f"Bearer {access_token}"
        return httpx.Client(base_url=f"{self.gateway.url}/rest/v1", headers=headers, timeout=30)

    def sign_in(self, email: str, password: str = PASSWORD) -> dict[str, object]:
        response = httpx.post(
            f"{self.gateway.url}/auth/v1/token",
            params={"grant_type": "password"},
            json={"email": email, "password": password},
            headers={"apikey": PUBLISHABLE_KEY},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        session: dict[str, object] = response.json()
        return session


@contextlib.contextmanager
def fleet_gateway(
    server: infra.PostgrestServer, *, access_lifetime: int = 3600
) -> Iterator[FleetSite]:
    gateway = infra.start_gateway(server.url, server.jwt_secret)
    auth = SupabaseAuth(server.jwt_secret, access_lifetime=access_lifetime)
    gateway.publishable_key = PUBLISHABLE_KEY
    gateway.auth = auth
    gateway.cors = True
    try:
        yield FleetSite(gateway, auth, server)
    finally:
        gateway.close()


def sign_in_on_page(page: Page, email: str, password: str = PASSWORD) -> None:
    form = page.get_by_test_id("sign-in")
    expect(form).to_be_visible()
    page.fill("#email", email)
    page.fill("#password", password)
    page.click("#sign-in button[type=submit]")
