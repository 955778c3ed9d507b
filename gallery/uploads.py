"""Uploading your own pictures into your gallery (the upload page and ``POST /api/v1/images/``).

Each uploaded picture goes through the checks every picture a person hands the site goes through
(`generation.sources`: size in bytes before it is read, format and dimensions from the header before
a pixel is decoded), then is re-encoded as a fresh PNG, so nothing else of the uploaded file is
kept. It becomes an `Image` of its owner with no job (``generation`` None, seed 0, no model):
private and kept (an upload is something a person chose to keep, so `purge_unsaved` must not take
it), with a thumbnail made as a job's are, and held for review when the output check flags it,
as a job's output would be (an upload must not be a way around that check).

Its caption (the image's prompt, what LoRA training reads) is, in this order: the prompt of the
A1111 ``parameters`` a PNG carries (kept whole, so PNG-info and Remix still read it); the text of
a same-named ``.txt`` beside it in an uploaded zip (the kohya / Civitai dataset layout); the
caption typed on the form.

The whole upload is checked before anything is stored: one bad file refuses it all, naming the
file, rather than leaving half an upload behind.
"""

from __future__ import annotations

import io
import posixpath
import zipfile
from dataclasses import dataclass, field

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from PIL import Image as PILImage
from PIL import PngImagePlugin, UnidentifiedImageError

from gallery import services
from gallery.models import Album, AuditEntry, Image, OutputReview, unguessable_name
from generation.admission import Refusal
from generation.diffusion import read_png_metadata
from generation.diffusion.pngmeta import PARAMETERS_CHUNK, PngMetadataError
from generation.diffusion.sources import flatten
from generation.outputs import HELD_REASON, make_thumbnail, run_output_check
from generation.sources import MAX_SOURCE_BYTES, MAX_SOURCE_PIXELS, decode_picture

FIELD = "files"
UPLOAD_FORMATS = ("PNG", "JPEG", "WEBP")
FORMATS_TEXT = "PNG, JPEG or WebP"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
MAX_UPLOAD_IMAGES = 100  # pictures in one upload, zips' contents included (a LoRA dataset is 20-100)
MAX_UPLOAD_BYTES = 200 * 1024 * 1024  # all of one upload's pictures together, zips' contents unpacked
MAX_ZIP_BYTES = MAX_UPLOAD_BYTES
MAX_ZIP_ENTRIES = 1000  # entries a zip may list (captions and stray files included)
MAX_CAPTION_CHARS = 1000  # as a prompt


@dataclass
class Picture:
    """One checked, re-encoded upload, ready to store."""

    name: str
    png: bytes
    thumbnail: bytes
    width: int
    height: int
    format: str
    prompt: str = ""
    negative_prompt: str = ""
    parameters: str = ""
    held: object = None  # the output check's Verdict when it must be held for review
    extra: dict = field(default_factory=dict)


def refuse(name: str, message: str) -> Refusal:
    return Refusal({FIELD: f"{name}: {message}"})


def printable(name: str) -> str:
    """A file name as shown and stored: printable characters only (PostgreSQL's JSON holds no NUL)."""
    return "".join(character for character in name if character.isprintable())[:200] or "upload"


def file_bytes(upload, name: str) -> bytes:
    """An uploaded file's bytes, its size checked before it is read."""
    size = getattr(upload, "size", None)
    if isinstance(size, int) and size > MAX_ZIP_BYTES:
        raise refuse(name, f"is larger than {MAX_ZIP_BYTES // 2**20} MB")
    upload.seek(0)
    data = upload.read(MAX_ZIP_BYTES + 1)
    if len(data) > MAX_ZIP_BYTES:
        raise refuse(name, f"is larger than {MAX_ZIP_BYTES // 2**20} MB")
    return data


