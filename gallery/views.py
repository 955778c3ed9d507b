"""Gallery pages: history, image pages and their actions, albums, explore, profiles, media, LoRAs.

Thin views: permission rules live on the models (`can_view`, `can_edit`,
`visible_to`), actions in `gallery.services`.
"""

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Count, Q, Sum
from django.http import HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods, require_POST

from gallery import access, services, uploads
from gallery import loras as loras_service
from gallery.media import serve_file
from gallery.models import Album, Image, Lora, Report
from generation.admission import Refusal
from generation.forms import form_id, form_ids
from generation.models import DiffusionModel
from generation.sources import describe_source

HISTORY_PAGE_SIZE = 24
EXPLORE_PAGE_SIZE = 24


def wants_json(request) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def back(request, fallback):
    """To the page the form came from (``next``: a path on this site), else to ``fallback``."""
    next_url = request.POST.get("next", "")
    if (next_url.startswith("/") and url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()},
                                                                     require_https=request.is_secure())):
        return HttpResponseRedirect(next_url)  # never a view name: redirect("²") would look one up and fail
    return redirect(fallback)


def visible_image(request, pk) -> Image:
    return access.viewable(Image.objects.select_related("owner", "model", "generation"), pk, request.user)


def own_image(request, pk) -> Image:
    return access.editable(Image.objects.select_related("owner", "model", "generation"), pk, request.user)


def visible_album(request, pk) -> Album:
    return access.viewable(Album.objects.select_related("owner"), pk, request.user)


def own_album(request, pk) -> Album:
    return access.editable(Album.objects.select_related("owner"), pk, request.user)


def show_refusal(request, refusal: Refusal):
    for message in refusal.messages():
        messages.error(request, message)


def refused(request, refusal: Refusal, fallback):
    """A refused form: its field-named errors as JSON for a script, else as messages on the page
    it came from."""
    if wants_json(request):
        return JsonResponse({"errors": refusal.errors}, status=refusal.status)
    show_refusal(request, refusal)
    return back(request, fallback)


# --- History and image pages ---------------------------------------------------------

@login_required
def history(request):
    images = Image.objects.filter(owner=request.user).select_related("model")
    if request.GET.get("saved") == "1":
        images = images.filter(saved=True)
    page = Paginator(images, HISTORY_PAGE_SIZE).get_page(request.GET.get("page"))
    albums = Album.objects.filter(owner=request.user).only("pk", "title")
    return render(request, "gallery/history.html", {"page": page, "albums": albums,
                                                    "saved_only": request.GET.get("saved") == "1"})


def image_page(request, pk):
    image = visible_image(request, pk)
    user = request.user
    context = {
        "image": image,
        "can_edit": image.can_edit(user),
        "liked": user.is_authenticated and image.likes.filter(user=user).exists(),
        "albums": Album.objects.filter(owner=user).only("pk", "title") if image.can_edit(user) else [],
        "report_reasons": Report.Reason.choices,
        "can_report": user.is_authenticated and user.pk != image.owner_id,
        "visibilities": Image.Visibility.choices,
        # The picture the image was made from (image to image): a dict (see describe_source), or None.
        "source": describe_source(image.generation, user),
    }
    return render(request, "gallery/image.html", context)


def image_file(request, pk):
    image = visible_image(request, pk)
    return serve_file(image.file, image.download_name if "download" in request.GET else None)


def image_thumbnail(request, pk):
    image = visible_image(request, pk)
    return serve_file(image.thumbnail or image.file)


@login_required
@require_POST
def save_image(request, pk):
    image = own_image(request, pk).set_saved(request.POST.get("saved", "true") != "false")
    if wants_json(request):
        return JsonResponse({"id": image.pk, "saved": image.saved})
    return back(request, image)


@login_required
@require_POST
def set_visibility(request, pk):
    image = own_image(request, pk)
    try:
        services.set_image_visibility(image, request.POST.get("visibility", ""))
    except Refusal as error:
        show_refusal(request, error)
    else:
        messages.success(request, f"The image is now {image.get_visibility_display().lower()}.")
    return back(request, image)


@login_required
@require_POST
def delete_image(request, pk):
    image = own_image(request, pk)
    image.delete()
    messages.success(request, "Image deleted.")
    return redirect("gallery:history")


@login_required
@require_POST
def like(request, pk):
    image = visible_image(request, pk)
    if request.POST.get("like", "true") == "false":
        services.unlike_image(request.user, image)
    else:
        services.like_image(request.user, image)
    image.refresh_from_db(fields=["like_count"])
    if wants_json(request):
        return JsonResponse({"id": image.pk, "like_count": image.like_count,
                             "liked": image.likes.filter(user=request.user).exists()})
    return back(request, image)


@login_required
@require_POST
def report(request, pk):
    image = visible_image(request, pk)
    try:
        services.report_image(request.user, image, request.POST.get("reason", ""), request.POST.get("text", ""))
    except Refusal as error:
        show_refusal(request, error)
    else:
        messages.success(request, "Thank you. Staff will review your report.")
    return back(request, image)


