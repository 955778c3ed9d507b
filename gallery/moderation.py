"""Moderation: what staff do to images and people, the prompt blocklist, and the output check.

Every staff action goes through one function here, whichever door it came in by (the review
queue, the Django admin, an admin bulk action), and each one writes an `AuditEntry`.

- Images: hide (the file is kept as evidence; the owner sees why), unhide, delete, dismiss reports,
  clear an image the output check held back.
- People: suspend (no sign-in, no tokens, queued and running jobs cancelled, public images hidden
  and public albums made private, remembered so that unsuspending restores exactly that), unsuspend,
  notes.
- `check_prompt`: the blocklist, called by `generation.services.submit_generation` (web form, REST
  API, A1111 API) and the `generate` command, before anything is stored.
- `store_checked_image`: the pluggable output check, run by workers on each finished image before
  it is stored; an image it flags or cannot check is stored hidden and held for review (fail closed).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import regex
from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import Count, Max, Q
from django.utils import timezone
from django.utils.module_loading import import_string

from gallery.models import Album, Image, Report
from gallery.moderation_models import (AuditEntry, BlocklistEntry, FlaggedPrompt, OutputReview, StaffNote,
                                       Suspension)
from generation.services import SubmissionError, cancel_active_jobs_of

logger = logging.getLogger(__name__)
Action = AuditEntry.Action
Via = AuditEntry.Via

SUSPENDED_REASON = "The account of its owner is suspended."
HELD_REASON = {
    OutputReview.Outcome.FLAGGED: "Held for review: the automatic output check flagged this image.",
    OutputReview.Outcome.ERROR: "Held for review: the automatic output check could not check this image.",
}


class ModerationError(Exception):
    """A refused moderation action, with a message for the person who tried it."""


# --- The audit log ----------------------------------------------------------------------------

def record(action: str, *, actor, via: str, target=None, target_type: str = "", target_id=None,
           target_label: str = "", subject=None, reason: str = "", **details) -> AuditEntry:
    """Append one entry to the audit log. `target` may be an Image, a user, a BlocklistEntry or a
    FlaggedPrompt; its type, id and a label are copied so the entry outlives it."""
    if target is not None:
        target_type = target_type or target_kind(target)
        target_id = target.pk if target_id is None else target_id
        target_label = target_label or label_of(target)
    return AuditEntry.objects.create(
        actor=actor, actor_name=actor.get_username() if actor is not None else "",
        action=action, via=via, target_type=target_type, target_id=target_id, target_label=target_label[:200],
        subject=subject, subject_name=subject.get_username() if subject is not None else "",
        reason=(reason or "").strip(), details=details,
    )


def target_kind(target) -> str:
    if isinstance(target, Image):
        return "image"
    if isinstance(target, BlocklistEntry):
        return "blocklist"
    if isinstance(target, FlaggedPrompt):
        return "flagged_prompt"
    return "user"


def label_of(target) -> str:
    if isinstance(target, Image):
        return f"image {target.pk} by {target.owner.get_username()}: {target.prompt[:120]}"
    if isinstance(target, BlocklistEntry):
        return f"{target.get_kind_display().lower()} {target.pattern!r}"
    if isinstance(target, FlaggedPrompt):
        return f"flagged prompt {target.pk}: {target.prompt[:120]}"
    return target.get_username()


def history_of(user):
    """Everything moderation has done about `user`, newest first (for the review pages)."""
    return AuditEntry.objects.about(user).select_related("actor")


# --- Images -----------------------------------------------------------------------------------

def resolve_reports(image: Image, status: str) -> int:
    return Report.objects.filter(image=image, status=Report.Status.OPEN).update(
        status=status, resolved_at=timezone.now())


def release_from_suspension(image: Image) -> None:
    """A moderator decided about this image themselves: lifting the owner's suspension must not undo it."""
    for suspension in Suspension.objects.filter(user_id=image.owner_id, lifted_at__isnull=True):
        suspension.hidden_images.remove(image)


