"""Moderation records: the audit log, the prompt blocklist, flagged prompt attempts, staff notes,
suspensions and output reviews. Staff actions live in `gallery/moderation.py`; the prompt gate
that applies the blocklist in `generation/admission.py`, the output check in `generation/outputs.py`.

Star-imported at the bottom of `gallery/models.py` so Django discovers them; `__all__` keeps
that import to the models.
"""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from generation import blocklist

__all__ = ["AuditEntry", "BlocklistEntry", "FlaggedPrompt", "StaffNote", "Suspension", "OutputReview"]


class AppendOnlyError(Exception):
    """The audit log is append-only: entries are never changed or deleted."""


class AuditEntryQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AppendOnlyError("Audit entries cannot be changed.")

    def delete(self):
        raise AppendOnlyError("Audit entries cannot be deleted.")

    def about(self, user):
        """Entries whose action was taken against `user` (their images, their account, notes on them)."""
        return self.filter(subject=user)

    def record(self, action: str, *, actor, via: str, target=None, target_type: str = "", target_id=None,
               target_label: str = "", subject=None, reason: str = "", **details) -> "AuditEntry":
        """Append one entry. `target` may be an image, a person, a blocklist entry or a flagged
        prompt; its type, id and a label are copied so the entry outlives it."""
        if target is not None:
            target_type = target_type or getattr(target, "audit_type", "user")
            target_id = target.pk if target_id is None else target_id
            target_label = target_label or (target.audit_label() if hasattr(target, "audit_label")
                                            else target.get_username())
        return self.create(
            actor=actor, actor_name=actor.get_username() if actor is not None else "",
            action=action, via=via, target_type=target_type, target_id=target_id, target_label=target_label[:200],
            subject=subject, subject_name=subject.get_username() if subject is not None else "",
            reason=(reason or "").strip(), details=details,
        )


class AuditEntry(models.Model):
    """One moderation action: who did what to which target, why, when, and through which path.

    Append-only. Targets are recorded as type, id and a label snapshot rather than foreign keys,
    so an entry outlives the image or blocklist entry it is about; people are foreign keys
    that become empty (the name snapshot stays) if an account is ever deleted.
    """

    class Action(models.TextChoices):
        HIDE_IMAGE = "image.hide", "Hid image"
        UNHIDE_IMAGE = "image.unhide", "Unhid image"
        DELETE_IMAGE = "image.delete", "Deleted image"
        CLEAR_REVIEW = "image.clear_review", "Cleared image after review"
        OUTPUT_FLAGGED = "image.output_flagged", "Output check held image for review"
        DISMISS_REPORTS = "reports.dismiss", "Dismissed reports"
        SUSPEND = "user.suspend", "Suspended person"
        UNSUSPEND = "user.unsuspend", "Unsuspended person"
        NOTE = "note.add", "Added note"
        PROMPT_FLAGGED = "prompt.flagged", "Blocklist flagged a prompt"
        DISMISS_FLAGGED = "prompt.dismiss", "Dismissed flagged prompt"
        BLOCKLIST_ADD = "blocklist.add", "Added blocklist entry"
        BLOCKLIST_CHANGE = "blocklist.change", "Changed blocklist entry"
        BLOCKLIST_DELETE = "blocklist.delete", "Deleted blocklist entry"
        HIDE_LORA = "lora.hide", "Hid LoRA"
        UNHIDE_LORA = "lora.unhide", "Unhid LoRA"

    class Via(models.TextChoices):
        PAGE = "page", "Moderation page"
        ADMIN = "admin", "Django admin"
        BULK = "bulk", "Admin bulk action"
        SYSTEM = "system", "Automatic"
        COMMAND = "command", "Command line"

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                              related_name="+", help_text="Empty for automatic actions")
    actor_name = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=30, choices=Action.choices, db_index=True)
    via = models.CharField(max_length=10, choices=Via.choices, default=Via.PAGE)
    target_type = models.CharField(max_length=20, help_text="image, user, report, blocklist, flagged_prompt")
    target_id = models.BigIntegerField(null=True, blank=True)
    target_label = models.CharField(max_length=200, blank=True, help_text="What the target was, at the time")
    subject = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                related_name="+", help_text="The person the action was about")
    subject_name = models.CharField(max_length=150, blank=True)
    reason = models.TextField(blank=True)
    details = models.JSONField(default=dict, blank=True)

    objects = AuditEntryQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "audit entries"
        indexes = [models.Index(fields=["subject", "-created_at"], name="audit_by_subject"),
                   models.Index(fields=["target_type", "target_id"], name="audit_by_target")]

    def __str__(self):
        who = self.actor_name or "system"
        return f"{self.created_at:%Y-%m-%d %H:%M} {who}: {self.get_action_display()} {self.target_label}"

    def save(self, *args, **kwargs):
        if self.pk is not None or kwargs.get("force_update"):
            raise AppendOnlyError("Audit entries cannot be changed.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError("Audit entries cannot be deleted.")


class BlocklistEntry(models.Model):
    """A term or regular expression that prompts must not contain."""

    class Kind(models.TextChoices):
        TERM = blocklist.TERM, "Term"
        REGEX = blocklist.REGEX, "Regular expression"

    class Action(models.TextChoices):
        REJECT = "reject", "Reject"
        REJECT_AND_FLAG = "flag", "Reject and flag the person"

    pattern = models.CharField(max_length=200, help_text="A word or phrase, or a regular expression")
    kind = models.CharField(max_length=5, choices=Kind.choices, default=Kind.TERM)
    whole_word = models.BooleanField(default=True, help_text="Match only whole words: 'cat' does not match 'catalog'")
    action = models.CharField(max_length=10, choices=Action.choices, default=Action.REJECT)
    check_negative_prompt = models.BooleanField(
        default=False, help_text="Also refuse the pattern in negative prompts (which usually name what to avoid)")
    enabled = models.BooleanField(default=True)
    note = models.CharField(max_length=200, blank=True, help_text="Why it is blocked (staff only)")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["pattern", "id"]
        verbose_name_plural = "blocklist entries"
        constraints = [models.UniqueConstraint(fields=["pattern", "kind"], name="blocklist_pattern_once")]

    audit_type = "blocklist"

    def __str__(self):
        return f"{self.pattern} ({self.get_kind_display().lower()}, {self.get_action_display().lower()})"

    def audit_label(self) -> str:
        return f"{self.get_kind_display().lower()} {self.pattern!r}"

    def clean(self):
        self.pattern = (self.pattern or "").strip()
        if not self.pattern:
            raise ValidationError({"pattern": "Enter a term or a regular expression."})
        try:
            blocklist.compile_entry(self.pattern, self.kind, self.whole_word, probe=True)
        except blocklist.BlocklistPatternError as error:
            raise ValidationError({"pattern": str(error)}) from None


class FlaggedPrompt(models.Model):
    """A submission refused by a reject-and-flag blocklist entry, for staff to look at."""

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        DISMISSED = "dismissed", "Dismissed"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, blank=True,
                             related_name="flagged_prompts", help_text="Empty: the command line")
    prompt = models.TextField()
    negative_prompt = models.TextField(blank=True)
    entry = models.ForeignKey(BlocklistEntry, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    pattern = models.CharField(max_length=200, help_text="The entry's pattern at the time")
    matched = models.CharField(max_length=200, help_text="The text of the prompt that matched")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                    related_name="+")

    class Meta:
        ordering = ["-created_at", "-id"]

    audit_type = "flagged_prompt"

    def __str__(self):
        return f"{self.user or 'command line'}: {self.prompt[:60]}"

    def audit_label(self) -> str:
        return f"flagged prompt {self.pk}: {self.prompt[:120]}"


