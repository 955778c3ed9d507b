"""Source pictures of image-to-image jobs: reading what a person sends, checking it before a pixel
is decoded, and keeping it privately with the job.

A submission (`services.submit_generation`) may carry, beside the request fields:

- ``init_image``: the picture to start from -- base64 text, a ``data:`` URL, raw bytes, or an
  uploaded file (a multipart part or a page's file input);
- ``mask``: for inpainting, the same kinds (white = repaint; a PNG with transparency: its opaque
  part is the mask, as A1111 reads one), the same size as the init image;
- ``source_image``: the id of a gallery image the person may see, used as the init image;
- ``source_job``: the id of one of the person's own jobs whose stored source is reused (Remix of
  an image made from an uploaded picture).

Every upload is checked in the same order as avatars (`ldmsite.accounts.avatars`): its size in
bytes before it is read (base64: before it is decoded), its header (format, dimensions) before its
pixels are decoded; only then is it decoded and re-encoded as a fresh PNG, so nothing else of the
uploaded file (metadata, trailing bytes, another format inside) is kept. The PNGs are stored under
``sources/`` with unguessable names; media is never served directly, so they are reachable only
through `generation:source` (and the API's source route), for the job's owner and staff.
"""

from __future__ import annotations

import base64
import binascii
import io
import secrets
from dataclasses import dataclass
from typing import Any, Mapping

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.http import FileResponse
from PIL import Image as PILImage
from PIL import ImageOps, UnidentifiedImageError

from gallery.models import Image
from generation.admission import Refusal
from generation.diffusion.request import GenerationRequest
from generation.diffusion.sources import SourceImages, flatten, mask_from_image
from generation.models import Generation

# The same limits as every other image a person hands the site (PNG-info import: 20 MB; avatars
# and A1111's png-info: 4096 x 4096 pixels).
MAX_SOURCE_BYTES = 20 * 1024 * 1024
MAX_SOURCE_PIXELS = 4096 * 4096
ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF")
FORMATS_TEXT = "PNG, JPEG, WebP or GIF"
MAX_ID_DIGITS = 18

SOURCE_FIELDS = ("init_image", "mask", "source_image", "source_job")
KINDS = {"init": "init_image", "mask": "mask"}  # URL kind -> Generation field

_EMPTY = (None, "", b"")


@dataclass
class Sources:
    """What a submission's source fields came to: decoded pictures (``None``: not given) and the
    gallery image they came from."""

    init_image: PILImage.Image | None = None
    mask: PILImage.Image | None = None
    source_image: Image | None = None

    @property
    def given(self) -> bool:
        return self.init_image is not None


def pop_source_fields(fields: dict) -> dict[str, Any]:
    """Take the source fields out of a submission's fields (empty values count as absent)."""
    given = {}
    for name in SOURCE_FIELDS:
        value = fields.pop(name, None)
        if not _is_empty(value):
            given[name] = value
    return given


def _is_empty(value: Any) -> bool:
    if isinstance(value, (str, bytes)) and not value.strip():
        return True
    return value is None


def infer_mode(given: Mapping[str, Any], picked: "Sources | None" = None) -> str:
    """The mode a submission without one asks for: a mask (given, or carried by ``source_job``) ->
    inpaint, a source -> img2img, else txt2img."""
    if "mask" in given or (picked is not None and picked.mask is not None):
        return "inpaint"
    if given.keys() & {"init_image", "source_image", "source_job"}:
        return "img2img"
    return "txt2img"


# --- Reading one picture ----------------------------------------------------------------------

def _too_large(field: str) -> Refusal:
    return Refusal({field: f"is larger than {MAX_SOURCE_BYTES // (1024 * 1024)} MB"})