def hide_image(image: Image, actor, reason: str, via: str = Via.PAGE) -> Image:
    """Take the image out of every public view at once; the owner sees it marked with the reason.
    The file stays, as evidence. Open reports about it are marked actioned."""
    reason = (reason or "").strip()
    if not reason:
        raise ModerationError("Give a reason: the owner sees it.")
    with transaction.atomic():
        image.hidden, image.hidden_reason = True, reason[:2000]
        image.save(update_fields=["hidden", "hidden_reason"])
        reports = resolve_reports(image, Report.Status.ACTIONED)
        OutputReview.objects.filter(image=image, status=OutputReview.Status.PENDING).update(
            status=OutputReview.Status.ACTIONED, resolved_at=timezone.now(), resolved_by=actor)
        release_from_suspension(image)
        record(Action.HIDE_IMAGE, actor=actor, via=via, target=image, subject=image.owner, reason=reason,
               reports_actioned=reports)
    return image


def unhide_image(image: Image, actor, reason: str = "", via: str = Via.PAGE) -> Image:
    """Put a hidden image back; a pending output review of it counts as cleared."""
    with transaction.atomic():
        image.hidden, image.hidden_reason = False, ""
        image.save(update_fields=["hidden", "hidden_reason"])
        OutputReview.objects.filter(image=image, status=OutputReview.Status.PENDING).update(
            status=OutputReview.Status.CLEARED, resolved_at=timezone.now(), resolved_by=actor)
        release_from_suspension(image)
        record(Action.UNHIDE_IMAGE, actor=actor, via=via, target=image, subject=image.owner, reason=reason)
    return image


def delete_image(image: Image, actor, reason: str, via: str = Via.PAGE) -> None:
    """Delete the image and its files for good (hiding keeps the file; this does not)."""
    reason = (reason or "").strip()
    if not reason:
        raise ModerationError("Give a reason for deleting the image.")
    with transaction.atomic():
        reports = resolve_reports(image, Report.Status.ACTIONED)
        record(Action.DELETE_IMAGE, actor=actor, via=via, target=image, subject=image.owner, reason=reason,
               reports_actioned=reports, prompt=image.prompt, file=image.file.name)
        image.delete()


def dismiss_reports(image: Image, actor, reason: str = "", via: str = Via.PAGE) -> int:
    """Close the image's open reports without acting on the image; reporters see "Dismissed"."""
    with transaction.atomic():
        count = resolve_reports(image, Report.Status.DISMISSED)
        record(Action.DISMISS_REPORTS, actor=actor, via=via, target=image, subject=image.owner, reason=reason,
               reports_dismissed=count)
    return count


def clear_review(image: Image, actor, reason: str = "", via: str = Via.PAGE) -> Image:
    """Staff looked at an image the output check held back and found it fine: release it."""
    with transaction.atomic():
        review = OutputReview.objects.filter(image=image, status=OutputReview.Status.PENDING).first()
        if review is None:
            raise ModerationError("This image is not waiting for a review.")
        review.status, review.resolved_at, review.resolved_by = (OutputReview.Status.CLEARED, timezone.now(),
                                                                 actor)
        review.save(update_fields=["status", "resolved_at", "resolved_by"])
        if image.hidden and image.hidden_reason in HELD_REASON.values():
            image.hidden, image.hidden_reason = False, ""
            image.save(update_fields=["hidden", "hidden_reason"])
        record(Action.CLEAR_REVIEW, actor=actor, via=via, target=image, subject=image.owner, reason=reason,
               outcome=review.outcome)
    return image


def reported_images(order: str = "newest"):
    """Images with open reports, with `open_reports` and `last_reported` (newest or most reported first)."""
    open_reports = Q(reports__status=Report.Status.OPEN)
    images = (Image.objects.filter(open_reports).select_related("owner")
              .annotate(open_reports=Count("reports", filter=open_reports),
                        last_reported=Max("reports__created_at", filter=open_reports)))
    if order == "most_reported":
        return images.order_by("-open_reports", "-last_reported", "-id")
    return images.order_by("-last_reported", "-id")


# --- People -----------------------------------------------------------------------------------

def active_suspension(user) -> Suspension | None:
    return Suspension.objects.filter(user=user, lifted_at__isnull=True).first()


