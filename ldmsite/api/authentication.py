"""How API requests prove who they are, and what a token may do.

- ``BearerTokenAuthentication``: ``Authorization: Bearer <token>`` (the REST API and /sdapi).
- ``BasicTokenAuthentication``: HTTP Basic with any user name and the token as the password
  (/sdapi only: most A1111 clients can do nothing else).
- Browser sessions work for /api/v1/ too (DRF's SessionAuthentication, with CSRF).
- ``TokenScopePermission``: a token acts only within its scopes (read, generate, write);
  a session acts with all of them.

A failed token authentication is logged (address, reason, request; never any of the token) and
counted against the client address (``FailedTokenThrottle``): past ``LDM_TOKEN_FAILURE_RATE``
every token from that address is refused with 429 until the window has passed.
"""

from __future__ import annotations

import base64
import binascii
import logging

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.permissions import SAFE_METHODS, BasePermission

from ldmsite.accounts.models import AccessToken
from ldmsite.accounts.tokens import TokenError, authenticate_token
from ldmsite.api.throttles import FailedTokenThrottle, client_address

logger = logging.getLogger(__name__)


def authorization_parts(request) -> list[bytes]:
    try:
        return get_authorization_header(request).split()
    except UnicodeError:
        raise failed(request, "The Authorization header must be plain ASCII.") from None


def failed(request, reason: str) -> exceptions.AuthenticationFailed:
    """Count and log a failed token authentication; the 401 to raise. The log line names the
    address, the reason and the request, never the credential."""
    address = client_address(request)
    FailedTokenThrottle(address).record_failure()
    logger.warning("Failed token authentication from %s: %s (%s %s)", address, reason, request.method,
                   request.path[:200])
    return exceptions.AuthenticationFailed(reason)


def user_and_token(request, raw: str):
    FailedTokenThrottle(client_address(request)).check()
    try:
        token = authenticate_token(raw)
    except TokenError as error:
        raise failed(request, str(error)) from None
    return token.user, token


class BearerTokenAuthentication(BaseAuthentication):
    """``Authorization: Bearer <token>``; ``request.auth`` is then the AccessToken."""

    def authenticate(self, request):
        parts = authorization_parts(request)
        if not parts or parts[0].lower() != b"bearer":
            return None
        if len(parts) != 2:
            raise failed(request, "Malformed Authorization header; send `Bearer <token>`.")
        try:
            raw = parts[1].decode("ascii")
        except UnicodeError:
            raise failed(request, "Invalid token.") from None
        return user_and_token(request, raw)

    def authenticate_header(self, request):
        return 'Bearer realm="ldmsite"'


class BasicTokenAuthentication(BaseAuthentication):
    """HTTP Basic: any user name, the token as the password."""

    def authenticate(self, request):
        parts = authorization_parts(request)
        if not parts or parts[0].lower() != b"basic":
            return None
        if len(parts) != 2:
            raise failed(request, "Malformed Authorization header; send `Basic <base64>`.")
        try:
            decoded = base64.b64decode(parts[1], validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise failed(request, "Malformed Basic credentials.") from None
        _, colon, password = decoded.partition(":")
        if not colon:
            raise failed(request, "Malformed Basic credentials; send user:token.")
        return user_and_token(request, password)

    def authenticate_header(self, request):
        return 'Basic realm="ldmsite A1111 API"'


def required_scope(request, view) -> str | None:
    """The scope a request needs: the view's ``required_scopes[method]``, else read for safe
    methods and write for the rest."""
    scopes = getattr(view, "required_scopes", {}) or {}
    if request.method in scopes:
        return scopes[request.method]
    return AccessToken.Scope.READ if request.method in SAFE_METHODS else AccessToken.Scope.WRITE


class TokenScopePermission(BasePermission):
    def has_permission(self, request, view):
        token = request.auth
        if not isinstance(token, AccessToken):
            return True  # a browser session may do whatever its person may do
        scope = required_scope(request, view)
        if scope is None or token.has_scope(scope):
            return True
        self.message = (f"This token lacks the '{scope}' scope this request needs; create a token with it "
                        "on the API tokens page.")
        return False


# --- OpenAPI descriptions of the schemes (drf-spectacular) -----------------------------

class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "ldmsite.api.authentication.BearerTokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer",
                "description": "A personal access token from the API tokens page: "
                               "`Authorization: Bearer ldm_…`. Scopes: read, generate, write."}


class BasicTokenScheme(OpenApiAuthenticationExtension):
    target_class = "ldmsite.api.authentication.BasicTokenAuthentication"
    name = "basicTokenAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "basic",
                "description": "For A1111 clients: any user name, a personal access token as the password."}
