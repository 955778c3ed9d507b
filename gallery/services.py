"""Gallery logic shared by pages and the API: what a person does with their images and albums,
likes, reports, explore and search. Refusals are `generation.admission.Refusal`, like every
service's. (Images are stored by `generation.outputs` when a job finishes.)"""

import base64
import binascii
import json
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.db.models import F, Max, Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from gallery.models import Album, AlbumItem, Image, Like, Lora, OutputReview, Report
from generation.admission import Refusal, check_published_text

# --- Owner actions ------------------------------------------------------------------

def check_text(value, field: str, max_chars: int, *, required: bool = False) -> str:
    """A person's text for `field`, stripped: text (pages post any string; PostgreSQL stores no NUL
    character) of at most `max_chars` characters, and not empty when `required`."""
    if value is not None and not isinstance(value, str):
        raise Refusal({field: "must be text"})
    text = (value or "").strip()
    allowed = f"1 to {max_chars} characters" if required else f"at most {max_chars} characters"
    if (required and not text) or len(text) > max_chars:
        raise Refusal({field: f"is required: {allowed}" if required else f"must be {allowed}"})
    if "\x00" in text:
        raise Refusal({field: "must not contain NUL characters (\\x00)"})
    return text


def check_visibility(value: str) -> str:
    if value not in Image.Visibility.values:
        raise Refusal({"visibility": f"must be one of: {', '.join(Image.Visibility.values)}"})
    return value


def under_review(image: Image) -> bool:
    """Held back by the output check and not yet cleared by staff."""
    return OutputReview.objects.filter(image=image, status=OutputReview.Status.PENDING).exists()


def set_image_visibility(image: Image, visibility: str) -> Image:
    """Share or unshare an image; an image held for review stays private until staff clear it."""
    if check_visibility(visibility) != Image.Visibility.PRIVATE and under_review(image):
        raise Refusal({"visibility": "this image is waiting for a staff review and cannot be shared until it is "
                                     "cleared"}, 403)
    image.visibility = visibility
    if visibility != Image.Visibility.PRIVATE:
        image.saved = True  # publishing keeps an image: it must not be purged from under its viewers
        image.published_at = image.published_at or timezone.now()
    image.save(update_fields=["visibility", "saved", "published_at"])
    return image


def like_image(user, image: Image) -> bool:
    """Like once; a second like changes nothing. Returns whether a like was added."""
    with transaction.atomic():
        _, created = Like.objects.get_or_create(user=user, image=image)
        if created:
            Image.objects.filter(pk=image.pk).update(like_count=F("like_count") + 1)
    return created


def unlike_image(user, image: Image) -> bool:
    with transaction.atomic():
        deleted, _ = Like.objects.filter(user=user, image=image).delete()
        if deleted:
            Image.objects.filter(pk=image.pk, like_count__gt=0).update(like_count=F("like_count") - 1)
    return bool(deleted)


def report_image(reporter, image: Image, reason: str, text: str = "") -> Report:
    return report(reporter, image, reason, text)


def report_lora(reporter, lora: Lora, reason: str, text: str = "") -> Report:
    return report(reporter, lora, reason, text)


def report(reporter, target: Image | Lora, reason: str, text: str = "") -> Report:
    """Flag someone's image or LoRA for staff (once while the report is open)."""
    kind, what = ("lora", "LoRA") if isinstance(target, Lora) else ("image", "image")
    if reason not in Report.Reason.values:
        raise Refusal({"reason": f"must be one of: {', '.join(Report.Reason.values)}"})
    text = check_text(text, "text", 2000)
    if target.owner_id == reporter.pk:
        raise Refusal({kind: f"you cannot report your own {what}"})
    try:
        with transaction.atomic():
            return Report.objects.create(reporter=reporter, reason=reason, text=text, **{kind: target})
    except IntegrityError:
        raise Refusal({kind: f"you have already reported this {what}; staff will review it"}, 409) from None


# --- Albums -----------------------------------------------------------------------------

def check_published(value, field: str, max_chars: int, *, required: bool = False) -> str:
    """`check_text` for text others may see: it also passes the prompt blocklist."""
    text = check_text(value, field, max_chars, required=required)
    check_published_text(field, text)
    return text


