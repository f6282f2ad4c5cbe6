"""The console's sign-in: an API key turned into a session cookie, and the CSRF token.

The cookie carries the API key itself with an expiry, signed with the
server's shared secret (HMAC-SHA256, RFC 2104), so every worker process reads
it and none keeps state; each request still asks the database for the key's
role, so a revoked key ends its sessions at once. The cookie is ``HttpOnly``
(no script reads it), ``SameSite=Strict`` (no other site's page sends it) and
``Secure`` when the console is reached over HTTPS (RFC 6265bis 4.1.2).

Every write (a form ``POST``) must also carry the CSRF token: an HMAC of the
session cookie, put in the page's forms, which another site cannot read
(the synchronizer-token pattern of OWASP's CSRF cheat sheet).
"""

import hashlib
import hmac
from datetime import datetime, timedelta

from bsi.errors import Unauthorized

COOKIE = "bsi_session"
LIFETIME = timedelta(hours=8)
"""How long a sign-in lasts; then the key is asked for again."""


def _sign(secret: bytes, text: str) -> str:
    return hmac.new(secret, text.encode(), hashlib.sha256).hexdigest()


def open_session(secret: bytes, api_key: str, now: datetime) -> str:
    """The cookie value for ``api_key``, valid for :data:`LIFETIME` from ``now``."""
    key = api_key.encode().hex()  # cookie-safe (RFC 6265 cookie-octet) whatever the key holds
    body = f"{key}.{int((now + LIFETIME).timestamp())}"
    return f"{body}.{_sign(secret, body)}"


def session_key(secret: bytes, cookie: str | None, now: datetime) -> str:
    """The API key a cookie carries; :class:`Unauthorized` when missing, forged or expired."""
    if not cookie:
        raise Unauthorized("not signed in")
    body, _, signature = cookie.rpartition(".")
    if not _same(signature, _sign(secret, body)):
        raise Unauthorized("the session is not one this server signed; sign in again")
    key, _, expires = body.rpartition(".")
    if not expires.isdigit() or int(expires) < now.timestamp():
        raise Unauthorized("the session has expired; sign in again")
    try:
        return bytes.fromhex(key).decode()
    except (ValueError, UnicodeDecodeError):
        raise Unauthorized("the session cookie is unreadable; sign in again") from None


def csrf_token(secret: bytes, cookie: str) -> str:
    """The token every form of this session carries."""
    return _sign(secret, f"csrf:{cookie}")


def check_csrf(secret: bytes, cookie: str, token: str | None) -> bool:
    return token is not None and _same(token, csrf_token(secret, cookie))


def _same(given: str, expected: str) -> bool:
    """Constant-time equality of text from the request (any characters, which
    ``hmac.compare_digest`` refuses for non-ASCII ``str``) with a hex digest."""
    return hmac.compare_digest(given.encode(errors="surrogateescape"), expected.encode())
