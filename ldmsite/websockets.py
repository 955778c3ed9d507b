"""The websocket side of the ASGI stack: who is connecting, from where, and the routes.

Two ways in, to the same `ws/generations/…` streams:

- Browsers: the session cookie, and only from an allowed origin (`AllowedHostsOriginValidator`):
  a cookie is sent by the browser on its own, so a foreign page must not be able to use it.
- API clients: a personal access token with the read scope, never in the URL (URLs end up in
  logs). Either offer two subprotocols, ``ldmsite`` and ``ldmsite.token.<token>`` (the one
  way a browser's WebSocket can send a credential; the server accepts with ``ldmsite``, so the
  token is not echoed back), or send ``Authorization: Bearer <token>`` (clients that can set
  headers). A token is an explicit credential, not an ambient one, so these connections need
  no Origin header and may come from any origin; an invalid, expired or revoked token, or
  one without the read scope, is refused like an anonymous client (close code 4401).
"""

from __future__ import annotations

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.routing import URLRouter
from channels.security.websocket import AllowedHostsOriginValidator
from django.contrib.auth.models import AnonymousUser

from generation.routing import websocket_urlpatterns
from ldmsite.accounts.tokens import TokenError, authenticate_token

SUBPROTOCOL = "ldmsite"
TOKEN_SUBPROTOCOL_PREFIX = "ldmsite.token."


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
def user_for_token(raw: str):
    try:
        token = authenticate_token(raw)
    except TokenError:
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
        if raw is None:
            return await self.session_app(scope, receive, send)
        user, token = await user_for_token(raw)
        scope = dict(scope, user=user, auth_token=token)
        if offered_ours:
            send = accepting_with_subprotocol(send)
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
    session_app=AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
)
