"""The fleet page as a file (issue 25, item 5), without a browser: what the agent fills in, and
what the file may not hold (a CDN, a build's bundle, a key)."""

from __future__ import annotations

import re

from tests.support.fleet_site import FLEET_HTML
from trio_gfxsync.web.fleet import fleet_page


def test_the_agent_fills_in_its_project_escaped_and_nothing_else() -> None:
    template = FLEET_HTML.read_bytes()
    page = fleet_page(
        template, 'https://p.supabase.co/"><script>alert(1)</script>', "sb_publishable_x"
    )
    text = page.decode()
    assert '<meta name="gfx-supabase-key" content="sb_publishable_x">' in text
    assert "<script>alert(1)" not in text and "&quot;&gt;&lt;script&gt;" in text
    assert fleet_page(template, None, None) == template  # unset: the page asks
    assert len(page) - len(template) < 200


def test_the_file_stands_alone() -> None:
    text = FLEET_HTML.read_text()
    # no script, style or font from elsewhere: it must work from file:// on a venue network
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=\"(https?:)?//", text)
    assert "@import" not in text and "url(http" not in text
    assert "sb_secret_" not in text and "service_role" not in text
