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


class SharedByOwner:
    """Who may see and change something a person owns and may share (images, LoRAs): the owner and
    staff always see it, others only when it is public or unlisted and staff have not hidden it;
    only the owner changes it."""

    def can_view(self, user) -> bool:
        if user.is_authenticated and (user.pk == self.owner_id or user.is_staff):
            return True
        return self.visibility != Image.Visibility.PRIVATE and not self.hidden

    def can_edit(self, user) -> bool:
        return user.is_authenticated and user.pk == self.owner_id


class Image(SharedByOwner, models.Model):
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
    """Someone flags an image or a LoRA (exactly one of them) for staff to review."""

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
    image = models.ForeignKey(Image, on_delete=models.CASCADE, null=True, blank=True, related_name="reports")
    lora = models.ForeignKey("Lora", on_delete=models.CASCADE, null=True, blank=True, related_name="reports")
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
            models.UniqueConstraint(fields=["reporter", "lora"], condition=models.Q(status="open"),
                                    name="one_open_report_per_person_per_lora"),
            models.CheckConstraint(condition=models.Q(image__isnull=False, lora__isnull=True)
                                   | models.Q(image__isnull=True, lora__isnull=False), name="report_has_one_target"),
        ]

    @property
    def target(self):
        """What was reported: the image or the LoRA."""
        return self.image if self.image_id is not None else self.lora



LORA_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,59}$"  # writable in <lora:name:w>; others' as owner/name


def lora_file_name() -> str:
    """A LoRA file's storage name: unguessable, like an image's (served only through a checked view)."""
    token = secrets.token_hex(16)
    return f"loras/{token[:2]}/{token}.safetensors"


class LoraQuerySet(models.QuerySet):
    def shared(self):
        """Others may see and use these: public or unlisted, not hidden by staff."""
        return self.filter(visibility__in=[Image.Visibility.PUBLIC, Image.Visibility.UNLISTED], hidden=False)

    def visible_to(self, user):
        """What `user` may open and download: their own, staff everything, others' shared ones."""
        if user.is_authenticated and user.is_staff:
            return self
        shared = models.Q(visibility__in=[Image.Visibility.PUBLIC, Image.Visibility.UNLISTED], hidden=False)
        if user is not None and user.is_authenticated:
            return self.filter(shared | models.Q(owner=user))
        return self.filter(shared)

    def usable_by(self, user, model=None, names=None) -> dict:
        """The LoRAs `user` may use in a request, by the name a request gives them: their own by
        `name` (and `username/name`), anyone's public or unlisted unhidden one by `username/name`.
        Only those for `model` (a DiffusionModel) when it is given, and only those a request names
        when `names` is given (a submission looks up its few names, not every shared LoRA). Staff
        get no more than anyone."""
        queryset = self.select_related("owner", "base_model")
        if model is not None:
            queryset = queryset.filter(base_model=model)
        if names is not None:
            names = list(names)
            wanted = models.Q(pk__in=[])
            if user is not None and getattr(user, "is_authenticated", False):
                wanted |= models.Q(owner=user, name__in=[name for name in names if "/" not in name])
            for name in names:
                if "/" in name:  # a LoRA name has no "/", nor has a username: owner/name is unambiguous
                    username, _, lora_name = name.partition("/")
                    wanted |= models.Q(owner__username=username, name=lora_name)
            queryset = queryset.filter(wanted)
        found: dict = {}
        for lora in queryset.shared().exclude(owner_id=getattr(user, "pk", None)):
            found[lora.qualified_name] = lora
        if user is not None and getattr(user, "is_authenticated", False):
            for lora in queryset.filter(owner=user):
                found[lora.qualified_name] = lora
                found[lora.name] = lora
        return found

    def restore_for(self, user, pairs, hashes=None) -> tuple[list[tuple[str, float]], list[str]]:
        """The LoRAs of a recorded request (Remix, PNG import) as ``user`` would name them now:
        ((name, weight) pairs, a message for each one they cannot use).

        A recorded name is its maker's (``style`` for their own, ``alice/style``), so where the
        record has the LoRA's hash (A1111's ``Lora hashes``) the LoRA is found by its hash among
        those ``user`` may use -- theirs first -- and a different file that happens to share the
        name is never put in its place. Without a hash, the name is looked up as a request's is.
        One message covers "private to someone else", "hidden" and "not here": which of them it is
        is not for this person to learn."""
        hashes = {name: digest.lower() for name, digest in (hashes or {}).items()
                  if isinstance(digest, str) and len(digest) >= 8}
        authenticated = user is not None and getattr(user, "is_authenticated", False)
        user_id = user.pk if authenticated else None
        shared = models.Q(visibility__in=[Image.Visibility.PUBLIC, Image.Visibility.UNLISTED], hidden=False)
        allowed = self.filter(shared | models.Q(owner_id=user_id) if authenticated else shared)
        restored, problems = [], []
        for name, weight in pairs:
            lora = None
            if name in hashes:
                candidates = list(allowed.filter(file_hash__startswith=hashes[name]).select_related("owner")[:20])
                if candidates:
                    lora = min(candidates, key=lambda found: (found.owner_id != user_id,
                                                              name not in (found.name, found.qualified_name),
                                                              -found.pk))
            else:
                lora = self.usable_by(user, names=[name]).get(name)
            if lora is None:
                problems.append(f"LoRA {name!r} is not one you can use (private to its owner, hidden, or not on "
                                f"this site), so it was left out")
            else:
                restored.append((lora.request_name(user), weight))
        return restored, problems


