"""The API's limits and how it answers when one is reached, or when input is refused.

Limits, all per person (every token and the browser session of a person together):

- request rate (``LDM_API_RATE``) and generation submissions (``LDM_API_GENERATE_RATE``):
  Django REST framework throttles over the cache; soft limits, a few requests may slip
  past them in a race, which is harmless;
- active jobs (``LDM_MAX_ACTIVE_JOBS``) and images per day (``LDM_DAILY_IMAGE_QUOTA``):
  hard limits, checked inside the submission's transaction while the person's row is
  locked, so a burst of N + 10 submissions accepts exactly N.

Every refusal is a 429 with ``Retry-After`` and a body naming the limit
(``{"detail": "...", "limit": "daily_images"}``). The module also holds the API's
uniform error body (``api_exception_handler``) and its cursor pagination, both wired in
``settings.REST_FRAMEWORK``.
"""

from __future__ import annotations

import math
from datetime import datetime, time, timedelta, timezone as dt_timezone

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import IntegerField, Sum
from django.db.models.fields.json import KT
from django.db.models.functions import Cast
from django.utils import timezone
from rest_framework import exceptions, status
from rest_framework.pagination import CursorPagination
from rest_framework.throttling import SimpleRateThrottle

ACTIVE_JOBS_RETRY_SECONDS = 10  # a hint: when a job of yours has probably finished


class LimitExceeded(exceptions.Throttled):
    """A 429 naming the limit (`request_rate`, `generate_rate`, `active_jobs`, `daily_images`)."""

    def __init__(self, limit: str, detail: str, wait: float | None):
        self.limit = limit
        # Retry-After is only sent for a positive wait; never tell a client "0".
        super().__init__(wait=None if wait is None else max(1.0, wait), detail=detail)


class FieldErrors(exceptions.APIException):
    """A refusal by a service (`SubmissionError`, `GalleryError`): `{field: message}`."""

    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = "Invalid input."

    def __init__(self, errors: dict, status_code: int = 400):
        self.errors = {str(field): str(message) for field, message in errors.items()}
        self.status_code = status_code
        super().__init__(detail=self.errors)


# --- Request rates ----------------------------------------------------------------------

class PersonRateThrottle(SimpleRateThrottle):
    """Every API request of a person counts; anonymous requests count per address."""

    scope = "api"
    rate_setting = "LDM_API_RATE"
    limit = "request_rate"
    what = "API requests"

    def get_rate(self):
        return getattr(settings, self.rate_setting)  # read per request, so settings may change

    def applies(self, request, view) -> bool:
        return True

    def allow_request(self, request, view):
        if not self.applies(request, view):
            return True
        return super().allow_request(request, view)

    def get_cache_key(self, request, view):
        user = getattr(request, "user", None)
        who = f"person:{user.pk}" if user is not None and user.is_authenticated else f"address:{self.get_ident(request)}"
        return f"ldmsite.throttle.{self.scope}.{who}"

    def throttle_failure(self):
        count, period = self.rate.split("/")
        raise LimitExceeded(self.limit, f"Too many {self.what}: the limit is {count} per {period} per person "
                                        f"({self.rate_setting}).", self.wait())


class GenerationRateThrottle(PersonRateThrottle):
    """Submissions: views that create jobs set ``throttle_generation = True``."""

    scope = "generate"
    rate_setting = "LDM_API_GENERATE_RATE"
    limit = "generate_rate"
    what = "generation submissions"

    def applies(self, request, view) -> bool:
        return request.method == "POST" and getattr(view, "throttle_generation", False)


# --- The daily image quota --------------------------------------------------------------

def start_of_day(now: datetime | None = None) -> datetime:
    now = now or timezone.now()
    return datetime.combine(now.astimezone(dt_timezone.utc).date(), time.min, tzinfo=dt_timezone.utc)


def seconds_until_tomorrow(now: datetime | None = None) -> int:
    now = now or timezone.now()
    return max(1, math.ceil((start_of_day(now) + timedelta(days=1) - now).total_seconds()))


def images_requested_today(owner) -> int:
    """Images of today's (UTC) jobs that are queued, running or finished well; failed and
    cancelled jobs give theirs back."""
    from generation.models import Generation

    jobs = Generation.objects.filter(
        owner=owner, created_at__gte=start_of_day(),
        status__in=[Generation.Status.QUEUED, Generation.Status.RUNNING, Generation.Status.SUCCEEDED],
    )
    total = jobs.aggregate(n=Sum(Cast(KT("params__num_images"), IntegerField())))["n"]
    return int(total or 0)


