"""The websocket side of the ASGI stack: who is connecting, from where, and the routes.

Two ways in, to the same `ws/generations/…` streams:

- Browsers: the session cookie, and only from a trusted origin (`SiteOriginValidator`): the
  site's own origin — scheme, host and port, as the page was served — or one listed in
  ``CSRF_TRUSTED_ORIGINS``. A cookie is sent by the browser on its own, so a page of another
  site, or of another port or scheme of the same host, must not be able to use it.
- API clients: a personal access token with the read scope, never in the URL (URLs end up in
  logs). Either offer two subprotocols, ``ldmsite`` and ``ldmsite.token.<token>`` (the one
  way a browser's WebSocket can send a credential; the server accepts with ``ldmsite``, so the
  token is not echoed back), or send ``Authorization: Bearer <token>`` (clients that can set
  headers). A token is an explicit credential, not an ambient one, so these connections need
  no Origin header and may come from any origin; an invalid, expired or revoked token, or
  one without the read scope, is refused like an anonymous client (close code 4401). Failed
  tokens are logged (never the token) and counted per client address like the REST API's
  (``LDM_TOKEN_FAILURE_RATE``); past the limit a token connection is closed with 4429.

A refused connection is accepted and then closed at once with its code (4401, 4403, 4404,
4429: docs/API.md), never refused at the handshake, where a browser would see only a failure
and no reason.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.routing import URLRouter
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http.request import is_same_domain, split_domain_port, validate_host

from generation.admission import Refusal
from generation.routing import websocket_urlpatterns
from ldmsite.accounts.tokens import TokenError, authenticate_token
from ldmsite.api.throttles import FailedTokenThrottle, scope_client_address

logger = logging.getLogger(__name__)

SUBPROTOCOL = "ldmsite"
TOKEN_SUBPROTOCOL_PREFIX = "ldmsite.token."
CLOSE_FORBIDDEN_ORIGIN = 4403  # a cookie connection from an origin the site does not trust
CLOSE_TOO_MANY_FAILURES = 4429  # this address sent too many bad tokens lately (LDM_TOKEN_FAILURE_RATE)
DEFAULT_PORTS = {"http": 80, "https": 443}


def header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or []:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


async def close_at_once(receive, send, code: int) -> None:
    """Accept the handshake and close with `code`: the client learns why (a handshake refused with
    HTTP 403 tells a browser nothing). Nothing is sent in between."""
    message = await receive()
    if message.get("type") != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": code})


# --- The origin of cookie connections ------------------------------------------------------------

def parse_origin(text: str | None) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) origin, default ports filled in; None for anything else
    (``null``, other schemes, a path, userinfo)."""
    if not text:
        return None
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        return None
    if (parts.scheme not in DEFAULT_PORTS or not parts.hostname or parts.username is not None
            or parts.path not in ("", "/") or parts.query or parts.fragment):
        return None
    return parts.scheme, parts.hostname.lower(), port or DEFAULT_PORTS[parts.scheme]


def site_origin(scope) -> tuple[str, str, int] | None:
    """The site's own origin as this connection reached it, as Django's CSRF check derives it for
    a request: the Host header (one of ALLOWED_HOSTS), and https when the connection is secure
    or, with ``SECURE_PROXY_SSL_HEADER`` (LDM_BEHIND_PROXY), when the proxy says it was."""
    host = header(scope, b"host")
    if host is None and scope.get("server"):
        server_host, server_port = scope["server"][0], scope["server"][1]
        host = f"{server_host}:{server_port}" if server_port else server_host
    if not host:
        return None
    domain, port = split_domain_port(host.lower())
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return None
    secure = scope.get("scheme") == "wss"
    proxy_header = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy_header:
        name, value = proxy_header
        forwarded = header(scope, name.removeprefix("HTTP_").replace("_", "-").lower().encode("latin-1"))
        if forwarded is not None:
            secure = forwarded.split(",", 1)[0].strip() == value
    scheme = "https" if secure else "http"
    return parse_origin(f"{scheme}://{domain}" + (f":{port}" if port else ""))  # an IPv6 domain keeps its []


