"""Admission: everything that decides whether a request is accepted, and the one refusal type.

A submission (web form, REST API, A1111 API, `manage.py generate`) passes, in this order:
the model lookup (`resolve_model`), request validation (`validated_request`, the ML core's
`validate_request` against the model's limits), the prompt gate (`check_prompt`: suspended
accounts and the blocklist) and, inside the submission's transaction with the person's row
locked, the job limits (`check_job_limits`: active jobs and the daily image quota, hard limits,
so a burst of N + 10 submissions accepts exactly N). Any of them raises `Refusal` and nothing
is stored.
"""

from __future__ import annotations

import logging
import math
import time
from datetime import datetime, time as day_time, timedelta, timezone as dt_timezone
from typing import Any, Mapping

from django.conf import settings
from django.db import transaction
from django.db.models import IntegerField, Sum
from django.db.models.fields.json import KT
from django.db.models.functions import Cast
from django.utils import timezone

from gallery.models import AuditEntry, BlocklistEntry, FlaggedPrompt, Image, Lora
from generation.blocklist import BlocklistPatternError, compile_entry, normalize
from generation.diffusion.request import GenerationRequest, RequestValidationError, check_lora_names, validate_request
from generation.models import DiffusionModel, Generation

logger = logging.getLogger(__name__)

ACTIVE_JOBS_RETRY_SECONDS = 10  # a hint: when a job of yours has probably finished
MAX_CHECKED_LENGTH = 4000  # longer prompt text is refused before the blocklist looks at it
SEARCH_TIMEOUT_SECONDS = 0.05  # one blocklist entry against one text
CHECK_BUDGET_SECONDS = 0.5  # all entries against one submission


class Refusal(Exception):
    """A request refused before anything changed, in words a person can act on.

    `errors` maps field names to messages (`__all__`: the request as a whole); `status` is the
    HTTP status to answer with. A refusal because a limit was reached names the limit
    (`active_jobs`, `daily_images`, `request_rate`, `generate_rate`) and says in how many
    seconds to try again (`retry_after`). Services of every app raise it; it is turned into an
    answer once per kind of client: the REST API's exception handler (`ldmsite/api/errors.py`,
    which also writes A1111's 422 body), and `messages()` on pages.
    """

    def __init__(self, errors: Mapping[str, Any], status: int = 400, *, limit: str | None = None,
                 retry_after: float | None = None):
        self.errors = {str(field): str(message) for field, message in errors.items()}
        self.status = status
        self.limit = limit
        self.retry_after = retry_after
        super().__init__("; ".join(self.messages()))

    def messages(self) -> list[str]:
        """One sentence per refused field, for a page's messages (`Title: is required …`)."""
        return [message if field == "__all__" else f"{field.replace('_', ' ').capitalize()}: {message}"
                for field, message in self.errors.items()]


# --- The model and the request ------------------------------------------------------------------

def resolve_model(slug: Any) -> DiffusionModel:
    """The enabled model a request names by slug; the default model when it names none."""
    if slug in (None, ""):
        model = DiffusionModel.default()
        if model is None:
            raise Refusal({"model": "no model is installed; staff can add one with `manage.py add_model`"})
        return model
    if not isinstance(slug, str):
        raise Refusal({"model": "must be a model slug (text)"})
    model = DiffusionModel.objects.filter(slug=slug, enabled=True).first()
    if model is None:
        choices = ", ".join(DiffusionModel.objects.filter(enabled=True).values_list("slug", flat=True))
        raise Refusal({"model": f"unknown model {slug[:100]!r}; available: {choices or 'none'}"})
    return model


# The LoRAs a person may use with a model (gallery.models.Lora.objects.usable_by): their own by
# `name` (or `username/name`), anyone's public or unlisted one, not hidden by staff, by
# `username/name`; only those made for the request's model. The worker resolves names by the same rule.
def usable_lora_names(owner, model: DiffusionModel | None = None, names=None) -> frozenset[str]:
    return frozenset(Lora.objects.usable_by(owner, model, names))


def check_usable_loras(request: GenerationRequest, model: DiffusionModel, owner) -> None:
    """Refuse (``loras``) a request naming a LoRA its person may not use with ``model``; one made
    for another base model is named as such."""
    if not request.loras:
        return
    names = [name for name, _ in request.loras]
    usable = usable_lora_names(owner, model, names)
    elsewhere = Lora.objects.usable_by(owner, names=names)
    for name, _ in request.loras:
        if name not in usable and name in elsewhere:
            other = elsewhere[name].base_model
            raise RequestValidationError({"loras": f"LoRA {name!r} was made for model {other.slug!r}, not "
                                                   f"{model.slug!r}"})
    check_lora_names(request, usable)


