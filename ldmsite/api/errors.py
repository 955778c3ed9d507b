"""The API's one mapping of refusals to answers, wired as DRF's ``EXCEPTION_HANDLER``.

Every API error is JSON: ``{"detail": "...", "errors": {field: message}}`` for refused input
(a service's `generation.admission.Refusal`, DRF's validation and parse errors), and
``{"detail": "...", "limit": "..."}`` with ``Retry-After`` when a limit was reached (429).
Views of the A1111 API (``a1111 = True``) answer refused input with A1111's (FastAPI's) 422 body
instead, which A1111 clients know.
"""

from __future__ import annotations

import math

from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler, set_rollback

from generation.admission import Refusal

MAX_DETAIL_CHARS = 2000


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


def summary(errors: dict[str, str]) -> str:
    text = "; ".join(message if field == "__all__" else f"{field}: {message}" for field, message in errors.items())
    return text[:MAX_DETAIL_CHARS] or "Invalid input."


def a1111_validation_body(errors: dict[str, str]) -> dict:
    """FastAPI's 422 shape, which A1111 clients know: `{"detail": [{"loc", "msg", "type"}]}`."""
    return {"detail": [{"loc": ["body"] + ([] if field == "__all__" else field.split(".")), "msg": message,
                        "type": "value_error"} for field, message in errors.items()]}


def refused_input(errors: dict[str, str], status: int, view) -> Response:
    if getattr(view, "a1111", False) and status in (400, 422):
        return Response(a1111_validation_body(errors), status=422)
    return Response({"detail": summary(errors), "errors": errors}, status=status)


def refusal_response(refusal: Refusal, view) -> Response:
    set_rollback()
    if refusal.limit is None:
        return refused_input(refusal.errors, refusal.status, view)
    headers = {}
    if refusal.retry_after is not None:  # never tell a client to retry after 0 seconds
        headers["Retry-After"] = str(max(1, math.ceil(refusal.retry_after)))
    return Response({"detail": summary(refusal.errors), "limit": refusal.limit}, status=refusal.status,
                    headers=headers)


def api_exception_handler(exc, context):
    view = context.get("view")
    if isinstance(exc, Refusal):
        return refusal_response(exc, view)
    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, (exceptions.ValidationError, exceptions.ParseError)):
        refused = refused_input(flatten_errors(response.data), response.status_code, view)
        response.status_code, response.data = refused.status_code, refused.data
        return response
    detail = response.data.get("detail") if isinstance(response.data, dict) else response.data
    response.data = {"detail": str(detail)}
    if isinstance(exc, exceptions.Throttled):
        response.data["limit"] = "request_rate"
    return response