def _base64_bytes(text: str, field: str) -> bytes:
    # Bound the text before anything walks it (a body is at most a few tens of MB anyway).
    limit = (MAX_SOURCE_BYTES + 2) // 3 * 4
    if len(text) > 2 * limit:
        raise _too_large(field)
    text = text.strip()
    if text.startswith("data:"):
        header, comma, text = text.partition(",")
        if not comma or not header.endswith(";base64"):
            raise Refusal({field: "must be a data: URL of a base64-encoded image (data:image/png;base64,...)"})
    compact = "".join(text.split())  # line breaks some encoders add
    if len(compact) > limit + 4:
        raise _too_large(field)
    compact += "=" * (-len(compact) % 4)
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise Refusal({field: f"is not a base64-encoded image ({FORMATS_TEXT}), nor a data: URL of one"}) from None
    if len(data) > MAX_SOURCE_BYTES:
        raise _too_large(field)
    return data


def source_bytes(value: Any, field: str) -> bytes:
    """The encoded picture a field holds, its size checked before it is read or decoded."""
    if isinstance(value, str):
        return _base64_bytes(value, field)
    if isinstance(value, (bytes, bytearray, memoryview)):
        if len(value) > MAX_SOURCE_BYTES:
            raise _too_large(field)
        return bytes(value)
    if hasattr(value, "read"):  # an UploadedFile, or any Django File
        size = getattr(value, "size", None)
        if isinstance(size, int) and size > MAX_SOURCE_BYTES:
            raise _too_large(field)
        if hasattr(value, "seek"):
            value.seek(0)
        data = value.read(MAX_SOURCE_BYTES + 1)
        if len(data) > MAX_SOURCE_BYTES:
            raise _too_large(field)
        return data
    raise Refusal({field: f"must be an image ({FORMATS_TEXT}): base64 text, a data: URL, or a file"})


def decode_picture(data: bytes, field: str) -> PILImage.Image:
    """The picture in ``data``, its format and dimensions checked from the header before its pixels
    are decoded. Returned as decoded (mode as stored), upright (EXIF orientation applied)."""
    try:
        with PILImage.open(io.BytesIO(data)) as picture:  # reads the header only
            if picture.format not in ACCEPTED_FORMATS:
                raise Refusal({field: f"must be a {FORMATS_TEXT} image (got {picture.format or 'an unknown format'})"})
            width, height = picture.size
            if width < 1 or height < 1:
                raise Refusal({field: "is an empty image (0 pixels)"})
            if width * height > MAX_SOURCE_PIXELS:
                raise Refusal({field: f"is {width}x{height} pixels; at most {MAX_SOURCE_PIXELS:,} pixels "
                                      "(4096x4096) are accepted"})
            picture.seek(0)
            picture.load()
            return ImageOps.exif_transpose(picture)
    except Refusal:
        raise
    except PILImage.DecompressionBombError:
        raise Refusal({field: f"has more than {MAX_SOURCE_PIXELS:,} pixels (4096x4096)"}) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError):
        raise Refusal({field: f"is not an image we can read ({FORMATS_TEXT})"}) from None


def as_init_image(picture: PILImage.Image) -> PILImage.Image:
    """RGB; a transparent picture flattened onto white (the engine's ``flatten``, A1111's background)."""
    return flatten(picture)


def as_mask(picture: PILImage.Image) -> PILImage.Image:
    """Greyscale, white = repaint, read as the engine reads a mask (``mask_from_image``: a mask with
    transparency is its alpha -- a brush painted on a transparent layer -- any other its grey)."""
    return mask_from_image(picture)


def read_picture(value: Any, field: str) -> PILImage.Image:
    """One source field (base64 text, data: URL, bytes or a file) as a checked, decoded picture."""
    return decode_picture(source_bytes(value, field), field)


# --- Looking up what ids name ------------------------------------------------------------------

