"""The fleet page at /fleet (static/fleet.html), pure: the file with this agent's Supabase
project filled in.

The page reads Supabase from the browser with a user's sign-in; what the agent adds is only
where to find the project: GFX_SYNC_SUPABASE_URL and GFX_SYNC_SUPABASE_PUBLISHABLE_KEY, both
public (never the secret key). Without them the page asks, as it does from file://.
"""

from __future__ import annotations

import html

# the page talks to Supabase only, keeps no one's credentials in a cache, and is never framed
FLEET_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
URL_META = b'<meta name="gfx-supabase-url" content="">'
KEY_META = b'<meta name="gfx-supabase-key" content="">'


def fleet_page(template: bytes, url: str | None, publishable_key: str | None) -> bytes:
    page = template
    for meta, value, name in (
        (URL_META, url, "gfx-supabase-url"),
        (KEY_META, publishable_key, "gfx-supabase-key"),
    ):
        if value:
            filled = f'<meta name="{name}" content="{html.escape(value, quote=True)}">'
            page = page.replace(meta, filled.encode(), 1)
    return page
