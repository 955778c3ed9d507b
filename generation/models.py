from django.conf import settings
from django.db import models, transaction
from django.db.models import F, Q
from django.db.models.signals import post_delete
from django.dispatch import receiver
from django.urls import reverse
from django.utils import timezone

from generation.diffusion.request import MODEL_DEFAULTS_KEYS, GenerationRequest, ModelLimits


class WorkerProbe(models.Model):
    """A round trip through the job queue: proves some worker is consuming messages.

    Written by the web side, answered by whichever worker picks up the message
    (`generation.tasks.answer_worker_probe`); `manage.py probe_workers` uses it.
    """

    created_at = models.DateTimeField(auto_now_add=True)
    answered_at = models.DateTimeField(null=True, blank=True)
    answered_by = models.CharField(max_length=200, blank=True, help_text="host:pid/thread of the worker")

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        state = f"answered by {self.answered_by}" if self.answered_at else "unanswered"
        return f"Worker probe {self.pk} ({state})"


class DiffusionModel(models.Model):
    """A text-to-image model people can pick: a local diffusers directory or a hub id."""

    class Family(models.TextChoices):
        SD1 = "sd1", "Stable Diffusion 1.x"
        SD2 = "sd2", "Stable Diffusion 2.x"
        SDXL = "sdxl", "Stable Diffusion XL"
        CUSTOM = "custom", "Other diffusers pipeline"

    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=100, unique=True)
    source = models.CharField(max_length=500, help_text="Local diffusers directory or hub repository id")
    family = models.CharField(max_length=10, choices=Family.choices, default=Family.SD1)
    clip_source = models.CharField(
        max_length=500, blank=True,
        help_text="CLIP model for CLIP guidance and scores (directory or hub id); empty: a clip/ folder "
                  "beside the pipeline if there is one",
    )
    revision = models.CharField(max_length=80, blank=True, help_text="Content hash recorded at registration")
    description = models.TextField(blank=True)
    default_width = models.PositiveIntegerField(default=512)
    default_height = models.PositiveIntegerField(default=512)
    max_width = models.PositiveIntegerField(default=1024)
    max_height = models.PositiveIntegerField(default=1024)
    default_steps = models.PositiveIntegerField(default=25)
    max_steps = models.PositiveIntegerField(default=150)
    default_sampler = models.CharField(max_length=40, default="DPM++ 2M Karras")
    default_guidance_scale = models.FloatField(default=7.0)
    default_autoguidance_scale = models.FloatField(default=0.0, help_text="0: autoguidance off unless a request asks")
    has_clip = models.BooleanField(default=False, help_text="A CLIP model is available for guidance and scores")
    has_guide_unet = models.BooleanField(
        default=False, help_text="The model directory has a guide_unet/ folder, so autoguidance is available")
    queue_name = models.SlugField(
        max_length=60, default="default",
        help_text="Job queue for this model: workers started with `rundramatiq --queues <name>` serve it "
                  "(list extra queues in LDM_JOB_QUEUES)",
    )
    enabled = models.BooleanField(default=True)
    is_default = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-is_default", "name"]
        constraints = [
            models.UniqueConstraint(fields=["is_default"], condition=Q(is_default=True), name="one_default_model"),
        ]

    def __str__(self):
        return self.name

    def limits(self) -> ModelLimits:
        """The same limits the engine gives the loaded model (``LoadedModel.limits``), from the values
        stored here: taken from the model at registration (its directory's ldmsite_defaults.json),
        then as staff set them."""
        return ModelLimits.for_model(has_clip=self.has_clip, has_guide_unet=self.has_guide_unet,
                                     **{key: getattr(self, key) for key in MODEL_DEFAULTS_KEYS})

    @classmethod
    def default(cls) -> "DiffusionModel | None":
        enabled = cls.objects.filter(enabled=True)
        return enabled.filter(is_default=True).first() or enabled.first()


class GenerationQuerySet(models.QuerySet):
    def active(self):
        return self.filter(status__in=Generation.ACTIVE_STATUSES)

    def visible_to(self, user):
        if user.is_staff:
            return self
        return self.filter(owner=user)