class StaffNote(models.Model):
    """A note staff keep about a person (and, optionally, one of their images)."""

    subject = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="staff_notes")
    image = models.ForeignKey("gallery.Image", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    text = models.TextField(max_length=5000)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"Note on {self.subject}: {self.text[:60]}"


class Suspension(models.Model):
    """A person's suspension, and exactly what it hid, so lifting it restores just that."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="suspensions")
    reason = models.TextField(blank=True)
    suspended_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True,
                                     related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    hidden_images = models.ManyToManyField("gallery.Image", blank=True, related_name="+",
                                           help_text="Images this suspension hid (unhidden when it is lifted)")
    album_visibility = models.JSONField(default=dict, blank=True,
                                        help_text="Album id -> visibility before the suspension made it private")
    cancelled_jobs = models.PositiveIntegerField(default=0)
    lifted_at = models.DateTimeField(null=True, blank=True)
    lifted_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                  related_name="+")
    lift_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["user"], condition=models.Q(lifted_at__isnull=True),
                                               name="one_active_suspension_per_person")]

    def __str__(self):
        return f"{self.user} suspended {self.created_at:%Y-%m-%d}" + (" (lifted)" if self.lifted_at else "")

    @property
    def is_active(self) -> bool:
        return self.lifted_at is None


class OutputReview(models.Model):
    """An image the output check flagged or could not check: private until staff clear it."""

    class Outcome(models.TextChoices):
        FLAGGED = "flagged", "Flagged by the check"
        ERROR = "error", "The check failed"

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting for review"
        CLEARED = "cleared", "Cleared by staff"
        ACTIONED = "actioned", "Hidden or deleted by staff"

    image = models.OneToOneField("gallery.Image", on_delete=models.CASCADE, related_name="output_review")
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    check_name = models.CharField(max_length=200)
    detail = models.TextField(blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                    related_name="+")

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"Review of image {self.image_id}: {self.get_status_display()}"
