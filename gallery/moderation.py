"""Moderation: what staff do to images, people and the prompt blocklist.

Every staff action goes through one function here, whichever door it came in by (the review
queue, the Django admin, an admin bulk action), and each one writes an `AuditEntry`
(`AuditEntry.objects.record`). A refused action raises `generation.admission.Refusal`.

- Images: hide (the file is kept as evidence; the owner sees why), unhide, delete, dismiss reports,
  clear an image the output check held back.
- LoRAs: hide (`gallery.loras.set_hidden`: nobody else may see or use it), unhide, dismiss reports.
- People: suspend (no sign-in, no tokens, queued and running jobs cancelled, public images hidden
  and public albums made private, remembered so that unsuspending restores exactly that), unsuspend,
  notes.
- The blocklist: adding, changing and deleting entries. Applying it to prompts is
  `generation.admission.check_prompt`; storing finished images through the output check is
  `generation.outputs.store_checked_image`.
"""

from __future__ import annotations

from django.db import transaction
from django.db.models import Count, Max, Q
from django.utils import timezone

from gallery import loras
from gallery.models import Album, Image, Lora, Report
from gallery.moderation_models import (AuditEntry, BlocklistEntry, FlaggedPrompt, OutputReview, StaffNote,
                                       Suspension)
from generation import events
from generation.admission import Refusal
from generation.outputs import HELD_REASON
from generation.services import cancel_active_jobs_of

Action = AuditEntry.Action
Via = AuditEntry.Via

SUSPENDED_REASON = "The account of its owner is suspended."
# --- The audit log ----------------------------------------------------------------------------

def history_of(user):
    """Everything moderation has done about `user`, newest first (for the review pages)."""
    return AuditEntry.objects.about(user).select_related("actor")


# --- Images -----------------------------------------------------------------------------------

def resolve_reports(target: Image | Lora, status: str) -> int:
    """Close the open reports about an image or a LoRA with `status`."""
    about = {"lora": target} if isinstance(target, Lora) else {"image": target}
    return Report.objects.filter(**about, status=Report.Status.OPEN).update(status=status, resolved_at=timezone.now())


def release_from_suspension(image: Image) -> None:
    """A moderator decided about this image themselves: lifting the owner's suspension must not undo it."""
    for suspension in Suspension.objects.filter(user_id=image.owner_id, lifted_at__isnull=True):
        suspension.hidden_images.remove(image)


