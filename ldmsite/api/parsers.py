"""The API's JSON parser, wired as DRF's ``DEFAULT_PARSER_CLASSES``: a body that cannot be read is
a 400 ``ParseError`` (A1111 views: 422), never a 500.

DRF's own parser turns only ``ValueError`` into a ``ParseError``; a body nested 100,000 ``[``
deep raises ``RecursionError`` in the JSON decoder instead. And a body nested just within the
decoder's reach (~900 levels) would make the first ``repr``, ``copy`` or ``json.dumps`` of it
deeper down fail the same way, so nesting is capped well below that: no request body of this
API (nor A1111's) nests more than a few levels. And a body is read only up to ``MAX_JSON_BYTES``
(A1111's png-info carries a base64 PNG, so that is generous): the decoder holds the interpreter
lock, and DRF reads a body whatever its size (Django's ``DATA_UPLOAD_MAX_MEMORY_SIZE`` covers
forms only).
"""

from __future__ import annotations

import io

from rest_framework import status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import JSONParser

MAX_JSON_DEPTH = 32
MAX_JSON_BYTES = 32 * 1024 * 1024


class BodyTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = f"The request body is larger than {MAX_JSON_BYTES // (1024 * 1024)} MB."
    default_code = "body_too_large"


def _children(container):
    return iter(container.values() if isinstance(container, dict) else container)


def depth_exceeds(data, limit: int) -> bool:
    """Whether ``data`` (parsed JSON) nests lists and objects more than ``limit`` deep. Iterative,
    depth-first with one iterator per open level: time linear in the size of ``data``, memory in
    ``limit``, and no recursion of its own."""
    if not isinstance(data, (dict, list)):
        return False
    if limit < 1:
        return True
    stack = [_children(data)]
    while stack:
        for child in stack[-1]:
            if isinstance(child, (dict, list)):
                if len(stack) >= limit:
                    return True
                stack.append(_children(child))
                break
        else:
            stack.pop()
    return False


class SafeJSONParser(JSONParser):
    """DRF's JSON parser, plus: too deep or unreadable is a ``ParseError`` (400), whatever the decoder
    raises; too large is a 413."""

    max_depth = MAX_JSON_DEPTH
    max_bytes = MAX_JSON_BYTES

    def parse(self, stream, media_type=None, parser_context=None):
        body = stream.read(self.max_bytes + 1)
        if len(body) > self.max_bytes:
            raise BodyTooLarge()
        try:
            data = super().parse(io.BytesIO(body), media_type, parser_context)
        except RecursionError:
            raise ParseError(f"JSON parse error - nested deeper than {self.max_depth} levels") from None
        except (ValueError, UnicodeError, OverflowError) as error:  # DRF catches ValueError only in the decode
            raise ParseError(f"JSON parse error - {error}") from None
        # Fewer brackets than the limit cannot nest deeper than it (bytes.count: no walk of a flat body).
        if body.count(b"[") + body.count(b"{") > self.max_depth and depth_exceeds(data, self.max_depth):
            raise ParseError(f"JSON parse error - nested deeper than {self.max_depth} levels")
        return data
