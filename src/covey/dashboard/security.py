"""Who may use the dashboard, and what a page may do in the browser.

- **Where it listens.** ``[HOST:]PORT``: loopback (127.0.0.1) unless a host is given. Bound
  anywhere else it refuses to start without a token (``--ui-token``, ``--ui-token-file`` or
  ``COVEY_UI_TOKEN``).
- **The token.** ``Authorization: Bearer TOKEN``, or ``?token=TOKEN`` once: that visit sets
  an HttpOnly, SameSite=Strict cookie (an HMAC of the token, not the token) and redirects to
  the same page without it, so the token does not stay in the address bar or the history.
- **Loopback without a token.** Only requests whose ``Host`` is a loopback name are served:
  a web page elsewhere cannot reach the dashboard through DNS rebinding.
- **Actions.** Every change is a POST; GET never changes anything. A POST carries the
  session's CSRF token (an HMAC of the session cookie under a secret made at start) in a
  form field, checked with :func:`hmac.compare_digest`, and an ``Origin`` (or ``Referer``)
  naming this host, or, with neither, the browser's ``Sec-Fetch-Site: same-origin``. A
  request authenticated by its ``Authorization`` header is no browser's ambient credential:
  it needs neither.
- **Every response** carries a Content-Security-Policy that runs only the app's own script
  file (no inline script at all), ``nosniff``, ``Referrer-Policy: no-referrer`` and
  ``X-Frame-Options: DENY``. Every text from the store is escaped where it is written (the
  pages) and the live logs are put into the page as text nodes, never as HTML.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from aiohttp import web

from covey.errors import CoveyError, SpecError

AUTH_COOKIE = "covey_ui_auth"
SESSION_COOKIE = "covey_ui_session"
CSRF_FIELD = "csrf"
MIN_TOKEN = 16
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline';"
    " img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none';"
    " frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SESSION: ContextVar[str] = ContextVar("covey_ui_session", default="")
"""The session (its cookie) of the request being handled, set by :meth:`Guard.middleware`."""


@dataclass(frozen=True, slots=True)
class Address:
    """Where the dashboard listens."""

    host: str  # as given to bind(): no brackets around an IPv6 address
    port: int

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"


def is_loopback(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 or ::1 (a name other than localhost is not: it may
    resolve anywhere)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_address(text: str, what: str = "--ui") -> Address:
    """``PORT``, ``HOST:PORT``, ``[IPV6]:PORT`` (``PORT`` alone: 127.0.0.1)."""
    value = text.strip()
    host = "127.0.0.1"
    port_text = value
    if value.startswith("["):
        inner, sep, rest = value[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise SpecError(f"{what}: {text!r} is not [HOST:]PORT (an IPv6 host as [::1]:PORT)")
        host, port_text = inner, rest[1:]
    elif value.count(":") == 1:
        given, _, port_text = value.partition(":")
        host = given or host
    elif ":" in value:
        raise SpecError(f"{what}: {text!r}: write an IPv6 host in brackets, as [::1]:PORT")
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise SpecError(f"{what}: {text!r} is not [HOST:]PORT (a port is 0 to 65535)")
    if value.startswith("["):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise SpecError(f"{what}: {host!r} (in brackets) is not an IPv6 address") from None
    return Address(host, port)


def read_token(
    token: str | None, token_file: Path | None, environ: Mapping[str, str] = os.environ
) -> str | None:
    """The token from ``--ui-token``, else ``--ui-token-file``, else ``COVEY_UI_TOKEN``."""
    where = "--ui-token"
    if token is None and token_file is not None:
        where = f"--ui-token-file {token_file}"
        try:
            token = token_file.read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise SpecError(f"{where}: cannot read it: {exc}") from exc
    if token is None:
        token, where = environ.get("COVEY_UI_TOKEN") or None, "COVEY_UI_TOKEN"
    if token is None:
        return None
    token = token.strip()
    if len(token) < MIN_TOKEN or any(c.isspace() or ord(c) < 33 for c in token):
        raise SpecError(
            f"{where}: a token is at least {MIN_TOKEN} printable characters without spaces"
            " (e.g. python3 -c 'import secrets; print(secrets.token_urlsafe())')"
        )
    return token


def require_token(address: Address, token: str | None, what: str = "--ui") -> None:
    """Refuse to listen beyond loopback without a token."""
    if token is None and not address.loopback:
        raise CoveyError(
            f"{what} {address.host}:{address.port}: not a loopback address, so the dashboard"
            " needs a token: --ui-token TOKEN, --ui-token-file PATH or COVEY_UI_TOKEN"
        )


def _mac(key: bytes, what: str) -> str:
    return hmac.new(key, what.encode(), hashlib.sha256).hexdigest()


@dataclass
class Guard:
    """The checks every request passes (an aiohttp middleware), and the tokens it hands
    out: the session's CSRF token for the forms of a page."""

    address: Address
    token: str | None
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    @property
    def auth_cookie(self) -> str | None:
        return None if self.token is None else _mac(self.token.encode(), "covey-ui-session")

    def csrf(self) -> str:
        """The CSRF token of the session of the request being handled."""
        return _mac(self.secret, SESSION.get())

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.token is None and not self._loopback_host(request):
            raise web.HTTPMisdirectedRequest(text="covey: this dashboard answers loopback only\n")
        bearer = False
        if self.token is not None:
            bearer = self._bearer(request)
            if not bearer and not self._cookie(request):
                return self._login(request)
        session = request.cookies.get(SESSION_COOKIE, "")
        fresh = not (len(session) == 32 and all(c in "0123456789abcdef" for c in session))
        if fresh:
            session = secrets.token_hex(16)
        reset = SESSION.set(session)
        try:
            if request.method not in ("GET", "HEAD") and not bearer:
                await self._check_post(request)
            response = await handler(request)
        finally:
            SESSION.reset(reset)
        if fresh and not response.prepared:
            response.set_cookie(SESSION_COOKIE, session, httponly=True, samesite="Strict", path="/")
        return response

    def _loopback_host(self, request: web.Request) -> bool:
        host = request.headers.get("Host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return is_loopback(name.strip("[]")) or name.strip("[]") == self.address.host

    def _bearer(self, request: web.Request) -> bool:
        assert self.token is not None
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), self.token.encode()
        )

    def _cookie(self, request: web.Request) -> bool:
        expected = self.auth_cookie
        given = request.cookies.get(AUTH_COOKIE, "")
        return expected is not None and hmac.compare_digest(given.encode(), expected.encode())

    def _login(self, request: web.Request) -> web.StreamResponse:
        """``?token=`` on a GET: set the cookie, and send the browser to the same page
        without the token; anything else: 401."""
        assert self.token is not None
        given = request.query.get("token")
        if (
            request.method == "GET"
            and given is not None
            and hmac.compare_digest(given.encode(), self.token.encode())
        ):
            rest = [(k, v) for k, v in request.query.items() if k != "token"]
            target = request.path + (f"?{urlencode(rest)}" if rest else "")
            response = web.Response(status=303, headers={"Location": target})
            assert self.auth_cookie is not None
            response.set_cookie(
                AUTH_COOKIE, self.auth_cookie, httponly=True, samesite="Strict", path="/"
            )
            return response
        return web.Response(
            status=401,
            text="covey: this dashboard needs its token: open it once as /?token=TOKEN,"
            " or send Authorization: Bearer TOKEN\n",
            headers={"WWW-Authenticate": 'Bearer realm="covey"'},
        )

    async def _check_post(self, request: web.Request) -> None:
        """A POST from a page of this dashboard: its own origin, the session's CSRF token.

        The origin is the ``Origin`` header (``fetch`` sends it), else the ``Referer``. Under
        ``Referrer-Policy: no-referrer`` a browser sends a plain form's POST with ``Origin:
        null`` and no ``Referer``; then its ``Sec-Fetch-Site: same-origin`` (a header no page
        can set) says where it came from."""
        host = request.headers.get("Host", "")
        origin = request.headers.get("Origin")
        source = origin if origin not in (None, "null") else request.headers.get("Referer")
        if source:
            here = bool(host) and urlsplit(source).netloc == host
        else:
            here = request.headers.get("Sec-Fetch-Site") == "same-origin"
        if not here:
            raise web.HTTPForbidden(text="covey: refused: this request did not come from here\n")
        form = await request.post()
        given = form.get(CSRF_FIELD)
        if not isinstance(given, str) or not hmac.compare_digest(
            given.encode(), self.csrf().encode()
        ):
            raise web.HTTPForbidden(text="covey: refused: the form's CSRF token is missing\n")


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: on every response, errors and event streams too."""
    for key, value in HEADERS.items():
        response.headers.setdefault(key, value)