def suspend(user, actor, reason: str, via: str = Via.PAGE) -> Suspension:
    """Suspend `user`: they cannot sign in and their tokens stop working (is_active=False), their
    queued and running jobs are cancelled, and their public and unlisted images and albums leave
    public view. What was hidden is remembered, so `unsuspend` restores exactly that."""
    reason = (reason or "").strip()
    if not reason:
        raise ModerationError("Give a reason for the suspension.")
    if actor is not None and user.pk == actor.pk:
        raise ModerationError("You cannot suspend yourself.")
    if user.is_superuser and not (actor is not None and actor.is_superuser):
        raise ModerationError("Only a superuser can suspend a superuser.")
    with transaction.atomic():
        if active_suspension(user) is not None:
            raise ModerationError(f"{user.get_username()} is already suspended.")
        user.is_active = False
        user.save(update_fields=["is_active"])
        suspension = Suspension.objects.create(user=user, reason=reason, suspended_by=actor)
        shared = Image.objects.filter(owner=user, hidden=False).exclude(visibility=Image.Visibility.PRIVATE)
        hidden_ids = list(shared.values_list("pk", flat=True))
        Image.objects.filter(pk__in=hidden_ids).update(hidden=True, hidden_reason=SUSPENDED_REASON)
        suspension.hidden_images.set(hidden_ids)
        albums = dict(Album.objects.filter(owner=user).exclude(visibility=Album.Visibility.PRIVATE)
                      .values_list("pk", "visibility"))
        Album.objects.filter(pk__in=albums).update(visibility=Album.Visibility.PRIVATE)
        suspension.album_visibility = {str(pk): visibility for pk, visibility in albums.items()}
        suspension.cancelled_jobs = cancel_active_jobs_of(user)
        suspension.save(update_fields=["album_visibility", "cancelled_jobs"])
        record(Action.SUSPEND, actor=actor, via=via, target=user, subject=user, reason=reason,
               hidden_images=len(hidden_ids), private_albums=len(albums), cancelled_jobs=suspension.cancelled_jobs)
    return suspension


def unsuspend(user, actor, reason: str = "", via: str = Via.PAGE) -> Suspension | None:
    """Lift the suspension: sign-in and tokens work again, and the images and albums the suspension
    hid come back (those a moderator hid or unhid themselves meanwhile are left as they are)."""
    with transaction.atomic():
        suspension = active_suspension(user)
        if suspension is None and user.is_active:
            raise ModerationError(f"{user.get_username()} is not suspended.")
        user.is_active = True
        user.save(update_fields=["is_active"])
        restored_images = restored_albums = 0
        if suspension is not None:
            restored_images = Image.objects.filter(
                pk__in=suspension.hidden_images.values("pk"), hidden=True, hidden_reason=SUSPENDED_REASON,
            ).update(hidden=False, hidden_reason="")
            for pk, visibility in suspension.album_visibility.items():
                restored_albums += Album.objects.filter(pk=int(pk), owner=user,
                                                        visibility=Album.Visibility.PRIVATE).update(
                    visibility=visibility)
            suspension.lifted_at, suspension.lifted_by, suspension.lift_reason = timezone.now(), actor, reason
            suspension.save(update_fields=["lifted_at", "lifted_by", "lift_reason"])
        record(Action.UNSUSPEND, actor=actor, via=via, target=user, subject=user, reason=reason,
               restored_images=restored_images, restored_albums=restored_albums)
    return suspension


def add_note(subject, actor, text: str, image: Image | None = None, via: str = Via.PAGE) -> StaffNote:
    text = (text or "").strip()
    if not text:
        raise ModerationError("The note is empty.")
    if len(text) > 5000:
        raise ModerationError("Notes are at most 5000 characters.")
    with transaction.atomic():
        note = StaffNote.objects.create(subject=subject, author=actor, text=text, image=image)
        record(Action.NOTE, actor=actor, via=via, target=image if image is not None else subject,
               subject=subject, reason=text, note=note.pk)
    return note


def dismiss_flagged(flagged: FlaggedPrompt, actor, reason: str = "", via: str = Via.PAGE) -> FlaggedPrompt:
    with transaction.atomic():
        flagged.status, flagged.resolved_at, flagged.resolved_by = (FlaggedPrompt.Status.DISMISSED,
                                                                    timezone.now(), actor)
        flagged.save(update_fields=["status", "resolved_at", "resolved_by"])
        record(Action.DISMISS_FLAGGED, actor=actor, via=via, target=flagged, subject=flagged.user, reason=reason)
    return flagged


# --- The prompt blocklist ---------------------------------------------------------------------
#
# Matching must not be made slow by a hostile pattern or prompt (catastrophic backtracking):
# prompts are bounded (1000 characters by validate_request, MAX_CHECKED_LENGTH here), patterns
# with nested quantifiers or backreferences are refused when saved and probed with adversarial
# text, and every search runs under the `regex` module's timeout. A search that times out
# refuses the prompt (fail closed) rather than letting it through unchecked.