class LiveJob:
    """What a generation job and a LoRA training share: a status among `ACTIVE_STATUSES` /
    `FINAL_STATUSES` and an `event_seq` counter for the events of its live stream."""

    ACTIVE_STATUSES: tuple = ()
    FINAL_STATUSES: tuple = ()

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE_STATUSES

    @property
    def is_final(self) -> bool:
        return self.status in self.FINAL_STATUSES

    def next_event_seq(self) -> int:
        """Reserve the next sequence number for an event about this row (atomic across workers)."""
        rows = type(self).objects
        rows.filter(pk=self.pk).update(event_seq=F("event_seq") + 1)
        self.event_seq = rows.values_list("event_seq", flat=True).get(pk=self.pk)
        return self.event_seq


class Generation(LiveJob, models.Model):
    """One text-to-image job. This row is the truth; queue messages only nudge workers."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    ACTIVE_STATUSES = (Status.QUEUED, Status.RUNNING)
    FINAL_STATUSES = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="generations")
    model = models.ForeignKey(DiffusionModel, on_delete=models.PROTECT, related_name="generations")
    params = models.JSONField(help_text="The validated request (GenerationRequest.to_dict())")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True)
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error_message = models.TextField(blank=True, help_text="What went wrong, for the person")
    error_detail = models.TextField(blank=True, help_text="The technical cause, for staff")
    attempts = models.PositiveIntegerField(default=0)
    worker = models.CharField(max_length=200, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)
    nudged_at = models.DateTimeField(null=True, blank=True, help_text="When a queue message was last sent")
    event_seq = models.PositiveBigIntegerField(default=0, help_text="Sequence number of the last event sent")
    metadata = models.JSONField(default=dict, blank=True, help_text="Engine metadata of the run (timings, device)")
    preview = models.TextField(blank=True, help_text="The latest live preview while running (a data: URL), for "
                                                     "clients that (re)connect or poll")
    # Image to image: the pictures the job starts from, re-encoded as PNG under a private path
    # (``sources/``; media is never served directly: `generation:source` streams them to the
    # owner and staff only). Deleted with the job (`delete_source_files`).
    init_image = models.FileField(max_length=200, blank=True, editable=False,
                                  help_text="img2img/inpaint/outpaint: the source picture (PNG)")
    mask = models.FileField(max_length=200, blank=True, editable=False,
                            help_text="inpaint: the mask (PNG, white = repaint)")
    source_image = models.ForeignKey(
        "gallery.Image", on_delete=models.SET_NULL, null=True, blank=True, related_name="used_as_source_by",
        help_text="The gallery image the source picture was taken from, if any")

    objects = GenerationQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "created_at"]), models.Index(fields=["owner", "status"])]

    def __str__(self):
        return f"Generation {self.pk} ({self.status})"

    def get_absolute_url(self):
        return reverse("generation:detail", args=[self.pk])

    @property
    def request(self) -> GenerationRequest:
        return GenerationRequest.from_dict(self.params)

    @property
    def prompt(self) -> str:
        return self.params.get("prompt", "")

    @property
    def mode(self) -> str:
        """txt2img, img2img, inpaint or outpaint (jobs stored before image to image: txt2img)."""
        return self.params.get("mode") or "txt2img"

    @property
    def has_source(self) -> bool:
        return bool(self.init_image)

    def source_url(self, kind: str) -> str:
        """The page address of a stored source picture (kind: "init" or "mask"); owner and staff only."""
        return reverse("generation:source", args=[self.pk, kind])


@receiver(post_delete, sender=Generation)
def delete_source_files(sender, instance: Generation, **kwargs):
    """Deleting a job (one, in bulk, or with its owner) deletes its source pictures, after commit
    (a rolled-back delete keeps them)."""
    names = [stored.name for stored in (instance.init_image, instance.mask) if stored]
    if not names:
        return
    storage = instance.init_image.storage

    def remove():
        for name in names:
            storage.delete(name)

    transaction.on_commit(remove)


class WorkerStatus(models.Model):
    """A live worker (thread pool of one process): what it serves and what it is doing.

    Upserted every few seconds by `generation.workers.WorkerStatusMiddleware`; rows whose
    heartbeat stopped are shown as gone on the staff workers page.
    """

    identity = models.CharField(max_length=200, unique=True, help_text="host:pid")
    queues = models.JSONField(default=list)
    resident_models = models.JSONField(default=list, help_text="Resident models (sources)")
    current_jobs = models.JSONField(default=list)
    started_at = models.DateTimeField(default=timezone.now)
    heartbeat_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["identity"]
        verbose_name_plural = "worker statuses"

    def __str__(self):
        return self.identity


def training_source_name(instance, filename: str) -> str:
    """An uploaded training zip's storage name: private and unguessable (media is never served directly)."""
    import secrets

    token = secrets.token_hex(16)
    return f"trainings/uploads/{token[:2]}/{token}.zip"