def hide_image(image: Image, actor, reason: str, via: str = Via.PAGE) -> Image:
    """Take the image out of every public view at once; the owner sees it marked with the reason.
    The file stays, as evidence. Open reports about it are marked actioned."""
    reason = (reason or "").strip()
    if not reason:
        raise Refusal({"__all__": "Give a reason: the owner sees it."})
    with transaction.atomic():
        image.hidden, image.hidden_reason = True, reason[:2000]
        image.save(update_fields=["hidden", "hidden_reason"])
        reports = resolve_reports(image, Report.Status.ACTIONED)
        OutputReview.objects.filter(image=image, status=OutputReview.Status.PENDING).update(
            status=OutputReview.Status.ACTIONED, resolved_at=timezone.now(), resolved_by=actor)
        release_from_suspension(image)
        AuditEntry.objects.record(Action.HIDE_IMAGE, actor=actor, via=via, target=image, subject=image.owner, reason=reason,
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
        AuditEntry.objects.record(Action.UNHIDE_IMAGE, actor=actor, via=via, target=image, subject=image.owner, reason=reason)
    return image


def delete_image(image: Image, actor, reason: str, via: str = Via.PAGE) -> None:
    """Delete the image and its files for good (hiding keeps the file; this does not)."""
    reason = (reason or "").strip()
    if not reason:
        raise Refusal({"__all__": "Give a reason for deleting the image."})
    with transaction.atomic():
        reports = resolve_reports(image, Report.Status.ACTIONED)
        AuditEntry.objects.record(Action.DELETE_IMAGE, actor=actor, via=via, target=image, subject=image.owner, reason=reason,
               reports_actioned=reports, prompt=image.prompt, file=image.file.name)
        image.delete()


def dismiss_reports(target: Image | Lora, actor, reason: str = "", via: str = Via.PAGE) -> int:
    """Close an image's or a LoRA's open reports without acting on it; reporters see "Dismissed"."""
    with transaction.atomic():
        count = resolve_reports(target, Report.Status.DISMISSED)
        AuditEntry.objects.record(Action.DISMISS_REPORTS, actor=actor, via=via, target=target, subject=target.owner,
                                  reason=reason, reports_dismissed=count)
    return count


def clear_review(image: Image, actor, reason: str = "", via: str = Via.PAGE) -> Image:
    """Staff looked at an image the output check held back and found it fine: release it."""
    with transaction.atomic():
        review = OutputReview.objects.filter(image=image, status=OutputReview.Status.PENDING).first()
        if review is None:
            raise Refusal({"__all__": "This image is not waiting for a review."})
        review.status, review.resolved_at, review.resolved_by = (OutputReview.Status.CLEARED, timezone.now(),
                                                                 actor)
        review.save(update_fields=["status", "resolved_at", "resolved_by"])
        if image.hidden and image.hidden_reason in HELD_REASON.values():
            image.hidden, image.hidden_reason = False, ""
            image.save(update_fields=["hidden", "hidden_reason"])
        AuditEntry.objects.record(Action.CLEAR_REVIEW, actor=actor, via=via, target=image, subject=image.owner, reason=reason,
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


# --- LoRAs ------------------------------------------------------------------------------------

def hide_lora(lora: Lora, actor, reason: str, via: str = Via.PAGE) -> Lora:
    """Nobody but its owner may see, download or use the LoRA any more; the owner sees why. Open
    reports about it are marked actioned."""
    reason = (reason or "").strip()
    if not reason:
        raise Refusal({"__all__": "Give a reason: the owner sees it."})
    with transaction.atomic():
        resolve_reports(lora, Report.Status.ACTIONED)
        return loras.set_hidden(lora, True, actor, reason[:2000], via=via)


def unhide_lora(lora: Lora, actor, reason: str = "", via: str = Via.PAGE) -> Lora:
    return loras.set_hidden(lora, False, actor, reason, via=via)


def reported_loras(order: str = "newest"):
    """LoRAs with open reports, with `open_reports` and `last_reported` (newest or most reported first)."""
    open_reports = Q(reports__status=Report.Status.OPEN)
    found = (Lora.objects.filter(open_reports).select_related("owner", "base_model")
             .annotate(open_reports=Count("reports", filter=open_reports),
                       last_reported=Max("reports__created_at", filter=open_reports)))
    if order == "most_reported":
        return found.order_by("-open_reports", "-last_reported", "-id")
    return found.order_by("-last_reported", "-id")


# --- People -----------------------------------------------------------------------------------

def active_suspension(user) -> Suspension | None:
    return Suspension.objects.filter(user=user, lifted_at__isnull=True).first()


def suspend(user, actor, reason: str, via: str = Via.PAGE) -> Suspension:
    """Suspend `user`: they cannot sign in and their tokens stop working (is_active=False), their
    queued and running jobs are cancelled, and their public and unlisted images and albums leave
    public view. What was hidden is remembered, so `unsuspend` restores exactly that."""
    reason = (reason or "").strip()
    if not reason:
        raise Refusal({"__all__": "Give a reason for the suspension."})
    if actor is not None and user.pk == actor.pk:
        raise Refusal({"__all__": "You cannot suspend yourself."})
    if user.is_superuser and not (actor is not None and actor.is_superuser):
        raise Refusal({"__all__": "Only a superuser can suspend a superuser."})
    with transaction.atomic():
        if active_suspension(user) is not None:
            raise Refusal({"__all__": f"{user.get_username()} is already suspended."})
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
        AuditEntry.objects.record(Action.SUSPEND, actor=actor, via=via, target=user, subject=user, reason=reason,
               hidden_images=len(hidden_ids), private_albums=len(albums), cancelled_jobs=suspension.cancelled_jobs)
        transaction.on_commit(lambda: events.close_streams_of(user.pk))  # open websockets stop answering
    return suspension


def unsuspend(user, actor, reason: str = "", via: str = Via.PAGE) -> Suspension | None:
    """Lift the suspension: sign-in and tokens work again, and the images and albums the suspension
    hid come back (those a moderator hid or unhid themselves meanwhile are left as they are)."""
    with transaction.atomic():
        suspension = active_suspension(user)
        if suspension is None and user.is_active:
            raise Refusal({"__all__": f"{user.get_username()} is not suspended."})
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
        AuditEntry.objects.record(Action.UNSUSPEND, actor=actor, via=via, target=user, subject=user, reason=reason,
               restored_images=restored_images, restored_albums=restored_albums)
    return suspension


def add_note(subject, actor, text: str, image: Image | None = None, via: str = Via.PAGE) -> StaffNote:
    text = (text or "").strip()
    if not text:
        raise Refusal({"__all__": "The note is empty."})
    if len(text) > 5000:
        raise Refusal({"__all__": "Notes are at most 5000 characters."})
    with transaction.atomic():
        note = StaffNote.objects.create(subject=subject, author=actor, text=text, image=image)
        AuditEntry.objects.record(Action.NOTE, actor=actor, via=via, target=image if image is not None else subject,
               subject=subject, reason=text, note=note.pk)
    return note


def dismiss_flagged(flagged: FlaggedPrompt, actor, reason: str = "", via: str = Via.PAGE) -> FlaggedPrompt:
    with transaction.atomic():
        flagged.status, flagged.resolved_at, flagged.resolved_by = (FlaggedPrompt.Status.DISMISSED,
                                                                    timezone.now(), actor)
        flagged.save(update_fields=["status", "resolved_at", "resolved_by"])
        AuditEntry.objects.record(Action.DISMISS_FLAGGED, actor=actor, via=via, target=flagged, subject=flagged.user, reason=reason)
    return flagged


# --- The prompt blocklist (matching it is `generation.admission.check_prompt`) -------------------

def save_blocklist_entry(entry: BlocklistEntry, actor, via: str = Via.PAGE) -> BlocklistEntry:
    """Validate and save an entry (new or changed); a bad pattern raises ValidationError."""
    entry.full_clean()
    adding = entry.pk is None
    with transaction.atomic():
        if adding:
            entry.created_by = actor
        entry.save()
        AuditEntry.objects.record(Action.BLOCKLIST_ADD if adding else Action.BLOCKLIST_CHANGE, actor=actor, via=via, target=entry,
               kind=entry.kind, entry_action=entry.action, whole_word=entry.whole_word, enabled=entry.enabled)
    return entry


def delete_blocklist_entry(entry: BlocklistEntry, actor, via: str = Via.PAGE) -> None:
    with transaction.atomic():
        AuditEntry.objects.record(Action.BLOCKLIST_DELETE, actor=actor, via=via, target=entry, kind=entry.kind)
        entry.delete()