def zip_members(data: bytes, zip_name: str) -> list[tuple[str, bytes, str | None]]:
    """The pictures of a zip with their ``.txt`` captions: (name, bytes, caption or None). Sizes are
    read from the zip's directory and every read is bounded, so a zip bomb is refused, not unpacked."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        entries = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError):
        raise refuse(zip_name, "is not a zip file we can read") from None
    if len(entries) > MAX_ZIP_ENTRIES:
        raise refuse(zip_name, f"has more than {MAX_ZIP_ENTRIES} entries")
    pictures, captions = [], {}
    total = 0
    for entry in entries:
        name = printable(entry.filename)
        base = posixpath.basename(name)
        if entry.is_dir() or base.startswith(".") or name.startswith("__MACOSX/"):
            continue  # folders, and the resource forks and dot files archivers add
        stem, extension = posixpath.splitext(name)
        extension = extension.lower()
        if extension not in IMAGE_EXTENSIONS + (".txt",):
            continue  # a dataset zip may carry other files (kohya's .npz caches, a README): not pictures
        limit = MAX_SOURCE_BYTES if extension in IMAGE_EXTENSIONS else MAX_CAPTION_CHARS * 4
        if entry.file_size > limit:
            raise refuse(f"{zip_name}/{name}", f"is larger than {limit // 2**20 or 1} MB" if extension != ".txt"
                         else f"is longer than {MAX_CAPTION_CHARS} characters")
        total += entry.file_size
        if total > MAX_UPLOAD_BYTES:
            raise refuse(zip_name, f"unpacks to more than {MAX_UPLOAD_BYTES // 2**20} MB")
        try:
            with archive.open(entry) as handle:
                content = handle.read(limit + 1)
        except (zipfile.BadZipFile, RuntimeError, OSError, ValueError, EOFError, NotImplementedError):
            raise refuse(f"{zip_name}/{name}", "cannot be unpacked (damaged or encrypted)") from None
        if len(content) > limit:  # the directory lied about its size
            raise refuse(f"{zip_name}/{name}", "is larger than its zip says")
        if extension == ".txt":
            captions[stem] = content.decode("utf-8", errors="replace")
        else:
            pictures.append((stem, f"{zip_name}/{name}", content))
    return [(name, content, captions.get(stem)) for stem, name, content in pictures]


def uploaded_files(files) -> list[tuple[str, bytes, str | None]]:
    """Every picture of an upload (zips unpacked): (name, bytes, caption from a .txt or None)."""
    found: list[tuple[str, bytes, str | None]] = []
    for upload in files:
        name = printable(posixpath.basename((getattr(upload, "name", "") or "upload").replace("\\", "/")))
        data = file_bytes(upload, name)
        if data[:4] == b"PK\x03\x04" or name.lower().endswith(".zip"):
            members = zip_members(data, name)
            if not members:
                raise refuse(name, f"has no {FORMATS_TEXT} pictures in it")
            found.extend(members)
        else:
            if len(data) > MAX_SOURCE_BYTES:
                raise refuse(name, f"is larger than {MAX_SOURCE_BYTES // 2**20} MB")
            found.append((name, data, None))
        if len(found) > MAX_UPLOAD_IMAGES:
            raise Refusal({FIELD: f"at most {MAX_UPLOAD_IMAGES} pictures in one upload (zips' contents counted)"})
        if sum(len(content) for _, content, _ in found) > MAX_UPLOAD_BYTES:
            raise Refusal({FIELD: f"at most {MAX_UPLOAD_BYTES // 2**20} MB of pictures in one upload"})
    if not found:
        raise Refusal({FIELD: f"choose at least one picture ({FORMATS_TEXT}) or a zip of them"})
    return found


def png_caption(data: bytes) -> tuple[str, str, str]:
    """(prompt, negative prompt, parameters text) from a PNG's A1111 ``parameters``; empty when it
    has none. A text chunk we cannot read is no caption, not a refusal: the picture itself is fine."""
    try:
        found = read_png_metadata(data)
    except (PngMetadataError, ValueError):
        return "", "", ""
    parameters = found.get("parameters") or ""
    fields = found.get("fields") or {}
    if not parameters or not fields.get("prompt"):
        return "", "", ""
    return str(fields.get("prompt", "")), str(fields.get("negative_prompt", "")), parameters


def check_picture(name: str, data: bytes, txt_caption: str | None, caption: str) -> Picture:
    """One picture checked, re-encoded and captioned (a `Refusal` naming the file otherwise)."""
    try:
        with PILImage.open(io.BytesIO(data)) as header:  # the header only: no pixel decoded yet
            kind = header.format
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        raise refuse(name, f"is not a picture we can read ({FORMATS_TEXT})") from None
    except PILImage.DecompressionBombError:
        raise refuse(name, f"has more than {MAX_SOURCE_PIXELS:,} pixels (4096x4096)") from None
    if kind not in UPLOAD_FORMATS:
        raise refuse(name, f"must be a {FORMATS_TEXT} picture (got {kind or 'an unknown format'})")
    try:
        decoded = decode_picture(data, FIELD)
    except Refusal as refusal:
        raise refuse(name, refusal.errors.get(FIELD, "is not a picture we can read")) from None
    picture = flatten(decoded)  # RGB, as generated images are; transparency onto white as A1111 does
    prompt, negative, parameters = png_caption(data) if kind == "PNG" else ("", "", "")
    if not prompt:
        prompt = (txt_caption or "").strip() or caption
    prompt = prompt.strip()[:MAX_CAPTION_CHARS]  # a longer A1111 prompt stays whole in its parameters
    info = PngImagePlugin.PngInfo()
    if parameters:  # kept in the stored PNG, so downloading and importing it gives them back
        info.add_text(PARAMETERS_CHUNK, parameters)
    png = io.BytesIO()
    picture.save(png, format="PNG", pnginfo=info)
    return Picture(name=name, png=png.getvalue(), thumbnail=make_thumbnail(picture), width=picture.width,
                   height=picture.height, format=kind, prompt=prompt.replace("\x00", ""),
                   negative_prompt=negative.replace("\x00", ""), parameters=parameters.replace("\x00", ""),
                   held=run_output_check(picture, {"uploaded": name}))


def own_album(owner, album_id) -> Album | None:
    if album_id in (None, ""):
        return None
    album = Album.objects.filter(pk=album_id, owner=owner).first()
    if album is None:
        raise Refusal({"album": "is not one of your albums"})
    return album


def upload_images(owner, files, *, caption: str = "", album_id: int | None = None) -> tuple[list[Image], Album | None]:
    """Store the pictures of ``files`` (uploaded files; zips unpacked) as ``owner``'s private, kept
    images, added to ``album_id`` (one of theirs) when given. All or nothing."""
    caption = services.check_text(caption, "caption", MAX_CAPTION_CHARS)
    album = own_album(owner, album_id)
    pictures = [check_picture(name, data, txt, caption) for name, data, txt in uploaded_files(files)]
    stored: list[str] = []
    try:
        with transaction.atomic():
            images = []
            for picture in pictures:
                file_name = default_storage.save(unguessable_name("png"), ContentFile(picture.png))
                stored.append(file_name)
                thumb_name = default_storage.save(unguessable_name("webp"), ContentFile(picture.thumbnail))
                stored.append(thumb_name)
                image = Image.objects.create(
                    owner=owner, generation=None, file=file_name, thumbnail=thumb_name, width=picture.width,
                    height=picture.height, seed=0, prompt=picture.prompt, negative_prompt=picture.negative_prompt,
                    model=None, parameters=picture.parameters, saved=True,
                    metadata={"uploaded": {"name": picture.name, "format": picture.format}})
                if picture.held is not None:
                    hold(image, picture.held)
                images.append(image)
            if album is not None:
                services.add_to_album(album, images)
    except BaseException:
        for name in stored:  # the rows are gone with the transaction: their files go too
            default_storage.delete(name)
        raise
    return images, album


def hold(image: Image, verdict) -> None:
    """As `generation.outputs.store_checked_image` holds a job's output the check flagged: hidden,
    with its review, and in the audit log."""
    OutputReview.objects.create(image=image, outcome=verdict.outcome, check_name=verdict.check_name[:200],
                                detail=verdict.detail)
    image.hidden, image.hidden_reason = True, HELD_REASON[verdict.outcome]
    image.save(update_fields=["hidden", "hidden_reason"])
    AuditEntry.objects.record(AuditEntry.Action.OUTPUT_FLAGGED, actor=None, via=AuditEntry.Via.SYSTEM, target=image,
                              subject=image.owner, reason=verdict.detail or "", outcome=verdict.outcome)