def create_album(owner, title: str, description: str = "", visibility: str = Album.Visibility.PRIVATE) -> Album:
    return Album.objects.create(owner=owner, title=check_published(title, "title", 120, required=True),
                                description=check_published(description, "description", 5000),
                                visibility=check_visibility(visibility))


def update_album(album: Album, *, title: str | None = None, description: str | None = None,
                 visibility: str | None = None, cover: Image | None | bool = False) -> Album:
    if title is not None:
        album.title = check_published(title, "title", 120, required=True)
    if description is not None:
        album.description = check_published(description, "description", 5000)
    if cover is not False:
        if cover is not None and not album.items.filter(image=cover).exists():
            raise Refusal({"cover": "must be an image in this album"})
        album.cover = cover
    album.save()
    if visibility is not None:
        publish_album(album, visibility)
    return album


def publish_album(album: Album, visibility: str) -> Album:
    """Set the album's visibility; publishing it also shares its private images the same way,
    so everyone who can open the album sees what is in it."""
    album.visibility = check_visibility(visibility)
    album.save(update_fields=["visibility", "updated_at"])
    if visibility != Image.Visibility.PRIVATE:
        private = Image.objects.filter(album_items__album=album, visibility=Image.Visibility.PRIVATE)
        private = private.exclude(output_review__status=OutputReview.Status.PENDING)  # held: stays private
        private.update(visibility=visibility, saved=True, published_at=timezone.now())
    return album


def add_to_album(album: Album, images) -> int:
    """Add the owner's images (others' are ignored); returns how many were added."""
    images = [image for image in images if image.owner_id == album.owner_id]
    with transaction.atomic():
        existing = set(album.items.values_list("image_id", flat=True))
        position = (album.items.aggregate(m=Max("position"))["m"] or 0) + 1
        new = []
        for image in images:
            if image.pk not in existing:
                new.append(AlbumItem(album=album, image=image, position=position))
                existing.add(image.pk)
                position += 1
        AlbumItem.objects.bulk_create(new)
        Image.objects.filter(pk__in=[item.image_id for item in new]).update(saved=True)
        if album.cover_id is None and new:
            album.cover_id = new[0].image_id
        album.save()
        if album.visibility != Image.Visibility.PRIVATE:
            publish_album(album, album.visibility)
    return len(new)


def remove_from_album(album: Album, image_ids) -> int:
    with transaction.atomic():
        removed, _ = album.items.filter(image_id__in=list(image_ids)).delete()
        if album.cover_id in set(image_ids):
            first = album.items.first()
            album.cover_id = first.image_id if first else None
        album.save()
    return removed


def reorder_album(album: Album, image_ids) -> None:
    """Put the album's images in the given order; images not named keep their order after them."""
    image_ids = [int(i) for i in image_ids]
    items = {item.image_id: item for item in album.items.all()}
    unknown = [i for i in image_ids if i not in items]
    if unknown:
        raise Refusal({"order": f"images not in this album: {unknown}"})
    ordered = image_ids + [i for i in items if i not in image_ids]
    for position, image_id in enumerate(ordered, start=1):
        items[image_id].position = position
    AlbumItem.objects.bulk_update(items.values(), ["position"])
    album.save(update_fields=["updated_at"])


def move_in_album(album: Album, image_id: int, offset: int) -> None:
    """Move one image earlier (-1) or later (+1) in the album."""
    order = list(album.items.values_list("image_id", flat=True))
    if image_id not in order:
        raise Refusal({"image": "is not in this album"})
    index = order.index(image_id)
    target = min(max(index + offset, 0), len(order) - 1)
    order.insert(target, order.pop(index))
    reorder_album(album, order)


# --- Explore and search -------------------------------------------------------------------

EXPLORE_ORDERS = ("newest", "most_liked")


def encode_cursor(values: list) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


MAX_CURSOR_CHARS = 200  # the cursors encode_cursor makes are under 100 characters