def _object_id(value: Any, field: str, what: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and 0 < len(value.strip()) <= MAX_ID_DIGITS and value.strip().isascii() \
            and value.strip().isdigit():
        number = int(value.strip())
    else:
        raise Refusal({field: f"must be the id of {what} (a whole number)"})
    if not 0 < number < 10**MAX_ID_DIGITS:
        raise Refusal({field: f"must be the id of {what} (a whole number)"})
    return number


NO_SUCH_IMAGE = "is not the id of an image you can see"
NO_SUCH_JOB = "is not the id of a job of yours with a source picture"


def gallery_source(owner, value: Any) -> Image:
    """The gallery image ``source_image`` names, if ``owner`` may see it (one message for "no such
    image" and "not yours to see": nothing tells which)."""
    pk = _object_id(value, "source_image", "an image")
    image = Image.objects.filter(pk=pk).select_related("owner").first()
    if image is None or owner is None or not image.can_view(owner):
        raise Refusal({"source_image": NO_SUCH_IMAGE})
    return image


def read_stored(stored, field: str) -> PILImage.Image:
    """A stored picture (a gallery image's PNG, a job's source), through the same checks."""
    try:
        with stored.open("rb") as handle:
            data = handle.read(MAX_SOURCE_BYTES + 1)
    except OSError:
        raise Refusal({field: "its picture file is missing"}) from None
    if len(data) > MAX_SOURCE_BYTES:
        raise _too_large(field)
    return decode_picture(data, field)


# --- A submission's sources -------------------------------------------------------------------

def read_sources(owner, given: Mapping[str, Any]) -> Sources:
    """Read and check a submission's source fields (`pop_source_fields`); a `Refusal` naming every
    bad field. At most one of init_image, source_image and source_job may be given."""
    errors: dict[str, str] = {}
    sources = Sources()
    starts = [name for name in ("init_image", "source_image", "source_job") if name in given]
    if len(starts) > 1:
        raise Refusal({starts[1]: f"give one source picture: {' or '.join(starts)}, not both"})

    def attempt(read):
        try:
            return read()
        except Refusal as refusal:
            errors.update(refusal.errors)
            return None

    mask = None
    if "init_image" in given:
        picture = attempt(lambda: read_picture(given["init_image"], "init_image"))
        sources.init_image = as_init_image(picture) if picture is not None else None
    elif "source_image" in given:
        image = attempt(lambda: gallery_source(owner, given["source_image"]))
        if image is not None:
            sources.source_image = image
            picture = attempt(lambda: read_stored(image.file, "source_image"))
            sources.init_image = as_init_image(picture) if picture is not None else None
    elif "source_job" in given:
        job = attempt(lambda: own_source_job(owner, given["source_job"]))
        if job is not None:
            sources.source_image = job.source_image
            picture = attempt(lambda: read_stored(job.init_image, "source_job"))
            sources.init_image = as_init_image(picture) if picture is not None else None
            if job.mask and "mask" not in given:
                mask = attempt(lambda: read_stored(job.mask, "source_job"))
    if "mask" in given:
        mask = attempt(lambda: read_picture(given["mask"], "mask"))
    if mask is not None:
        sources.mask = as_mask(mask)
    if errors:
        raise Refusal(errors)
    if sources.mask is not None and sources.init_image is not None and sources.mask.size != sources.init_image.size:
        (mw, mh), (iw, ih) = sources.mask.size, sources.init_image.size
        raise Refusal({"mask": f"is {mw}x{mh} pixels; it must be the same size as the init image ({iw}x{ih})"})
    return sources


def own_source_job(owner, value: Any) -> Generation:
    pk = _object_id(value, "source_job", "a job")
    job = Generation.objects.filter(pk=pk).select_related("source_image").first()
    if job is None or owner is None or job.owner_id != owner.pk or not job.init_image:
        raise Refusal({"source_job": NO_SUCH_JOB})
    return job


def check_sources(request: GenerationRequest, sources: Sources, given: Mapping[str, Any]) -> Sources:
    """The request's mode and the pictures agree: a source mode has an init image, text to image
    none, and only inpainting a mask (a mask carried over from a Remixed job is dropped)."""
    if request.has_source and not sources.given:
        raise Refusal({"init_image": f"is required for mode {request.mode}: send init_image (base64, a data: URL "
                                     "or a file) or source_image (the id of an image you can see)"})
    if not request.has_source and sources.given:
        field = next(name for name in ("init_image", "source_image", "source_job") if name in given)
        raise Refusal({field: "is for modes img2img, inpaint and outpaint; this request's mode is txt2img "
                              "(leave mode out to infer it, or set it)"})
    if sources.mask is not None and request.mode != "inpaint":
        if "mask" in given:
            raise Refusal({"mask": f"is for mode inpaint only; this request's mode is {request.mode}"})
        sources.mask = None
    if request.mode == "inpaint" and sources.mask is None:
        raise Refusal({"mask": "is required for mode inpaint (white = repaint, the size of the init image)"})
    return sources


# --- Storing with the job, and loading for the worker --------------------------------------------

def private_name() -> str:
    """An unguessable name under ``sources/`` (never served directly)."""
    token = secrets.token_hex(16)
    return f"sources/{token[:2]}/{token}.png"


def png_bytes(picture: PILImage.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def encoded(sources: Sources) -> dict[str, bytes]:
    """The PNGs to store, by Generation field (encode before the submission's transaction)."""
    files = {}
    if sources.init_image is not None:
        files["init_image"] = png_bytes(sources.init_image)
    if sources.mask is not None:
        files["mask"] = png_bytes(sources.mask)
    return files


def store_sources(job: Generation, files: Mapping[str, bytes]) -> None:
    """Save the PNGs and record them on the job (inside the submission's transaction). A failure
    removes what was saved, so a refused or failed submission leaves no file behind."""
    saved: list[str] = []
    try:
        for field, data in files.items():
            name = default_storage.save(private_name(), ContentFile(data))
            saved.append(name)
            setattr(job, field, name)
        if saved:
            job.save(update_fields=list(files))
    except BaseException:
        for name in saved:
            default_storage.delete(name)
        raise


def load_sources(job: Generation) -> SourceImages | None:
    """The job's stored pictures for the engine; None for text to image."""
    if not job.init_image:
        return None
    with job.init_image.open("rb") as handle:
        init = PILImage.open(handle)
        init.load()
    mask = None
    if job.mask:
        with job.mask.open("rb") as handle:
            mask = PILImage.open(handle)
            mask.load()
    return SourceImages(init_image=init.convert("RGB"), mask=mask.convert("L") if mask is not None else None)


def stored_source(job: Generation, kind: str):
    """The stored file of ``kind`` ("init" or "mask"), or None."""
    field = KINDS.get(kind)
    if field is None:
        return None
    stored = getattr(job, field)
    return stored if stored else None


__all__ = ["MAX_SOURCE_BYTES", "MAX_SOURCE_PIXELS", "SOURCE_FIELDS", "Sources", "check_sources",
           "encoded", "infer_mode", "load_sources", "pop_source_fields", "read_picture", "read_sources",
           "store_sources", "stored_source", "describe_source", "may_see_private_source", "serve_png"]


# --- Showing a job's source ------------------------------------------------------------------------

def may_see_private_source(user, job: Generation) -> bool:
    """A job's stored pictures are as private as the job: its owner and staff."""
    return bool(user is not None and user.is_authenticated and (user.is_staff or user.pk == job.owner_id))


def describe_source(job: Generation | None, viewer) -> dict | None:
    """What ``viewer`` may be shown of the picture a job started from, or None (no source, or
    nothing of it ``viewer`` may see):

    - ``mode``: the job's mode;
    - ``image``: the gallery image it came from, when ``viewer`` may see it (else None), and its
      ``page_url``;
    - ``init_url`` / ``mask_url``: the job's stored pictures (`generation:source`), for the owner and
      staff only (``mask_url`` None without a mask);
    - ``file_url``: the picture to show: the stored one for the owner and staff, else the gallery
      image's file.
    """
    if job is None or not job.init_image:
        return None
    image = job.source_image if job.source_image_id else None
    if image is not None and not image.can_view(viewer):
        image = None
    private = may_see_private_source(viewer, job)
    if image is None and not private:
        return None
    init_url = job.source_url("init") if private else None
    return {
        "mode": job.mode,
        "image": image,
        "page_url": image.get_absolute_url() if image is not None else None,
        "init_url": init_url,
        "mask_url": job.source_url("mask") if private and job.mask else None,
        "file_url": init_url or image.file_url(),
    }


def serve_png(stored) -> FileResponse:
    """Stream a stored source PNG (after the caller's permission check), as `gallery.media`
    streams images: never sniffed, never cached by a shared cache."""
    response = FileResponse(stored.open("rb"), content_type="image/png")
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, max-age=3600"
    return response
