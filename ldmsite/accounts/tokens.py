"""Personal access tokens: creation, hashing, lookup, revocation.

A token looks like ``ldm_<43 url-safe characters>`` (256 random bits). Only its
SHA-256 digest is stored: the token has full entropy, so a fast hash is enough
(there is nothing to brute-force) and lookups stay cheap on every request. The
first 12 characters are stored too, to find the row and to show the token on
the tokens page without revealing it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from ldmsite.accounts.models import AccessToken

TOKEN_PREFIX = "ldm_"
PREFIX_LENGTH = 12  # "ldm_" plus 8 random characters: enough to tell tokens apart, useless to an attacker
MAX_TOKENS_PER_PERSON = 50  # usable (unrevoked, unexpired) ones
LAST_USED_RESOLUTION = timedelta(seconds=60)  # write last_used_at at most once a minute per token
SCOPES = tuple(AccessToken.Scope.values)
DEFAULT_SCOPES = ("read", "generate")


class TokenError(Exception):
    """A token that cannot be used; the message says why, for the 401 answer."""


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


def looks_like_token(raw: str) -> bool:
    return isinstance(raw, str) and raw.startswith(TOKEN_PREFIX) and PREFIX_LENGTH < len(raw) <= 200


def create_token(user, name: str, scopes, expires_at: datetime | None = None) -> tuple[AccessToken, str]:
    """Make a token for `user`; returns the row and the token itself, which is never stored.

    Raises ValueError with a message naming what is wrong.
    """
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise ValueError("name: is required, 1 to 100 characters")
    scopes = list(dict.fromkeys(scopes or ()))
    unknown = [scope for scope in scopes if scope not in SCOPES]
    if unknown or not scopes:
        raise ValueError(f"scopes: choose one or more of {', '.join(SCOPES)}")
    if expires_at is not None and expires_at <= timezone.now():
        raise ValueError("expires_at: must be in the future")
    with transaction.atomic():
        usable = usable_tokens(user).count()
        if usable >= MAX_TOKENS_PER_PERSON:
            raise ValueError(f"You already have {usable} tokens; revoke one you no longer use first.")
        raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token = AccessToken.objects.create(
            user=user, name=name, prefix=raw[:PREFIX_LENGTH], digest=hash_token(raw),
            scopes=[scope for scope in SCOPES if scope in scopes], expires_at=expires_at,
        )
    return token, raw


def usable_tokens(user):
    now = timezone.now()
    return AccessToken.objects.filter(user=user, revoked_at__isnull=True).exclude(expires_at__lte=now)


def find_token(raw: str) -> AccessToken | None:
    """The row of this token whatever its state, or None. Compares digests in constant time."""
    if not looks_like_token(raw):
        return None
    digest = hash_token(raw)
    for candidate in AccessToken.objects.select_related("user").filter(prefix=raw[:PREFIX_LENGTH]):
        if hmac.compare_digest(candidate.digest, digest):
            return candidate
    return None


def authenticate_token(raw: str) -> AccessToken:
    """The usable token for `raw`, its last use recorded; TokenError says why not."""
    token = find_token(raw)
    if token is None:
        raise TokenError("Invalid token.")
    if token.is_revoked:
        raise TokenError("This token has been revoked.")
    if token.is_expired:
        raise TokenError("This token has expired.")
    if not token.user.is_active:
        raise TokenError("The account of this token is disabled.")
    touch(token)
    return token


def touch(token: AccessToken) -> None:
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        AccessToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now


def revoke_token(token: AccessToken) -> AccessToken:
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
    return token