MAX_CHECKED_LENGTH = 4000
SEARCH_TIMEOUT_SECONDS = 0.05
CHECK_BUDGET_SECONDS = 0.5
PROBE_TIMEOUT_SECONDS = 0.1
FLAGS = regex.IGNORECASE | regex.VERSION0
NESTED_QUANTIFIER = regex.compile(r"\((?:[^()\\]|\\.)*(?:[+*]|\{\d*,\d*\})(?:[^()\\]|\\.)*\)(?:[+*]|\{\d*,)")
BACKREFERENCE = regex.compile(r"\\[1-9]|\\g<|\\k<|\(\?P=|\(\?&|\(\?R\)|\(\?[0-9]")


class BlocklistPatternError(ValueError):
    """A blocklist pattern that cannot be used; the message says why."""


class PromptBlocked(SubmissionError):
    """A submission refused by the blocklist (or from a suspended account): nothing is stored."""


def normalize(text: str) -> str:
    """Compatibility-normalised (full-width and styled letters become plain ones), whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text or "").split())


def entry_expression(pattern: str, kind: str, whole_word: bool) -> str:
    if kind == BlocklistEntry.Kind.TERM:
        body = r"\s+".join(regex.escape(word) for word in normalize(pattern).split())
    else:
        body = f"(?:{pattern})"
    return rf"(?<!\w){body}(?!\w)" if whole_word else body


def probes(pattern: str):
    """Adversarial texts for catastrophic backtracking: long runs of the pattern's own characters."""
    characters = [c for c in dict.fromkeys(pattern.lower()) if c.isalnum()][:8] or ["a"]
    for character in characters + [" "]:
        yield character * 400 + "!"
    yield "".join(characters) * (400 // len(characters) + 1) + "!"
    yield "a " * 300 + "!"


@functools.lru_cache(maxsize=512)
def compile_entry(pattern: str, kind: str, whole_word: bool, probe: bool = False):
    """The compiled matcher of a blocklist entry; `BlocklistPatternError` says why a pattern is refused.

    With `probe`, also run it against adversarial text under a short timeout (done when saving).
    """
    pattern = (pattern or "").strip()
    if not pattern:
        raise BlocklistPatternError("Enter a term or a regular expression.")
    if len(pattern) > 200:
        raise BlocklistPatternError("Patterns are at most 200 characters.")
    if kind == BlocklistEntry.Kind.REGEX:
        if BACKREFERENCE.search(pattern):
            raise BlocklistPatternError("Backreferences and recursion are not allowed: they can make matching "
                                        "very slow.")
        if NESTED_QUANTIFIER.search(pattern):
            raise BlocklistPatternError("Nested quantifiers such as (a+)+ are not allowed: they can make "
                                        "matching very slow. Rewrite the pattern without repeating a repeat.")
    elif kind != BlocklistEntry.Kind.TERM:
        raise BlocklistPatternError(f"Unknown kind {kind!r}.")
    try:
        compiled = regex.compile(entry_expression(pattern, kind, whole_word), FLAGS)
    except (regex.error, OverflowError, RecursionError) as error:
        raise BlocklistPatternError(f"Not a valid regular expression: {error}.") from None
    if probe:
        try:
            if compiled.search("", timeout=PROBE_TIMEOUT_SECONDS) is not None:
                raise BlocklistPatternError("The pattern matches empty text, so it would refuse every prompt.")
            for text in probes(pattern):
                compiled.search(text, timeout=PROBE_TIMEOUT_SECONDS)
        except TimeoutError:
            raise BlocklistPatternError("The pattern takes too long to match some texts (catastrophic "
                                        "backtracking); simplify it.") from None
    return compiled


def blocked_message(field: str, matched: str) -> str:
    label = "negative prompt" if field == "negative_prompt" else "prompt"
    return (f"Your {label} contains “{matched[:80]}”, which is not allowed on this site. "
            "Please rephrase it.")


def find_blocked(texts: dict[str, str]):
    """The first blocklist match: (entry, field, matched text), or None. Reject-and-flag entries
    are tried first, so a prompt that matches both kinds is flagged."""
    deadline = time.monotonic() + CHECK_BUDGET_SECONDS
    entries = BlocklistEntry.objects.filter(enabled=True).order_by("action", "id")  # "flag" < "reject"
    for entry in entries:
        try:
            compiled = compile_entry(entry.pattern, entry.kind, entry.whole_word)
        except BlocklistPatternError:
            logger.warning("Blocklist entry %s (%r) is not usable and was skipped", entry.pk, entry.pattern)
            continue
        fields = ("prompt", "negative_prompt") if entry.check_negative_prompt else ("prompt",)
        for field in fields:
            if not texts[field]:
                continue
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise TimeoutError
                match = compiled.search(texts[field], timeout=min(SEARCH_TIMEOUT_SECONDS, remaining))
            except TimeoutError:
                logger.warning("Blocklist entry %s (%r) timed out on a %d-character %s; refused it",
                               entry.pk, entry.pattern, len(texts[field]), field)
                raise PromptBlocked({field: "could not be checked in time. Shorten or rephrase it."}) from None
            if match:
                return entry, field, match.group(0)
    return None


def check_prompt(user, prompt: str, negative_prompt: str = "") -> None:
    """Refuse a submission whose prompt contains a blocked term (or whose person is suspended).

    Raises `PromptBlocked` (a `SubmissionError`: a field-named 4xx on every path). A match of a
    reject-and-flag entry also records a `FlaggedPrompt` for the staff queue. `user` is None for
    the command line.
    """
    if user is not None and not user.is_active:
        raise PromptBlocked({"__all__": "This account is suspended."}, status=403)
    texts = {"prompt": prompt or "", "negative_prompt": negative_prompt or ""}
    for field, text in texts.items():
        if len(text) > MAX_CHECKED_LENGTH:
            raise PromptBlocked({field: f"must be at most {MAX_CHECKED_LENGTH} characters"})
    texts = {field: normalize(text) for field, text in texts.items()}
    found = find_blocked(texts)
    if found is None:
        return
    entry, field, matched = found
    if entry.action == BlocklistEntry.Action.REJECT_AND_FLAG:
        with transaction.atomic():
            flagged = FlaggedPrompt.objects.create(
                user=user, prompt=prompt or "", negative_prompt=negative_prompt or "", entry=entry,
                pattern=entry.pattern, matched=matched[:200])
            record(Action.PROMPT_FLAGGED, actor=None, via=Via.SYSTEM if user is not None else Via.COMMAND,
                   target=flagged, subject=user, reason=f"matched {entry.pattern!r}", entry=entry.pk)
    raise PromptBlocked({field: blocked_message(field, matched)})


def check_prompt_from_command_line(prompt: str, negative_prompt: str = "") -> None:
    """`check_prompt` for `manage.py generate`: a CommandError, and no blocklist without a database."""
    from django.core.management.base import CommandError

    try:
        check_prompt(None, prompt, negative_prompt)
    except PromptBlocked as error:
        raise CommandError("Refused: " + "; ".join(error.errors.values())) from None
    except DatabaseError:
        logger.info("No database: the prompt blocklist was not checked")


def save_blocklist_entry(entry: BlocklistEntry, actor, via: str = Via.PAGE) -> BlocklistEntry:
    """Validate and save an entry (new or changed); a bad pattern raises ValidationError."""
    entry.full_clean()
    adding = entry.pk is None
    with transaction.atomic():
        if adding:
            entry.created_by = actor
        entry.save()
        record(Action.BLOCKLIST_ADD if adding else Action.BLOCKLIST_CHANGE, actor=actor, via=via, target=entry,
               kind=entry.kind, entry_action=entry.action, whole_word=entry.whole_word, enabled=entry.enabled)
    return entry


def delete_blocklist_entry(entry: BlocklistEntry, actor, via: str = Via.PAGE) -> None:
    with transaction.atomic():
        record(Action.BLOCKLIST_DELETE, actor=actor, via=via, target=entry, kind=entry.kind)
        entry.delete()


# --- The output check ---------------------------------------------------------------------------
#
# LDM_OUTPUT_CHECK: "none"; "safety-checker:<dir>" (diffusers' StableDiffusionSafetyChecker and its
# CLIP image processor, from a local directory); or the dotted path of a callable
# `check(picture: PIL.Image.Image, metadata: dict)` returning falsy to pass, True or a reason
# string to flag. A check that raises holds the image too.

@dataclass
class Verdict:
    outcome: str  # OutputReview.Outcome
    check_name: str
    detail: str = ""


class SafetyChecker:
    """Stable Diffusion's safety checker, loaded once per worker from a local directory.

    The directory is either a pipeline directory (with `safety_checker/` and `feature_extractor/`)
    or one holding both the checker's weights and its `preprocessor_config.json`.
    """

    def __init__(self, directory: str):
        self.directory = Path(directory).expanduser()
        self._loaded = None
        self._lock = threading.Lock()

    def load(self):
        with self._lock:
            if self._loaded is None:
                import torch
                from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
                from transformers import CLIPImageProcessor

                root = self.directory
                checker_dir = root / "safety_checker" if (root / "safety_checker").is_dir() else root
                processor_dir = root / "feature_extractor" if (root / "feature_extractor").is_dir() else root
                device = "cuda" if torch.cuda.is_available() else "cpu"
                checker = StableDiffusionSafetyChecker.from_pretrained(checker_dir, local_files_only=True)
                processor = CLIPImageProcessor.from_pretrained(processor_dir, local_files_only=True)
                self._loaded = (checker.to(device).eval(), processor, device)
            return self._loaded

    def __call__(self, picture, metadata):
        import numpy as np

        checker, processor, device = self.load()
        rgb = picture.convert("RGB")
        clip_input = processor(images=[rgb], return_tensors="pt").pixel_values.to(device, checker.dtype)
        _, has_nsfw = checker(images=[np.asarray(rgb, dtype=np.float32) / 255.0], clip_input=clip_input)
        return "the safety checker found a sensitive concept" if bool(has_nsfw[0]) else False


@functools.lru_cache(maxsize=4)
def load_output_check(spec: str):
    """The check named by the LDM_OUTPUT_CHECK value, or None for "none"."""
    if spec in ("", "none"):
        return None
    if spec.startswith("safety-checker:"):
        return SafetyChecker(spec.partition(":")[2])
    return import_string(spec)


def run_output_check(picture, metadata: dict) -> Verdict | None:
    """None when the image may be published; a Verdict when it must be held (flagged or failed)."""
    spec = getattr(settings, "LDM_OUTPUT_CHECK", "none") or "none"
    try:
        check = load_output_check(spec)
        if check is None:
            return None
        result = check(picture, metadata)
    except Exception as error:  # fail closed: an image nobody could check is not published
        logger.exception("Output check %s failed; the image is held for review", spec)
        return Verdict(OutputReview.Outcome.ERROR, spec, f"{type(error).__name__}: {error}"[:2000])
    if not result:
        return None
    detail = result if isinstance(result, str) else ""
    return Verdict(OutputReview.Outcome.FLAGGED, spec, detail[:2000])


def store_checked_image(generation, index: int, picture, metadata: dict, parameters: str,
                        clip_score: float | None) -> Image:
    """Run the output check, then store the image; a held image is stored hidden with its review in
    the same transaction, so there is no moment at which it could be published unchecked."""
    from gallery.services import store_generated_image

    verdict = run_output_check(picture, metadata)
    with transaction.atomic():
        image = store_generated_image(generation, index, picture, metadata, parameters, clip_score)
        if verdict is not None:
            review, created = OutputReview.objects.get_or_create(image=image, defaults={
                "outcome": verdict.outcome, "check_name": verdict.check_name[:200], "detail": verdict.detail})
            if created:
                image.hidden, image.hidden_reason = True, HELD_REASON[verdict.outcome]
                image.save(update_fields=["hidden", "hidden_reason"])
                record(Action.OUTPUT_FLAGGED, actor=None, via=Via.SYSTEM, target=image, subject=image.owner,
                       reason=verdict.detail or review.get_outcome_display(), outcome=verdict.outcome)
    return image


def under_review(image: Image) -> bool:
    return OutputReview.objects.filter(image=image, status=OutputReview.Status.PENDING).exists()


def refuse_publishing_under_review(image: Image, visibility: str) -> None:
    """Called by `gallery.services.set_image_visibility`: a held image stays private until cleared."""
    if visibility != Image.Visibility.PRIVATE and under_review(image):
        from gallery.services import GalleryError

        raise GalleryError({"visibility": "this image is waiting for a staff review and cannot be shared "
                                          "until it is cleared"}, 403)


def without_images_under_review(images):
    """Called by `gallery.services.publish_album`: publishing an album leaves held images private."""
    return images.exclude(output_review__status=OutputReview.Status.PENDING)
