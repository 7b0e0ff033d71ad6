"""A stand-in of Supabase Auth (GoTrue v2) for a browser's email-and-password sign-in.

It serves, behind the gateway stand-in (`infra.Gateway.auth`, the path after /auth/v1):

    POST /token?grant_type=password        {"email", "password"}  -> a session
    POST /token?grant_type=refresh_token   {"refresh_token"}      -> a new session (rotated)
    GET  /user                             Authorization: Bearer  -> the user
    POST /logout                           Authorization: Bearer  -> 204, the session's
                                                                     refresh tokens revoked

as Supabase Auth does: a session is {access_token, token_type "bearer", expires_in, expires_at,
refresh_token, user}; the access token is an HS256 JWT signed with the project's JWT secret
(PostgREST verifies it) carrying the claims Supabase mints (iss, aud, exp, iat, sub, email,
phone, app_metadata, user_metadata, role, aal, amr, session_id, is_anonymous); a refresh token
is used once (a second use after REUSE_INTERVAL is refused with refresh_token_already_used);
errors are {"code", "error_code", "msg"} with Supabase's codes. `grants` records every grant
asked for, so a test can see the page refresh before its token expires.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from tests.support import infra

REUSE_INTERVAL = 10.0  # seconds a used refresh token may be presented again (GoTrue's default)


@dataclass
class AuthUser:
    id: str
    email: str
    password: str
    app_metadata: dict[str, Any]
    created_at: str


@dataclass
class RefreshToken:
    user_id: str
    session_id: str
    used_at: float | None = None
    revoked: bool = False


@dataclass
class SupabaseAuth:
    jwt_secret: str
    issuer: str = "https://project-ref.supabase.co/auth/v1"
    access_lifetime: int = 3600  # seconds (JWT expiry, Supabase's default)
    users: dict[str, AuthUser] = field(default_factory=dict)  # by email
    tokens: dict[str, RefreshToken] = field(default_factory=dict)
    grants: list[str] = field(default_factory=list)  # grant types asked for, in order
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_user(self, email: str, password: str, **app_metadata: Any) -> AuthUser:
        user = AuthUser(
            str(uuid.uuid4()),
            email,
            password,
            {"provider": "email", "providers": ["email"], **app_metadata},
            _iso(time.time()),
        )
        self.users[email.lower()] = user
        return user

    # -- the routes --

    def __call__(self, request: infra.GatewayRequest) -> infra.FaultAnswer:
        query = {k: v[-1] for k, v in parse_qs(request.query).items()}
        if request.method == "POST" and request.path == "/token":
            grant = query.get("grant_type", "")
            with self.lock:
                self.grants.append(grant)
                if grant == "password":
                    return self._password(_json_body(request))
                if grant == "refresh_token":
                    return self._refresh(_json_body(request))
            return _error(400, "validation_failed", "unsupported_grant_type")
        if request.method == "GET" and request.path == "/user":
            claims = self.verify(request)
            if isinstance(claims, tuple):
                return claims
            user = self._user_by_id(claims["sub"])
            if user is None:
                return _error(403, "user_not_found", "User from sub claim in JWT does not exist")
            return _json(200, self.user_json(user))
        if request.method == "POST" and request.path == "/logout":
            claims = self.verify(request)
            if isinstance(claims, tuple):
                return claims
            with self.lock:
                for token in self.tokens.values():
                    if token.session_id == claims["session_id"]:
                        token.revoked = True
            return 204, {}, b""
        return _error(404, "not_found", "Not Found")

    def _password(self, body: dict[str, Any]) -> infra.FaultAnswer:
        user = self.users.get(str(body.get("email", "")).strip().lower())
        if user is None or not hmac.compare_digest(user.password, str(body.get("password", ""))):
            return _error(400, "invalid_credentials", "Invalid login credentials")
        return _json(200, self._session(user, str(uuid.uuid4())))

    def _refresh(self, body: dict[str, Any]) -> infra.FaultAnswer:
        token = self.tokens.get(str(body.get("refresh_token", "")))
        if token is None or token.revoked:
            return _error(
                400, "refresh_token_not_found", "Invalid Refresh Token: Refresh Token Not Found"
            )
        now = time.time()
        if token.used_at is not None and now - token.used_at > REUSE_INTERVAL:
            return _error(400, "refresh_token_already_used", "Invalid Refresh Token: Already Used")
        user = self._user_by_id(token.user_id)
        if user is None:
            return _error(400, "user_not_found", "User not found")
        token.used_at = token.used_at or now
        return _json(200, self._session(user, token.session_id))

    # -- tokens --

    def _session(self, user: AuthUser, session_id: str) -> dict[str, Any]:
        now = int(time.time())
        refresh = secrets.token_urlsafe(9)  # GoTrue's refresh tokens are short random strings
        self.tokens[refresh] = RefreshToken(user.id, session_id)
        claims = {
            "iss": self.issuer,
            "sub": user.id,
            "aud": "authenticated",
            "exp": now + self.access_lifetime,
            "iat": now,
            "email": user.email,
            "phone": "",
            "app_metadata": user.app_metadata,
            "user_metadata": {},
            "role": "authenticated",
            "aal": "aal1",
            "amr": [{"method": "password", "timestamp": now}],
            "session_id": session_id,
            "is_anonymous": False,
        }
        return {
            "access_token": infra.make_jwt(self.jwt_secret, claims),
            "token_type": "bearer",
            "expires_in": self.access_lifetime,
            "expires_at": now + self.access_lifetime,
            "refresh_token": refresh,
            "user": self.user_json(user),
        }

    def user_json(self, user: AuthUser) -> dict[str, Any]:
        return {
            "id": user.id,
            "aud": "authenticated",
            "role": "authenticated",
            "email": user.email,
            "email_confirmed_at": user.created_at,
            "phone": "",
            "app_metadata": user.app_metadata,
            "user_metadata": {},
            "identities": [],
            "created_at": user.created_at,
            "updated_at": user.created_at,
            "is_anonymous": False,
        }

    def verify(self, request: infra.GatewayRequest) -> dict[str, Any] | infra.FaultAnswer:
        """The bearer's claims, or the error Supabase Auth answers."""
        authorization = request.headers.get("authorization", "")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return _error(401, "no_authorization", "This endpoint requires a Bearer token")
        claims = verify_jwt(self.jwt_secret, token.strip())
        if claims is None:
            return _error(403, "bad_jwt", "invalid JWT: unable to parse or verify signature")
        if claims.get("exp", 0) <= time.time():
            return _error(403, "bad_jwt", "invalid JWT: token is expired")
        if not claims.get("session_id"):
            return _error(403, "bad_jwt", "invalid claim: missing sub claim")
        return claims

    def _user_by_id(self, user_id: str) -> AuthUser | None:
        return next((u for u in self.users.values() if u.id == user_id), None)


def verify_jwt(secret: str, token: str) -> dict[str, Any] | None:
    """The claims of an HS256 JWT signed with `secret`, or None."""
    try:
        header, payload, signature = token.split(".")
        expected = hmac.new(secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256)
        if not hmac.compare_digest(_unb64(signature), expected.digest()):
            return None
        if json.loads(_unb64(header)).get("alg") != "HS256":
            return None
        claims: dict[str, Any] = json.loads(_unb64(payload))
        return claims
    except ValueError:
        return None


def _unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _json_body(request: infra.GatewayRequest) -> dict[str, Any]:
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _json(status: int, body: dict[str, Any]) -> infra.FaultAnswer:
    return status, {"content-type": "application/json"}, json.dumps(body).encode()


def _error(status: int, error_code: str, msg: str) -> infra.FaultAnswer:
    return _json(status, {"code": status, "error_code": error_code, "msg": msg})


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")
