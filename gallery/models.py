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

    def public(self):
        """What Explore and profile pages may show: public and not hidden by moderators."""
        return self.filter(visibility=Image.Visibility.PUBLIC, hidden=False)

    def visible_to(self, user):
        """Everything `user` may open: their own, staff everything, others' public/unlisted unhidden."""
        if user.is_authenticated and user.is_staff:
            return self
        shared = models.Q(visibility__in=[Image.Visibility.PUBLIC, Image.Visibility.UNLISTED], hidden=False)
        if user.is_authenticated:
            return self.filter(shared | models.Q(owner=user))
        return self.filter(shared)


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
    like_count = models.PositiveIntegerField(default=0, help_text="Kept in step with Like rows")
    published_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    objects = ImageQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # A job retried after a crash must not store its images twice.
            models.UniqueConstraint(fields=["generation", "index"], name="one_image_per_job_index"),
        ]
        indexes = [
            models.Index(fields=["visibility", "hidden", "-created_at", "-id"], name="explore_newest"),
            models.Index(fields=["visibility", "hidden", "-like_count", "-created_at", "-id"],
                         name="explore_most_liked"),
            models.Index(fields=["owner", "-created_at", "-id"], name="history"),
            models.Index(fields=["saved", "created_at"], name="purge_unsaved"),
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

    def set_saved(self, saved: bool) -> "Image":
        """Keep the image (saved) or let `purge_unsaved` delete it once it is old."""
        self.saved = bool(saved)
        self.save(update_fields=["saved"])
        return self

    audit_type = "image"  # how the audit log names this kind of target

    def audit_label(self) -> str:
        return f"image {self.pk} by {self.owner.get_username()}: {self.prompt[:120]}"

    @property
    def download_name(self) -> str:
        return f"ldmsite-{self.pk}-{self.seed}.png"

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


class Album(models.Model):
    """A person's named, ordered selection of their images."""

    Visibility = Image.Visibility

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="albums")
    title = models.CharField(max_length=120)
    description = models.TextField(blank=True, max_length=5000)
    visibility = models.CharField(max_length=10, choices=Visibility.choices, default=Visibility.PRIVATE)
    cover = models.ForeignKey(Image, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    images = models.ManyToManyField(Image, through="AlbumItem", related_name="albums")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at", "-id"]

    def __str__(self):
        return self.title

    def get_absolute_url(self):
        return reverse("gallery:album", args=[self.pk])

    def can_view(self, user) -> bool:
        if user.is_authenticated and (user.pk == self.owner_id or user.is_staff):
            return True
        return self.visibility != self.Visibility.PRIVATE

    def can_edit(self, user) -> bool:
        return user.is_authenticated and user.pk == self.owner_id

    def items_visible_to(self, user):
        """This album's items whose image `user` may see (`Image.objects.visible_to`, the one rule),
        in album order: what the album's page and the API show and count. Sharing an album does
        not share an image made private after it was added, nor one moderators hid."""
        return self.items.filter(image__in=Image.objects.visible_to(user))

    def cover_visible_to(self, user) -> "Image | None":
        """The cover, if `user` may see that image (else none, as if the album had no cover)."""
        cover = self.cover
        return cover if cover is not None and cover.can_view(user) else None


class AlbumItem(models.Model):
    album = models.ForeignKey(Album, on_delete=models.CASCADE, related_name="items")
    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="album_items")
    position = models.PositiveIntegerField(default=0)
    added_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["position", "id"]
        constraints = [models.UniqueConstraint(fields=["album", "image"], name="image_once_per_album")]


class Like(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="likes")
    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="likes")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "image"], name="one_like_per_person")]


class Report(models.Model):
    """Someone flags an image for staff to review."""

    class Reason(models.TextChoices):
        SEXUAL = "sexual", "Sexual content"
        VIOLENCE = "violence", "Violence"
        HATE = "hate", "Hate"
        HARASSMENT = "harassment", "Harassment"
        SPAM = "spam", "Spam"
        COPYRIGHT = "copyright", "Copyright"
        OTHER = "other", "Other"

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        DISMISSED = "dismissed", "Dismissed"
        ACTIONED = "actioned", "Actioned"

    reporter = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="reports")
    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="reports")
    reason = models.CharField(max_length=20, choices=Reason.choices)
    text = models.TextField(blank=True, max_length=2000)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["reporter", "image"], condition=models.Q(status="open"),
                                    name="one_open_report_per_person_per_image"),
        ]


from gallery.moderation_models import *  # noqa: E402,F401,F403  (models Django must discover)