class Lora(SharedByOwner, models.Model):
    """A LoRA adapter a person uploaded (or trained): a safetensors file that fits one base model,
    shared like an image (private / unlisted / public, hidden by staff). A request names it with
    ``<lora:name:weight>`` or its ``loras`` field: the owner by ``name``, anyone else (when it is
    shared) by ``username/name``."""

    Visibility = Image.Visibility

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="loras")
    name = models.CharField(max_length=60, help_text="Letters, digits, _ . - ; unique per person")
    base_model = models.ForeignKey("generation.DiffusionModel", on_delete=models.CASCADE, related_name="loras")
    trigger_words = models.CharField(max_length=300, blank=True)
    description = models.TextField(blank=True, max_length=5000)
    file = models.FileField(max_length=200)
    file_hash = models.CharField(max_length=64, help_text="sha256 of the tensors (A1111's / kohya's LoRA hash)")
    file_size = models.PositiveBigIntegerField(default=0)
    key_format = models.CharField(max_length=20, blank=True, help_text="kohya or diffusers, as uploaded")
    rank = models.PositiveIntegerField(null=True, blank=True)
    alpha = models.FloatField(null=True, blank=True)
    layer_count = models.PositiveIntegerField(default=0)
    training = models.JSONField(default=dict, blank=True, help_text="Training parameters, when trained here")
    visibility = models.CharField(max_length=10, choices=Visibility.choices, default=Visibility.PRIVATE,
                                  db_index=True)
    hidden = models.BooleanField(default=False, help_text="Hidden by moderators")
    hidden_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    objects = LoraQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "LoRA"
        constraints = [models.UniqueConstraint(fields=["owner", "name"], name="lora_name_unique_per_owner")]

    def __str__(self):
        return self.qualified_name

    @property
    def qualified_name(self) -> str:
        return f"{self.owner.get_username()}/{self.name}"

    @property
    def short_hash(self) -> str:
        return self.file_hash[:12]

    def request_name(self, user) -> str:
        """How `user` names this LoRA in a prompt: the owner by name, anyone else owner/name."""
        return self.name if user is not None and getattr(user, "pk", None) == self.owner_id else self.qualified_name

    def get_absolute_url(self):
        return reverse("gallery:lora", args=[self.pk])


    audit_type = "lora"

    def audit_label(self) -> str:
        return f"LoRA {self.pk} {self.qualified_name}"

    @property
    def download_name(self) -> str:
        return f"{self.name}.safetensors"


@receiver(post_delete, sender=Lora)
def delete_lora_file(sender, instance: Lora, **kwargs):
    """Deleting a LoRA row deletes its file, after commit."""
    name, storage = instance.file.name, instance.file.storage
    if name:
        transaction.on_commit(lambda: storage.delete(name))


from gallery.moderation_models import *  # noqa: E402,F401,F403  (models Django must discover)