@login_required
@require_http_methods(["GET", "POST"])
def upload_images(request):
    """Upload your own pictures (PNG, JPEG, WebP, or zips of them with .txt captions) into your
    gallery, optionally straight into one of your albums (`gallery.uploads`)."""
    albums = Album.objects.filter(owner=request.user).only("pk", "title")
    if request.method == "POST":
        try:
            images, album = uploads.upload_images(
                request.user, request.FILES.getlist("files"), caption=request.POST.get("caption", ""),
                album_id=form_id(request.POST.get("album"), "album"))
        except Refusal as error:
            if wants_json(request):
                return JsonResponse({"errors": error.errors}, status=error.status)
            show_refusal(request, error)
            return render(request, "gallery/upload.html", {"albums": albums, "limits": upload_limits(),
                                                           "caption": request.POST.get("caption", "")},
                          status=error.status)
        if wants_json(request):
            return JsonResponse({"images": [image.pk for image in images], "album": album.pk if album else None},
                                status=201)
        messages.success(request, f"Uploaded {len(images)} image{'s' if len(images) != 1 else ''}"
                                  f"{f' into {album.title}' if album else ''}.")
        return redirect(album or "gallery:history")
    return render(request, "gallery/upload.html", {"albums": albums, "limits": upload_limits(),
                                                   "album": request.GET.get("album", "")})