class LoraTrainingQuerySet(models.QuerySet):
    def active(self):
        return self.filter(status__in=LoraTraining.ACTIVE_STATUSES)

    def visible_to(self, user):
        """The owner's own, staff everything: a training's images and samples are private."""
        if user.is_authenticated and user.is_staff:
            return self
        if not user.is_authenticated:
            return self.none()
        return self.filter(owner=user)


class LoraTraining(LiveJob, models.Model):
    """One LoRA training job (queue ``training``). Like `Generation`, this row is the truth; queue
    messages only nudge workers, and a run whose worker died resumes from its last checkpoint."""

    Status = Generation.Status
    ACTIVE_STATUSES = Generation.ACTIVE_STATUSES
    FINAL_STATUSES = Generation.FINAL_STATUSES

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="lora_trainings")
    base_model = models.ForeignKey(DiffusionModel, on_delete=models.PROTECT, related_name="lora_trainings")
    album = models.ForeignKey("gallery.Album", on_delete=models.SET_NULL, null=True, blank=True,
                              related_name="lora_trainings", help_text="The images to learn from (their prompts "
                                                                       "are the captions)")
    upload = models.FileField(max_length=200, blank=True, editable=False, upload_to=training_source_name,
                              help_text="Or a zip of images with same-named .txt captions (stored privately)")
    image_count = models.PositiveIntegerField(default=0)
    name = models.CharField(max_length=60, help_text="The LoRA to create, as written in <lora:name:weight>")
    trigger = models.CharField(max_length=100)
    rank = models.PositiveIntegerField()
    steps = models.PositiveIntegerField()
    learning_rate = models.FloatField()
    batch_size = models.PositiveIntegerField()
    seed = models.BigIntegerField(default=0)
    sample_every = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True)
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    start_step = models.PositiveIntegerField(default=0, help_text="The step the latest attempt resumed from")
    losses = models.JSONField(default=list, blank=True, help_text="[[step, loss], ...], downsampled")
    eta_seconds = models.FloatField(null=True, blank=True)
    samples = models.JSONField(default=list, blank=True, help_text="Storage names of the latest sample images")
    samples_step = models.PositiveIntegerField(default=0)
    attempts = models.PositiveIntegerField(default=0)
    worker = models.CharField(max_length=200, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)
    nudged_at = models.DateTimeField(null=True, blank=True)
    event_seq = models.PositiveBigIntegerField(default=0)
    error_message = models.TextField(blank=True, help_text="What went wrong, for the person")
    error_detail = models.TextField(blank=True, help_text="The technical cause, for staff")
    lora = models.ForeignKey("gallery.Lora", on_delete=models.SET_NULL, null=True, blank=True,
                             related_name="trainings", help_text="The LoRA this training made")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = LoraTrainingQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "created_at"], name="training_status_created")]

    def __str__(self):
        return f"LoRA training {self.pk} {self.name!r} ({self.status})"

    def get_absolute_url(self):
        return reverse("generation:training", args=[self.pk])


@receiver(post_delete, sender=LoraTraining)
def delete_training_files(sender, instance: LoraTraining, **kwargs):
    """Deleting a training deletes its uploaded zip and sample images, after commit."""
    names = ([instance.upload.name] if instance.upload else []) + list(instance.samples or [])
    if names:
        storage = instance.upload.storage

        def remove():
            for name in names:
                storage.delete(name)

        transaction.on_commit(remove)
