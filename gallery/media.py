"""Streaming stored media after a permission check (pages and API share it)."""

import mimetypes

from django.http import FileResponse


def serve_file(stored, download_name: str | None = None) -> FileResponse:
    """Stream a stored file with its real content type; never let a browser sniff another one."""
    content_type = mimetypes.guess_type(stored.name)[0] or "application/octet-stream"
    response = FileResponse(stored.open("rb"), content_type=content_type,
                            as_attachment=download_name is not None, filename=download_name)
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, max-age=3600"
    return response
