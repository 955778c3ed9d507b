"""What every A1111 view shares: A1111's error shape, a JSON body without Content-Type, `null` bodies.

Authentication (personal tokens as Basic or Bearer) is wired in `ldmsite.api.urls`.
"""

from __future__ import annotations

from django.http import HttpResponse
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.parsers import JSONParser
from rest_framework.views import APIView

VERSION = "ldmsite"
SHOWN_CLIENT_TEXT = 80  # at most this much of a client's own text is echoed back in an error


class BodyWithoutContentTypeIsJSON(DefaultContentNegotiation):
    """A1111 (FastAPI) reads a body sent without Content-Type as JSON; so does ldmsite on /sdapi/.
    A WSGI server reports a missing Content-Type as text/plain (wsgiref's default), so that too."""

    def select_parser(self, request, parsers):
        if request.content_type.split(";")[0].strip().lower() in ("", "text/plain"):
            # the API's configured JSON parser (settings.REST_FRAMEWORK), with its limits
            return next((parser for parser in parsers if isinstance(parser, JSONParser)), JSONParser())
        return super().select_parser(request, parsers)


class A1111View(APIView):
    """An AUTOMATIC1111 API endpoint: a personal token as the Basic-auth password (any user name) or as
    Bearer; refused input answers FastAPI's 422 body, naming the field."""

    a1111 = True
    content_negotiation_class = BodyWithoutContentTypeIsJSON


def null_response() -> HttpResponse:
    """The body A1111 answers when its handler returns nothing: JSON `null`."""
    return HttpResponse(b"null", content_type="application/json")


def shown(value) -> str:
    """A client's value for an error message: repr, cut short."""
    text = repr(value)
    return text if len(text) <= SHOWN_CLIENT_TEXT else text[:SHOWN_CLIENT_TEXT] + "…"
