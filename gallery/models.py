import secrets

from django.conf import settings
from django.db import models, transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver
from django.urls import reverse


def unguessable_name(extension: str) -> str:
    """A file name nobody can guess or enumerate: two-level fan-out plus 128 random bits."""
    token = secrets.token_hex(16)
    return f"images/{token[:2]}/{token}.{extension}"


class ImageQuerySet(models.QuerySet):
    def owned_by(self, user):
        return self.filter(owner=user)


class Image(models.Model):
    """A generated image: the PNG with its parameters embedded, a thumbnail, and provenance."""

    class Visibility(models.TextChoices):
        PRIVATE = "private", "Private"
        UNLISTED = "unlisted", "Unlisted"
        PUBLIC = "public", "Public"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="images")
    generation = models.ForeignKey("generation.Generation", on_delete=models.SET_NULL, null=True, blank=True,
                                   related_name="images")
    index = models.PositiveSmallIntegerField(default=0, help_text="Position within its job (seed = job seed + index)")
    # Names come from unguessable_name(); stored through the configured storage backend.
    file = models.FileField(max_length=200)
    thumbnail = models.FileField(max_length=200, blank=True)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    seed = models.BigIntegerField()
    prompt = models.TextField(blank=True)
    negative_prompt = models.TextField(blank=True)
    model = models.ForeignKey("generation.DiffusionModel", on_delete=models.SET_NULL, null=True, blank=True,
                              related_name="images")
    model_name = models.CharField(max_length=100, blank=True)
    sampler = models.CharField(max_length=40, blank=True)
    steps = models.PositiveIntegerField(default=0)
    guidance_scale = models.FloatField(default=0)
    clip_score = models.FloatField(null=True, blank=True)
    parameters = models.TextField(blank=True, help_text="A1111-style parameters text")
    metadata = models.JSONField(default=dict, blank=True)
    visibility = models.CharField(max_length=10, choices=Visibility.choices, default=Visibility.PRIVATE,
                                  db_index=True)
    saved = models.BooleanField(default=False)
    hidden = models.BooleanField(default=False, help_text="Hidden by moderators")
    hidden_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    objects = ImageQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # A job retried after a crash must not store its images twice.
            models.UniqueConstraint(fields=["generation", "index"], name="one_image_per_job_index"),
        ]

    def __str__(self):
        return f"Image {self.pk}: {self.prompt[:40]}"

    def get_absolute_url(self):
        return reverse("gallery:image", args=[self.pk])

    def can_view(self, user) -> bool:
        """Owner and staff always; others only non-hidden public or unlisted images."""
        if user.is_authenticated and (user.pk == self.owner_id or user.is_staff):
            return True
        return self.visibility != self.Visibility.PRIVATE and not self.hidden

    def can_edit(self, user) -> bool:
        return user.is_authenticated and user.pk == self.owner_id

    def file_url(self):
        return reverse("gallery:image_file", args=[self.pk])

    def thumbnail_url(self):
        return reverse("gallery:image_thumbnail", args=[self.pk])


@receiver(post_delete, sender=Image)
def delete_image_files(sender, instance: Image, **kwargs):
    """Deleting an image row (one, in bulk, or by cascade) deletes its files: no orphans.

    Runs after commit so a rolled-back delete keeps its files.
    """
    names = [stored.name for stored in (instance.file, instance.thumbnail) if stored]
    storage = instance.file.storage

    def remove():
        for name in names:
            storage.delete(name)

    transaction.on_commit(remove)