def trusted_origin(origin: tuple[str, str, int], pattern: str) -> bool:
    """One ``CSRF_TRUSTED_ORIGINS`` entry, as Django's CSRF check reads it (``https://*.example.com``
    trusts the subdomains, with that scheme)."""
    scheme, _, netloc = pattern.partition("://")
    if "*" in netloc:
        if origin[0] != scheme:
            return False
        netloc_of_origin = origin[1] if origin[2] == DEFAULT_PORTS[origin[0]] else f"{origin[1]}:{origin[2]}"
        return is_same_domain(netloc_of_origin, netloc[netloc.find("."):].lower())
    return parse_origin(pattern) == origin


class SiteOriginValidator:
    """Cookie connections only from the site's own origin or ``CSRF_TRUSTED_ORIGINS``: scheme,
    host and port all compared (close code 4403 otherwise)."""

    def __init__(self, application):
        self.application = application

    def allowed(self, scope) -> bool:
        origin = parse_origin(header(scope, b"origin"))
        if origin is None:
            return False
        if origin == site_origin(scope):
            return True
        return any(trusted_origin(origin, pattern) for pattern in settings.CSRF_TRUSTED_ORIGINS)

    async def __call__(self, scope, receive, send):
        if self.allowed(scope):
            return await self.application(scope, receive, send)
        return await close_at_once(receive, send, CLOSE_FORBIDDEN_ORIGIN)


# --- Token connections ----------------------------------------------------------------------------


def token_from_scope(scope) -> tuple[str | None, bool]:
    """(the token the client sent, whether it offered the ``ldmsite`` subprotocol)."""
    offered = [str(protocol).strip() for protocol in scope.get("subprotocols") or []]
    for protocol in offered:
        if protocol.startswith(TOKEN_SUBPROTOCOL_PREFIX):
            return protocol[len(TOKEN_SUBPROTOCOL_PREFIX):], SUBPROTOCOL in offered
    for name, value in scope.get("headers") or []:
        if name.lower() == b"authorization":
            kind, _, credential = value.decode("latin-1").strip().partition(" ")
            if kind.lower() == "bearer" and credential.strip():
                return credential.strip(), SUBPROTOCOL in offered
    return None, SUBPROTOCOL in offered


@database_sync_to_async
def user_for_token(raw: str, address: str):
    """(person, token) for a usable read token, else (AnonymousUser, None); a `Refusal` when this
    address is over the failed-token limit. A failure is counted and logged, never the token."""
    throttle = FailedTokenThrottle(address)
    throttle.check()
    try:
        token = authenticate_token(raw)
    except TokenError as error:
        throttle.record_failure()
        logger.warning("Failed token authentication from %s: %s (websocket)", address, error)
        return AnonymousUser(), None
    if not token.has_scope("read"):
        return AnonymousUser(), None
    return token.user, token


class TokenAuthMiddleware:
    """Token-bearing connections go to `token_app` as the token's person; the rest to `session_app`."""

    def __init__(self, token_app, session_app):
        self.token_app = token_app
        self.session_app = session_app

    async def __call__(self, scope, receive, send):
        if scope.get("type") != "websocket":
            return await self.session_app(scope, receive, send)
        raw, offered_ours = token_from_scope(scope)
        if offered_ours:
            send = accepting_with_subprotocol(send)
        if raw is None:
            return await self.session_app(scope, receive, send)
        try:
            user, token = await user_for_token(raw, scope_client_address(scope))
        except Refusal:
            return await close_at_once(receive, send, CLOSE_TOO_MANY_FAILURES)
        scope = dict(scope, user=user, auth_token=token)
        return await self.token_app(scope, receive, send)


def accepting_with_subprotocol(send):
    """Browsers fail a handshake that offered subprotocols and got none back: answer ``ldmsite``."""

    async def send_with_subprotocol(message):
        if message.get("type") == "websocket.accept" and not message.get("subprotocol"):
            message = {**message, "subprotocol": SUBPROTOCOL}
        await send(message)

    return send_with_subprotocol


websocket_application = TokenAuthMiddleware(
    token_app=URLRouter(websocket_urlpatterns),
    session_app=SiteOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
)
