"""Avatars: checked like any image before a pixel is decoded, then re-encoded as a small PNG.

The upload's size is checked before reading it, its header (format, dimensions) before decoding, and
only then are the pixels decoded, cropped to a square, resized and written as a new PNG: nothing of
the uploaded file (metadata, trailing bytes, another format inside) survives.
"""

from __future__ import annotations

import io

from django import forms
from django.core.files.base import ContentFile
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_UPLOAD_BYTES = 2 * 1024 * 1024
MAX_PIXELS = 4096 * 4096
ACCEPTED_FORMATS = {"PNG", "JPEG", "WEBP", "GIF"}
SIDE = 256


def checked_avatar(upload) -> ContentFile:
    """The upload as a fresh 256×256 PNG, or a ValidationError a person can act on."""
    if upload.size > MAX_UPLOAD_BYTES:
        raise forms.ValidationError(f"The image is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB.")
    data = upload.read(MAX_UPLOAD_BYTES + 1)
    if len(data) > MAX_UPLOAD_BYTES:
        raise forms.ValidationError(f"The image is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB.")
    try:
        with Image.open(io.BytesIO(data)) as picture:  # reads the header only
            if picture.format not in ACCEPTED_FORMATS:
                raise forms.ValidationError("Upload a PNG, JPEG, WebP or GIF image.")
            if picture.width * picture.height > MAX_PIXELS or min(picture.size) < 1:
                raise forms.ValidationError("The image has too many pixels (at most 4096×4096).")
            picture.seek(0)
            picture.load()
            square = ImageOps.fit(ImageOps.exif_transpose(picture).convert("RGBA"), (SIDE, SIDE),
                                  Image.Resampling.LANCZOS)
    except forms.ValidationError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError, SyntaxError):
        raise forms.ValidationError("This file is not an image we can read.") from None
    out = io.BytesIO()
    square.save(out, format="PNG", optimize=True)
    return ContentFile(out.getvalue(), name="avatar.png")