def decode_cursor(cursor: str, length: int) -> list | None:
    """The position a cursor encodes, or None for anything malformed (the first page is shown).

    The last value is an id, the one before it a timestamp, any before that a like count.
    """
    if len(cursor) > MAX_CURSOR_CHARS:
        return None
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error, RecursionError):
        return None
    if not isinstance(values, list) or len(values) != length:
        return None
    *counts, created, pk = values
    if not isinstance(pk, int) or isinstance(pk, bool) or not 0 < pk < 2**63:
        return None
    created = parse_datetime_safely(created) if isinstance(created, str) else None
    if created is None:
        return None
    if any(not isinstance(n, int) or isinstance(n, bool) or not 0 <= n < 2**63 for n in counts):
        return None
    return [*counts, created, pk]


def parse_datetime_safely(text: str):
    try:
        return parse_datetime(text)
    except (ValueError, TypeError, OverflowError):
        return None


MAX_QUERY_CHARS = 200  # of a search; prompts are at most 1000 characters
MAX_QUERY_WORDS = 10
MAX_WORD_CHARS = 50


def search_words(query: str) -> list[str]:
    """The words a search looks for: of the first MAX_QUERY_CHARS characters, at most
    MAX_QUERY_WORDS distinct words of at most MAX_WORD_CHARS characters. Bounded whatever the
    query's length, so the database's LIKE (prompt length x word length per row) stays bounded too."""
    words = dict.fromkeys(word[:MAX_WORD_CHARS] for word in (query or "")[:MAX_QUERY_CHARS].split())
    return list(words)[:MAX_QUERY_WORDS]


def search_images(queryset, query: str = "", model_slug: str = ""):
    """Every word of `query` must appear in the prompt (case-insensitive); see `search_words`."""
    for word in search_words(query):
        queryset = queryset.filter(prompt__icontains=word)
    if model_slug:
        queryset = queryset.filter(model__slug=model_slug)
    return queryset


def explore(order: str = "newest", query: str = "", model_slug: str = "", cursor: str = "", limit: int = 24):
    """One page of public images and the cursor of the next page (None at the end).

    Keyset (cursor) pagination: the cost of a page does not grow with how deep it is.
    """
    if order not in EXPLORE_ORDERS:
        order = "newest"
    images = search_images(Image.objects.public(), query, model_slug).select_related("owner", "model")
    if order == "most_liked":
        images = images.order_by("-like_count", "-created_at", "-id")
        position = decode_cursor(cursor, 3) if cursor else None
        if position:
            likes, created, pk = position
            images = images.filter(Q(like_count__lt=likes) | Q(like_count=likes, created_at__lt=created)
                                   | Q(like_count=likes, created_at=created, id__lt=pk))
    else:
        images = images.order_by("-created_at", "-id")
        position = decode_cursor(cursor, 2) if cursor else None
        if position:
            created, pk = position
            images = images.filter(Q(created_at__lt=created) | Q(created_at=created, id__lt=pk))
    page = list(images[: limit + 1])
    next_cursor = None
    if len(page) > limit:
        page = page[:limit]
        last = page[-1]
        key = [last.created_at.isoformat(), last.pk]
        next_cursor = encode_cursor([last.like_count, *key] if order == "most_liked" else key)
    return page, next_cursor


# --- LoRAs ---------------------------------------------------------------------------------

LORA_SAMPLES = 12


def images_made_with(lora: Lora, user, limit: int = LORA_SAMPLES) -> list[Image]:
    """"Made with this LoRA": public, unhidden images whose recorded parameters name this LoRA's
    hash (A1111's ``Lora hashes``, what every job that applied it writes), plus the person's own of
    any visibility; newest first, at most ``limit``. The hash, not the name: a LoRA renamed (or
    named differently by each person who used it) is still the same file."""
    made = Q(visibility=Image.Visibility.PUBLIC, hidden=False)
    if user is not None and user.is_authenticated:
        made |= Q(owner=user)
    images = Image.objects.filter(made, parameters__contains="Lora hashes:").filter(
        parameters__contains=f": {lora.short_hash}")
    return list(images.select_related("owner").order_by("-created_at", "-id")[:limit])


# --- Retention ------------------------------------------------------------------------------

def purge_unsaved(older_than_days: int) -> int:
    """Delete unsaved, private images older than the retention period (their files go too)."""
    cutoff = timezone.now() - timedelta(days=older_than_days)
    stale = Image.objects.filter(saved=False, visibility=Image.Visibility.PRIVATE, created_at__lt=cutoff)
    count = 0
    for image in stale.iterator(chunk_size=500):
        image.delete()
        count += 1
    return count