def upload_limits() -> dict:
    return {"images": uploads.MAX_UPLOAD_IMAGES, "file_mb": uploads.MAX_SOURCE_BYTES // 2**20,
            "total_mb": uploads.MAX_UPLOAD_BYTES // 2**20, "caption": uploads.MAX_CAPTION_CHARS}


@login_required
@require_POST
def add_selection_to_album(request):
    """Bulk: add the selected images (from history or an image page) to an album, new or existing."""
    try:
        ids = form_ids(request.POST.getlist("images"), "images")
        images = list(Image.objects.filter(owner=request.user, pk__in=ids))
        if not images:
            raise Refusal({"images": "select at least one of your images"})
        if request.POST.get("album") == "new":
            album = services.create_album(request.user, request.POST.get("new_title", ""))
        else:
            album_id = form_id(request.POST.get("album"), "album")
            album = get_object_or_404(Album, pk=album_id or 0, owner=request.user)
    except Refusal as error:
        return refused(request, error, "gallery:history")
    added = services.add_to_album(album, images)
    if wants_json(request):
        return JsonResponse({"album": album.pk, "added": added})
    messages.success(request, f"Added {added} image{'s' if added != 1 else ''} to {album.title}.")
    return back(request, album)


# --- Albums -------------------------------------------------------------------------------

@login_required
def albums(request):
    mine = Album.objects.filter(owner=request.user).select_related("cover")
    return render(request, "gallery/albums.html", {"albums": mine, "visibilities": Image.Visibility.choices})


@login_required
@require_POST
def create_album(request):
    try:
        album = services.create_album(request.user, request.POST.get("title", ""),
                                      request.POST.get("description", ""),
                                      request.POST.get("visibility", Album.Visibility.PRIVATE))
    except Refusal as error:
        show_refusal(request, error)
        return redirect("gallery:albums")
    return redirect(album)


def album_page(request, pk):
    album = visible_album(request, pk)
    items = album.items_visible_to(request.user).select_related("image")
    return render(request, "gallery/album.html", {
        "album": album, "items": items, "can_edit": album.can_edit(request.user),
        "visibilities": Image.Visibility.choices,
    })


@login_required
@require_POST
def edit_album(request, pk):
    album = own_album(request, pk)
    action = request.POST.get("action", "update")
    try:
        if action == "update":
            cover = False  # no cover field: unchanged
            if "cover" in request.POST:
                cover_id = form_id(request.POST["cover"], "cover")
                cover = None if cover_id is None else album.images.filter(pk=cover_id).first()
                if cover_id is not None and cover is None:
                    raise Refusal({"cover": "must be an image in this album"})
            services.update_album(album, title=request.POST.get("title"),
                                  description=request.POST.get("description"),
                                  visibility=request.POST.get("visibility"), cover=cover)
            messages.success(request, "Album saved.")
        elif action == "remove":
            services.remove_from_album(album, form_ids(request.POST.getlist("images"), "images"))
        elif action == "move":
            services.move_in_album(album, form_id(request.POST.get("image"), "image") or 0,
                                   -1 if request.POST.get("direction") == "earlier" else 1)
        elif action == "delete":
            album.delete()
            messages.success(request, "Album deleted; its images are still in your history.")
            return redirect("gallery:albums")
    except Refusal as error:
        return refused(request, error, album)
    return redirect(album)


# --- Explore and profiles -------------------------------------------------------------------

def explore(request):
    order = request.GET.get("order", "newest")
    query = request.GET.get("q", "").strip()[:200]
    model = request.GET.get("model", "")
    images, next_cursor = services.explore(order, query, model, request.GET.get("cursor", ""), EXPLORE_PAGE_SIZE)
    return render(request, "gallery/explore.html", {
        "images": images, "next_cursor": next_cursor, "order": order, "query": query, "model": model,
        "models": DiffusionModel.objects.filter(enabled=True).only("slug", "name"),
    })


def profile(request, username):
    owner = get_object_or_404(get_user_model(), username=username, is_active=True)
    images = Image.objects.public().filter(owner=owner).select_related("model")
    page = Paginator(images, EXPLORE_PAGE_SIZE).get_page(request.GET.get("page"))
    public_albums = list(Album.objects.filter(owner=owner, visibility=Image.Visibility.PUBLIC).select_related("cover"))
    for album in public_albums:
        album.cover = album.cover_visible_to(request.user)  # shown, not saved: a private cover stays private
    counts = images.aggregate(images=Count("id"), likes=Sum("like_count"))
    return render(request, "gallery/profile.html", {"owner": owner, "page": page, "albums": public_albums,
                                                    "public_image_count": counts["images"],
                                                    "like_total": counts["likes"] or 0})


# --- LoRAs ------------------------------------------------------------------------------------------

LORA_PAGE_SIZE = 24


def visible_lora(request, pk) -> Lora:
    return access.viewable(Lora.objects.select_related("owner", "base_model"), pk, request.user)


def own_lora(request, pk) -> Lora:
    return access.editable(Lora.objects.select_related("owner", "base_model"), pk, request.user)


def models_page(request):
    """"Models & LoRAs": the enabled models (what each is, its defaults, a link to generate with it)
    and the LoRAs you may see, one search over both."""
    query = request.GET.get("q", "").strip()[:200]
    model = request.GET.get("model", "")
    models = DiffusionModel.objects.filter(enabled=True).order_by("-is_default", "name")
    for word in services.search_words(query):
        models = models.filter(Q(name__icontains=word) | Q(description__icontains=word) | Q(slug__icontains=word))
    if model:
        models = models.filter(slug=model)
    found = loras_service.listing(request.user, query, model)
    page = Paginator(found, LORA_PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "gallery/models.html", {
        "model_list": models, "page": page, "query": query, "model": model,
        "models": DiffusionModel.objects.filter(enabled=True).only("slug", "name"),
    })


def loras_page(request):
    """Your LoRAs and everyone's public ones, with search; the upload form for the signed in."""
    query = request.GET.get("q", "").strip()[:200]
    model = request.GET.get("model", "")
    found = loras_service.listing(request.user, query, model)
    page = Paginator(found, LORA_PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "gallery/loras.html", {
        "page": page, "query": query, "model": model, "visibilities": Lora.Visibility.choices,
        "models": DiffusionModel.objects.filter(enabled=True).only("slug", "name"),
        "max_mib": loras_service.MAX_LORA_UPLOAD_BYTES // 2**20,
    })


@login_required
@require_POST
def upload_lora(request):
    try:
        model = loras_service.resolve_base_model(request.POST.get("base_model"))
        lora = loras_service.upload_lora(
            request.user, name=request.POST.get("name", ""), data=loras_service.read_upload(request.FILES.get("file")),
            base_model=model, trigger_words=request.POST.get("trigger_words", ""),
            description=request.POST.get("description", ""),
            visibility=request.POST.get("visibility", Lora.Visibility.PRIVATE))
    except Refusal as error:
        return refused(request, error, "gallery:loras")
    if wants_json(request):
        return JsonResponse({"id": lora.pk, "url": lora.get_absolute_url()}, status=201)
    messages.success(request, f"LoRA {lora.name} uploaded: use it with <lora:{lora.name}:1>.")
    return redirect(lora)


def lora_page(request, pk):
    lora = visible_lora(request, pk)
    user = request.user
    return render(request, "gallery/lora.html", {
        "lora": lora, "can_edit": lora.can_edit(user), "visibilities": Lora.Visibility.choices,
        "prompt_name": lora.request_name(user),
        "can_report": user.is_authenticated and user.pk != lora.owner_id, "report_reasons": Report.Reason.choices,
        "samples": services.images_made_with(lora, user),
    })


@login_required
@require_POST
def report_lora(request, pk):
    lora = visible_lora(request, pk)
    try:
        services.report_lora(request.user, lora, request.POST.get("reason", ""), request.POST.get("text", ""))
    except Refusal as error:
        show_refusal(request, error)
    else:
        messages.success(request, "Thank you. Staff will review your report.")
    return back(request, lora)


def lora_file(request, pk):
    return loras_service.kohya_response(visible_lora(request, pk))


@login_required
@require_POST
def edit_lora(request, pk):
    lora = own_lora(request, pk)
    try:
        if request.POST.get("action") == "delete":
            lora.delete()
            messages.success(request, "LoRA deleted.")
            return redirect("gallery:loras")
        loras_service.update_lora(lora, name=request.POST.get("name"), trigger_words=request.POST.get("trigger_words"),
                                  description=request.POST.get("description"),
                                  visibility=request.POST.get("visibility"))
    except Refusal as error:
        return refused(request, error, lora)
    messages.success(request, "LoRA saved.")
    return redirect(lora)