def validated_request(fields: Mapping[str, Any], model: DiffusionModel, owner=None) -> GenerationRequest:
    try:
        request = validate_request(fields, model.limits())
        check_usable_loras(request, model, owner)
    except RequestValidationError as error:
        raise Refusal(error.errors) from None
    return request


# --- The prompt gate: suspended accounts and the blocklist ------------------------------------------

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
                raise Refusal({field: "could not be checked in time. Shorten or rephrase it."}) from None
            if match:
                return entry, field, match.group(0)
    return None


def check_prompt(user, prompt: str, negative_prompt: str = "") -> None:
    """Refuse a submission whose prompt contains a blocked term (or whose person is suspended).

    A match of a reject-and-flag entry also records a `FlaggedPrompt` for the staff queue.
    `user` is None for the command line.
    """
    if user is not None and not user.is_active:
        raise Refusal({"__all__": "This account is suspended."}, status=403)
    texts = {"prompt": prompt or "", "negative_prompt": negative_prompt or ""}
    for field, text in texts.items():
        if len(text) > MAX_CHECKED_LENGTH:
            raise Refusal({field: f"must be at most {MAX_CHECKED_LENGTH} characters"})
    found = find_blocked({field: normalize(text) for field, text in texts.items()})
    if found is None:
        return
    entry, field, matched = found
    if entry.action == BlocklistEntry.Action.REJECT_AND_FLAG:
        with transaction.atomic():
            flagged = FlaggedPrompt.objects.create(
                user=user, prompt=prompt or "", negative_prompt=negative_prompt or "", entry=entry,
                pattern=entry.pattern, matched=matched[:200])
            AuditEntry.objects.record(
                AuditEntry.Action.PROMPT_FLAGGED, actor=None,
                via=AuditEntry.Via.SYSTEM if user is not None else AuditEntry.Via.COMMAND,
                target=flagged, subject=user, reason=f"matched {entry.pattern!r}", entry=entry.pk)
    raise Refusal({field: blocked_message(field, matched)})


def check_published_text(field: str, text: str) -> None:
    """Refuse text a person publishes besides prompts (an album's title or description) that
    contains a blocked term, by the same matcher and normalisation as prompts."""
    if len(text) > MAX_CHECKED_LENGTH:
        raise Refusal({field: f"must be at most {MAX_CHECKED_LENGTH} characters"})
    found = find_blocked({"prompt": normalize(text), "negative_prompt": ""})
    if found is not None:
        _, _, matched = found
        raise Refusal({field: f"contains “{matched[:80]}”, which is not allowed on this site. Please rephrase it."})


# --- Job limits: active jobs and the daily image quota --------------------------------------------

def start_of_day(now: datetime | None = None) -> datetime:
    now = now or timezone.now()
    return datetime.combine(now.astimezone(dt_timezone.utc).date(), day_time.min, tzinfo=dt_timezone.utc)


def seconds_until_tomorrow(now: datetime | None = None) -> int:
    now = now or timezone.now()
    return max(1, math.ceil((start_of_day(now) + timedelta(days=1) - now).total_seconds()))


def images_requested_today(owner) -> int:
    """Images of today's (UTC) jobs that are queued, running or finished well, plus the partial
    images cancelled jobs kept; failed jobs, and cancelled ones without images, give theirs back."""
    today = Generation.objects.filter(owner=owner, created_at__gte=start_of_day())
    jobs = today.filter(status__in=[Generation.Status.QUEUED, Generation.Status.RUNNING, Generation.Status.SUCCEEDED])
    requested = jobs.aggregate(n=Sum(Cast(KT("params__num_images"), IntegerField())))["n"] or 0
    kept = Image.objects.filter(generation__in=today.filter(status=Generation.Status.CANCELLED)).count()
    return int(requested) + kept


def check_job_limits(owner, num_images: int) -> None:
    """Refuse a job over `owner`'s active-job cap or daily image quota (staff are exempt from both).

    Call it inside the submission's transaction, after the person's row is locked, so the
    counts and the insert that follows cannot interleave with another submission.
    """
    if owner.is_staff:
        return
    active = Generation.objects.filter(owner=owner).active().count()
    cap = settings.LDM_MAX_ACTIVE_JOBS
    if active >= cap:
        raise Refusal({"__all__": f"You already have {active} jobs queued or running; the limit is {cap}. "
                                  "Wait for one to finish or cancel one."},
                      status=429, limit="active_jobs", retry_after=ACTIVE_JOBS_RETRY_SECONDS)
    quota = settings.LDM_DAILY_IMAGE_QUOTA
    if not quota:
        return
    used = images_requested_today(owner)
    if used + num_images > quota:
        raise Refusal({"__all__": f"Daily image quota reached: you have requested {used} of your {quota} images "
                                  f"today (UTC) and this job asks for {num_images} more. The quota resets at "
                                  "midnight UTC."},
                      status=429, limit="daily_images", retry_after=seconds_until_tomorrow())
