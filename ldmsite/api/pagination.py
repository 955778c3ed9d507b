"""Keyset (cursor) pages for the API's lists, wired as DRF's default pagination."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import exceptions
from rest_framework.pagination import CursorPagination


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