def check_daily_image_quota(owner, num_images: int) -> None:
    """Refuse a job that would take `owner` past the daily image quota (staff are exempt).

    Call it inside the submission's transaction, after the person's row is locked, so the
    count and the insert that follows cannot interleave with another submission.
    Raises `generation.services.SubmissionError` (status 429) with `limit` and `retry_after`.
    """
    quota = settings.LDM_DAILY_IMAGE_QUOTA
    if not quota or owner.is_staff:
        return
    used = images_requested_today(owner)
    if used + num_images <= quota:
        return
    from generation.services import SubmissionError  # services calls this function: import late

    error = SubmissionError(
        {"__all__": f"Daily image quota reached: you have requested {used} of your {quota} images today "
                    f"(UTC) and this job asks for {num_images} more. The quota resets at midnight UTC."},
        status=429,
    )
    error.limit = "daily_images"
    error.retry_after = seconds_until_tomorrow()
    raise error


def submission_exception(error) -> exceptions.APIException:
    """The API's answer to a `SubmissionError` or `GalleryError`."""
    if error.status == 429:
        limit = getattr(error, "limit", "active_jobs")
        wait = getattr(error, "retry_after", ACTIVE_JOBS_RETRY_SECONDS)
        message = error.errors.get("__all__") or "; ".join(f"{k}: {v}" for k, v in error.errors.items())
        return LimitExceeded(limit, message, wait)
    return FieldErrors(error.errors, error.status)


# --- Error bodies --------------------------------------------------------------------------

def flatten_errors(data, prefix: str = "") -> dict[str, str]:
    """DRF's nested error lists as `{field: "message"}` (`__all__` for the request as a whole)."""
    errors: dict[str, str] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            name = "__all__" if key in ("non_field_errors", "detail") and not prefix else f"{prefix}{key}"
            if isinstance(value, dict):
                errors.update(flatten_errors(value, f"{name}."))
            elif isinstance(value, list) and any(isinstance(item, (dict, list)) for item in value):
                for index, item in enumerate(value):
                    if item:
                        errors.update(flatten_errors(item if isinstance(item, dict) else {"": item},
                                                     f"{name}.{index}."))
            elif isinstance(value, list):
                errors[name.rstrip(".")] = " ".join(str(item) for item in value)
            else:
                errors[name.rstrip(".")] = str(value)
    elif isinstance(data, list):
        errors[prefix.rstrip(".") or "__all__"] = " ".join(str(item) for item in data)
    else:
        errors[prefix.rstrip(".") or "__all__"] = str(data)
    return errors


def a1111_validation_body(errors: dict[str, str]) -> dict:
    """FastAPI's 422 shape, which A1111 clients know: `{"detail": [{"loc", "msg", "type"}]}`."""
    return {"detail": [{"loc": ["body"] + ([] if field == "__all__" else field.split(".")), "msg": message,
                        "type": "value_error"} for field, message in errors.items()]}


def api_exception_handler(exc, context):
    """Every API error is JSON: `{"detail": "...", "errors": {field: message}, "limit": ...}`.

    /sdapi views (``a1111 = True``) answer refused input with A1111's (FastAPI's) 422 instead.
    """
    from rest_framework.views import exception_handler

    response = exception_handler(exc, context)
    if response is None:
        return None
    view = context.get("view")
    if isinstance(exc, (exceptions.ValidationError, exceptions.ParseError, FieldErrors)):
        errors = exc.errors if isinstance(exc, FieldErrors) else flatten_errors(response.data)
        if getattr(view, "a1111", False) and response.status_code in (400, 422):
            response.status_code = 422
            response.data = a1111_validation_body(errors)
            return response
        summary = "; ".join(f"{field}: {message}" if field != "__all__" else message
                            for field, message in errors.items())
        response.data = {"detail": summary[:2000] or "Invalid input.", "errors": errors}
        return response
    detail = response.data.get("detail") if isinstance(response.data, dict) else response.data
    body = {"detail": str(detail)}
    if isinstance(exc, LimitExceeded):
        body["limit"] = exc.limit
    elif isinstance(exc, exceptions.Throttled):
        body["limit"] = "request_rate"
    response.data = body
    return response


# --- Cursor pagination --------------------------------------------------------------------

class NewestFirstPagination(CursorPagination):
    """Keyset pages, newest first: a page costs the same however deep it is, and rows added
    meanwhile neither repeat nor go missing. Follow `next` until it is null."""

    ordering = ("-created_at", "-id")
    page_size = 24
    page_size_query_param = "limit"
    max_page_size = 100
    invalid_cursor_message = "Invalid cursor: pass back a `next` or `previous` link unchanged."

    def decode_cursor(self, request):
        try:
            return super().decode_cursor(request)
        except exceptions.NotFound:
            raise exceptions.ValidationError({"cursor": self.invalid_cursor_message}) from None

    def paginate_queryset(self, queryset, request, view=None):
        try:
            return super().paginate_queryset(queryset, request, view)
        except (ValueError, TypeError, OverflowError, DjangoValidationError):
            # A well-formed cursor whose position is not a valid timestamp (edited by hand).
            raise exceptions.ValidationError({"cursor": self.invalid_cursor_message}) from None
