"""Personal access tokens for the REST API and the A1111-compatible API.

A token is shown to its owner once, when it is created; the database keeps only
its SHA-256 digest and a short visible prefix (for lookup and for telling tokens
apart on the tokens page), so a copy of the database holds no usable token.
"""

import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone


class AccessToken(models.Model):
    class Scope(models.TextChoices):
        READ = "read", "Read: see your jobs, images, albums and the public gallery"
        GENERATE = "generate", "Generate: submit and cancel generation jobs"
        WRITE = "write", "Write: change, delete and share images and albums, like and report"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="access_tokens")
    name = models.CharField(max_length=100, help_text="What the token is for, e.g. the script that uses it")
    prefix = models.CharField(max_length=16, db_index=True, help_text="The token's first characters, shown")
    digest = models.CharField(max_length=64, unique=True, help_text="SHA-256 of the whole token, hex")
    scopes = models.JSONField(default=list, help_text="Subset of read, generate, write")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: never expires")
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    a1111_options = models.JSONField(
        default=dict, blank=True,
        help_text="Options set through the A1111 API (/sdapi/v1/options), e.g. sd_model_checkpoint",
    )

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def is_usable(self) -> bool:
        return not self.is_revoked and not self.is_expired

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


def avatar_name(instance, filename: str) -> str:
    """An unguessable name: the file is served through the app (accounts:avatar), never by its path."""
    return f"avatars/{secrets.token_hex(16)}.png"


class Profile(models.Model):
    """What a person shows about themselves beyond the auth user: a short bio and an avatar.

    The display name stays `User.first_name` (already edited on the profile page and shown across the
    gallery); this row holds only what the auth user has no field for. Created on first save.
    """

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="profile")
    bio = models.CharField(max_length=300, blank=True, help_text="A line or two about you, shown on your public page")
    avatar = models.ImageField(upload_to=avatar_name, blank=True,
                               help_text="Re-encoded as a 256×256 PNG; served through the app")
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self):
        return f"Profile of {self.user}"
