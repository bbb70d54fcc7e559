"""Token auth: a bearer header, or the HttpOnly session cookie that `POST /api/login` sets.

Tokens are never read from a query string, so they stay out of logs and browser history.
"""

from __future__ import annotations

import hashlib
import hmac

from fastapi import HTTPException, Request, status

from backend.settings import Settings

SESSION_COOKIE = "bonsai_session"
SESSION_MAX_AGE_SECONDS = 7 * 24 * 3600


def session_value(token: str) -> str:
    """Derive the cookie's value from the token, so the cookie never carries the token itself."""
    return hmac.new(token.encode(), b"bonsai-session-v1", hashlib.sha256).hexdigest()


def token_matches(settings: Settings, candidate: str) -> bool:
    if settings.token is None:
        return True
    return hmac.compare_digest(candidate.encode(), settings.token.get_secret_value().encode())


def is_authenticated(request: Request, settings: Settings) -> bool:
    if settings.token is None:
        return True
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer" and credentials and token_matches(settings, credentials.strip()):
        return True
    cookie = request.cookies.get(SESSION_COOKIE)
    expected = session_value(settings.token.get_secret_value())
    return cookie is not None and hmac.compare_digest(cookie.encode(), expected.encode())


def require_auth(request: Request) -> None:
    """Raise 401 unless the request carries the token or a valid session cookie."""
    settings: Settings = request.app.state.services.settings
    if not is_authenticated(request, settings):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing or invalid token: send 'Authorization: Bearer <token>' or log in",
            headers={"WWW-Authenticate": "Bearer"},
        )
